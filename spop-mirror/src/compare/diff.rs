//! [`compare`]: one candidate's answer against production's, with the
//! baseline's noise taken out.

use std::collections::{BTreeMap, HashSet};
use std::io;

use bytes::Bytes;
use serde_json::Value;
use xxhash_rust::xxh3::xxh3_64;

use super::json::{self, JsonDifference, PathPattern};
use super::{cut, Answer, Difference, Field, Report, Settings, ABSENT};
use crate::request::trim_ows;

/// Compares the candidate's answer with production's.
///
/// - **Status**: by value.
/// - **Headers**: by lowercase name, as the list of values per name in
///   order (each value trimmed of spaces and tabs), minus the names matched
///   by [`Settings::ignore_headers`]. A name on one side only differs, with
///   [`ABSENT`] on the other side; values are shown joined with `", "`.
///   `set-cookie` values are compared as `name=value` plus the attributes
///   other than `Expires` and `Max-Age`, attribute names lowercased,
///   attributes sorted, and the cookies sorted, so that only the expiry and
///   the order do not count.
/// - **Body**: when [`Settings::json`] is on and both bodies are complete
///   and parse as JSON (any JSON value), structurally ([`json::diff`]): one
///   [`Field::Json`] per differing path, values as compact JSON. Otherwise by
///   bytes, one [`Field::Body`] whose values are `xxh3:<16 hex> <n> bytes`
///   (plus ` (truncated)` for a cut body). With a cut body
///   ([`Answer::truncated`]), what arrived is compared: both cut, the common
///   prefix; one cut, the complete one differs when it is not longer than
///   the cut one's prefix (the cut one is longer than what arrived), else the
///   prefix. [`Report::truncated`] is set when production's or the
///   candidate's body is cut, and [`Report::json_fallback`] when JSON is on,
///   the bodies were not compared as JSON, and one of them looked like JSON
///   (a content-type containing `json`, or a body starting with `{` or `[`
///   after white space) — so that HTML or images under the default
///   `json = true` are not counted as fallbacks — and at least one body is
///   not empty (a 204 or a HEAD answer with a JSON content-type is no
///   fallback).
/// - **Noise**: with a baseline, the same comparison is made between
///   production and the baseline; a field in both lists is noise: it goes to
///   [`Report::noise`] and not to [`Report::differences`]. Nothing else is
///   filtered (Diffy's rule, kept that simple).
///
/// At most [`Settings::max_differences`] differences (and as many noise
/// fields) are listed, the rest counted in [`Report::omitted`]; values are
/// cut to [`Settings::value_cut`] chars ([`ABSENT`] is not a value and is
/// never cut).
pub fn compare(
    s: &Settings,
    production: &Answer,
    candidate: &Answer,
    baseline: Option<&Answer>,
) -> Report {
    let patterns = if s.json {
        json::patterns(&s.ignore_paths)
    } else {
        Vec::new()
    };
    let prod = Parsed::new(s, production);
    let cand = Parsed::new(s, candidate);
    let mut report = Report {
        truncated: production.truncated || candidate.truncated,
        ..Report::default()
    };
    let found = differences(s, &patterns, &prod, &cand, &mut report.json_fallback);
    let noise: HashSet<Field> = match baseline {
        Some(b) => {
            let base = Parsed::new(s, b);
            let mut fallback = false;
            differences(s, &patterns, &prod, &base, &mut fallback)
                .into_iter()
                .map(|d| d.field)
                .collect()
        }
        None => HashSet::new(),
    };
    for d in found {
        if noise.contains(&d.field) {
            if report.noise.len() < s.max_differences {
                report.noise.push(d.field);
            }
        } else if report.differences.len() < s.max_differences {
            report.differences.push(Difference {
                production: d.left.render(s.value_cut),
                candidate: d.right.render(s.value_cut),
                field: d.field,
            });
        } else {
            report.omitted = report.omitted.saturating_add(1);
        }
    }
    report
}

/// An answer with its body parsed as JSON when that is asked and possible.
struct Parsed<'a> {
    answer: &'a Answer,
    json: Option<Value>,
    looks_json: bool,
}

impl<'a> Parsed<'a> {
    fn new(s: &Settings, answer: &'a Answer) -> Self {
        let looks_json = s.json && looks_json(answer);
        let json = if s.json && !answer.truncated && !answer.body.is_empty() {
            serde_json::from_slice(&answer.body).ok()
        } else {
            None
        };
        Self {
            answer,
            json,
            looks_json,
        }
    }
}

/// A content-type containing `json`, or a body that starts like an object
/// or an array.
fn looks_json(a: &Answer) -> bool {
    let by_type = a.headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case(b"content-type")
            && v.windows(4).any(|w| w.eq_ignore_ascii_case(b"json"))
    });
    by_type
        || a.body
            .iter()
            .find(|b| !b.is_ascii_whitespace())
            .is_some_and(|b| *b == b'{' || *b == b'[')
}

/// A value found by the diff, rendered only when listed.
enum Shown<'a> {
    /// Not on this side: [`ABSENT`], never cut.
    Absent,
    Text(String),
    Json(Option<&'a Value>),
}

impl Shown<'_> {
    fn render(&self, max: usize) -> String {
        match self {
            Self::Absent | Self::Json(None) => ABSENT.to_owned(),
            Self::Text(t) => cut(t, max),
            Self::Json(Some(v)) => {
                // At most 4 bytes per char, plus one to see that it was cut.
                let mut w = Bounded {
                    buf: Vec::new(),
                    left: max.saturating_mul(4).saturating_add(1),
                };
                // A full buffer stops the serialiser with an error: what was
                // written so far is kept.
                let _ = serde_json::to_writer(&mut w, v);
                cut(&String::from_utf8_lossy(&w.buf), max)
            }
        }
    }
}

/// A writer that takes at most `left` bytes, then fails.
struct Bounded {
    buf: Vec<u8>,
    left: usize,
}

impl io::Write for Bounded {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        let n = data.len().min(self.left);
        self.buf
            .extend_from_slice(data.get(..n).unwrap_or_default());
        self.left -= n;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct Found<'a> {
    field: Field,
    left: Shown<'a>,
    right: Shown<'a>,
}

/// Every difference between two answers, in report order.
fn differences<'a>(
    s: &Settings,
    patterns: &[PathPattern],
    a: &'a Parsed<'a>,
    b: &'a Parsed<'a>,
    json_fallback: &mut bool,
) -> Vec<Found<'a>> {
    let mut out = Vec::new();
    if a.answer.status != b.answer.status {
        out.push(Found {
            field: Field::Status,
            left: Shown::Text(a.answer.status.to_string()),
            right: Shown::Text(b.answer.status.to_string()),
        });
    }
    headers(s, a.answer, b.answer, &mut out);
    body(patterns, a, b, json_fallback, &mut out);
    out
}

/// True when `name` is matched by the ignore list.
fn ignored(s: &Settings, name: &str) -> bool {
    s.ignore_headers.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => name
            .get(..prefix.len())
            .is_some_and(|h| h.eq_ignore_ascii_case(prefix)),
        None => p.eq_ignore_ascii_case(name),
    })
}

/// Header values by lowercase name, the ignored names left out.
fn by_name<'a>(s: &Settings, a: &'a Answer) -> BTreeMap<String, Vec<&'a Bytes>> {
    let mut map: BTreeMap<String, Vec<&'a Bytes>> = BTreeMap::new();
    for (name, value) in &a.headers {
        let name = String::from_utf8_lossy(name).to_ascii_lowercase();
        if !ignored(s, &name) {
            map.entry(name).or_default().push(value);
        }
    }
    map
}

/// A `Set-Cookie` value without its expiry: `name=value` then the other
/// attributes, names lowercased, sorted.
fn cookie(v: &[u8]) -> String {
    let text = String::from_utf8_lossy(trim_ows(v));
    let mut parts = text.split(';').map(str::trim);
    let first = parts.next().unwrap_or_default().to_owned();
    let mut attrs: Vec<String> = parts
        .filter(|p| !p.is_empty())
        .filter_map(|p| {
            let (name, value) = p.split_once('=').unwrap_or((p, ""));
            let name = name.trim().to_ascii_lowercase();
            if name == "expires" || name == "max-age" {
                return None;
            }
            let value = value.trim();
            Some(match (name.as_str(), value.is_empty()) {
                (_, true) => name,
                ("domain", false) => format!("{name}={}", value.to_ascii_lowercase()),
                (_, false) => format!("{name}={value}"),
            })
        })
        .collect();
    attrs.sort();
    attrs.insert(0, first);
    attrs.join("; ")
}

/// The values compared for one header name.
fn values(name: &str, vals: Option<&Vec<&Bytes>>) -> Option<Vec<String>> {
    let vals = vals?;
    if name == "set-cookie" {
        let mut cookies: Vec<String> = vals.iter().map(|v| cookie(v)).collect();
        cookies.sort();
        Some(cookies)
    } else {
        Some(
            vals.iter()
                .map(|v| String::from_utf8_lossy(trim_ows(v)).into_owned())
                .collect(),
        )
    }
}

fn headers<'a>(s: &Settings, a: &Answer, b: &Answer, out: &mut Vec<Found<'a>>) {
    let left = by_name(s, a);
    let right = by_name(s, b);
    let mut names: Vec<&String> = left.keys().chain(right.keys()).collect();
    names.sort();
    names.dedup();
    let shown = |v: Option<Vec<String>>| match v {
        Some(v) => Shown::Text(v.join(", ")),
        None => Shown::Absent,
    };
    for name in names {
        let l = values(name, left.get(name));
        let r = values(name, right.get(name));
        if l != r {
            out.push(Found {
                field: Field::Header(name.clone()),
                left: shown(l),
                right: shown(r),
            });
        }
    }
}

fn digest(a: &Answer) -> String {
    format!(
        "xxh3:{:016x} {} bytes{}",
        xxh3_64(&a.body),
        a.body.len(),
        if a.truncated { " (truncated)" } else { "" }
    )
}

/// Bodies equal by bytes, compared by what arrived when one is cut.
fn bytes_equal(a: &Answer, b: &Answer) -> bool {
    let (x, y) = (&a.body, &b.body);
    match (a.truncated, b.truncated) {
        (false, false) => x == y,
        (true, true) => {
            let n = x.len().min(y.len());
            x.get(..n) == y.get(..n)
        }
        // The cut body is longer than what arrived: a complete body not
        // longer than that differs.
        (true, false) => y.len() > x.len() && y.get(..x.len()) == Some(x.as_ref()),
        (false, true) => x.len() > y.len() && x.get(..y.len()) == Some(y.as_ref()),
    }
}

fn body<'a>(
    patterns: &[PathPattern],
    a: &'a Parsed<'a>,
    b: &'a Parsed<'a>,
    json_fallback: &mut bool,
    out: &mut Vec<Found<'a>>,
) {
    if let (Some(x), Some(y)) = (&a.json, &b.json) {
        let mut found: Vec<JsonDifference<'a>> = Vec::new();
        json::diff(x, y, patterns, &mut found);
        out.extend(found.into_iter().map(|d| Found {
            field: Field::Json(d.path),
            left: Shown::Json(d.left),
            right: Shown::Json(d.right),
        }));
        return;
    }
    let empty = a.answer.body.is_empty() && b.answer.body.is_empty();
    if (a.looks_json || b.looks_json) && !empty {
        *json_fallback = true;
    }
    if !bytes_equal(a.answer, b.answer) {
        out.push(Found {
            field: Field::Body,
            left: Shown::Text(digest(a.answer)),
            right: Shown::Text(digest(b.answer)),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn answer(status: u16, headers: &[(&str, &str)], body: &str) -> Answer {
        Answer {
            status,
            headers: headers
                .iter()
                .map(|(n, v)| {
                    (
                        Bytes::copy_from_slice(n.as_bytes()),
                        Bytes::copy_from_slice(v.as_bytes()),
                    )
                })
                .collect(),
            body: Bytes::copy_from_slice(body.as_bytes()),
            truncated: false,
            latency: Duration::from_millis(1),
        }
    }

    fn diff(prod: &str, cand: &str, prod_t: bool, cand_t: bool, s: &Settings) -> Report {
        let mut p = answer(200, &[], prod);
        p.truncated = prod_t;
        let mut c = answer(200, &[], cand);
        c.truncated = cand_t;
        compare(s, &p, &c, None)
    }

    fn d(field: Field, production: &str, candidate: &str) -> Difference {
        Difference {
            field,
            production: production.into(),
            candidate: candidate.into(),
        }
    }

    fn h(name: &str) -> Field {
        Field::Header(name.into())
    }

    fn j(path: &str) -> Field {
        Field::Json(path.into())
    }

    const JSON: (&str, &str) = ("content-type", "application/json");

    #[test]
    fn identical_answers_are_equal() {
        let a = answer(200, &[JSON, ("x-a", "1")], r#"{"a":[1,2]}"#);
        let r = compare(&Settings::default(), &a, &a.clone(), None);
        assert_eq!(r, Report::default());
        assert!(r.is_equal());
    }

    #[test]
    fn status_header_and_json_field() {
        let p = answer(
            200,
            &[JSON, ("x-a", "1"), ("date", "Mon"), ("x-gone", "g")],
            r#"{"items":[{"price":1},{"price":2},{"price":3},{"price":4}],"k":"v"}"#,
        );
        let c = answer(
            500,
            &[JSON, ("x-a", "2"), ("date", "Tue"), ("X-New", "n")],
            r#"{"k": "v", "items":[{"price":1},{"price":2},{"price":3},{"price":4.5}]}"#,
        );
        let r = compare(&Settings::default(), &p, &c, None);
        assert_eq!(
            r.differences,
            vec![
                d(Field::Status, "200", "500"),
                d(h("x-a"), "1", "2"),
                d(h("x-gone"), "g", ABSENT),
                d(h("x-new"), ABSENT, "n"),
                d(j("$.items[3].price"), "4", "4.5"),
            ]
        );
        assert_eq!(r.noise, Vec::<Field>::new());
        assert!(!r.truncated && !r.json_fallback);
        assert_eq!(r.omitted, 0);
    }

    #[test]
    fn multi_valued_headers_compare_as_lists() {
        let s = Settings::default();
        let p = answer(200, &[("vary", "a"), ("x-b", ""), ("vary", "b ")], "");
        let same = answer(200, &[("Vary", " a"), ("vary", "b"), ("x-b", "")], "");
        assert!(compare(&s, &p, &same, None).is_equal());
        let swapped = answer(200, &[("vary", "b"), ("vary", "a"), ("x-b", "")], "");
        assert_eq!(
            compare(&s, &p, &swapped, None).differences,
            vec![d(h("vary"), "a, b", "b, a")]
        );
        let empty_vs_absent = answer(200, &[("vary", "a"), ("vary", "b")], "");
        assert_eq!(
            compare(&s, &p, &empty_vs_absent, None).differences,
            vec![d(h("x-b"), "", ABSENT)]
        );
    }

    #[test]
    fn ignored_headers_with_prefix() {
        let s = Settings {
            ignore_headers: vec!["x-request-*".into(), "Server".into()],
            ..Settings::default()
        };
        let p = answer(
            200,
            &[
                ("x-request-id", "1"),
                ("x-request-start", "t1"),
                ("server", "a"),
                ("x-requesting", "p"),
            ],
            "",
        );
        let c = answer(
            200,
            &[
                ("x-request-id", "2"),
                ("server", "b"),
                ("x-requesting", "q"),
            ],
            "",
        );
        let r = compare(&s, &p, &c, None);
        // "x-requesting" does not start with "x-request-".
        assert_eq!(r.differences, vec![d(h("x-requesting"), "p", "q")]);
        // The defaults ignore date, server, etag... but not x-requesting.
        let r = compare(&Settings::default(), &p, &c, None);
        assert_eq!(
            r.differences
                .iter()
                .map(|d| d.field.label())
                .collect::<Vec<_>>(),
            vec!["header:x-request-start", "header:x-requesting"]
        );
    }

    #[test]
    fn set_cookie_without_expiry_and_order() {
        let s = Settings::default();
        let p = answer(
            200,
            &[
                (
                    "set-cookie",
                    "sid=1; Expires=Wed, 21 Oct 2026 07:28:00 GMT; Path=/; HttpOnly",
                ),
                ("set-cookie", "lang=en; Max-Age=60"),
            ],
            "",
        );
        let c = answer(
            200,
            &[
                ("set-cookie", "lang=en; Max-Age=3600"),
                (
                    "set-cookie",
                    "sid=1; httponly; path=/; expires=Thu, 22 Oct 2026 07:28:00 GMT",
                ),
            ],
            "",
        );
        assert!(compare(&s, &p, &c, None).is_equal());
        let changed = answer(
            200,
            &[
                ("set-cookie", "lang=fr; Max-Age=3600"),
                ("set-cookie", "sid=1; Path=/"),
            ],
            "",
        );
        assert_eq!(
            compare(&s, &p, &changed, None).differences,
            vec![d(
                h("set-cookie"),
                "lang=en, sid=1; httponly; path=/",
                "lang=fr, sid=1; path=/"
            )]
        );
    }

    #[test]
    fn body_digests() {
        let r = diff("hello", "world!", false, false, &Settings::default());
        assert_eq!(
            r.differences,
            vec![d(
                Field::Body,
                &format!("xxh3:{:016x} 5 bytes", xxh3_64(b"hello")),
                &format!("xxh3:{:016x} 6 bytes", xxh3_64(b"world!")),
            )]
        );
        assert!(!r.json_fallback && !r.truncated);
        // JSON off: JSON bodies compare by bytes too.
        let s = Settings {
            json: false,
            ..Settings::default()
        };
        let r = diff("{\"a\":1}", "{\"a\": 1}", false, false, &s);
        assert_eq!(r.differences.len(), 1);
        assert_eq!(r.differences[0].field, Field::Body);
        assert!(!r.json_fallback);
        // JSON on: the same bodies are equal.
        assert!(diff(
            "{\"a\":1}",
            "{\"a\": 1}",
            false,
            false,
            &Settings::default()
        )
        .is_equal());
    }

    #[test]
    fn truncated_bodies_compare_by_prefix() {
        let s = Settings::default();
        // Both cut: the common prefix.
        let r = diff("abcdef", "abcd", true, true, &s);
        assert!(r.is_equal() && r.truncated);
        let r = diff("abcdef", "abXd", true, true, &s);
        assert_eq!(r.differences.len(), 1);
        assert!(r.truncated);
        // One cut: the complete one must be longer than what arrived.
        let r = diff("abcdef", "abc", false, true, &s);
        assert!(r.is_equal() && r.truncated);
        let r = diff("abc", "abc", false, true, &s);
        assert_eq!(
            r.differences,
            vec![d(
                Field::Body,
                &format!("xxh3:{:016x} 3 bytes", xxh3_64(b"abc")),
                &format!("xxh3:{:016x} 3 bytes (truncated)", xxh3_64(b"abc")),
            )]
        );
        let r = diff("abc", "abcdef", true, false, &s);
        assert!(r.is_equal() && r.truncated);
        let r = diff("ab", "abcdef", true, false, &s);
        assert!(r.is_equal());
        let r = diff("abc", "ab", true, false, &s);
        assert_eq!(r.differences.len(), 1);
        // A cut JSON body is not parsed: digest, and flagged as a fallback.
        let r = diff("{\"a\":[1,2", "{\"a\":[1,2,3]}", true, false, &s);
        assert!(r.is_equal() && r.truncated && r.json_fallback);
    }

    #[test]
    fn non_json_with_json_on_falls_back_to_digest() {
        let s = Settings::default();
        let r = diff("{\"a\":1}", "{\"a\":1 oops", false, false, &s);
        assert_eq!(r.differences.len(), 1);
        assert_eq!(r.differences[0].field, Field::Body);
        assert!(r.json_fallback);
        // HTML under json = true: compared by digest, not a fallback.
        let r = diff("<html>a", "<html>b", false, false, &s);
        assert_eq!(r.differences.len(), 1);
        assert!(!r.json_fallback);
        // A JSON content-type with a body that is not JSON: a fallback.
        let p = answer(200, &[JSON], "oops");
        let r = compare(&s, &p, &p.clone(), None);
        assert!(r.is_equal() && r.json_fallback);
        // Two empty bodies are no fallback, whatever their content-type.
        let p = answer(204, &[JSON], "");
        let r = compare(&s, &p, &p.clone(), None);
        assert!(r.is_equal() && !r.json_fallback);
        // Top-level scalars are JSON.
        let r = diff("1", "2", false, false, &s);
        assert_eq!(r.differences, vec![d(j("$"), "1", "2")]);
        assert!(!r.json_fallback);
    }

    #[test]
    fn ignored_json_paths() {
        let s = Settings {
            ignore_paths: vec!["$.items[*].ts".into(), "not a path".into()],
            ..Settings::default()
        };
        let r = diff(
            r#"{"items":[{"ts":1,"v":1},{"ts":2,"v":2}]}"#,
            r#"{"items":[{"ts":3,"v":1},{"ts":4,"v":3}]}"#,
            false,
            false,
            &s,
        );
        assert_eq!(r.differences, vec![d(j("$.items[1].v"), "2", "3")]);
    }

    #[test]
    fn baseline_noise_is_not_reported() {
        let s = Settings::default();
        let p = answer(200, &[JSON, ("x-rand", "p")], r#"{"rand":1,"v":1,"w":1}"#);
        let base = answer(200, &[JSON, ("x-rand", "b")], r#"{"rand":2,"v":1,"w":1}"#);
        let c = answer(200, &[JSON, ("x-rand", "c")], r#"{"rand":3,"v":2,"w":1}"#);
        let r = compare(&s, &p, &c, Some(&base));
        assert_eq!(r.differences, vec![d(j("$.v"), "1", "2")]);
        assert_eq!(r.noise, vec![h("x-rand"), j("$.rand")]);
        // Without the baseline everything is reported.
        let r = compare(&s, &p, &c, None);
        assert_eq!(r.differences.len(), 3);
        assert!(r.noise.is_empty());
        // A baseline equal to production filters nothing.
        let r = compare(&s, &p, &c, Some(&p));
        assert_eq!(r.differences.len(), 3);
        // Non-JSON bodies: the body digest is noise when the baseline's
        // differs too.
        let p = answer(200, &[], "a");
        let r = compare(&s, &p, &answer(200, &[], "c"), Some(&answer(200, &[], "b")));
        assert!(r.is_equal());
        assert_eq!(r.noise, vec![Field::Body]);
    }

    #[test]
    fn caps_on_count_and_length() {
        let s = Settings {
            value_cut: 3,
            max_differences: 2,
            ..Settings::default()
        };
        let r = diff(
            r#"{"a":"héllo","b":[1,2,3],"c":1}"#,
            r#"{"a":"hé","b":{},"c":2,"d":true}"#,
            false,
            false,
            &s,
        );
        assert_eq!(
            r.differences,
            vec![d(j("$.a"), "\"hé", "\"hé"), d(j("$.b"), "[1,", "{}")]
        );
        assert_eq!(r.omitted, 2);
        assert!(!r.is_equal());
        let s = Settings {
            max_differences: 0,
            ..s
        };
        let r = diff("a", "b", false, false, &s);
        assert!(r.differences.is_empty());
        assert_eq!(r.omitted, 1);
        assert!(!r.is_equal());
    }

    #[test]
    fn values_from_the_wire_are_lossy_utf8() {
        let mut p = answer(200, &[], "");
        p.headers.push((
            Bytes::from_static(b"x-bin"),
            Bytes::from_static(b"\xff\x00a"),
        ));
        let c = answer(200, &[], "");
        let r = compare(&Settings::default(), &p, &c, None);
        assert_eq!(r.differences, vec![d(h("x-bin"), "\u{fffd}\u{0}a", ABSENT)]);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn json_value() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<i64>().prop_map(Value::from),
                any::<f64>().prop_map(Value::from),
                ".{0,8}".prop_map(Value::String),
            ];
            leaf.prop_recursive(6, 64, 6, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                    prop::collection::btree_map(".{0,6}", inner, 0..6)
                        .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
        }

        fn with_body(body: Vec<u8>, truncated: bool) -> Answer {
            Answer {
                status: 200,
                headers: vec![],
                body: Bytes::from(body),
                truncated,
                latency: Duration::ZERO,
            }
        }

        proptest! {
            #[test]
            fn json_equal_to_itself(v in json_value()) {
                let a = with_body(serde_json::to_vec(&v).unwrap(), false);
                let r = compare(&Settings::default(), &a, &a.clone(), Some(&a));
                prop_assert!(r.is_equal());
                prop_assert!(r.noise.is_empty());
            }

            #[test]
            fn json_pairs_do_not_panic(a in json_value(), b in json_value(), c in json_value(), cut in 0usize..20) {
                let s = Settings { value_cut: cut, max_differences: 4, ignore_paths: vec!["$[*].*".into()], ..Settings::default() };
                let (a, b, c) = (
                    with_body(serde_json::to_vec(&a).unwrap(), false),
                    with_body(serde_json::to_vec(&b).unwrap(), false),
                    with_body(serde_json::to_vec(&c).unwrap(), false),
                );
                let r = compare(&s, &a, &b, Some(&c));
                prop_assert!(r.differences.len() <= 4 && r.noise.len() <= 4);
                for d in &r.differences {
                    prop_assert!(d.production == ABSENT || d.production.chars().count() <= cut);
                    prop_assert!(d.candidate == ABSENT || d.candidate.chars().count() <= cut);
                }
            }

            #[test]
            fn bytes_do_not_panic(a in prop::collection::vec(any::<u8>(), 0..64), b in prop::collection::vec(any::<u8>(), 0..64), ta: bool, tb: bool, json: bool) {
                let s = Settings { json, ..Settings::default() };
                let (a, b) = (with_body(a, ta), with_body(b, tb));
                let r = compare(&s, &a, &b, Some(&a));
                prop_assert_eq!(r.truncated, ta || tb);
                let r = compare(&s, &a, &a.clone(), None);
                prop_assert!(r.is_equal());
            }
        }
    }

    #[test]
    fn hostile_json_does_not_panic() {
        let s = Settings::default();
        let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
        let r = diff(&deep, "[]", false, false, &s);
        // Too deep for serde_json: compared by digest.
        assert_eq!(r.differences.len(), 1);
        assert_eq!(r.differences[0].field, Field::Body);
        assert!(r.json_fallback);
        let deep_ok = format!("{}1{}", "[".repeat(120), "]".repeat(120));
        let deep_ok2 = format!("{}2{}", "[".repeat(120), "]".repeat(120));
        let r = diff(&deep_ok, &deep_ok2, false, false, &s);
        assert_eq!(r.differences.len(), 1);
        assert!(!r.json_fallback);
    }
}
