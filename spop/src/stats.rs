//! Counters readable from a running agent (updated by [`crate::conn::Connection`]).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::{FrameType, Status};

/// Counters of a running agent, updated with relaxed atomics.
///
/// Read them with [`Stats::snapshot`] (or the getters) from any thread.
#[derive(Default)]
pub struct Stats {
    pub(crate) connections_total: AtomicU64,
    pub(crate) connections_active: AtomicU64,
    pub(crate) healthchecks: AtomicU64,
    pub(crate) frames_received: [AtomicU64; 8],
    pub(crate) frames_sent: [AtomicU64; 8],
    pub(crate) disconnects_sent: [AtomicU64; 16],
    pub(crate) disconnects_received: [AtomicU64; 16],
    pub(crate) in_flight: AtomicU64,
    pub(crate) handler_errors: AtomicU64,
    pub(crate) handler_timeouts: AtomicU64,
    pub(crate) handler_panics: AtomicU64,
    pub(crate) aborted_frames: AtomicU64,
    pub(crate) tls_handshake_failures: AtomicU64,
    pub(crate) memory_refusals: AtomicU64,
    pub(crate) acks_refused: AtomicU64,
    pub(crate) acks_too_large: AtomicU64,
    pub(crate) write_timeouts: AtomicU64,
}

/// Index of a frame type in the per-type arrays.
const fn frame_slot(t: FrameType) -> usize {
    match t.0 {
        0..=3 => t.0 as usize,
        101..=103 => (t.0 - 97) as usize,
        _ => 7,
    }
}

const FRAME_TYPES: [FrameType; 7] = [
    FrameType::UNSET,
    FrameType::HAPROXY_HELLO,
    FrameType::HAPROXY_DISCONNECT,
    FrameType::NOTIFY,
    FrameType::AGENT_HELLO,
    FrameType::AGENT_DISCONNECT,
    FrameType::ACK,
];

/// Index of a status code in the per-status arrays (0..=13, 99, then "other").
const fn status_slot(s: Status) -> usize {
    match s.0 {
        0..=13 => s.0 as usize,
        99 => 14,
        _ => 15,
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Relaxed);
}

impl Stats {
    pub(crate) fn frame_received(&self, t: FrameType) {
        if let Some(c) = self.frames_received.get(frame_slot(t)) {
            bump(c);
        }
    }

    pub(crate) fn frame_sent(&self, t: FrameType) {
        if let Some(c) = self.frames_sent.get(frame_slot(t)) {
            bump(c);
        }
    }

    pub(crate) fn disconnect_sent(&self, s: Status) {
        if let Some(c) = self.disconnects_sent.get(status_slot(s)) {
            bump(c);
        }
    }

    pub(crate) fn disconnect_received(&self, s: Status) {
        if let Some(c) = self.disconnects_received.get(status_slot(s)) {
            bump(c);
        }
    }

    /// Frames of this type received so far.
    pub fn frames_received(&self, t: FrameType) -> u64 {
        self.frames_received
            .get(frame_slot(t))
            .map_or(0, |c| c.load(Relaxed))
    }

    /// Frames of this type sent so far.
    pub fn frames_sent(&self, t: FrameType) -> u64 {
        self.frames_sent
            .get(frame_slot(t))
            .map_or(0, |c| c.load(Relaxed))
    }

    /// AGENT-DISCONNECT frames sent with this status (errors by status code).
    pub fn disconnects_sent(&self, s: Status) -> u64 {
        self.disconnects_sent
            .get(status_slot(s))
            .map_or(0, |c| c.load(Relaxed))
    }

    /// HAPROXY-DISCONNECT frames received with this status.
    pub fn disconnects_received(&self, s: Status) -> u64 {
        self.disconnects_received
            .get(status_slot(s))
            .map_or(0, |c| c.load(Relaxed))
    }

    /// Connections accepted since start.
    pub fn connections_total(&self) -> u64 {
        self.connections_total.load(Relaxed)
    }

    /// Connections open now.
    pub fn connections_active(&self) -> u64 {
        self.connections_active.load(Relaxed)
    }

    /// Health checks answered.
    pub fn healthchecks(&self) -> u64 {
        self.healthchecks.load(Relaxed)
    }

    /// NOTIFY frames being handled now, on all connections.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Relaxed)
    }

    /// Handlers that returned an error (answered with an empty ACK).
    pub fn handler_errors(&self) -> u64 {
        self.handler_errors.load(Relaxed)
    }

    /// Handlers that ran past the handler timeout (answered with an empty ACK).
    pub fn handler_timeouts(&self) -> u64 {
        self.handler_timeouts.load(Relaxed)
    }

    /// Handlers that panicked (answered with an empty ACK).
    pub fn handler_panics(&self) -> u64 {
        self.handler_panics.load(Relaxed)
    }

    /// Fragmented frames cancelled by HAProxy (ABORT).
    pub fn aborted_frames(&self) -> u64 {
        self.aborted_frames.load(Relaxed)
    }

    /// TLS handshakes that failed or timed out (feature `tls`).
    pub fn tls_handshake_failures(&self) -> u64 {
        self.tls_handshake_failures.load(Relaxed)
    }

    /// Connections disconnected with status 13 because the agent's memory
    /// budget (`max_memory`) would have been exceeded.
    pub fn memory_refusals(&self) -> u64 {
        self.memory_refusals.load(Relaxed)
    }

    /// ACKs refused because no NOTIFY with their ids was awaiting one: late
    /// (after the handler timeout already answered with an empty ACK),
    /// duplicated, or for unknown ids.
    pub fn acks_refused(&self) -> u64 {
        self.acks_refused.load(Relaxed)
    }

    /// ACKs whose actions did not fit the negotiated frame size (an empty ACK
    /// was sent instead).
    pub fn acks_too_large(&self) -> u64 {
        self.acks_too_large.load(Relaxed)
    }

    /// Connections closed because the peer stopped reading: bytes were
    /// pending and none could be written for `write_timeout`.
    pub fn write_timeouts(&self) -> u64 {
        self.write_timeouts.load(Relaxed)
    }

    /// A copy of every counter at one moment.
    pub fn snapshot(&self) -> StatsSnapshot {
        let by_type = |arr: &[AtomicU64; 8]| {
            FRAME_TYPES
                .iter()
                .map(|&t| (t, arr.get(frame_slot(t)).map_or(0, |c| c.load(Relaxed))))
                .collect()
        };
        let by_status = |arr: &[AtomicU64; 16]| {
            (0..=13u32)
                .chain([99])
                .map(Status)
                .map(|s| (s, arr.get(status_slot(s)).map_or(0, |c| c.load(Relaxed))))
                .filter(|&(_, n)| n > 0)
                .collect()
        };
        StatsSnapshot {
            connections_total: self.connections_total(),
            connections_active: self.connections_active(),
            healthchecks: self.healthchecks(),
            frames_received: by_type(&self.frames_received),
            frames_sent: by_type(&self.frames_sent),
            disconnects_sent: by_status(&self.disconnects_sent),
            disconnects_received: by_status(&self.disconnects_received),
            in_flight: self.in_flight(),
            handler_errors: self.handler_errors(),
            handler_timeouts: self.handler_timeouts(),
            handler_panics: self.handler_panics(),
            aborted_frames: self.aborted_frames(),
            tls_handshake_failures: self.tls_handshake_failures(),
            memory_refusals: self.memory_refusals(),
            acks_refused: self.acks_refused(),
            acks_too_large: self.acks_too_large(),
            write_timeouts: self.write_timeouts(),
        }
    }
}

impl fmt::Debug for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.snapshot().fmt(f)
    }
}

/// A copy of [`Stats`] at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StatsSnapshot {
    /// Connections accepted since start.
    pub connections_total: u64,
    /// Connections open.
    pub connections_active: u64,
    /// Health checks answered.
    pub healthchecks: u64,
    /// Frames received, by type.
    pub frames_received: Vec<(FrameType, u64)>,
    /// Frames sent, by type.
    pub frames_sent: Vec<(FrameType, u64)>,
    /// AGENT-DISCONNECT sent, by status (non-zero counts only).
    pub disconnects_sent: Vec<(Status, u64)>,
    /// HAPROXY-DISCONNECT received, by status (non-zero counts only).
    pub disconnects_received: Vec<(Status, u64)>,
    /// NOTIFY frames being handled.
    pub in_flight: u64,
    /// Handler errors.
    pub handler_errors: u64,
    /// Handler timeouts.
    pub handler_timeouts: u64,
    /// Handler panics.
    pub handler_panics: u64,
    /// Frames cancelled by ABORT.
    pub aborted_frames: u64,
    /// TLS handshakes that failed or timed out.
    pub tls_handshake_failures: u64,
    /// Connections refused (status 13) by the memory budget.
    pub memory_refusals: u64,
    /// ACKs refused (late, duplicated or for unknown ids).
    pub acks_refused: u64,
    /// ACKs too large for the frame size (sent empty).
    pub acks_too_large: u64,
    /// Connections closed by the write timeout.
    pub write_timeouts: u64,
}
