//! Every example HAProxy config (`examples/haproxy/*.cfg`, as shipped, with
//! its SPOE file) passes `haproxy -c` on each HAProxy line without a warning,
//! and every agent backend in it carries the settings that keep a dead agent
//! from stalling production (see the comments in `examples/haproxy/mirror.cfg`
//! and `spop-mirror/tests/failover.rs`).
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

#[path = "../../spop/tests/support/haproxy.rs"]
mod haproxy;

use std::path::{Path, PathBuf};
use std::process::Command;

use haproxy::Version;

/// The repository root: the example configs name their SPOE files relative
/// to it (`examples/haproxy/mirror-spoe.conf`).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn example_configs() -> Vec<PathBuf> {
    let mut cfgs: Vec<PathBuf> = std::fs::read_dir(root().join("examples/haproxy"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cfg"))
        .collect();
    cfgs.sort();
    assert!(cfgs.len() >= 3, "example configs missing: {cfgs:?}");
    cfgs
}

fn configs_pass_check(version: Version) {
    let bin = haproxy::binary(version);
    for cfg in example_configs() {
        let out = Command::new(&bin)
            .arg("-c")
            .arg("-f")
            .arg(&cfg)
            .current_dir(root())
            .output()
            .expect("run haproxy -c");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "HAProxy {} rejects {}:\n{text}",
            version.line(),
            cfg.display()
        );
        assert!(
            !text.contains("[WARNING]") && !text.contains("[ALERT]"),
            "HAProxy {} warns about {}:\n{text}",
            version.line(),
            cfg.display()
        );
    }
}

per_version!(example_configs_pass_haproxy_check, configs_pass_check);

/// The sections (header line, then its lines, comments dropped) with
/// `option spop-check`: the agent backends.
fn agent_backends(cfg: &str) -> Vec<Vec<String>> {
    let mut sections: Vec<Vec<String>> = Vec::new();
    for line in cfg.lines() {
        let code = line.split('#').next().unwrap_or("").trim_end();
        if code.trim().is_empty() {
            continue;
        }
        if !code.starts_with(char::is_whitespace) || sections.is_empty() {
            sections.push(Vec::new());
        }
        sections.last_mut().unwrap().push(code.trim().to_owned());
    }
    sections.retain(|s| s.iter().any(|l| l == "option spop-check"));
    sections
}

#[test]
fn agent_backends_protect_production() {
    for cfg in example_configs() {
        let text = std::fs::read_to_string(&cfg).unwrap();
        let backends = agent_backends(&text);
        assert!(!backends.is_empty(), "{}: no agent backend", cfg.display());
        for section in backends {
            let name = &section[0];
            assert!(
                section.iter().any(|l| l == "retries 0"),
                "{}: {name} lacks `retries 0`",
                cfg.display()
            );
            let servers: Vec<&String> = section
                .iter()
                .filter(|l| l.starts_with("server "))
                .collect();
            assert!(
                !servers.is_empty(),
                "{}: {name} has no server",
                cfg.display()
            );
            for server in servers {
                for want in [
                    "check",
                    "inter 500ms",
                    "fall 1",
                    "rise 2",
                    "observe layer4",
                    "error-limit 1",
                    "on-error mark-down",
                ] {
                    assert!(
                        format!("{server} ").contains(&format!(" {want} ")),
                        "{}: {name}: `{server}` lacks `{want}`",
                        cfg.display()
                    );
                }
            }
        }
    }
}

/// Every SPOE message of the example SPOE files fires only while an agent of
/// its `use-backend` is UP (`if { nbsrv(BACKEND) gt 0 }`): HAProxy 2.6 makes
/// requests wait for a dead agent otherwise (spop-mirror/tests/failover.rs).
#[test]
fn spoe_events_need_an_agent_up() {
    for cfg in example_configs() {
        let text = std::fs::read_to_string(&cfg).unwrap();
        let spoe_files: Vec<&str> = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("filter spoe "))
            .filter_map(|l| l.split_once(" config ").map(|(_, f)| f.trim()))
            .collect();
        assert!(!spoe_files.is_empty(), "{}: no SPOE filter", cfg.display());
        for file in spoe_files {
            let spoe = std::fs::read_to_string(root().join(file)).unwrap();
            let backend = spoe
                .lines()
                .find_map(|l| l.trim().strip_prefix("use-backend "))
                .unwrap_or_else(|| panic!("{file}: no use-backend"))
                .trim();
            let events: Vec<&str> = spoe
                .lines()
                .map(str::trim)
                .filter(|l| l.starts_with("event "))
                .collect();
            assert!(!events.is_empty(), "{file}: no event");
            for event in events {
                assert!(
                    event.ends_with(&format!("if {{ nbsrv({backend}) gt 0 }}")),
                    "{file}: `{event}` fires with no agent UP"
                );
            }
        }
    }
}
