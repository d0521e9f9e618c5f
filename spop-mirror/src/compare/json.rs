//! Structural diff of two JSON documents ([`serde_json::Value`]).
//!
//! - Objects are compared member by member, by name; a member on one side
//!   only is a difference whose other side is absent.
//! - Arrays are compared element by element, by index; the elements one
//!   array has beyond the other's length are differences at their own index
//!   (`$.a[3]` with the other side absent). An element inserted at the front
//!   therefore shows as a difference at every index: arrays have no identity
//!   for their elements.
//! - Numbers are equal when both are integers with the same value (exact,
//!   as `i64` or `u64`), or otherwise when their `f64` values are equal, so
//!   `1` and `1.0` are equal.
//! - Other scalars are equal when they are the same value; values of
//!   different types differ at their path.
//!
//! Paths read `$.items[3].price`; a member name that is not an identifier
//! (`[A-Za-z_][A-Za-z0-9_]*`) is written as a JSON string in brackets:
//! `$["odd key"]`, `$.a["x.y"]`.
//!
//! The work is bounded whatever the input: below [`MAX_DEPTH`] levels, or
//! once [`MAX_NODES`] nodes have been visited, subtrees are compared as
//! wholes and a difference is reported at the subtree's path (ignore
//! patterns deeper than that subtree are then not applied). (serde_json's
//! parser refuses documents nested deeper than 128 levels, so whole-subtree
//! equality recurses at most that deep.)

use std::fmt;
use std::fmt::Write as _;

use serde_json::{Map, Number, Value};

/// Levels descended into before subtrees are compared as wholes.
pub const MAX_DEPTH: usize = 64;
/// Nodes visited per diff before the remaining subtrees are compared as
/// wholes.
pub const MAX_NODES: usize = 100_000;

/// One difference found by [`diff`]: a path and the value on each side
/// (`None` for absent).
#[derive(Debug, Clone, PartialEq)]
pub struct JsonDifference<'a> {
    /// The path, e.g. `$.items[3].price`.
    pub path: String,
    /// The first document's value at `path`, if it has one.
    pub left: Option<&'a Value>,
    /// The second document's value at `path`, if it has one.
    pub right: Option<&'a Value>,
}

/// One step of a path pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PatternStep {
    /// `.name` or `["name"]`.
    Key(String),
    /// `.*`: any member name.
    AnyKey,
    /// `[3]`.
    Index(usize),
    /// `[*]`: any index.
    AnyIndex,
}

/// A path pattern of an ignore list: `$`, then steps `.name`, `["name"]`,
/// `[3]`, `.*` (any member) and `[*]` (any index). A pattern matches a path
/// of exactly as many steps, and ignoring a path ignores its whole subtree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    steps: Vec<PatternStep>,
}

/// Why a path pattern does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathError {
    /// The byte offset in the pattern where parsing stopped.
    pub at: usize,
    /// What was expected there.
    pub expected: &'static str,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "expected {} at byte {}", self.expected, self.at)
    }
}

impl std::error::Error for PathError {}

impl PathPattern {
    /// Parses a pattern such as `$.items[*].ts` or `$["odd key"].*`.
    ///
    /// # Errors
    ///
    /// [`PathError`] when the text is not `$` followed by steps.
    pub fn parse(text: &str) -> Result<Self, PathError> {
        let bytes = text.as_bytes();
        let err = |at: usize, expected: &'static str| PathError { at, expected };
        if bytes.first() != Some(&b'$') {
            return Err(err(0, "'$'"));
        }
        let mut steps = Vec::new();
        let mut i = 1;
        while let Some(&b) = bytes.get(i) {
            match b {
                b'.' => {
                    let start = i + 1;
                    if bytes.get(start) == Some(&b'*') {
                        steps.push(PatternStep::AnyKey);
                        i = start + 1;
                        continue;
                    }
                    let len = bytes
                        .get(start..)
                        .unwrap_or_default()
                        .iter()
                        .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
                        .count();
                    let name = text
                        .get(start..start + len)
                        .filter(|n| is_identifier(n))
                        .ok_or_else(|| err(start, "a member name or '*'"))?;
                    steps.push(PatternStep::Key(name.to_owned()));
                    i = start + len;
                }
                b'[' => {
                    let rest = text.get(i + 1..).unwrap_or_default();
                    if let Some(after) = rest.strip_prefix("*]") {
                        steps.push(PatternStep::AnyIndex);
                        i = text.len() - after.len();
                    } else if rest.starts_with('"') {
                        // A JSON string, then ']'.
                        let mut de = serde_json::Deserializer::from_str(rest).into_iter::<String>();
                        let Some(Ok(name)) = de.next() else {
                            return Err(err(i + 1, "a JSON string"));
                        };
                        let end = i + 1 + de.byte_offset();
                        if bytes.get(end) != Some(&b']') {
                            return Err(err(end, "']'"));
                        }
                        steps.push(PatternStep::Key(name));
                        i = end + 1;
                    } else {
                        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
                        let index = rest
                            .get(..digits)
                            .and_then(|d| d.parse::<usize>().ok())
                            .ok_or_else(|| err(i + 1, "an index, '*' or a JSON string"))?;
                        let end = i + 1 + digits;
                        if bytes.get(end) != Some(&b']') {
                            return Err(err(end, "']'"));
                        }
                        steps.push(PatternStep::Index(index));
                        i = end + 1;
                    }
                }
                _ => return Err(err(i, "'.' or '['")),
            }
        }
        Ok(Self { steps })
    }

    fn matches(&self, path: &[Step<'_>]) -> bool {
        self.steps.len() == path.len()
            && self.steps.iter().zip(path).all(|(p, s)| match (p, s) {
                (PatternStep::AnyKey, Step::Key(_)) | (PatternStep::AnyIndex, Step::Index(_)) => {
                    true
                }
                (PatternStep::Key(k), Step::Key(n)) => k == n,
                (PatternStep::Index(i), Step::Index(n)) => i == n,
                _ => false,
            })
    }
}

/// True for `[A-Za-z_][A-Za-z0-9_]*`.
fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Appends `.name` or `["name"]` to a path.
fn push_key(path: &mut String, name: &str) {
    if is_identifier(name) {
        path.push('.');
        path.push_str(name);
    } else {
        path.push('[');
        // Serialising a str cannot fail.
        path.push_str(&serde_json::to_string(name).unwrap_or_default());
        path.push(']');
    }
}

/// One step of the path being visited.
#[derive(Debug, Clone, Copy)]
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

/// Numbers equal as integers when both are, else as `f64`.
fn numbers_equal(a: &Number, b: &Number) -> bool {
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        return x == y;
    }
    if let (Some(x), Some(y)) = (a.as_u64(), b.as_u64()) {
        return x == y;
    }
    if (a.is_i64() || a.is_u64()) && (b.is_i64() || b.is_u64()) {
        // One negative i64, one u64 beyond i64: different.
        return false;
    }
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

/// Whole-value equality with the numeric rule of [`numbers_equal`].
fn values_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => numbers_equal(x, y),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| values_equal(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| values_equal(v, w)))
        }
        _ => a == b,
    }
}

struct Walker<'a, 'p> {
    ignore: &'p [PathPattern],
    steps: Vec<Step<'a>>,
    path: String,
    nodes: usize,
    out: &'p mut Vec<JsonDifference<'a>>,
}

impl<'a> Walker<'a, '_> {
    fn ignored(&self) -> bool {
        self.ignore.iter().any(|p| p.matches(&self.steps))
    }

    fn report(&mut self, left: Option<&'a Value>, right: Option<&'a Value>) {
        self.out.push(JsonDifference {
            path: self.path.clone(),
            left,
            right,
        });
    }

    /// Visits the node at the current path, present on one side or both.
    fn visit(&mut self, left: Option<&'a Value>, right: Option<&'a Value>) {
        if self.ignored() {
            return;
        }
        self.nodes = self.nodes.saturating_add(1);
        let (Some(l), Some(r)) = (left, right) else {
            return self.report(left, right);
        };
        let whole = self.steps.len() >= MAX_DEPTH || self.nodes > MAX_NODES;
        match (l, r) {
            (Value::Object(a), Value::Object(b)) if !whole => self.objects(a, b),
            (Value::Array(a), Value::Array(b)) if !whole => self.arrays(a, b),
            _ => {
                if !values_equal(l, r) {
                    self.report(left, right);
                }
            }
        }
    }

    fn child(&mut self, step: Step<'a>, left: Option<&'a Value>, right: Option<&'a Value>) {
        let len = self.path.len();
        match step {
            Step::Key(k) => push_key(&mut self.path, k),
            Step::Index(i) => {
                // Writing to a String cannot fail.
                let _ = write!(self.path, "[{i}]");
            }
        }
        self.steps.push(step);
        self.visit(left, right);
        self.steps.pop();
        self.path.truncate(len);
    }

    fn objects(&mut self, a: &'a Map<String, Value>, b: &'a Map<String, Value>) {
        for (k, v) in a {
            self.child(Step::Key(k), Some(v), b.get(k));
        }
        for (k, v) in b {
            if !a.contains_key(k) {
                self.child(Step::Key(k), None, Some(v));
            }
        }
    }

    fn arrays(&mut self, a: &'a [Value], b: &'a [Value]) {
        for i in 0..a.len().max(b.len()) {
            self.child(Step::Index(i), a.get(i), b.get(i));
        }
    }
}

/// Appends to `out` the differences between `left` and `right`, in document
/// order (members of `left` first, then those only in `right`), skipping the
/// paths matched by `ignore` and their subtrees.
pub fn diff<'a>(
    left: &'a Value,
    right: &'a Value,
    ignore: &[PathPattern],
    out: &mut Vec<JsonDifference<'a>>,
) {
    let mut w = Walker {
        ignore,
        steps: Vec::new(),
        path: "$".to_owned(),
        nodes: 0,
        out,
    };
    w.visit(Some(left), Some(right));
}

/// Compiles the patterns that parse; the others are dropped.
pub fn patterns(texts: &[String]) -> Vec<PathPattern> {
    texts
        .iter()
        .filter_map(|t| PathPattern::parse(t).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn paths(a: &Value, b: &Value, ignore: &[&str]) -> Vec<(String, Option<Value>, Option<Value>)> {
        let pats: Vec<PathPattern> = ignore
            .iter()
            .map(|p| PathPattern::parse(p).unwrap())
            .collect();
        let mut out = Vec::new();
        diff(a, b, &pats, &mut out);
        out.into_iter()
            .map(|d| (d.path, d.left.cloned(), d.right.cloned()))
            .collect()
    }

    #[test]
    fn equal_documents() {
        let a = json!({"a": [1, 2, {"b": null}], "c": "x"});
        assert!(paths(&a, &a.clone(), &[]).is_empty());
    }

    #[test]
    fn field_paths() {
        let a = json!({"items": [{"price": 1}, {"price": 2}, {"price": 3}, {"price": 4}], "odd key": 1, "n": {"x.y": true}});
        let b = json!({"items": [{"price": 1}, {"price": 2}, {"price": 3}, {"price": 5}], "odd key": 2, "n": {"x.y": false}});
        assert_eq!(
            paths(&a, &b, &[]),
            vec![
                ("$.items[3].price".into(), Some(json!(4)), Some(json!(5))),
                ("$.n[\"x.y\"]".into(), Some(json!(true)), Some(json!(false))),
                ("$[\"odd key\"]".into(), Some(json!(1)), Some(json!(2))),
            ]
        );
    }

    #[test]
    fn absent_members_and_elements() {
        let a = json!({"a": 1, "arr": [1, 2, 3]});
        let b = json!({"b": 2, "arr": [1]});
        assert_eq!(
            paths(&a, &b, &[]),
            vec![
                ("$.a".into(), Some(json!(1)), None),
                ("$.arr[1]".into(), Some(json!(2)), None),
                ("$.arr[2]".into(), Some(json!(3)), None),
                ("$.b".into(), None, Some(json!(2))),
            ]
        );
    }

    #[test]
    fn numbers_and_types() {
        assert!(paths(&json!([1, -3, 2.5]), &json!([1.0, -3.0, 2.5]), &[]).is_empty());
        assert_eq!(
            paths(&json!([u64::MAX, 1]), &json!([u64::MAX - 1, "1"]), &[]),
            vec![
                (
                    "$[0]".into(),
                    Some(json!(u64::MAX)),
                    Some(json!(u64::MAX - 1))
                ),
                ("$[1]".into(), Some(json!(1)), Some(json!("1"))),
            ]
        );
        assert_eq!(
            paths(&json!(-1), &json!(u64::MAX), &[]),
            vec![("$".into(), Some(json!(-1)), Some(json!(u64::MAX)))]
        );
        assert_eq!(
            paths(&json!({"a": [1]}), &json!({"a": {"0": 1}}), &[]),
            vec![("$.a".into(), Some(json!([1])), Some(json!({"0": 1})))]
        );
        // Top-level scalars.
        assert_eq!(
            paths(&json!("x"), &json!(null), &[]),
            vec![("$".into(), Some(json!("x")), Some(json!(null)))]
        );
    }

    #[test]
    fn ignore_patterns() {
        let a = json!({"items": [{"ts": 1, "p": 1}, {"ts": 2, "p": 2}], "meta": {"id": "a", "x": 1}, "odd key": 1});
        let b = json!({"items": [{"ts": 9, "p": 1}, {"ts": 8, "p": 3}], "meta": {"id": "b", "x": 2}, "odd key": 2});
        assert_eq!(
            paths(&a, &b, &["$.items[*].ts", "$.meta.*", "$[\"odd key\"]"]),
            vec![("$.items[1].p".into(), Some(json!(2)), Some(json!(3)))]
        );
        // A whole subtree, and a precise index.
        assert_eq!(
            paths(&a, &b, &["$.items[1]", "$.meta"]),
            vec![
                ("$.items[0].ts".into(), Some(json!(1)), Some(json!(9))),
                ("$[\"odd key\"]".into(), Some(json!(1)), Some(json!(2))),
            ]
        );
        assert!(paths(&a, &b, &["$"]).is_empty());
    }

    #[test]
    fn pattern_parsing() {
        assert!(PathPattern::parse("$").is_ok());
        assert!(PathPattern::parse("$.a_1[2][*].*[\"x\\\"y]\"]").is_ok());
        assert_eq!(
            PathPattern::parse("$.a[\"b c\"][3]").unwrap().steps,
            vec![
                PatternStep::Key("a".into()),
                PatternStep::Key("b c".into()),
                PatternStep::Index(3)
            ]
        );
        for bad in [
            "", "a", "$.", "$..a", "$.1a", "$[", "$[x]", "$[1", "$[\"a\"", "$a", "$[-1]", "$.a b",
        ] {
            assert!(PathPattern::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(patterns(&["$.a".into(), "bad".into()]).len(), 1);
    }

    #[test]
    fn depth_limit_reports_the_subtree() {
        let mut a = json!(1);
        let mut b = json!(2);
        for _ in 0..100 {
            a = json!([a]);
            b = json!([b]);
        }
        let found = paths(&a, &b, &[]);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, format!("${}", "[0]".repeat(MAX_DEPTH)));
    }

    #[test]
    fn node_budget_reports_whole_subtrees() {
        let n = MAX_NODES + 10;
        let a = Value::Array((0..n).map(|i| json!(i)).collect());
        let mut bv: Vec<Value> = (0..n).map(|i| json!(i)).collect();
        bv[5] = json!("x");
        bv[n - 1] = json!("y");
        let b = Value::Array(bv);
        let found = paths(&a, &b, &[]);
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].0, "$[5]");
        assert_eq!(found[1].0, format!("$[{}]", n - 1));
        // Past the budget, arrays are compared whole: one difference at the
        // subtree's path.
        let a = Value::Array((0..n).map(|i| json!([i])).collect());
        let mut bv: Vec<Value> = (0..n).map(|i| json!([i])).collect();
        bv[n - 1] = json!(["z"]);
        let found = paths(&a, &Value::Array(bv), &[]);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, format!("$[{}]", n - 1));
    }
}
