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
pub mod config;
mod h1;
pub mod metrics;
pub mod mirror;
pub mod policy;
pub mod reload;
pub mod request;
pub mod server;
pub mod tls;

use haproxy_spop::runtime::NotifyRequest;
use haproxy_spop::Ack;

use crate::mirror::Mirror;
use crate::request::ArgNames;

/// The SPOP handler: every `message` of a NOTIFY goes to the mirror; the ACK
/// is empty and immediate.
pub fn handler(
    mirror: Mirror,
    message: String,
    names: ArgNames,
    arg_src: Option<String>,
) -> impl Fn(NotifyRequest) -> std::future::Ready<Ack> + Send + Sync + 'static {
    move |req: NotifyRequest| {
        for msg in req.messages() {
            if msg.name() != message.as_bytes() {
                continue;
            }
            mirror.received();
            match request::build(&msg, &names) {
                Ok(r) => {
                    // The client address, when HAProxy sends it (`sticky = "src"`).
                    let src = arg_src.as_deref().and_then(|n| msg.ip(n).ok());
                    mirror.submit_from(r, src);
                }
                Err(kind) => {
                    if mirror.metrics().bad_message(kind) {
                        tracing::warn!(
                            kind = kind.label(),
                            "bad mirror message (logged once per kind, counted in spop_mirror_bad_messages_total)"
                        );
                    }
                }
            }
        }
        std::future::ready(Ack::new())
    }
}
