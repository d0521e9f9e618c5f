//! spop-mirror: an SPOP agent that mirrors the HTTP traffic HAProxy reports to
//! shadow servers, without making production traffic wait.
//!
//! HAProxy's SPOE filter sends a `mirror` message per request; [`handler`]
//! turns each into a [`request::MirrorRequest`] (one compact copy of exactly
//! what is sent, so that queued requests pin no frame buffers) and hands it
//! to the [`mirror::Mirror`] engine, then HAProxy
//! gets its ACK at once. The engine filters, samples and queues the request
//! for every target, each with its own bounded queue, worker pool and
//! keep-alive connection pool.

// Indexing here is by target index into vectors built together from the same
// target list, never by data from the wire (that is parsed by `spop`).
#![allow(clippy::indexing_slicing)]

pub mod compare;
pub mod comparing;
pub mod config;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod h1;
pub mod metrics;
pub mod mirror;
mod pipeline;
pub mod policy;
pub mod reload;
pub mod request;
pub mod server;
pub mod tls;

use std::sync::Arc;

use haproxy_spop::runtime::NotifyRequest;
use haproxy_spop::{Ack, VarScope};

use crate::comparing::Compare;
use crate::mirror::Mirror;
use crate::request::ArgNames;

/// The SPOP handler: every `message` of a NOTIFY goes to the mirror, and
/// every compare message (production's answer) to the comparison. The ACK
/// is immediate; it is empty, except for a request chosen for comparison
/// (`--compare`, drawn apart from `--sample`) that a candidate target
/// queued: then it sets `txn.<var-prefix>.<compare-var>` to the instance
/// number, which makes HAProxy send the response's compare message.
pub fn handler(
    mirror: Mirror,
    message: String,
    names: ArgNames,
    arg_src: Option<String>,
    compare: Option<Arc<Compare>>,
) -> impl Fn(NotifyRequest) -> std::future::Ready<Ack> + Send + Sync + 'static {
    move |req: NotifyRequest| {
        let mut ack = Ack::new();
        for msg in req.messages() {
            if msg.name() == message.as_bytes() {
                mirror.received();
                let r = match request::build(&msg, &names) {
                    Ok(r) => r,
                    Err(kind) => {
                        if mirror.metrics().bad_message(kind) {
                            tracing::warn!(
                                kind = kind.label(),
                                "bad mirror message (logged once per kind, counted in spop_mirror_bad_messages_total)"
                            );
                        }
                        continue;
                    }
                };
                // The client address, when HAProxy sends it (`sticky = "src"`).
                let src = arg_src.as_deref().and_then(|n| msg.ip(n).ok());
                // Compared? The share first (one guard load and a draw),
                // then the id argument.
                let chosen = compare.as_ref().and_then(|c| {
                    if !mirror.compares(|| c.draw()) {
                        return None;
                    }
                    msg.bytes(&c.names().id)
                        .ok()
                        .filter(|id| !id.is_empty())
                        .map(|id| (c, id))
                });
                match chosen {
                    Some((c, id)) => {
                        let arrival = std::time::Instant::now();
                        let (_, opened) = c.submit(&mirror, r, src, id, arrival);
                        if opened {
                            let (name, value) = c.var();
                            ack = ack.set_var(VarScope::TRANSACTION, name, value);
                        }
                    }
                    None => {
                        mirror.submit_from(r, src);
                    }
                }
            } else if let Some(c) = compare
                .as_ref()
                .filter(|c| msg.name() == c.names().message.as_bytes())
            {
                let settings = mirror.target_set().compare.clone();
                if let Err(kind) = c.production(&msg, settings) {
                    if mirror.metrics().compare().bad_message(kind) {
                        tracing::warn!(
                            kind = kind.label(),
                            "bad compare message (logged once per kind, counted in spop_mirror_compare_bad_messages_total)"
                        );
                    }
                }
            }
        }
        std::future::ready(ack)
    }
}
