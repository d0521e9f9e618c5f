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
///
/// A file removed from under the log (by hand or by another rotation tool)
/// is started anew at the next rotation; lines written before that go to
/// the removed file.
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
        // A file removed from under us is simply started anew.
        match fs::rename(&path, numbered(&path, 1)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let (f, size) = open_append(&path)?;
        self.out = Output::File(f);
        self.size = size;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use bytes::Bytes;
    use serde_json::{json, Value};

    use super::super::{Difference, Field, Report};
    use super::*;

    /// A fresh directory under the system's temporary directory.
    fn dir(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("spop-compare-log-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn settings(path: Option<PathBuf>) -> LogSettings {
        LogSettings {
            path,
            max_bytes: 0,
            keep: 3,
            sample: 1.0,
            per_second: 0,
        }
    }

    fn event(differences: Vec<Difference>) -> Event {
        Event::Compared {
            id: Bytes::from_static(b"id-\xff1"),
            request: "GET /x?a=\"b\"".into(),
            candidate: Arc::from("cand"),
            report: Report {
                differences,
                noise: vec![Field::Header("x-r".into()), Field::Json("$.ts".into())],
                truncated: true,
                json_fallback: false,
                omitted: 2,
            },
            production_latency: Duration::from_micros(1500),
            candidate_latency: Duration::from_millis(3),
        }
    }

    fn one() -> Event {
        event(vec![Difference {
            field: Field::Json("$.a[1]".into()),
            production: "\"line\nbreak \u{1}\"".into(),
            candidate: ABSENT_FOR_TEST.into(),
        }])
    }

    const ABSENT_FOR_TEST: &str = super::super::ABSENT;

    fn at(secs: u64, millis: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis)
    }

    fn lines(path: &Path) -> Vec<Value> {
        fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(at(951_782_400, 0)), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(at(1_764_309_600, 123)), "2025-11-28T06:00:00.123Z");
        assert_eq!(rfc3339(at(1_709_168_461, 9)), "2024-02-29T01:01:01.009Z");
        assert_eq!(rfc3339(at(4_102_444_799, 999)), "2099-12-31T23:59:59.999Z");
    }

    #[test]
    fn one_json_object_per_line() {
        let d = dir("line");
        let path = d.join("diff.log");
        let mut log = DiffLog::open(settings(Some(path.clone()))).unwrap();
        assert!(log.write(&one(), at(1_764_309_600, 123)).unwrap());
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text.matches('\n').count(), 1, "{text}");
        assert_eq!(
            lines(&path),
            vec![json!({
                "ts": "2025-11-28T06:00:00.123Z",
                "id": "id-\u{fffd}1",
                "request": "GET /x?a=\"b\"",
                "candidate": "cand",
                "differences": [{"field": "json:$.a[1]", "production": "\"line\nbreak \u{1}\"", "candidate": "(absent)"}],
                "noise": ["header:x-r", "json:$.ts"],
                "truncated": true,
                "json_fallback": false,
                "omitted": 2,
                "production_ms": 1.5,
                "candidate_ms": 3.0,
            })]
        );
        // Appends to an existing file.
        let mut log = DiffLog::open(settings(Some(path.clone()))).unwrap();
        assert!(log.write(&one(), at(1_764_309_600, 123)).unwrap());
        assert_eq!(lines(&path).len(), 2);
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn only_differing_comparisons_are_written() {
        let d = dir("only");
        let path = d.join("diff.log");
        let mut log = DiffLog::open(settings(Some(path.clone()))).unwrap();
        let now = at(1, 0);
        let mut equal = event(vec![]);
        if let Event::Compared { report, .. } = &mut equal {
            report.omitted = 0;
        }
        assert!(!log.write(&equal, now).unwrap());
        assert!(!log.write(&Event::Repeated, now).unwrap());
        assert!(!log.write(&Event::Evicted, now).unwrap());
        assert_eq!(fs::read_to_string(&path).unwrap(), "");
        // Only omitted differences (max_differences 0): written.
        let mut e = event(vec![]);
        if let Event::Compared { report, .. } = &mut e {
            report.omitted = 3;
        }
        assert!(log.write(&e, now).unwrap());
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn rotation_keeps_files_under_the_cap() {
        let d = dir("rotate");
        let path = d.join("diff.log");
        let line_len = {
            let p = d.join("probe.log");
            let mut log = DiffLog::open(settings(Some(p.clone()))).unwrap();
            log.write(&one(), at(5, 0)).unwrap();
            fs::metadata(&p).unwrap().len()
        };
        let max = 1000;
        let per_file = max / line_len;
        assert!(per_file >= 2, "{line_len}");
        let mut s = settings(Some(path.clone()));
        s.max_bytes = max;
        s.keep = 2;
        let mut log = DiffLog::open(s).unwrap();
        let writes = 20;
        for _ in 0..writes {
            assert!(log.write(&one(), at(5, 0)).unwrap());
        }
        let size = |p: &Path| fs::metadata(p).unwrap().len();
        let current = (writes - 1) % per_file + 1;
        assert_eq!(size(&path), current * line_len);
        assert_eq!(size(&numbered(&path, 1)), per_file * line_len);
        assert_eq!(size(&numbered(&path, 2)), per_file * line_len);
        assert!(!numbered(&path, 3).exists());
        for p in [path.clone(), numbered(&path, 1), numbered(&path, 2)] {
            assert!(size(&p) <= max);
        }
        // A line longer than the cap is not written.
        let mut s = settings(Some(d.join("tiny.log")));
        s.max_bytes = line_len - 1;
        let mut log = DiffLog::open(s).unwrap();
        assert!(!log.write(&one(), at(5, 0)).unwrap());
        assert_eq!(size(&d.join("tiny.log")), 0);
        // keep = 0: the file starts anew.
        let mut s = settings(Some(d.join("nokeep.log")));
        s.max_bytes = max;
        s.keep = 0;
        let mut log = DiffLog::open(s).unwrap();
        for _ in 0..writes {
            assert!(log.write(&one(), at(5, 0)).unwrap());
        }
        assert_eq!(size(&d.join("nokeep.log")), current * line_len);
        assert!(!numbered(&d.join("nokeep.log"), 1).exists());
        // The file removed from under the log: rotation starts a new one.
        fs::remove_file(&path).unwrap();
        let mut s = settings(Some(path.clone()));
        s.max_bytes = max;
        let mut log2 = DiffLog::open(s).unwrap();
        fs::remove_file(&path).unwrap();
        for _ in 0..per_file + 1 {
            assert!(log2.write(&one(), at(5, 0)).unwrap());
        }
        assert_eq!(size(&path), line_len);
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn sampling() {
        let d = dir("sample");
        let count = |sample: f64, seed: u64| {
            let mut s = settings(Some(d.join(format!("s-{sample}-{seed}.log"))));
            s.sample = sample;
            let mut log = DiffLog::open(s).unwrap();
            log.seed(seed);
            (0..1000)
                .filter(|_| log.write(&one(), at(7, 0)).unwrap())
                .count()
        };
        assert_eq!(count(1.0, 1), 1000);
        assert_eq!(count(0.0, 1), 0);
        assert_eq!(count(f64::NAN, 1), 0);
        let a = count(0.3, 42);
        assert!((240..=360).contains(&a), "{a}");
        assert_eq!(count(0.3, 42), a);
        let b = count(0.3, 43);
        assert!((240..=360).contains(&b), "{b}");
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn per_second_cap() {
        let d = dir("cap");
        let path = d.join("diff.log");
        let mut s = settings(Some(path.clone()));
        s.per_second = 5;
        let mut log = DiffLog::open(s).unwrap();
        let written = |log: &mut DiffLog, secs: u64| {
            (0..10)
                .filter(|i| log.write(&one(), at(secs, i * 50)).unwrap())
                .count()
        };
        assert_eq!(written(&mut log, 100), 5);
        assert_eq!(written(&mut log, 101), 5);
        assert_eq!(written(&mut log, 101), 0);
        assert_eq!(written(&mut log, 102), 5);
        assert_eq!(lines(&path).len(), 15);
        let _ = fs::remove_dir_all(&d);
    }
}
