//! Every frame captured from real HAProxy 2.6.12, 3.0.11, 3.2.26 and 3.4.7
//! decodes to what its manifest says (written by an independent decoder,
//! `tests/vectors/capture/agent.py`), re-encodes to the same bytes, and the
//! fragmented 2.6 and 3.0 messages reassemble to the manifest's entry.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use haproxy_spop::{Flags, Frame, FrameBody, Notify, Reassembled, Reassembler, TypedData};
use serde_json::Value;
use sha2::{Digest, Sha256};

fn vectors() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

const VERSIONS: [&str; 4] = [
    "haproxy-2.6.12",
    "haproxy-3.0.11",
    "haproxy-3.2.26",
    "haproxy-3.4.7",
];

fn read(version: &str, file: &str) -> Bytes {
    Bytes::from(std::fs::read(vectors().join(version).join(file)).unwrap())
}

/// Decodes a captured file (LENGTH included), checking LENGTH first.
fn decode_file(wire: &Bytes, expected_len: u64) -> Frame {
    let len = u32::from_be_bytes(wire[..4].try_into().unwrap());
    assert_eq!(u64::from(len), expected_len, "LENGTH");
    assert_eq!(wire.len(), 4 + len as usize, "file holds exactly one frame");
    Frame::decode(wire.slice(4..)).unwrap()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Checks one typed value against its manifest description.
fn check_value(what: &str, value: &TypedData, want: &Value) {
    let ty = want["type"].as_str().unwrap();
    assert_eq!(value.data_type().name(), ty, "{what}: type");
    match value {
        TypedData::Null => assert!(want["value"].is_null(), "{what}"),
        TypedData::Bool(b) => assert_eq!(Some(*b), want["value"].as_bool(), "{what}"),
        TypedData::Int32(v) => assert_eq!(Some(i64::from(*v)), want["value"].as_i64(), "{what}"),
        TypedData::Int64(v) => assert_eq!(Some(*v), want["value"].as_i64(), "{what}"),
        TypedData::Uint32(v) => assert_eq!(Some(u64::from(*v)), want["value"].as_u64(), "{what}"),
        TypedData::Uint64(v) => assert_eq!(Some(*v), want["value"].as_u64(), "{what}"),
        TypedData::Ipv4(ip) => {
            assert_eq!(ip.to_string(), want["value"].as_str().unwrap(), "{what}")
        }
        TypedData::Ipv6(ip) => {
            assert_eq!(hex(&ip.octets()), want["value"].as_str().unwrap(), "{what}")
        }
        TypedData::String(s) => {
            assert_eq!(&s[..], want["value"].as_str().unwrap().as_bytes(), "{what}")
        }
        TypedData::Binary(b) => {
            assert_eq!(b.len() as u64, want["len"].as_u64().unwrap(), "{what}: len");
            assert_eq!(
                hex(&Sha256::digest(b)),
                want["sha256"].as_str().unwrap(),
                "{what}: sha256"
            );
            if let Some(h) = want.get("hex") {
                assert_eq!(hex(b), h.as_str().unwrap(), "{what}: hex");
            }
        }
    }
}

/// Checks a NOTIFY's messages, arguments and decoded `hdrs_bin` headers.
fn check_messages(what: &str, notify: &Notify, want: &Value) -> usize {
    let want = want.as_array().unwrap();
    assert_eq!(notify.len(), want.len(), "{what}: message count");
    let mut args_checked = 0;
    for (msg, want) in notify.messages().zip(want) {
        assert_eq!(
            msg.name(),
            want["name"].as_str().unwrap().as_bytes(),
            "{what}"
        );
        let want_args = want["args"].as_array().unwrap();
        assert_eq!(msg.len(), want_args.len(), "{what}: arg count");
        assert_eq!(msg.args_ref().len(), want_args.len(), "{what}: arg count");
        for (((name, value), (name_ref, value_ref)), want) in
            msg.args().zip(msg.args_ref()).zip(want_args)
        {
            let want_name = want[0].as_str().unwrap();
            assert_eq!(name, want_name.as_bytes(), "{what}: arg name");
            assert_eq!(name_ref, name, "{what}: borrowed arg name");
            assert_eq!(value_ref, value, "{what}: borrowed value");
            check_value(&format!("{what}: {want_name}"), &value, &want[1]);
            args_checked += 1;
        }
        if let Some(headers) = want.get("headers") {
            let got: Vec<(String, String)> = msg
                .headers("arg_hdrs")
                .unwrap()
                .iter()
                .map(|(n, v)| {
                    (
                        String::from_utf8(n.to_vec()).unwrap(),
                        String::from_utf8(v.to_vec()).unwrap(),
                    )
                })
                .collect();
            let want: Vec<(String, String)> = headers
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    (
                        p[0].as_str().unwrap().to_owned(),
                        p[1].as_str().unwrap().to_owned(),
                    )
                })
                .collect();
            assert_eq!(got, want, "{what}: headers");
        }
    }
    args_checked
}

fn check_kv(what: &str, frame: &Frame, want: &Value) {
    let want = want.as_object().unwrap();
    let value = |key: &str| want.get(key).map(|v| &v["value"]);
    match &frame.body {
        FrameBody::HaproxyHello(h) => {
            assert_eq!(
                want.len(),
                3 + usize::from(h.healthcheck) + usize::from(h.engine_id.is_some()),
                "{what}: keys"
            );
            assert_eq!(
                value("supported-versions")
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .as_bytes(),
                &h.supported_versions[..]
            );
            assert_eq!(
                value("max-frame-size").unwrap().as_u64(),
                Some(u64::from(h.max_frame_size))
            );
            assert_eq!(want["max-frame-size"]["type"], "UINT32");
            assert_eq!(
                value("capabilities").unwrap().as_str().unwrap(),
                h.capabilities.to_string()
            );
            assert_eq!(
                value("healthcheck")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
                h.healthcheck
            );
            assert_eq!(
                value("engine-id")
                    .and_then(Value::as_str)
                    .map(str::as_bytes),
                h.engine_id.as_deref(),
                "{what}: engine-id"
            );
        }
        FrameBody::HaproxyDisconnect(d) => {
            assert_eq!(want.len(), 2);
            assert_eq!(
                value("status-code").unwrap().as_u64(),
                Some(u64::from(d.status.code()))
            );
            assert_eq!(
                value("message").unwrap().as_str().unwrap().as_bytes(),
                &d.message[..]
            );
        }
        other => panic!("{what}: kv on {other:?}"),
    }
}

#[test]
fn every_captured_frame_decodes_to_its_manifest() {
    let mut files_checked = 0;
    let mut args_checked = 0;
    for version in VERSIONS {
        let manifest: Value = serde_json::from_str(
            &std::fs::read_to_string(vectors().join(version).join("manifest.json")).unwrap(),
        )
        .unwrap();
        let mut on_disk: BTreeSet<String> = std::fs::read_dir(vectors().join(version))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".bin"))
            .collect();
        for entry in manifest["frames"].as_array().unwrap() {
            let Some(file) = entry["file"].as_str() else {
                continue; // the reassembled entry: see the next test
            };
            let what = format!("{version}/{file}");
            assert!(on_disk.remove(file), "{what} listed twice or missing");
            let wire = read(version, file);
            let frame = decode_file(&wire, entry["length"].as_u64().unwrap());
            assert_eq!(
                u64::from(frame.frame_type().0),
                entry["frame_type"].as_u64().unwrap(),
                "{what}"
            );
            assert_eq!(
                frame.frame_type().name(),
                entry["frame_type_name"].as_str().unwrap(),
                "{what}"
            );
            assert_eq!(
                u64::from(frame.metadata.flags.0),
                entry["flags"].as_u64().unwrap(),
                "{what}"
            );
            assert_eq!(
                frame.metadata.flags.is_fin(),
                entry["fin"].as_bool().unwrap(),
                "{what}"
            );
            assert_eq!(
                frame.metadata.flags.is_abort(),
                entry["abort"].as_bool().unwrap(),
                "{what}"
            );
            assert_eq!(
                frame.metadata.stream_id,
                entry["stream_id"].as_u64().unwrap(),
                "{what}"
            );
            assert_eq!(
                frame.metadata.frame_id,
                entry["frame_id"].as_u64().unwrap(),
                "{what}"
            );
            if let Some(kv) = entry.get("kv") {
                check_kv(&what, &frame, kv);
            }
            match &frame.body {
                FrameBody::Notify(notify) => {
                    args_checked += check_messages(&what, notify, &entry["messages"]);
                }
                FrameBody::NotifyFragment(_) | FrameBody::Unset(_) => {
                    assert!(
                        !frame.metadata.flags.is_fin() || frame.frame_type().0 == 0,
                        "{what}"
                    );
                }
                FrameBody::HaproxyHello(_) | FrameBody::HaproxyDisconnect(_) => {
                    assert!(entry.get("kv").is_some(), "{what}");
                }
                other => panic!("{what}: HAProxy does not send {other:?}"),
            }
            // Re-encoding gives back the captured bytes exactly.
            let mut out = BytesMut::new();
            frame.encode_framed(&mut out, u32::MAX).unwrap();
            assert_eq!(&out[..], &wire[..], "{what}: re-encoding");
            assert_eq!(frame.encoded_len() + 4, wire.len(), "{what}: encoded_len");
            files_checked += 1;
        }
        assert!(
            on_disk.is_empty(),
            "{version}: files without a manifest entry: {on_disk:?}"
        );
    }
    // 17 frames from each classic engine (2.6, 3.0), 9 from each 3.1+ one.
    assert_eq!(files_checked, 2 * 17 + 2 * 9);
    assert_eq!(args_checked, 4 * (6 * 5 + 12));
}

#[test]
fn fragmented_notify_reassembles_to_the_manifest() {
    // The classic SPOE engine (2.6, 3.0) fragments; 3.1+ never does.
    for version in ["haproxy-2.6.12", "haproxy-3.0.11"] {
        reassemble(version);
    }
}

fn reassemble(version: &str) {
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(vectors().join(version).join("manifest.json")).unwrap(),
    )
    .unwrap();
    let entry = manifest["frames"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["file"].is_array())
        .expect("reassembled entry");
    let files: Vec<&str> = entry["file"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert_eq!(files.len(), 7);
    let mut r = Reassembler::new(1 << 20);
    let mut total = 0;
    let mut result = None;
    for (i, file) in files.iter().enumerate() {
        let wire = read(version, file);
        let frame = Frame::decode(wire.slice(4..)).unwrap();
        total += match &frame.body {
            FrameBody::NotifyFragment(b) | FrameBody::Unset(b) => b.len(),
            other => panic!("{version}/{file}: not a fragment: {other:?}"),
        };
        match r.push(frame).unwrap() {
            Reassembled::Pending => {
                assert!(i < files.len() - 1, "{file}: still pending at the end")
            }
            Reassembled::Frame(f) => {
                assert_eq!(i, files.len() - 1, "{file}: completed early");
                result = Some(f);
            }
            other => panic!("{file}: {other:?}"),
        }
    }
    let frame = result.unwrap();
    // The manifest gives the reassembled payload length.
    assert_eq!(total as u64, entry["length"].as_u64().unwrap());
    assert_eq!(notify_len(&frame), total);
    assert_eq!(
        frame.metadata.stream_id,
        entry["stream_id"].as_u64().unwrap()
    );
    assert_eq!(frame.metadata.frame_id, entry["frame_id"].as_u64().unwrap());
    assert!(frame.metadata.flags.is_fin());
    assert_eq!(frame.metadata.flags, Flags::FIN);
    let FrameBody::Notify(notify) = &frame.body else {
        panic!("{frame:?}")
    };
    let args = check_messages("reassembled", notify, &entry["messages"]);
    assert_eq!(args, 5);
    assert!(!r.is_pending());
    assert_eq!(r.held(), 0);
}

fn notify_len(frame: &Frame) -> usize {
    match &frame.body {
        FrameBody::Notify(n) => n.payload().len(),
        _ => 0,
    }
}

#[test]
fn the_four_haproxy_lines_have_vectors() {
    let mut dirs: Vec<String> = std::fs::read_dir(vectors())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("haproxy-"))
        .collect();
    dirs.sort();
    assert_eq!(
        dirs, VERSIONS,
        "every captured version is checked, and only those"
    );
}

#[test]
fn captured_mirror_messages_as_request_views() {
    use haproxy_spop::{RequestArgs, RequestView};
    // (file, method, path, chunked, truncated)
    let want = [
        (
            "mirror-02-notify.bin",
            "GET",
            "/index.html?x=1&y=%20z",
            false,
            false,
        ),
        ("mirror-03-notify.bin", "POST", "/submit", false, false),
        ("mirror-04-notify.bin", "GET", "/v10", false, false),
        ("mirror-05-notify.bin", "POST", "/chunked", true, false),
        ("mirror-06-notify.bin", "PUT", "/b12k", false, false),
        ("mirror-07-notify.bin", "PUT", "/b100k", false, true),
    ];
    for version in VERSIONS {
        for (file, method, path, chunked, truncated) in want {
            let wire = read(version, file);
            let frame = Frame::decode(wire.slice(4..)).unwrap();
            let FrameBody::Notify(notify) = &frame.body else {
                panic!("{version}/{file}")
            };
            let msg = notify.message("mirror").unwrap();
            let v = RequestView::from_message(&msg, &RequestArgs::default()).unwrap();
            let what = format!("{version}/{file}");
            assert_eq!(v.method(), method.as_bytes(), "{what}");
            assert_eq!(v.path(), path.as_bytes(), "{what}");
            assert_eq!(v.framing().chunked, chunked, "{what}");
            assert_eq!(v.truncated(), truncated, "{what}");
            assert!(v.body().len() < 100_000, "{what}");
        }
    }
}
