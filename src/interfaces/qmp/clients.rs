//! The clients' output side, shared between the server and the event sink.
//!
//! Locking rule: this is the only lock on the path from the event hub to a
//! QMP client, and the server never holds it while calling
//! `VmControl::execute`. So a command that makes the VMM emit events (a
//! `system_reset`, say) can write them to every client, the caller included,
//! without deadlock, from whichever thread emits them.

use std::collections::HashMap;
use std::io;
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, MutexGuard};

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::supervision::events::{self, Event, EventSink};

/// A client whose unsent output passes this is dropped: a client that never
/// reads must not make the VMM's memory grow without bound.
pub const MAX_OUTBOX: usize = 1024 * 1024;

#[derive(Debug)]
struct Outbox {
    stream: Arc<UnixStream>,
    pending: Vec<u8>,
    /// Past `qmp_capabilities`: only such clients get events, as in QEMU.
    negotiated: bool,
    /// Overflowed or failed; the server will unregister and close it.
    dead: bool,
}

/// Writes without blocking and without SIGPIPE (a VMM that installs its own
/// signal handling may not ignore SIGPIPE; a vanished client must not kill it).
fn send(stream: &UnixStream, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for `buf.len()` bytes; the fd is owned by `stream`.
    let n = unsafe {
        libc::send(
            stream.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
        )
    };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

impl Outbox {
    /// Sends as much as the socket takes now.
    fn flush(&mut self) {
        let mut sent = 0;
        while sent < self.pending.len() {
            match send(&self.stream, &self.pending[sent..]) {
                Ok(0) => break,
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    self.kill();
                    return;
                }
            }
        }
        self.pending.drain(..sent);
    }

    fn queue(&mut self, bytes: &[u8]) {
        if self.dead {
            return;
        }
        if self.pending.len() + bytes.len() > MAX_OUTBOX {
            log::warn!("QMP client is not reading its output; dropping it");
            self.kill();
            return;
        }
        self.pending.extend_from_slice(bytes);
        self.flush();
    }

    fn kill(&mut self) {
        self.dead = true;
        self.pending = Vec::new();
        // The peer sees EOF at once, even before the server gets round to
        // unregistering and closing the socket.
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

/// What the server needs to know about a client's output after writing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct OutState {
    pub pending: bool,
    pub dead: bool,
}

#[derive(Debug)]
pub(crate) struct Shared {
    clients: Mutex<HashMap<u32, Outbox>>,
    /// Written when output is left pending (or a client died) outside the
    /// server's own processing, so the event loop wakes the server to watch
    /// for writability or to close the client.
    pub wake: EventFd,
}

impl Shared {
    pub fn new() -> io::Result<Arc<Self>> {
        Ok(Arc::new(Self { clients: Mutex::new(HashMap::new()), wake: EventFd::new(EFD_NONBLOCK)? }))
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u32, Outbox>> {
        // Nothing done under this lock can leave the map inconsistent, so a
        // panic elsewhere while holding it is no reason to stop serving.
        self.clients.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn add(&self, token: u32, stream: Arc<UnixStream>) {
        self.lock().insert(token, Outbox { stream, pending: Vec::new(), negotiated: false, dead: false });
    }

    pub fn remove(&self, token: u32) {
        self.lock().remove(&token);
    }

    pub fn clear(&self) {
        self.lock().clear();
    }

    /// Queues bytes for one client and sends what the socket takes.
    pub fn queue(&self, token: u32, bytes: &[u8]) {
        if let Some(o) = self.lock().get_mut(&token) {
            o.queue(bytes);
        }
    }

    /// Queues bytes for every negotiated client.
    pub fn broadcast(&self, bytes: &[u8]) {
        let mut need_wake = false;
        for o in self.lock().values_mut().filter(|o| o.negotiated) {
            o.queue(bytes);
            need_wake |= o.dead || !o.pending.is_empty();
        }
        if need_wake {
            // A failed wake-up only delays output until the client's next
            // request; the eventfd cannot overflow at our rate anyway.
            let _ = self.wake.write(1);
        }
    }

    pub fn flush(&self, token: u32) {
        if let Some(o) = self.lock().get_mut(&token) {
            o.flush();
        }
    }

    pub fn flush_all(&self) {
        for o in self.lock().values_mut() {
            o.flush();
        }
    }

    pub fn is_negotiated(&self, token: u32) -> bool {
        self.lock().get(&token).is_some_and(|o| o.negotiated)
    }

    /// Queues the `qmp_capabilities` reply and marks the client negotiated
    /// under one lock, so no event can be queued before the reply.
    pub fn queue_then_negotiate(&self, token: u32, bytes: &[u8]) {
        if let Some(o) = self.lock().get_mut(&token) {
            o.queue(bytes);
            o.negotiated = true;
        }
    }

    pub fn state(&self, token: u32) -> Option<OutState> {
        self.lock().get(&token).map(|o| OutState { pending: !o.pending.is_empty(), dead: o.dead })
    }
}

/// The event hub's sink for QMP clients: every event goes to every client
/// that has completed `qmp_capabilities`. Cheap to create; holds only the
/// shared output side, so it works from any thread and never waits for the
/// server.
#[derive(Debug)]
pub struct QmpEventSink {
    pub(crate) shared: Arc<Shared>,
}

impl EventSink for QmpEventSink {
    fn name(&self) -> &str {
        "qmp"
    }

    fn emit(&mut self, event: &Event) -> Result<(), events::Error> {
        let mut line = event.to_line().into_bytes();
        line.extend_from_slice(b"\r\n");
        self.shared.broadcast(&line);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn pair(shared: &Shared, token: u32) -> UnixStream {
        let (ours, theirs) = UnixStream::pair().expect("pair");
        ours.set_nonblocking(true).expect("nonblocking");
        shared.add(token, Arc::new(ours));
        theirs
    }

    #[test]
    fn broadcast_reaches_only_negotiated_clients() {
        let shared = Shared::new().expect("shared");
        let mut a = pair(&shared, 2);
        let b = pair(&shared, 3);
        shared.queue_then_negotiate(2, b"");
        shared.broadcast(b"hello\r\n");
        let mut buf = [0u8; 16];
        let n = a.read(&mut buf).expect("read");
        assert_eq!(&buf[..n], b"hello\r\n");
        b.set_nonblocking(true).expect("nonblocking");
        assert!((&b).read(&mut buf).is_err(), "not negotiated: nothing");
    }

    #[test]
    fn a_client_that_never_reads_is_dropped_at_the_limit() {
        let shared = Shared::new().expect("shared");
        let mut peer = pair(&shared, 2);
        shared.queue_then_negotiate(2, b"");
        let chunk = vec![b'x'; 64 * 1024];
        let mut sent = 0;
        while shared.state(2).is_some_and(|s| !s.dead) {
            shared.broadcast(&chunk);
            sent += chunk.len();
            assert!(sent < 64 * MAX_OUTBOX, "never dropped");
        }
        assert_eq!(shared.state(2), Some(OutState { pending: false, dead: true }));
        assert!(shared.wake.read().is_ok_and(|n| n > 0), "the server is woken to close it");
        // The peer sees the socket closed after what was delivered.
        let mut sink = Vec::new();
        peer.read_to_end(&mut sink).expect("read to EOF");
        assert!(sink.len() < sent);
    }

    #[test]
    fn writes_to_a_vanished_peer_kill_quietly() {
        let shared = Shared::new().expect("shared");
        drop(pair(&shared, 2));
        shared.queue(2, b"reply\r\n");
        assert_eq!(shared.state(2).map(|s| s.dead), Some(true));
    }
}
