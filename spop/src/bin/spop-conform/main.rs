//! `spop-conform`: plays HAProxy against any SPOP agent and reports, case by
//! case, what the agent does right and wrong (h2spec for SPOP).
//!
//! ```text
//! spop-conform --agent 127.0.0.1:12345 --message check-client-ip --arg ip=ipv4:192.0.2.1
//! spop-conform --agent 127.0.0.1:12345 --json
//! spop-conform --agent 127.0.0.1:12345 --haproxy /usr/sbin/haproxy
//! ```
//!
//! Exit status: 0 if no case failed, 1 if some did, 2 if the suite could not run.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod cases;
mod haproxy;
mod wire;

use std::net::{Ipv4Addr, Ipv6Addr};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use haproxy_spop::{Notify, TypedData};
use serde_json::json;

use cases::{Ctx, Outcome};

/// `println!` that ignores a closed stdout (`spop-conform ... | head`).
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

/// Plays HAProxy against an SPOP agent and scores it, case by case.
#[derive(Debug, Parser)]
#[command(name = "spop-conform", version, about)]
struct Cli {
    /// The agent, HOST:PORT.
    #[arg(long)]
    agent: String,
    /// The message the agent expects (sent by the cases that need a "real" one).
    #[arg(long, default_value = "spop-conform")]
    message: String,
    /// An argument of that message, `name=TYPE:VALUE`; TYPE is null, bool,
    /// int32, uint32, int64 (or int), uint64, ipv4, ipv6, str, bin (hex VALUE).
    #[arg(long = "arg", value_name = "NAME=TYPE:VALUE")]
    args: Vec<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Also run the agent behind this HAProxy binary (a few HTTP requests).
    #[arg(long, value_name = "PATH")]
    haproxy: Option<std::path::PathBuf>,
    /// Run only the cases whose id contains one of these (repeatable).
    #[arg(long = "case", value_name = "SUBSTRING")]
    only: Vec<String>,
    /// Skip the cases whose id contains one of these (repeatable).
    #[arg(long, value_name = "SUBSTRING")]
    skip: Vec<String>,
    /// How long one answer of the agent may take, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    timeout_ms: u64,
    /// How long each timing case runs, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    timing_ms: u64,
    /// How long the idle case keeps a connection idle, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    idle_ms: u64,
    /// List the cases and exit.
    #[arg(long)]
    list: bool,
}

fn parse_arg(spec: &str) -> Result<(String, TypedData), String> {
    let (name, rest) = spec
        .split_once('=')
        .ok_or_else(|| format!("--arg {spec:?}: expected NAME=TYPE:VALUE"))?;
    let (ty, value) = rest.split_once(':').unwrap_or((rest, ""));
    let bad = |e: &dyn std::fmt::Display| format!("--arg {spec:?}: {e}");
    let v = match ty {
        "null" => TypedData::Null,
        "bool" => TypedData::Bool(matches!(value, "1" | "true")),
        "int32" => TypedData::Int32(value.parse().map_err(|e| bad(&e))?),
        "uint32" => TypedData::Uint32(value.parse().map_err(|e| bad(&e))?),
        "int64" | "int" => TypedData::Int64(value.parse().map_err(|e| bad(&e))?),
        "uint64" => TypedData::Uint64(value.parse().map_err(|e| bad(&e))?),
        "ipv4" => TypedData::Ipv4(value.parse::<Ipv4Addr>().map_err(|e| bad(&e))?),
        "ipv6" => TypedData::Ipv6(value.parse::<Ipv6Addr>().map_err(|e| bad(&e))?),
        "str" | "string" => TypedData::String(Bytes::from(value.to_owned())),
        "bin" | "binary" => TypedData::Binary(Bytes::from(hex(value).map_err(|e| bad(&e))?)),
        other => return Err(format!("--arg {spec:?}: unknown type {other:?}")),
    };
    Ok((name.to_owned(), v))
}

fn hex(s: &str) -> Result<Vec<u8>, String> {
    if s.len() % 2 != 0 {
        return Err("odd number of hex digits".into());
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|e| e.to_string()))
        .collect()
}

/// One case's result.
#[derive(Debug)]
struct Row {
    id: &'static str,
    group: &'static str,
    cites: &'static str,
    result: &'static str,
    detail: Option<String>,
    ms: u128,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.list {
        for c in cases::ALL {
            out!("{:<34} {:<11} {}", c.id, c.group, c.cites);
        }
        out!(
            "{:<34} {:<11} with --haproxy PATH",
            "haproxy.requests",
            "haproxy"
        );
        return ExitCode::SUCCESS;
    }
    let mut builder = Notify::builder().message(&cli.message);
    for a in &cli.args {
        match parse_arg(a) {
            Ok((n, v)) => builder = builder.arg(n, v),
            Err(e) => {
                eprintln!("spop-conform: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let message = match builder.build() {
        Ok(m) => m,
        Err(e) => {
            eprintln!("spop-conform: the message does not build: {e}");
            return ExitCode::from(2);
        }
    };
    let addr = match wire::resolve(&cli.agent) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("spop-conform: --agent {}: {e}", cli.agent);
            return ExitCode::from(2);
        }
    };
    if let Err(e) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
        eprintln!("spop-conform: cannot connect to {addr}: {e}");
        return ExitCode::from(2);
    }
    let ctx = Ctx {
        addr,
        timeout: Duration::from_millis(cli.timeout_ms),
        message,
        timing: Duration::from_millis(cli.timing_ms),
        idle: Duration::from_millis(cli.idle_ms),
        split_frames: AtomicUsize::new(0),
    };
    let selected = |id: &str| {
        (cli.only.is_empty() || cli.only.iter().any(|s| id.contains(s.as_str())))
            && !cli.skip.iter().any(|s| id.contains(s.as_str()))
    };
    let mut rows = Vec::new();
    let mut unreachable_after: Option<&str> = None;
    for case in cases::ALL.iter().filter(|c| selected(c.id)) {
        let start = Instant::now();
        let r = (case.run)(&ctx);
        let (result, detail) = match r {
            Ok(note) => ("pass", note),
            Err(Outcome::Fail(why)) => ("fail", Some(why)),
            Err(Outcome::Na(why)) => ("n/a", Some(why)),
        };
        let row = Row {
            id: case.id,
            group: case.group,
            cites: case.cites,
            result,
            detail,
            ms: start.elapsed().as_millis(),
        };
        if !cli.json {
            print_row(&row);
        }
        rows.push(row);
        // Let the agent notice closed connections before the next case.
        std::thread::sleep(Duration::from_millis(10));
        if unreachable_after.is_none()
            && std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err()
        {
            unreachable_after = Some(case.id);
            if !cli.json {
                out!(
                    "     (the agent no longer accepts connections after {}: crashed?)",
                    case.id
                );
            }
        }
    }
    if let Some(path) = &cli.haproxy {
        if selected("haproxy.requests") {
            let start = Instant::now();
            let (result, detail) = match haproxy::run(path, addr, &cli.message, &cli.args) {
                Ok(note) => ("pass", Some(note)),
                Err(why) => ("fail", Some(why)),
            };
            let row = Row {
                id: "haproxy.requests",
                group: "haproxy",
                cites: "a real HAProxy in front of the agent",
                result,
                detail,
                ms: start.elapsed().as_millis(),
            };
            if !cli.json {
                print_row(&row);
            }
            rows.push(row);
        }
    }
    let passed = rows.iter().filter(|r| r.result == "pass").count();
    let failed = rows.iter().filter(|r| r.result == "fail").count();
    let na = rows.iter().filter(|r| r.result == "n/a").count();
    let split = ctx.split_frames.load(Ordering::Relaxed);
    if cli.json {
        let cases: Vec<_> = rows
            .iter()
            .map(|r| {
                json!({"id": r.id, "group": r.group, "cites": r.cites, "result": r.result,
                       "detail": r.detail, "ms": r.ms})
            })
            .collect();
        let out = json!({
            "agent": cli.agent,
            "cases": cases,
            "score": {"passed": passed, "failed": failed, "not_applicable": na,
                      "applicable": passed + failed},
            "frames_split_across_reads": split,
            "agent_unreachable_after": unreachable_after,
        });
        out!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    } else {
        out!(
            "\nscore: {passed}/{} passed, {failed} failed, {na} not applicable ({} frames of the agent arrived split across reads)",
            passed + failed,
            split
        );
        if let Some(id) = unreachable_after {
            out!("the agent stopped accepting connections after {id}");
        }
    }
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn print_row(r: &Row) {
    let mark = match r.result {
        "pass" => "PASS",
        "fail" => "FAIL",
        _ => "N/A ",
    };
    match &r.detail {
        Some(d) => out!("{mark} {:<34} {d}   [{}]", r.id, r.cites),
        None => out!("{mark} {:<34} [{}]", r.id, r.cites),
    }
}
