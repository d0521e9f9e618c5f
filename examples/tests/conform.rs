//! `spop-conform` (built with the workspace's `--all-features`, as the README
//! test command builds it) against the example agent `set_var`, run as its
//! own process: every case passes or is not applicable.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

#[path = "../../spop/tests/support/haproxy.rs"]
mod haproxy;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A child process killed on drop.
struct Proc(std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `spop-conform`, built beside this package's binaries.
fn spop_conform() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_BIN_EXE_set_var"));
    let bin = dir.with_file_name("spop-conform");
    assert!(
        bin.exists(),
        "{} is missing: build the workspace with --all-features \
         (`cargo test --workspace --all-features`, as .ci/test does)",
        bin.display()
    );
    bin
}

#[test]
fn the_example_agent_passes_every_conformance_case() {
    let conform = spop_conform();
    let port = haproxy::free_port();
    let _agent = Proc(
        Command::new(env!("CARGO_BIN_EXE_set_var"))
            .arg(format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "set_var does not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = Command::new(conform)
        .args(["--agent", &format!("127.0.0.1:{port}")])
        .args(["--message", "check-client-ip", "--arg", "ip=ipv4:127.0.0.1"])
        .args(["--timing-ms", "300", "--idle-ms", "500", "--json"])
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let failed: Vec<&Value> = report["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["result"] == "fail")
        .collect();
    assert!(failed.is_empty(), "failed cases: {failed:#?}");
    let score = &report["score"];
    assert!(score["passed"].as_u64().unwrap() >= 50, "{score}");
    assert_eq!(score["failed"], 0, "{score}");
    assert!(report["agent_unreachable_after"].is_null(), "{report}");
}
