//! The built binary and its configuration file: SIGHUP reloads it, a bad
//! file is refused with one clear log line while the old one stays in
//! force, `tls_insecure` warns at start-up, and a bad file at start-up is
//! an error exit naming the problem.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{free_port, scrape};

struct Proc(Child, PathBuf);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

impl Proc {
    fn log(&self) -> String {
        std::fs::read_to_string(self.1.join("stderr")).unwrap_or_default()
    }
    fn hup(&self) {
        let ok = Command::new("kill")
            .args(["-HUP", &self.0.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }
}

fn dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "spop-mirror-bin-{tag}-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn start(dir: PathBuf, config: &str) -> (Proc, u16) {
    let (spop, metrics) = (free_port(), free_port());
    let file = dir.join("m.toml");
    std::fs::write(&file, config).unwrap();
    let stderr = std::fs::File::create(dir.join("stderr")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_spop-mirror"))
        .args([
            "--listen",
            &format!("127.0.0.1:{spop}"),
            "--metrics",
            &format!("127.0.0.1:{metrics}"),
            "--config",
            file.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let p = Proc(child, dir);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", metrics)).is_err() {
        assert!(
            Instant::now() < deadline,
            "spop-mirror did not start:\n{}",
            p.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (p, metrics)
}

async fn wait_for(port: u16, series: &str, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = scrape(port, series).await;
        if v == want {
            return;
        }
        assert!(Instant::now() < deadline, "{series} = {v}, want {want}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn sighup_reloads_and_a_bad_file_is_refused() {
    let d = dir("hup");
    let file = d.join("m.toml");
    let (p, metrics) = start(
        d,
        "[[target]]\nurl = \"https://127.0.0.1:9\"\nname = \"a\"\ntls_insecure = true\n",
    );
    assert!(
        p.log().contains("tls_insecure"),
        "no start-up warning:\n{}",
        p.log()
    );
    assert_eq!(scrape(metrics, "spop_mirror_config_generation").await, 1.0);
    let loaded = scrape(metrics, "spop_mirror_config_loaded_timestamp_seconds").await;
    assert!(loaded > 1.7e9, "{loaded}");
    scrape(metrics, "spop_mirror_target_up{target=\"a\"}").await;

    std::fs::write(
        &file,
        "message = \"other\"\n[[target]]\nurl = \"http://127.0.0.1:9\"\nname = \"b\"\nsample = 5\n",
    )
    .unwrap();
    p.hup();
    wait_for(metrics, "spop_mirror_config_generation", 2.0).await;
    let log = p.log();
    assert!(
        log.lines()
            .any(|l| l.contains("only at restart") && l.contains("message")),
        "{log}"
    );
    scrape(metrics, "spop_mirror_target_up{target=\"b\"}").await;
    let text = String::from_utf8(
        support::http_request(
            metrics,
            b"GET /metrics HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n",
        )
        .body,
    )
    .unwrap();
    assert!(
        !text.contains("target=\"a\""),
        "a removed target's series stay"
    );

    std::fs::write(
        &file,
        "[[target]]\nurl = \"http://127.0.0.1:9\"\nsampel = 5\n",
    )
    .unwrap();
    p.hup();
    wait_for(metrics, "spop_mirror_config_reload_failures_total", 1.0).await;
    assert_eq!(scrape(metrics, "spop_mirror_config_generation").await, 2.0);
    let log = p.log();
    let refused = log
        .lines()
        .find(|l| l.contains("configuration refused"))
        .unwrap_or_else(|| panic!("no refusal line:\n{log}"));
    assert!(refused.contains("sampel"), "{refused}");
}

#[test]
fn a_bad_file_at_start_up_is_an_error_exit() {
    let d = dir("bad");
    let file = d.join("m.toml");
    std::fs::write(
        &file,
        "[[target]]\nurl = \"http://x\"\nrate_limit = \"fast\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_spop-mirror"))
        .args(["--config", file.to_str().unwrap()])
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&d);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("rate_limit"), "{err}");
}
