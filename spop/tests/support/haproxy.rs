//! Test support: runs a real HAProxy (2.6, 3.0, 3.2 or 3.4) on loopback ports, and a
//! tiny blocking HTTP/1.1 client that sends raw bytes verbatim.
//!
//! Include it with `#[path = "support/haproxy.rs"] mod haproxy;`. The binaries
//! come from `.ci/install-haproxy.sh`, which writes their paths to
//! `target/haproxy-paths.env`; `SPOP_HAPROXY_26` (`_30`, `_32`, `_34`) override.
//! A missing HAProxy fails the test (never skips it).
#![allow(dead_code, unreachable_pub)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Which HAProxy line: the four that Debian ships and users run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// 2.6 (Debian bookworm): the classic SPOE engine, fragmentation, async.
    V26,
    /// 3.0 (Debian trixie): the last line with the classic engine.
    V30,
    /// 3.2 (Debian sid): SPOE as a multiplexer (3.1+), pipelining only.
    V32,
    /// 3.4 (Debian experimental): the current LTS line.
    V34,
}

impl Version {
    /// Every line, oldest first.
    pub const ALL: [Self; 4] = [Self::V26, Self::V30, Self::V32, Self::V34];

    /// `2.6`, `3.0`, ...
    pub fn line(self) -> &'static str {
        match self {
            Self::V26 => "2.6",
            Self::V30 => "3.0",
            Self::V32 => "3.2",
            Self::V34 => "3.4",
        }
    }

    /// The pre-3.1 SPOE engine (fragmentation, async, a NOTIFY per stream).
    pub fn classic_engine(self) -> bool {
        matches!(self, Self::V26 | Self::V30)
    }
}

fn workspace_root() -> PathBuf {
    // CARGO_MANIFEST_DIR is a member crate; the workspace root is its parent.
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The HAProxy binary for `v`: `SPOP_HAPROXY_26` (`_30`, `_32`, `_34`) from
/// the environment, else from `target/haproxy-paths.env` (or the file
/// `SPOP_HAPROXY_ENV_FILE` names), which
/// `.ci/install-haproxy.sh` writes. A line the installer could not get fails
/// the test with the installer's reason (never a skip).
pub fn binary(v: Version) -> PathBuf {
    let key = format!("SPOP_HAPROXY_{}", v.line().replace('.', ""));
    let env_path = std::env::var_os("SPOP_HAPROXY_ENV_FILE").map_or_else(
        || workspace_root().join("target/haproxy-paths.env"),
        PathBuf::from,
    );
    let env_file = std::fs::read_to_string(env_path).unwrap_or_default();
    let from_file = |key: &str| {
        env_file
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(|p| p.trim().trim_matches('\'').to_owned())
    };
    let path = std::env::var(&key).ok().or_else(|| from_file(&key));
    let Some(path) = path.map(PathBuf::from) else {
        match from_file(&format!("{key}_ERROR")) {
            Some(why) => panic!("HAProxy {} is not installed: {why}", v.line()),
            None => panic!(
                "HAProxy {} is not installed: no {key} in the environment or in \
                 target/haproxy-paths.env; run `bash .ci/install-haproxy.sh` (the README test command does)",
                v.line()
            ),
        }
    };
    assert!(
        path.exists(),
        "HAProxy {} not found at {}: run `bash .ci/install-haproxy.sh`",
        v.line(),
        path.display()
    );
    path
}

/// Defines a module `name` with one test per HAProxy line (`name::V26`,
/// `name::V30`, `name::V32`, `name::V34`), each calling `body(Version::..)`,
/// so that a failure names its line. A list picks lines:
/// `per_version!(name, body, [V26, V34])`. With `async` first the tests are
/// `#[tokio::test]`s awaiting `body`.
#[macro_export]
macro_rules! per_version {
    ($name:ident, $body:path) => {
        $crate::per_version!($name, $body, [V26, V30, V32, V34]);
    };
    ($name:ident, $body:path, [$($v:ident),+]) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[test]
                #[allow(non_snake_case)]
                fn $v() {
                    $body(Version::$v);
                }
            )+
        }
    };
    (async $name:ident, $body:path) => {
        $crate::per_version!(async $name, $body, [V26, V30, V32, V34]);
    };
    (async $name:ident, $body:path, [$($v:ident),+]) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                #[allow(non_snake_case)]
                async fn $v() {
                    $body(Version::$v).await;
                }
            )+
        }
    };
}

/// A free TCP port on 127.0.0.1, never the same twice in a process.
///
/// Taken from 20000-31999, below the kernel's ephemeral range (32768+), so
/// that an outgoing connection cannot take it between this check and the
/// server binding it (which a port from `bind(0)` allowed: a flaky "address
/// already in use"); each process starts at its own offset.
pub fn free_port() -> u16 {
    static NEXT_PORT: AtomicU32 = AtomicU32::new(0);
    let offset = std::process::id() % 600 * 20;
    for _ in 0..12_000 {
        let n = NEXT_PORT.fetch_add(1, Ordering::Relaxed);
        let port = 20_000 + (offset + n) % 12_000;
        let port = u16::try_from(port).expect("below 32000");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 20000-31999")
}

/// The `bind 127.0.0.1:PORT` ports of a config.
fn bound_ports(cfg: &str) -> Vec<u16> {
    cfg.lines()
        .filter_map(|l| l.trim().strip_prefix("bind 127.0.0.1:"))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .collect()
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A running HAProxy, killed on drop.
pub struct HaProxy {
    version: Version,
    dir: PathBuf,
    cfg_path: PathBuf,
    ports: Vec<u16>,
    child: Option<Child>,
}

impl HaProxy {
    /// Writes `cfg` (and the SPOE file, whose path replaces `{SPOE_CONF}` in
    /// `cfg`) to a fresh directory, starts HAProxy in the foreground and waits
    /// until every `bind 127.0.0.1:PORT` of the config accepts connections.
    ///
    /// Keep configs on 127.0.0.1. `nbthread 1` in `global` makes runs more
    /// repeatable on a small machine.
    pub fn start(version: Version, cfg: &str, spoe_cfg: Option<&str>) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "spop-haproxy-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut cfg = cfg.to_owned();
        if let Some(spoe) = spoe_cfg {
            let spoe_path = dir.join("spoe.conf");
            std::fs::write(&spoe_path, spoe).expect("write spoe.conf");
            cfg = cfg.replace("{SPOE_CONF}", &spoe_path.display().to_string());
        }
        let cfg_path = dir.join("haproxy.cfg");
        std::fs::write(&cfg_path, &cfg).expect("write haproxy.cfg");
        let mut haproxy = Self {
            version,
            ports: bound_ports(&cfg),
            dir,
            cfg_path,
            child: None,
        };
        haproxy.launch();
        haproxy
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("haproxy.log")
    }

    fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("log file");
        let child = Command::new(binary(self.version))
            .arg("-f")
            .arg(&self.cfg_path)
            .arg("-db")
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("start haproxy");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        for &port in &self.ports {
            while TcpStream::connect(("127.0.0.1", port)).is_err() {
                if let Some(status) = self
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten())
                {
                    panic!(
                        "HAProxy exited ({status}) before binding {port}:\n{}",
                        self.log()
                    );
                }
                assert!(
                    Instant::now() < deadline,
                    "HAProxy did not bind {port}:\n{}",
                    self.log()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// What HAProxy printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Stops HAProxy and waits until its ports are free.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for &port in &self.ports {
            while TcpStream::connect(("127.0.0.1", port)).is_ok() {
                assert!(
                    Instant::now() < deadline,
                    "port {port} still open after stop"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Starts HAProxy again with the same config and ports.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for HaProxy {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A response read by [`http_request`].
#[derive(Debug, Clone)]
pub struct RawResponse {
    /// The status code.
    pub status: u16,
    /// Header names and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body (de-chunked).
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The first value of a header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Writes `raw` to 127.0.0.1:`port` verbatim and reads one response
/// (Content-Length, chunked, or until close), within 10 seconds.
pub fn http_request(port: u16, raw: &[u8]) -> RawResponse {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok();
    stream.set_write_timeout(Some(Duration::from_secs(10))).ok();
    stream.write_all(raw).expect("write request");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).expect("read response head");
        assert!(
            n > 0,
            "connection closed before a response head: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let get = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let mut rest = buf[head_end..].to_vec();
    let mut read_more = |rest: &mut Vec<u8>| -> bool {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                rest.extend_from_slice(&chunk[..n]);
                true
            }
        }
    };
    let body = if let Some(len) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
        while rest.len() < len && read_more(&mut rest) {}
        rest.truncate(len);
        rest
    } else if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        let mut body = Vec::new();
        let mut pos = 0;
        loop {
            let line_end = loop {
                if let Some(i) = rest[pos..].windows(2).position(|w| w == b"\r\n") {
                    break pos + i;
                }
                assert!(read_more(&mut rest), "chunked body cut short");
            };
            let size_str = String::from_utf8_lossy(&rest[pos..line_end]).into_owned();
            let size = usize::from_str_radix(size_str.split(';').next().unwrap_or("").trim(), 16)
                .expect("chunk size");
            pos = line_end + 2;
            if size == 0 {
                break;
            }
            while rest.len() < pos + size + 2 {
                assert!(read_more(&mut rest), "chunk cut short");
            }
            body.extend_from_slice(&rest[pos..pos + size]);
            pos += size + 2;
        }
        body
    } else if status == 204 || status == 304 || (100..200).contains(&status) {
        Vec::new()
    } else {
        while read_more(&mut rest) {}
        rest
    };
    RawResponse {
        status,
        headers,
        body,
    }
}
