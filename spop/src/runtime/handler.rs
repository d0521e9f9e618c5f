//! What an agent author writes: a handler from a NOTIFY to an ACK.

use std::future::Future;

pub use crate::conn::NotifyRequest;
use crate::Ack;

/// The error type handlers may return.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What a handler may return: an [`Ack`], or a `Result` of one.
pub trait IntoAck {
    /// The ACK to send, or the error to count and log (an empty ACK is sent).
    ///
    /// # Errors
    ///
    /// The handler's own error.
    fn into_ack(self) -> Result<Ack, BoxError>;
}

impl IntoAck for Ack {
    fn into_ack(self) -> Result<Ack, BoxError> {
        Ok(self)
    }
}

impl<E: Into<BoxError>> IntoAck for Result<Ack, E> {
    fn into_ack(self) -> Result<Ack, BoxError> {
        self.map_err(Into::into)
    }
}

/// Turns each NOTIFY into the actions of its ACK.
///
/// Implemented for every `Fn(NotifyRequest) -> impl Future<Output = impl IntoAck>`,
/// so an async closure is a handler:
///
/// ```
/// use haproxy_spop::runtime::{Agent, NotifyRequest};
/// use haproxy_spop::{Ack, VarScope};
///
/// let agent = Agent::builder().build(|req: NotifyRequest| async move {
///     let score = req.message("check").and_then(|m| m.int("score").ok()).unwrap_or(0);
///     Ack::new().set_var(VarScope::TRANSACTION, "score", score)
/// });
/// # drop(agent);
/// ```
///
/// The runtime answers HAProxy in time whatever the handler does: an error, a
/// panic or a run past the handler timeout gets an empty ACK, and is counted.
pub trait Handler: Send + Sync + 'static {
    /// Handles one NOTIFY.
    fn call(
        &self,
        req: NotifyRequest,
    ) -> impl Future<Output = Result<Ack, BoxError>> + Send + 'static;
}

impl<F, Fut, R> Handler for F
where
    F: Fn(NotifyRequest) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = R> + Send + 'static,
    R: IntoAck,
{
    fn call(
        &self,
        req: NotifyRequest,
    ) -> impl Future<Output = Result<Ack, BoxError>> + Send + 'static {
        let fut = self(req);
        async move { fut.await.into_ack() }
    }
}
