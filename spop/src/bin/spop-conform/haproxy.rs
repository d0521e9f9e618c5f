//! `--haproxy PATH`: the agent behind a real HAProxy. A frontend on a loopback
//! port sends the user's message with `http-request send-spoe-group`, then
//! answers with the SPOE error variable, the processing time HAProxy measured
//! (`option set-process-time`: set once the agent's ACK arrived) and the
//! variables the agent set; a few requests must come back 200 with no SPOE
//! error, a processing time, and those variables.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use haproxy_spop::{Action, FrameBody, Notify, VarScope};

use crate::wire::{self, Conn, Got, Hello};

fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// `name=TYPE:VALUE` as a HAProxy sample expression.
fn sample(spec: &str) -> Option<String> {
    let (name, rest) = spec.split_once('=')?;
    let (ty, value) = rest.split_once(':').unwrap_or((rest, ""));
    let expr = match ty {
        "bool" => format!("bool({})", u8::from(matches!(value, "1" | "true"))),
        "int32" | "uint32" | "int64" | "int" | "uint64" => format!("int({value})"),
        "ipv4" => format!("ipv4({value})"),
        "ipv6" => format!("ipv6({value})"),
        "str" | "string" => format!("str({value})"),
        // HAProxy refuses `bin()`: an empty binary goes as an empty string.
        "bin" | "binary" if value.is_empty() => "str()".to_owned(),
        "bin" | "binary" => format!("bin({value})"),
        _ => return None,
    };
    Some(format!("{name}={expr}"))
}

/// The transaction variables the agent sets for the message, learnt over a direct connection.
fn agent_vars(addr: SocketAddr, message: &Notify) -> Result<Vec<String>, String> {
    let t = Duration::from_secs(2);
    let mut c = Conn::connect(addr, t).map_err(|e| e.to_string())?;
    c.send(&Hello::standard().frame())
        .map_err(|e| e.to_string())?;
    let _ = c.recv(t);
    c.send(&wire::notify(1, 1, message))
        .map_err(|e| e.to_string())?;
    match c.recv(t) {
        Got::Frame(f, _) => match f.body {
            FrameBody::Ack(a) => Ok(a
                .actions
                .iter()
                .filter_map(|act| match act {
                    Action::SetVar { scope, name, .. } if *scope == VarScope::TRANSACTION => {
                        Some(String::from_utf8_lossy(name).into_owned())
                    }
                    _ => None,
                })
                .collect()),
            _ => Err(format!("answered {}", wire::describe_frame(&f))),
        },
        other => Err(other.describe()),
    }
}

fn get(port: u16) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    s.write_all(b"GET /conform HTTP/1.1\r\nhost: conform\r\nconnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| e.to_string())?;
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("").trim().to_owned();
    Ok((status, body))
}

/// Runs the check; `Ok` carries a note, `Err` the reason of the failure.
pub(crate) fn run(
    haproxy: &Path,
    agent: SocketAddr,
    message: &str,
    args: &[String],
) -> Result<String, String> {
    let mut b = Notify::builder().message(message);
    for a in args {
        if let Ok((n, v)) = crate::parse_arg(a) {
            b = b.arg(n, v);
        }
    }
    let notify = b.build().map_err(|e| e.to_string())?;
    let vars = agent_vars(agent, &notify)?;
    let port = free_port()?;
    let dir = std::env::temp_dir().join(format!("spop-conform-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let spoe_path = dir.join("spoe.conf");
    let cfg_path = dir.join("haproxy.cfg");
    let sample_args: Vec<String> = args.iter().filter_map(|a| sample(a)).collect();
    let args_line = if sample_args.is_empty() {
        String::new()
    } else {
        format!("    args {}\n", sample_args.join(" "))
    };
    let spoe = format!(
        "[conform]\nspoe-agent conform-agent\n    groups conform-grp\n    option var-prefix conform\n    option set-on-error error\n    option set-process-time ptime\n    timeout hello 2s\n    timeout idle 30s\n    timeout processing 2s\n    use-backend conform-agents\n\nspoe-group conform-grp\n    messages {message}\n\nspoe-message {message}\n{args_line}"
    );
    let shown: String = vars
        .iter()
        .map(|v| format!(" {v}=%[var(txn.conform.{v})]"))
        .collect();
    let cfg = format!(
        "global\n    nbthread 1\n\ndefaults\n    mode http\n    timeout connect 5s\n    timeout client 10s\n    timeout server 10s\n\nfrontend www\n    bind 127.0.0.1:{port}\n    filter spoe engine conform config {spoe}\n    http-request send-spoe-group conform conform-grp\n    http-request return status 200 content-type text/plain lf-string \"error=%[var(txn.conform.error)] ptime=%[var(txn.conform.ptime)]{shown}\"\n\nbackend conform-agents\n.if version_atleast(3.1)\n    mode spop\n.else\n    mode tcp\n.endif\n    timeout connect 5s\n    timeout server 10s\n    server agent1 {agent}\n",
        spoe = spoe_path.display()
    );
    std::fs::write(&spoe_path, spoe).map_err(|e| e.to_string())?;
    std::fs::write(&cfg_path, &cfg).map_err(|e| e.to_string())?;
    let version = Command::new(haproxy)
        .arg("-v")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_owned()
        })
        .map_err(|e| format!("cannot run {}: {e}", haproxy.display()))?;
    let log = std::fs::File::create(dir.join("haproxy.log")).map_err(|e| e.to_string())?;
    let mut child = Command::new(haproxy)
        .arg("-db")
        .arg("-f")
        .arg(&cfg_path)
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", haproxy.display()))?;
    let result = (|| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
                let log = std::fs::read_to_string(dir.join("haproxy.log")).unwrap_or_default();
                return Err(format!("HAProxy did not start: {}", log.trim()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut bodies = Vec::new();
        for _ in 0..5 {
            let (status, body) = get(port)?;
            if status != 200 {
                return Err(format!("HTTP {status}: {body}"));
            }
            if !body.starts_with("error= ") {
                return Err(format!(
                    "HAProxy's SPOE reports an error (txn.conform.error, see HAProxy's SPOE error codes): {body}"
                ));
            }
            if body.contains(" ptime= ") || body.ends_with(" ptime=") {
                return Err(format!(
                    "HAProxy measured no processing time (txn.conform.ptime is empty): the message did not make a round trip: {body}"
                ));
            }
            if let Some(missing) = vars
                .iter()
                .find(|v| body.contains(&format!(" {v}= ")) || body.ends_with(&format!(" {v}=")))
            {
                return Err(format!(
                    "the agent's variable txn.conform.{missing} did not reach HAProxy: {body}"
                ));
            }
            bodies.push(body);
        }
        Ok(format!(
            "{version}: 5 requests, 200, no SPOE error, a processing time measured; {}",
            bodies.first().cloned().unwrap_or_default()
        ))
    })();
    let _ = child.kill();
    let _ = child.wait();
    if result.is_ok() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}
