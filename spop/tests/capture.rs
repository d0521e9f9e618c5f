//! The capture tool (`tests/vectors/capture/`) still works against each real
//! HAProxy line, and what it captures today has the shape of the committed
//! vectors: the same files, frame types, flags, messages, argument names and
//! types, and HELLO keys. (Values that change from run to run, such as ports,
//! engine-ids and stream-ids, are not compared.)
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

#[path = "support/haproxy.rs"]
mod haproxy;

use std::path::Path;

use haproxy::Version;
use serde_json::Value;

/// The part of a manifest entry that does not change between runs.
fn shape(entry: &Value) -> Value {
    let mut out = serde_json::Map::new();
    for key in [
        "file",
        "frame_type",
        "frame_type_name",
        "flags",
        "fin",
        "abort",
    ] {
        out.insert(key.into(), entry[key].clone());
    }
    if let Some(kv) = entry.get("kv").and_then(Value::as_object) {
        let keys: Vec<Value> = kv
            .iter()
            .map(|(k, v)| Value::from(format!("{k}:{}", v["type"].as_str().unwrap())))
            .collect();
        out.insert("kv".into(), Value::from(keys));
        for fixed in [
            "supported-versions",
            "max-frame-size",
            "capabilities",
            "status-code",
        ] {
            if let Some(v) = kv.get(fixed) {
                out.insert(fixed.into(), v["value"].clone());
            }
        }
    }
    if let Some(msgs) = entry.get("messages").and_then(Value::as_array) {
        let msgs: Vec<Value> = msgs
            .iter()
            .map(|m| {
                let args: Vec<Value> = m["args"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| Value::from(format!("{}:{}", a[0].as_str().unwrap(), a[1]["type"])))
                    .collect();
                serde_json::json!({ "name": m["name"], "args": args })
            })
            .collect();
        out.insert("messages".into(), Value::from(msgs));
    }
    Value::Object(out)
}

fn shapes(manifest: &Path) -> Vec<Value> {
    let m: Value = serde_json::from_str(&std::fs::read_to_string(manifest).unwrap()).unwrap();
    let mut all: Vec<Value> = m["frames"].as_array().unwrap().iter().map(shape).collect();
    all.sort_by_key(|s| s["file"].to_string());
    all
}

fn capture(version: Version) {
    let bin = haproxy::binary(version);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors");
    let out = std::env::temp_dir().join(format!(
        "spop-capture-{}-{}",
        version.line(),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&out);
    let run = std::process::Command::new("python3")
        .arg(root.join("capture/capture.py"))
        .arg(&bin)
        .arg(&out)
        .output()
        .expect("python3 runs");
    assert!(
        run.status.success(),
        "capture.py failed on {}: {}\n{}",
        version.line(),
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    let committed = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("haproxy-{}.", version.line())))
        })
        .unwrap_or_else(|| panic!("no committed vectors for HAProxy {}", version.line()));
    let (got, want) = (
        shapes(&out.join("manifest.json")),
        shapes(&committed.join("manifest.json")),
    );
    assert_eq!(got.len(), want.len(), "frames captured vs committed");
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(
            g,
            w,
            "HAProxy {}: captured vs {}",
            version.line(),
            committed.display()
        );
    }
    std::fs::remove_dir_all(&out).unwrap();
}

per_version!(capture_tool_matches_the_committed_vectors, capture);
