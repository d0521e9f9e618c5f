//! The HAProxy installer says which line it could not get and why, and the
//! tests of that line then fail with that reason (never skip). Runs the real
//! `.ci/install-haproxy.sh` against a Debian mirror on a closed loopback port.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

#[path = "support/haproxy.rs"]
mod haproxy;

use std::path::Path;
use std::process::Command;

#[test]
fn an_unreachable_mirror_is_reported_per_line_and_fails_that_lines_tests() {
    let dir = std::env::temp_dir().join(format!("spop-installer-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let env_file = dir.join("paths.env");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.ci/install-haproxy.sh");
    let out = Command::new("bash")
        .arg(&script)
        .args(["3.4", "9.9"])
        .env("SPOP_HAPROXY_CACHE", dir.join("cache"))
        .env("SPOP_HAPROXY_ENV_FILE", &env_file)
        // Nothing listens on port 1: apt-get fails at once.
        .env("SPOP_DEBIAN_MIRROR", "http://127.0.0.1:1/debian")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "no line could be installed: {stderr}"
    );
    assert!(
        stderr.contains("3.4: NOT INSTALLED: cannot read Debian experimental's package lists from http://127.0.0.1:1/debian"),
        "{stderr}"
    );
    assert!(
        stderr.contains("9.9: NOT INSTALLED: unknown line 9.9"),
        "{stderr}"
    );
    let written = std::fs::read_to_string(&env_file).unwrap();
    assert!(
        written.contains("SPOP_HAPROXY_34_ERROR='HAProxy 3.4 (Debian experimental): cannot read"),
        "{written}"
    );
    assert!(!written.contains("SPOP_HAPROXY_34="), "{written}");

    // A test of that line now fails with the installer's words.
    std::env::set_var("SPOP_HAPROXY_ENV_FILE", &env_file);
    std::env::remove_var("SPOP_HAPROXY_34");
    let panic = std::panic::catch_unwind(|| haproxy::binary(haproxy::Version::V34)).unwrap_err();
    let msg = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        msg.starts_with(
            "HAProxy 3.4 is not installed: HAProxy 3.4 (Debian experimental): cannot read"
        ),
        "{msg}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
