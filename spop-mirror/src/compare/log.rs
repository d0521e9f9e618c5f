//! A bounded, sampled NDJSON log of differences.
//!
//! One JSON object per line, for each [`Event::Compared`] that has
//! differences, sampled and capped per second:
//!
//! ```text
//! {"ts":"2026-11-28T06:00:00.123Z","id":"..","request":"GET /x","candidate":"name",
//!  "differences":[{"field":"json:$.a","production":"1","candidate":"2"}],"noise":["header:x"],
//!  "truncated":false,"json_fallback":false,"omitted":0,"production_ms":1.2,"candidate_ms":3.4}
//! ```
//!
//! Values come from the wire: they are lossy UTF-8 already ([`Difference`]
//! values are `String`s) and are escaped by serde_json, so a line never
//! breaks. To a file, the log is size-capped: when a line would take the file
//! past [`LogSettings::max_bytes`], `file` becomes `file.1` (`file.1` becomes
//! `file.2`, and so on up to [`LogSettings::keep`]; the oldest is removed)
//! and a new `file` is started.
//!
//! [`Difference`]: super::Difference

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::store::Event;

/// Where and how much to log.
#[derive(Debug, Clone, PartialEq)]
pub struct LogSettings {
    /// The log file; `None` for stdout (no size cap then).
    pub path: Option<PathBuf>,
    /// The file's size cap in bytes; 0 for no cap. A line longer than the
    /// cap is not written.
    pub max_bytes: u64,
    /// Rotated files kept beside the log (`file.1` is the newest); 0 keeps
    /// none: the file is started anew when full.
    pub keep: usize,
    /// The share, 0 to 1, of differing comparisons logged (drawn at random
    /// for each).
    pub sample: f64,
    /// Lines written per second at most (by the wall clock second of `now`);
    /// 0 for no cap.
    pub per_second: u32,
}

/// The NDJSON writer. Owned by one task: no lock inside.
#[derive(Debug)]
pub struct DiffLog {
    settings: LogSettings,
    out: Output,
    /// Bytes in the current file.
    size: u64,
    /// The wall-clock second of the last line, and lines written in it.
    second: u64,
    in_second: u32,
    /// splitmix64 state for sampling.
    rng: u64,
}

#[derive(Debug)]
enum Output {
    Stdout,
    File(File),
}

#[derive(Serialize)]
struct Line<'a> {
    ts: String,
    id: std::borrow::Cow<'a, str>,
    request: &'a str,
    candidate: &'a str,
    differences: Vec<LineDifference<'a>>,
    noise: Vec<String>,
    truncated: bool,
    json_fallback: bool,
    omitted: usize,
    production_ms: f64,
    candidate_ms: f64,
}

#[derive(Serialize)]
struct LineDifference<'a> {
    field: String,
    production: &'a str,
    candidate: &'a str,
}

/// `path.N`.
fn numbered(path: &Path, n: usize) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

fn open_append(path: &Path) -> io::Result<(File, u64)> {
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    let size = file.metadata()?.len();
    Ok((file, size))
}

/// RFC 3339 in UTC with milliseconds, e.g. `2026-11-28T06:00:00.123Z`.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

impl DiffLog {
    /// Opens the log: appends to the file (created if need be), or writes
    /// to stdout. The sampling generator is seeded from the clock; see
    /// [`DiffLog::seed`].
    ///
    /// # Errors
    ///
    /// The file cannot be opened for appending.
    pub fn open(s: LogSettings) -> io::Result<Self> {
        let (out, size) = match &s.path {
            Some(p) => {
                let (f, size) = open_append(p)?;
                (Output::File(f), size)
            }
            None => (Output::Stdout, 0),
        };
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            ^ u64::from(std::process::id()).rotate_left(32);
        Ok(Self {
            settings: s,
            out,
            size,
            second: 0,
            in_second: 0,
            rng: seed,
        })
    }

    /// Seeds the sampling generator, for reproducible sampling.
    pub fn seed(&mut self, seed: u64) {
        self.rng = seed;
    }

    /// The settings.
    pub fn settings(&self) -> &LogSettings {
        &self.settings
    }

    /// A uniform draw in [0, 1) (splitmix64).
    fn draw(&mut self) -> f64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    fn sampled(&mut self) -> bool {
        let p = self.settings.sample;
        if p >= 1.0 {
            return true;
        }
        // Also false for NaN.
        if p.is_nan() || p <= 0.0 {
            return false;
        }
        self.draw() < p
    }

    /// Writes the event if it is an [`Event::Compared`] with differences,
    /// sampled in, and within the per-second cap. Returns whether a line was
    /// written.
    ///
    /// # Errors
    ///
    /// Writing, or rotating the file, failed. After a failed rotation the
    /// log goes on appending to the file it has.
    pub fn write(&mut self, e: &Event, now: SystemTime) -> io::Result<bool> {
        let Event::Compared {
            id,
            request,
            candidate,
            report,
            production_latency,
            candidate_latency,
        } = e
        else {
            return Ok(false);
        };
        if report.is_equal() || !self.sampled() {
            return Ok(false);
        }
        let second = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        if second != self.second {
            self.second = second;
            self.in_second = 0;
        }
        if self.settings.per_second != 0 && self.in_second >= self.settings.per_second {
            return Ok(false);
        }
        let line = Line {
            ts: rfc3339(now),
            id: String::from_utf8_lossy(id),
            request,
            candidate,
            differences: report
                .differences
                .iter()
                .map(|d| LineDifference {
                    field: d.field.label(),
                    production: &d.production,
                    candidate: &d.candidate,
                })
                .collect(),
            noise: report.noise.iter().map(|f| f.label()).collect(),
            truncated: report.truncated,
            json_fallback: report.json_fallback,
            omitted: report.omitted,
            production_ms: production_latency.as_secs_f64() * 1000.0,
            candidate_ms: candidate_latency.as_secs_f64() * 1000.0,
        };
        let mut buf = serde_json::to_vec(&line).map_err(io::Error::other)?;
        buf.push(b'\n');
        let len = buf.len() as u64;
        match &mut self.out {
            Output::Stdout => {
                io::stdout().lock().write_all(&buf)?;
            }
            Output::File(_) => {
                let max = self.settings.max_bytes;
                if max != 0 {
                    if len > max {
                        return Ok(false);
                    }
                    if self.size.saturating_add(len) > max {
                        self.rotate()?;
                    }
                }
                if let Output::File(f) = &mut self.out {
                    f.write_all(&buf)?;
                }
                self.size = self.size.saturating_add(len);
            }
        }
        self.in_second = self.in_second.saturating_add(1);
        Ok(true)
    }

    /// `file` -> `file.1` -> ... -> `file.keep` (dropped), then a new `file`.
    fn rotate(&mut self) -> io::Result<()> {
        let Some(path) = self.settings.path.clone() else {
            return Ok(());
        };
        let keep = self.settings.keep;
        if keep == 0 {
            let f = OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .open(&path)?;
            self.out = Output::File(f);
            self.size = 0;
            return Ok(());
        }
        match fs::remove_file(numbered(&path, keep)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        for n in (1..keep).rev() {
            match fs::rename(numbered(&path, n), numbered(&path, n + 1)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        fs::rename(&path, numbered(&path, 1))?;
        let (f, size) = open_append(&path)?;
        self.out = Output::File(f);
        self.size = size;
        Ok(())
    }
}
