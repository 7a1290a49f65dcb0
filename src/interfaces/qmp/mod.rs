//! A QMP-compatible server on a Unix socket.
//!
//! Wiring (all on the VMM's main thread, inside its one `event-manager` loop):
//!
//! 1. `QmpServer::bind(path, control)` creates the socket (mode 0600,
//!    refusing an existing path) with `control`, the VMM's [`VmControl`].
//! 2. `hub.add_sink(Box::new(server.event_sink()))` before the first event,
//!    so every event reaches every negotiated client.
//! 3. `event_manager.add_subscriber(server)`: the server watches its
//!    listener, a wake-up eventfd and each client, adding and removing
//!    client fds itself. Sockets are non-blocking; it never blocks the loop.
//!
//! Commands are answered in the loop: the server calls
//! `VmControl::execute` holding no lock of its own, so `execute` may emit
//! events synchronously (through the hub and the [`QmpEventSink`]). Those
//! events reach every negotiated client, the caller included, and the
//! caller sees them *before* the command's reply (as QEMU does for `stop`,
//! whose STOP event precedes its return). Events may also be emitted from
//! any other thread; output a socket cannot take at once is kept (up to
//! [`MAX_OUTBOX`] per client, past which the client is dropped) and sent
//! when the loop sees the socket writable.
//!
//! Input is a stream of JSON objects with or without newlines between them
//! (see `framing`); a message over [`MAX_MESSAGE`] bytes gets an error and is
//! discarded up to the next newline, keeping the connection.

mod clients;
mod framing;
mod protocol;
mod server;
mod socket;
#[cfg(test)]
mod tests;

pub use clients::{QmpEventSink, MAX_OUTBOX};
pub use framing::MAX_MESSAGE;
pub use protocol::{greeting, query_status_reply, version, ErrorClass, QmpCommand, QmpError, COMMANDS};
pub use server::{QmpServer, VmControl, MAX_CLIENTS};

/// The server's pure input path, for the fuzz targets in `tests/fuzz`.
/// Not an API: it exists so the fuzzer exercises the code the server runs.
#[doc(hidden)]
pub mod fuzz_api {
    use serde_json::Value;

    use super::framing::{self, Frame};
    use super::server::respond;
    use super::{QmpCommand, QmpError};

    /// Splits a client's byte stream into messages as the server does.
    #[derive(Debug, Default)]
    pub struct Framer(framing::Framer);

    impl Framer {
        /// The server's framer with a smaller message limit: the same
        /// states, reached with a few hundred bytes instead of 64 KiB
        /// (the per-byte loop is what a fuzzer's execution costs).
        pub fn with_limit(limit: usize) -> Self {
            Self(framing::Framer::with_limit(limit))
        }

        /// Feeds bytes; returns one item per frame completed: `Some(message)`
        /// or `None` for a message dropped for being too long.
        pub fn push(&mut self, bytes: &[u8]) -> Vec<Option<Vec<u8>>> {
            let mut out = Vec::new();
            self.0.push(bytes, &mut out);
            out.into_iter()
                .map(|f| match f {
                    Frame::Message(m) => Some(m),
                    Frame::TooLong => None,
                })
                .collect()
        }

        /// Bytes held for an unfinished message.
        pub fn pending(&self) -> usize {
            self.0.pending()
        }
    }

    /// The server's reply to one frame (`None`: too long) and whether it
    /// completed capabilities negotiation.
    pub fn respond_to(
        frame: Option<Vec<u8>>,
        negotiated: bool,
        execute: &mut dyn FnMut(QmpCommand) -> Result<Value, QmpError>,
    ) -> (Value, bool) {
        respond(frame.map_or(Frame::TooLong, Frame::Message), negotiated, execute)
    }
}

/// Errors setting up the QMP server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("QMP socket path {0} already exists and is not a socket kennel can tell is stale; refusing to replace it")]
    Exists(String),
    #[error("QMP socket path {0} is in use: a process listens on it (another kennel for this VM?)")]
    InUse(String),
    #[error("QMP socket path {0} is empty, contains a NUL byte or is longer than 107 bytes")]
    BadPath(String),
    #[error("cannot {what} QMP socket {path}: {source}")]
    Io { path: String, what: &'static str, source: std::io::Error },
    #[error("cannot create the QMP wake-up eventfd: {0}")]
    EventFd(#[source] std::io::Error),
}
