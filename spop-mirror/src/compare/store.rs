//! The sans-IO correlation store: production's answer and the shadows'
//! answers meet here, by the request's unique id, until a deadline.
//!
//! No clock is read and no task is spawned: every call takes `now`, and what
//! happened comes out as [`Event`]s pushed to the caller's vector. The
//! caller runs [`Store::expire`] on a timer ([`Store::next_deadline`] says
//! when the next entry is due); [`Store::open`] and [`Store::answer`] also
//! expire what is due before doing their work.
//!
//! Bounds: at most [`Limits::max_entries`] open entries and
//! [`Limits::max_bytes`] bytes counted (each entry's id, request line and a
//! fixed overhead, plus the [`Answer::size`] of the answers kept). When a
//! new entry or answer does not fit, the oldest entries are dropped
//! ([`Event::Evicted`]). Answers are copied into one compact buffer each when
//! kept, so that what is counted is what is held (an answer sliced out of a
//! larger frame would otherwise pin the whole frame). An answer is kept only
//! while a comparison still needs it.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::{compare, cut, Answer, Report, Settings, Side};

/// Chars of the request line kept per entry.
pub const MAX_REQUEST_CHARS: usize = 1024;
/// Fixed bytes counted per entry (map and deadline-index slots, the entry).
const ENTRY_OVERHEAD: usize = 256;
/// Fixed bytes counted per target awaited by an entry.
const TARGET_OVERHEAD: usize = 64;

/// The store's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Open entries at most.
    pub max_entries: usize,
    /// Bytes counted at most (ids, request lines, answers, overheads).
    pub max_bytes: usize,
    /// How long after [`Store::open`] the answers are awaited.
    pub deadline: Duration,
}

impl Default for Limits {
    /// 10000 entries, 64 MiB, 5 s.
    fn default() -> Self {
        Self {
            max_entries: 10_000,
            max_bytes: 64 << 20,
            deadline: Duration::from_secs(5),
        }
    }
}

/// What the store reports.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A candidate's answer met production's (and its baseline's, if expected).
    Compared {
        /// The request's unique id.
        id: Bytes,
        /// The request line, e.g. `"GET /path"`, cut to
        /// [`MAX_REQUEST_CHARS`] chars.
        request: String,
        /// The candidate target's name.
        candidate: Arc<str>,
        /// What differed.
        report: Report,
        /// Production's [`Answer::latency`].
        production_latency: Duration,
        /// The candidate's [`Answer::latency`].
        candidate_latency: Duration,
    },
    /// Deadline passed; which halves were missing. One per candidate whose
    /// comparison was still waiting.
    Expired {
        /// The candidate whose comparison expired (always `Some` from this
        /// store: an entry is opened only with candidates).
        candidate: Option<Arc<str>>,
        /// Production's answer had not arrived.
        missing_production: bool,
        /// The candidate's answer, or its baseline's, had not arrived.
        missing_shadow: bool,
    },
    /// An answer for an id that is not open (never opened, already done, or
    /// evicted), from a target the entry does not await, or a second answer
    /// from the same side. Never kept.
    Unmatched {
        /// Where the answer came from.
        side: Side,
    },
    /// open() with an id already open (the old entry is dropped and counted here).
    Repeated,
    /// An entry dropped because the store was full (count or bytes), or a
    /// new entry that could not fit at all (`max_entries` 0, or its request
    /// line alone over `max_bytes`).
    Evicted,
    /// An answer that would take the entry over [`Limits::max_bytes`] on
    /// its own: not kept, and the comparisons that needed it are given up
    /// (the entry is removed when none is left).
    TooLarge {
        /// Where the answer came from.
        side: Side,
    },
}

/// An awaited answer.
enum Slot {
    Waiting,
    Arrived(Answer),
    /// Used and no longer needed, or refused (too large).
    Gone,
}

impl Slot {
    fn answer(&self) -> Option<&Answer> {
        match self {
            Self::Arrived(a) => Some(a),
            _ => None,
        }
    }
}

struct Target {
    name: Arc<str>,
    slot: Slot,
}

struct Entry {
    id: Bytes,
    /// The `now` of [`Store::open`].
    opened: Instant,
    key: (Instant, u64),
    request: String,
    production: Slot,
    targets: Vec<Target>,
    /// (candidate, baseline) pairs still to compare.
    pending: Vec<(Arc<str>, Option<Arc<str>>)>,
    bytes: usize,
}

impl Entry {
    fn target(&self, name: &str) -> Option<&Slot> {
        self.targets
            .iter()
            .find(|t| &*t.name == name)
            .map(|t| &t.slot)
    }

    fn slot_mut(&mut self, side: &Side) -> Option<&mut Slot> {
        match side {
            Side::Production => Some(&mut self.production),
            Side::Target(name) => self
                .targets
                .iter_mut()
                .find(|t| t.name == *name)
                .map(|t| &mut t.slot),
        }
    }
}

/// The correlation store. See the [module docs](self).
pub struct Store {
    limits: Limits,
    entries: HashMap<Bytes, Entry>,
    /// Entries by (deadline, sequence number): the first is the oldest.
    order: BTreeMap<(Instant, u64), Bytes>,
    seq: u64,
    bytes: usize,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("limits", &self.limits)
            .field("len", &self.len())
            .field("bytes", &self.bytes)
            .finish()
    }
}

/// One buffer holding the answer's header fields and body.
fn compact(a: Answer) -> Answer {
    let total = a.headers.iter().fold(a.body.len(), |acc, (n, v)| {
        acc.saturating_add(n.len()).saturating_add(v.len())
    });
    let mut buf = BytesMut::with_capacity(total);
    let mut lens = Vec::with_capacity(a.headers.len());
    for (n, v) in &a.headers {
        buf.extend_from_slice(n);
        buf.extend_from_slice(v);
        lens.push((n.len(), v.len()));
    }
    buf.extend_from_slice(&a.body);
    let mut all = buf.freeze();
    let headers = lens
        .into_iter()
        .map(|(n, v)| {
            let name = all.split_to(n);
            (name, all.split_to(v))
        })
        .collect();
    Answer {
        headers,
        body: all,
        ..a
    }
}

impl Store {
    /// An empty store with these bounds.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            entries: HashMap::new(),
            order: BTreeMap::new(),
            seq: 0,
            bytes: 0,
        }
    }

    /// The bounds.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Open entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no entry is open.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes counted against [`Limits::max_bytes`].
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// When the entry of `id` was opened (the `now` given to
    /// [`Store::open`]), while it is open.
    pub fn opened_at(&self, id: &[u8]) -> Option<Instant> {
        self.entries.get(id).map(|e| e.opened)
    }

    /// When the next entry is due to expire, if any is open.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.order.keys().next().map(|(d, _)| *d)
    }

    /// A request chosen for comparison: `pairs` = (candidate name, optional
    /// baseline name) for each candidate that queued the request. Every
    /// answer is awaited until `now + deadline`.
    ///
    /// Nothing is opened when `pairs` is empty. A candidate named twice is
    /// awaited once (the first pair counts). The id is copied, so that the
    /// buffer it came in is not kept. An id already open drops the old
    /// entry ([`Event::Repeated`]); when the store is full the oldest
    /// entries are dropped ([`Event::Evicted`] each).
    pub fn open(
        &mut self,
        id: Bytes,
        request: String,
        pairs: Vec<(Arc<str>, Option<Arc<str>>)>,
        now: Instant,
        out: &mut Vec<Event>,
    ) {
        self.expire(now, out);
        let mut pending: Vec<(Arc<str>, Option<Arc<str>>)> = Vec::with_capacity(pairs.len());
        for (c, b) in pairs {
            if !pending.iter().any(|(p, _)| *p == c) {
                pending.push((c, b));
            }
        }
        if pending.is_empty() {
            return;
        }
        if let Some(old) = self.entries.get(id.as_ref()).map(|e| e.key) {
            self.remove(old);
            out.push(Event::Repeated);
        }
        let mut targets: Vec<Target> = Vec::new();
        for name in pending
            .iter()
            .flat_map(|(c, b)| std::iter::once(c).chain(b.as_ref()))
        {
            if !targets.iter().any(|t| t.name == *name) {
                targets.push(Target {
                    name: name.clone(),
                    slot: Slot::Waiting,
                });
            }
        }
        let request = cut(&request, MAX_REQUEST_CHARS);
        let bytes = ENTRY_OVERHEAD
            .saturating_add(id.len())
            .saturating_add(request.len())
            .saturating_add(targets.len().saturating_mul(TARGET_OVERHEAD));
        if self.limits.max_entries == 0 || bytes > self.limits.max_bytes {
            out.push(Event::Evicted);
            return;
        }
        while self.entries.len() >= self.limits.max_entries
            || self.bytes.saturating_add(bytes) > self.limits.max_bytes
        {
            let Some((&key, _)) = self.order.iter().next() else {
                break;
            };
            self.remove(key);
            out.push(Event::Evicted);
        }
        let deadline = now
            .checked_add(self.limits.deadline)
            .or_else(|| now.checked_add(Duration::from_secs(365 * 86_400)))
            .unwrap_or(now);
        self.seq = self.seq.wrapping_add(1);
        let key = (deadline, self.seq);
        let id = Bytes::copy_from_slice(&id);
        self.order.insert(key, id.clone());
        self.bytes = self.bytes.saturating_add(bytes);
        self.entries.insert(
            id.clone(),
            Entry {
                id,
                opened: now,
                key,
                request,
                production: Slot::Waiting,
                targets,
                pending,
                bytes,
            },
        );
    }

    /// An answer arrived: production's, or a target's.
    ///
    /// Every comparison that now has all its answers (production, the
    /// candidate, and the candidate's baseline if it has one) gives an
    /// [`Event::Compared`]; the entry is removed once no comparison is left.
    /// An answer nobody awaits gives [`Event::Unmatched`] and is dropped; one
    /// too large on its own, [`Event::TooLarge`]. Making room for a kept
    /// answer may evict older entries.
    ///
    /// The comparisons run inside this call ([`compare`]: parsing up to
    /// three bodies as JSON), so a caller holding a lock around the store
    /// holds it for that long; the cost is bounded by the body limit and
    /// [`json::MAX_NODES`](super::json::MAX_NODES).
    pub fn answer(
        &mut self,
        id: &[u8],
        side: Side,
        answer: Answer,
        settings: &Settings,
        now: Instant,
        out: &mut Vec<Event>,
    ) {
        self.expire(now, out);
        let size = answer.size();
        let (key, fits) = match self.entries.get_mut(id) {
            Some(entry) => {
                let entry_bytes = entry.bytes;
                match entry.slot_mut(&side) {
                    Some(slot @ Slot::Waiting) => {
                        let fits = entry_bytes.saturating_add(size) <= self.limits.max_bytes;
                        if !fits {
                            *slot = Slot::Gone;
                        }
                        (entry.key, fits)
                    }
                    _ => return out.push(Event::Unmatched { side }),
                }
            }
            None => return out.push(Event::Unmatched { side }),
        };
        if fits {
            while self.bytes.saturating_add(size) > self.limits.max_bytes {
                let Some(victim) = self.order.keys().find(|k| **k != key).copied() else {
                    break;
                };
                self.remove(victim);
                out.push(Event::Evicted);
            }
        } else {
            out.push(Event::TooLarge { side: side.clone() });
        }
        let Some(entry) = self.entries.get_mut(id) else {
            return;
        };
        if fits {
            if let Some(slot) = entry.slot_mut(&side) {
                *slot = Slot::Arrived(compact(answer));
                entry.bytes = entry.bytes.saturating_add(size);
                self.bytes = self.bytes.saturating_add(size);
            }
        }
        let freed = settle(entry, settings, out);
        self.bytes = self.bytes.saturating_sub(freed);
        if entry.pending.is_empty() {
            self.remove(key);
        }
    }

    /// Removes the entries whose deadline is at or before `now`, with an
    /// [`Event::Expired`] for each comparison that was still waiting. Costs
    /// O(expired · log n).
    pub fn expire(&mut self, now: Instant, out: &mut Vec<Event>) {
        while let Some(&key) = self.order.keys().next() {
            if key.0 > now {
                break;
            }
            let Some(entry) = self.remove(key) else {
                continue;
            };
            let missing_production = matches!(entry.production, Slot::Waiting);
            for (candidate, baseline) in &entry.pending {
                let waiting = |name: &str| matches!(entry.target(name), Some(Slot::Waiting));
                out.push(Event::Expired {
                    missing_production,
                    missing_shadow: waiting(candidate) || baseline.as_deref().is_some_and(waiting),
                    candidate: Some(candidate.clone()),
                });
            }
        }
    }

    /// Removes an entry by its key, returning it.
    fn remove(&mut self, key: (Instant, u64)) -> Option<Entry> {
        let id = self.order.remove(&key)?;
        let entry = self.entries.remove(&id)?;
        self.bytes = self.bytes.saturating_sub(entry.bytes);
        Some(entry)
    }
}

/// Runs the comparisons that have all their answers, gives up those that
/// lost one, and drops the answers no pending comparison needs. Returns the
/// bytes freed.
fn settle(entry: &mut Entry, settings: &Settings, out: &mut Vec<Event>) -> usize {
    let gone = |e: &Entry, name: &str| matches!(e.target(name), Some(Slot::Gone) | None);
    let mut i = 0;
    while let Some((candidate, baseline)) = entry.pending.get(i).cloned() {
        if matches!(entry.production, Slot::Gone)
            || gone(entry, &candidate)
            || baseline.as_deref().is_some_and(|b| gone(entry, b))
        {
            entry.pending.remove(i);
            continue;
        }
        let prod = entry.production.answer();
        let cand = entry.target(&candidate).and_then(Slot::answer);
        let base = baseline
            .as_deref()
            .map(|b| entry.target(b).and_then(Slot::answer));
        match (prod, cand, base) {
            (Some(p), Some(c), None) | (Some(p), Some(c), Some(Some(_))) => {
                let report = compare(settings, p, c, base.flatten());
                out.push(Event::Compared {
                    id: entry.id.clone(),
                    request: entry.request.clone(),
                    candidate,
                    report,
                    production_latency: p.latency,
                    candidate_latency: c.latency,
                });
                entry.pending.remove(i);
            }
            _ => i += 1,
        }
    }
    let mut freed = 0usize;
    for t in &mut entry.targets {
        let needed = entry
            .pending
            .iter()
            .any(|(c, b)| *c == t.name || b.as_ref() == Some(&t.name));
        if !needed {
            if let Slot::Arrived(a) = &t.slot {
                freed = freed.saturating_add(a.size());
            }
            t.slot = Slot::Gone;
        }
    }
    entry.bytes = entry.bytes.saturating_sub(freed);
    freed
}

#[cfg(test)]
mod tests {
    use super::super::{Difference, Field};
    use super::*;

    const DEADLINE: Duration = Duration::from_secs(5);

    fn limits(max_entries: usize, max_bytes: usize) -> Limits {
        Limits {
            max_entries,
            max_bytes,
            deadline: DEADLINE,
        }
    }

    fn ans(status: u16, body: &str, ms: u64) -> Answer {
        Answer {
            status,
            headers: vec![(
                Bytes::from_static(b"content-type"),
                Bytes::from_static(b"application/json"),
            )],
            body: Bytes::copy_from_slice(body.as_bytes()),
            truncated: false,
            latency: Duration::from_millis(ms),
        }
    }

    fn name(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    fn target(s: &str) -> Side {
        Side::Target(name(s))
    }

    fn pairs(list: &[(&str, Option<&str>)]) -> Vec<(Arc<str>, Option<Arc<str>>)> {
        list.iter().map(|(c, b)| (name(c), b.map(name))).collect()
    }

    /// Base bytes of an entry: overhead, id, request, targets.
    fn base(id: &str, request: &str, targets: usize) -> usize {
        ENTRY_OVERHEAD + id.len() + request.len() + targets * TARGET_OVERHEAD
    }

    struct T {
        store: Store,
        settings: Settings,
        t0: Instant,
        out: Vec<Event>,
    }

    impl T {
        fn new(l: Limits) -> Self {
            Self {
                store: Store::new(l),
                settings: Settings::default(),
                t0: Instant::now(),
                out: Vec::new(),
            }
        }

        fn at(&self, ms: u64) -> Instant {
            self.t0 + Duration::from_millis(ms)
        }

        fn open(&mut self, id: &str, p: &[(&str, Option<&str>)], ms: u64) -> Vec<Event> {
            let now = self.at(ms);
            self.store.open(
                Bytes::copy_from_slice(id.as_bytes()),
                "GET /".to_owned(),
                pairs(p),
                now,
                &mut self.out,
            );
            std::mem::take(&mut self.out)
        }

        fn answer(&mut self, id: &str, side: Side, a: Answer, ms: u64) -> Vec<Event> {
            let now = self.at(ms);
            self.store
                .answer(id.as_bytes(), side, a, &self.settings, now, &mut self.out);
            std::mem::take(&mut self.out)
        }

        fn expire(&mut self, ms: u64) -> Vec<Event> {
            let now = self.at(ms);
            self.store.expire(now, &mut self.out);
            std::mem::take(&mut self.out)
        }
    }

    fn compared(id: &str, candidate: &str, report: Report, p_ms: u64, c_ms: u64) -> Event {
        Event::Compared {
            id: Bytes::copy_from_slice(id.as_bytes()),
            request: "GET /".into(),
            candidate: name(candidate),
            report,
            production_latency: Duration::from_millis(p_ms),
            candidate_latency: Duration::from_millis(c_ms),
        }
    }

    fn expired(candidate: &str, missing_production: bool, missing_shadow: bool) -> Event {
        Event::Expired {
            candidate: Some(name(candidate)),
            missing_production,
            missing_shadow,
        }
    }

    #[test]
    fn production_and_candidate_meet() {
        let mut t = T::new(Limits::default());
        assert_eq!(t.open("id1", &[("c", None)], 0), vec![]);
        assert_eq!(t.store.len(), 1);
        assert_eq!(t.store.bytes(), base("id1", "GET /", 1));
        assert_eq!(t.store.next_deadline(), Some(t.at(5000)));
        assert_eq!(t.store.opened_at(b"id1"), Some(t.at(0)));
        assert_eq!(t.store.opened_at(b"id2"), None);
        let p = ans(200, r#"{"a":1}"#, 3);
        let p_size = p.size();
        assert_eq!(t.answer("id1", Side::Production, p, 3), vec![]);
        assert_eq!(t.store.bytes(), base("id1", "GET /", 1) + p_size);
        let events = t.answer("id1", target("c"), ans(200, r#"{"a":2}"#, 7), 7);
        let report = Report {
            differences: vec![Difference {
                field: Field::Json("$.a".into()),
                production: "1".into(),
                candidate: "2".into(),
            }],
            ..Report::default()
        };
        assert_eq!(events, vec![compared("id1", "c", report, 3, 7)]);
        assert!(t.store.is_empty());
        assert_eq!(t.store.bytes(), 0);
        assert_eq!(t.store.next_deadline(), None);
        assert_eq!(t.store.opened_at(b"id1"), None);
        // Done: a late answer is unmatched.
        assert_eq!(
            t.answer("id1", Side::Production, ans(200, "", 0), 8),
            vec![Event::Unmatched {
                side: Side::Production
            }]
        );
    }

    #[test]
    fn baseline_is_awaited_and_filters_noise() {
        let mut t = T::new(Limits::default());
        t.open("x", &[("c", Some("b"))], 0);
        // Candidate first, then production: still waiting for the baseline.
        assert_eq!(
            t.answer("x", target("c"), ans(200, r#"{"r":3,"v":2}"#, 2), 2),
            vec![]
        );
        assert_eq!(
            t.answer("x", Side::Production, ans(200, r#"{"r":1,"v":1}"#, 1), 3),
            vec![]
        );
        let events = t.answer("x", target("b"), ans(200, r#"{"r":2,"v":1}"#, 4), 4);
        let report = Report {
            differences: vec![Difference {
                field: Field::Json("$.v".into()),
                production: "1".into(),
                candidate: "2".into(),
            }],
            noise: vec![Field::Json("$.r".into())],
            ..Report::default()
        };
        assert_eq!(events, vec![compared("x", "c", report, 1, 2)]);
        assert!(t.store.is_empty());
        assert_eq!(t.store.bytes(), 0);
    }

    #[test]
    fn two_candidates_share_a_baseline() {
        let mut t = T::new(Limits::default());
        t.open(
            "x",
            &[("c1", Some("b")), ("c2", Some("b")), ("c1", None)],
            0,
        );
        // "c1" named twice is awaited once: 3 targets.
        assert_eq!(t.store.bytes(), base("x", "GET /", 3));
        t.answer("x", Side::Production, ans(200, r#""p""#, 1), 1);
        t.answer("x", target("b"), ans(200, r#""p""#, 1), 1);
        let c1 = ans(200, r#""p""#, 2);
        let events = t.answer("x", target("c1"), c1, 2);
        assert_eq!(events, vec![compared("x", "c1", Report::default(), 1, 2)]);
        // c1's answer is dropped once compared; production's and the
        // baseline's are kept for c2.
        let kept = base("x", "GET /", 3) + 2 * ans(200, r#""p""#, 1).size();
        assert_eq!(t.store.bytes(), kept);
        assert_eq!(t.store.len(), 1);
        // c1 again: not awaited any more.
        assert_eq!(
            t.answer("x", target("c1"), ans(200, r#""p""#, 2), 3),
            vec![Event::Unmatched { side: target("c1") }]
        );
        let events = t.answer("x", target("c2"), ans(200, r#""q""#, 5), 5);
        assert_eq!(events.len(), 1);
        assert!(
            matches!(&events[0], Event::Compared { candidate, report, .. }
            if &**candidate == "c2" && report.differences.len() == 1)
        );
        assert!(t.store.is_empty());
        assert_eq!(t.store.bytes(), 0);
    }

    #[test]
    fn expiry_says_which_half_is_missing() {
        let mut t = T::new(Limits::default());
        t.open("none", &[("c", None)], 0);
        t.open("prod-only", &[("c", Some("b"))], 10);
        t.open("shadow-only", &[("c", Some("b"))], 20);
        t.open("no-baseline", &[("c", Some("b"))], 30);
        t.open("late", &[("c", None)], 1000);
        t.answer("prod-only", Side::Production, ans(200, "", 0), 40);
        t.answer("shadow-only", target("c"), ans(200, "", 0), 40);
        t.answer("shadow-only", target("b"), ans(200, "", 0), 40);
        t.answer("no-baseline", Side::Production, ans(200, "", 0), 40);
        t.answer("no-baseline", target("c"), ans(200, "", 0), 40);
        assert_eq!(t.expire(4999), vec![]);
        assert_eq!(t.store.len(), 5);
        assert_eq!(t.expire(5000), vec![expired("c", true, true)]);
        assert_eq!(
            t.expire(5030),
            vec![
                expired("c", false, true),
                expired("c", true, false),
                expired("c", false, true),
            ]
        );
        assert_eq!(t.store.len(), 1);
        assert_eq!(t.store.bytes(), base("late", "GET /", 1));
        // An answer after the deadline, before the timer ran: the entry
        // expires first, and the answer is unmatched.
        assert_eq!(
            t.answer("late", Side::Production, ans(200, "", 0), 6000),
            vec![
                expired("c", true, true),
                Event::Unmatched {
                    side: Side::Production
                }
            ]
        );
        assert!(t.store.is_empty());
        assert_eq!(t.store.bytes(), 0);
    }

    #[test]
    fn eviction_at_max_entries() {
        let mut t = T::new(limits(2, usize::MAX));
        t.open("a", &[("c", None)], 0);
        t.open("b", &[("c", None)], 1);
        assert_eq!(t.open("c", &[("c", None)], 2), vec![Event::Evicted]);
        assert_eq!(t.store.len(), 2);
        assert_eq!(
            t.answer("a", Side::Production, ans(200, "", 0), 3),
            vec![Event::Unmatched {
                side: Side::Production
            }]
        );
        assert_eq!(t.answer("b", Side::Production, ans(200, "", 0), 3), vec![]);
        // Nothing fits at all.
        let mut t = T::new(limits(0, usize::MAX));
        assert_eq!(t.open("a", &[("c", None)], 0), vec![Event::Evicted]);
        assert!(t.store.is_empty());
    }

    #[test]
    fn eviction_at_max_bytes() {
        let one = base("a", "GET /", 1);
        let mut t = T::new(limits(100, 1000));
        t.open("a", &[("c", None)], 0);
        t.open("b", &[("c", None)], 1);
        assert_eq!(t.store.bytes(), 2 * one);
        // b's answer needs room: a (the oldest) goes.
        let big = ans(200, &"x".repeat(400), 0);
        let size = big.size();
        assert!(2 * one + size > 1000 && one + size <= 1000);
        assert_eq!(
            t.answer("b", Side::Production, big, 2),
            vec![Event::Evicted]
        );
        assert_eq!(t.store.len(), 1);
        assert_eq!(t.store.bytes(), one + size);
        // b is the oldest now, but an answer for b never evicts b itself:
        // too large for the entry, so not kept, and b's comparison is given
        // up.
        assert_eq!(
            t.answer("b", target("c"), ans(200, &"y".repeat(400), 0), 3),
            vec![Event::TooLarge { side: target("c") }]
        );
        assert!(t.store.is_empty());
        assert_eq!(t.store.bytes(), 0);
        // A request line too large on its own.
        let mut t = T::new(limits(100, 100));
        assert_eq!(t.open("a", &[("c", None)], 0), vec![Event::Evicted]);
        assert!(t.store.is_empty());
    }

    #[test]
    fn too_large_answer_gives_up_only_what_needs_it() {
        let mut t = T::new(limits(100, 2000));
        t.open("x", &[("c1", None), ("c2", None)], 0);
        assert_eq!(
            t.answer("x", target("c1"), ans(200, &"y".repeat(3000), 0), 1),
            vec![Event::TooLarge { side: target("c1") }]
        );
        assert_eq!(t.store.len(), 1);
        t.answer("x", Side::Production, ans(200, r#""p""#, 0), 2);
        let events = t.answer("x", target("c2"), ans(200, r#""p""#, 0), 3);
        assert_eq!(events, vec![compared("x", "c2", Report::default(), 0, 0)]);
        assert!(t.store.is_empty());
        // Production too large: every comparison is given up.
        t.open("y", &[("c1", None), ("c2", None)], 10);
        assert_eq!(
            t.answer("y", Side::Production, ans(200, &"y".repeat(3000), 0), 11),
            vec![Event::TooLarge {
                side: Side::Production
            }]
        );
        assert!(t.store.is_empty());
        assert_eq!(t.store.bytes(), 0);
    }

    #[test]
    fn repeated_ids_replace_the_entry() {
        let mut t = T::new(Limits::default());
        t.open("r", &[("c", None)], 0);
        t.answer("r", Side::Production, ans(200, r#""old""#, 0), 1);
        assert_eq!(t.open("r", &[("c", None)], 2), vec![Event::Repeated]);
        assert_eq!(t.store.len(), 1);
        assert_eq!(t.store.bytes(), base("r", "GET /", 1));
        // The new entry awaits production again.
        assert_eq!(
            t.answer("r", target("c"), ans(200, r#""new""#, 3), 3),
            vec![]
        );
        let events = t.answer("r", Side::Production, ans(200, r#""new""#, 4), 4);
        assert_eq!(events, vec![compared("r", "c", Report::default(), 4, 3)]);
        // The old entry's deadline does not expire the new one.
        t.open("r", &[("c", None)], 10);
        t.open("r", &[("c", None)], 20);
        assert_eq!(t.expire(5010), vec![]);
        assert_eq!(t.expire(5020), vec![expired("c", true, true)]);
    }

    #[test]
    fn unmatched_answers_are_never_kept() {
        let mut t = T::new(Limits::default());
        let un = |side| vec![Event::Unmatched { side }];
        assert_eq!(
            t.answer("nope", Side::Production, ans(200, "", 0), 0),
            un(Side::Production)
        );
        t.open("x", &[("c", None)], 0);
        assert_eq!(
            t.answer("x", target("other"), ans(200, "", 0), 1),
            un(target("other"))
        );
        assert_eq!(t.answer("x", Side::Production, ans(200, "", 0), 1), vec![]);
        let bytes = t.store.bytes();
        // A second answer from the same side.
        assert_eq!(
            t.answer("x", Side::Production, ans(200, "", 0), 1),
            un(Side::Production)
        );
        assert_eq!(t.store.bytes(), bytes);
        // No pairs: nothing opened.
        assert_eq!(t.open("y", &[], 2), vec![]);
        assert_eq!(
            t.answer("y", Side::Production, ans(200, "", 0), 3),
            un(Side::Production)
        );
        assert_eq!(t.store.len(), 1);
    }

    #[test]
    fn memory_stays_bounded_when_production_never_answers() {
        let max_bytes = 300_000;
        let mut t = T::new(limits(1000, max_bytes));
        let mut evicted = 0;
        for i in 0..100_000u64 {
            let id = format!("id-{i}");
            let now = i / 100; // 100 requests per ms: nothing expires.
            for e in t.open(&id, &[("c", None)], now) {
                assert_eq!(e, Event::Evicted);
                evicted += 1;
            }
            for e in t.answer(&id, target("c"), ans(200, &"b".repeat(200), 1), now) {
                assert_eq!(e, Event::Evicted);
                evicted += 1;
            }
            assert!(t.store.len() <= 1000);
            assert!(t.store.bytes() <= max_bytes);
        }
        let open = t.store.len();
        assert_eq!(open + evicted, 100_000);
        // Bytes bound the store before the count does here.
        let per = base("id-99999", "GET /", 1) + ans(200, &"b".repeat(200), 1).size();
        assert_eq!(open, max_bytes / per);
        let events = t.expire(10_000_000);
        assert_eq!(events.len(), open);
        assert!(events.iter().all(|e| *e == expired("c", true, false)));
        assert!(t.store.is_empty());
        assert_eq!(t.store.bytes(), 0);
    }

    #[test]
    fn kept_answers_are_compact_copies() {
        let frame = Bytes::from(vec![b'z'; 10_000]);
        let a = Answer {
            status: 200,
            headers: vec![(frame.slice(0..1), frame.slice(1..3))],
            body: frame.slice(3..10),
            truncated: true,
            latency: Duration::from_millis(1),
        };
        let c = compact(a.clone());
        assert_eq!(c.headers, a.headers);
        assert_eq!(c.body, a.body);
        assert_eq!((c.status, c.truncated, c.latency), (200, true, a.latency));
        assert_eq!(c.size(), a.size());
    }
}
