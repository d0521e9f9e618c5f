//! Live reload: SIGHUP, and (with `--watch-config`) a change of the file's
//! modification time or size, checked every second, read the configuration
//! again with the same command line.
//!
//! A configuration that does not load (bad TOML, unknown setting, bad
//! value, unreadable TLS file, no target) is refused with one log line
//! naming the problem and counted in
//! `spop_mirror_config_reload_failures_total`; the one in force stays. One
//! that loads becomes the next generation ([`crate::mirror::Mirror::reload`]):
//! SPOP connections are never touched.
//!
//! What a reload changes: the targets and every per-target setting (their
//! comparison roles included), the loop marker, `send_truncated`,
//! `max_queued_bytes`, and the comparison's share and rules (`compare`,
//! `compare_ignore_headers`, `compare_ignore_paths`, `compare_json`). The
//! listeners, metrics endpoint, threads, SPOP message and argument names,
//! frame size, log settings and the comparison's store and log settings are
//! read at start-up only. Entries being compared when roles change still
//! complete or expire: the store knows targets by name.
//!
//! # The interface for the dispatch side
//!
//! The dispatch side needs only [`crate::policy::TargetSet`] (an immutable
//! snapshot: `generation`, `targets: Vec<Arc<Policy>>` in order, the loop
//! marker and global limits) and a place to swap it: today
//! `Mirror::reload(TargetSet)`, which keeps a target's queue and connections
//! when [`crate::policy::Policy::same_connections`] says its connection
//! settings did not change, swaps its `Arc<Policy>` (an `ArcSwap`) in place,
//! starts new targets and retires removed ones (their queue drains).

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use crate::config::Config;
use crate::mirror::Mirror;
use crate::policy::TargetSet;

/// Loads the configuration again from `args` and puts it in force as
/// generation `generation`.
///
/// # Errors
///
/// The configuration was refused (the old one stays in force); the metrics
/// count it.
pub fn reload(
    args: &[OsString],
    mirror: &Mirror,
    generation: u64,
    started: &[(&'static str, String)],
) -> Result<(), String> {
    let outcome = Config::load(args.iter().cloned())
        .map_err(|e| e.to_string())
        .and_then(|cfg| TargetSet::build(&cfg, generation).map(|set| (cfg, set)));
    match outcome {
        Ok((cfg, set)) => {
            let changed: Vec<&str> = cfg
                .restart_only()
                .into_iter()
                .zip(started)
                .filter(|(now, then)| now.1 != then.1)
                .map(|(now, _)| now.0)
                .collect();
            if !changed.is_empty() {
                tracing::warn!(settings = ?changed, "these settings changed but take effect only at restart");
            }
            let names: Vec<String> = set.targets.iter().map(|t| t.name.clone()).collect();
            mirror.reload(set);
            tracing::info!(generation, targets = ?names, "configuration reloaded");
            Ok(())
        }
        Err(e) => {
            mirror.metrics().config_reload_failed();
            let e = e.trim().replace('\n', " ");
            tracing::error!(error = %e, "configuration refused; the previous one stays in force");
            Err(e)
        }
    }
}

/// The file's modification time and size.
fn stamp(path: &PathBuf) -> Option<(SystemTime, u64)> {
    std::fs::metadata(path)
        .ok()
        .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()))
}

/// Reloads on SIGHUP, and on file changes when `watch` (every `every`),
/// until the task is dropped.
pub async fn run(
    args: Vec<OsString>,
    path: Option<PathBuf>,
    watch: bool,
    every: Duration,
    mirror: Mirror,
    started: Vec<(&'static str, String)>,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP");
            None
        }
    };
    let mut generation = mirror.target_set().generation;
    let mut last = path.as_ref().and_then(stamp);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            Some(()) = async {
                match hup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                tracing::info!("SIGHUP: reading the configuration again");
            }
            _ = tick.tick(), if watch && path.is_some() => {
                let now = path.as_ref().and_then(stamp);
                if now == last {
                    continue;
                }
                last = now;
                tracing::info!("configuration file changed: reading it again");
            }
        }
        if path.is_none() {
            tracing::warn!("no --config file: nothing to reload");
            continue;
        }
        if reload(&args, &mirror, generation + 1, &started).is_ok() {
            generation += 1;
        }
    }
}
