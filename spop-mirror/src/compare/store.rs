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
