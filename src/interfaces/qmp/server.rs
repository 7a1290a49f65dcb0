//! The QMP server as an `event-manager` subscriber.

use std::collections::HashMap;
use std::io::{self, Read};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use serde_json::{json, Value};

use super::clients::{QmpEventSink, Shared};
use super::framing::{Frame, Framer, MAX_MESSAGE};
use super::protocol::{
    greeting, parse_envelope, parse_request, query_commands_reply, reply, version, wire, QmpCommand,
    QmpError, Request,
};
use super::socket::BoundSocket;
use super::ServerError;

/// How the server has the VMM carry out commands. Called on the event-loop
/// thread, with no server lock held: the VMM may emit events (through its
/// `EventHub` and so the `QmpEventSink`) from inside `execute`.
pub trait VmControl {
    /// Returns the command's `return` value (`json!({})` when it has none).
    fn execute(&mut self, cmd: QmpCommand) -> Result<Value, QmpError>;
}

/// At most this many clients at once; more are accepted and closed at once,
/// so a runaway script cannot use up the VMM's file descriptors.
pub const MAX_CLIENTS: usize = 16;

/// Bytes read from one client per wakeup, so one chatty client cannot starve
/// the VM's other events; epoll is level-triggered, so the rest waits.
const READ_BUDGET: usize = 64 * 1024;

/// `Events` data tags: the listener, the wake-up eventfd, then clients.
const LISTENER: u32 = 0;
const WAKE: u32 = 1;
const FIRST_CLIENT: u32 = 2;

fn watching(eof: bool, pending: bool) -> EventSet {
    let mut set = if eof { EventSet::empty() } else { EventSet::IN | EventSet::READ_HANG_UP };
    if pending {
        set |= EventSet::OUT;
    }
    set
}

#[derive(Debug)]
struct Client {
    stream: Arc<UnixStream>,
    framer: Framer,
    interest: EventSet,
    /// The client will send no more; close once its output is delivered.
    eof: bool,
}

/// A QMP server on a Unix socket. See the module docs for wiring.
pub struct QmpServer<C> {
    socket: BoundSocket,
    control: C,
    shared: Arc<Shared>,
    clients: HashMap<u32, Client>,
    next_token: u32,
}

impl<C> std::fmt::Debug for QmpServer<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QmpServer")
            .field("path", &self.socket.path())
            .field("clients", &self.clients.len())
            .finish()
    }
}

/// The reply to one frame from a client that has (or has not yet)
/// negotiated capabilities, and whether this frame completed the
/// negotiation. Every frame gets exactly one reply: a `return` or an
/// `error`. `execute` carries out VM commands.
pub(crate) fn respond(
    frame: Frame,
    negotiated: bool,
    execute: &mut dyn FnMut(QmpCommand) -> Result<Value, QmpError>,
) -> (Value, bool) {
    let bytes = match frame {
        Frame::TooLong => {
            let e = QmpError::generic(format!(
                "QMP message longer than {MAX_MESSAGE} bytes; discarded up to the next newline"
            ));
            return (reply(None, Err(e)), false);
        }
        Frame::Message(bytes) => bytes,
    };
    let (id, envelope) = parse_envelope(&bytes);
    let mut now_negotiated = false;
    let result = envelope.and_then(|env| {
        // As in QEMU: before negotiation every other command, known or
        // not, gets the same hint.
        if !negotiated && env.name != "qmp_capabilities" {
            return Err(QmpError::command_not_found(
                "Expecting capabilities negotiation with 'qmp_capabilities'",
            ));
        }
        match parse_request(env)? {
            Request::Capabilities if negotiated => Err(QmpError::command_not_found(
                "Capabilities negotiation is already complete, command ignored",
            )),
            Request::Capabilities => {
                now_negotiated = true;
                Ok(json!({}))
            }
            Request::QueryCommands => Ok(query_commands_reply()),
            Request::QueryVersion => Ok(version()),
            Request::Vm(cmd) => execute(cmd),
        }
    });
    (reply(id, result), now_negotiated)
}

impl<C: VmControl> QmpServer<C> {
    /// Creates the socket at `path` (owner-only, refusing an existing path)
    /// and listens. Clients are served once the server is added to an
    /// `EventManager`.
    pub fn bind(path: impl AsRef<Path>, control: C) -> Result<Self, ServerError> {
        let shared = Shared::new().map_err(ServerError::EventFd)?;
        let socket = BoundSocket::bind(path.as_ref())?;
        Ok(Self { socket, control, shared, clients: HashMap::new(), next_token: FIRST_CLIENT })
    }

    /// A sink for the VMM's `EventHub`; any number may be made.
    pub fn event_sink(&self) -> QmpEventSink {
        QmpEventSink { shared: self.shared.clone() }
    }

    pub fn path(&self) -> &Path {
        self.socket.path()
    }

    #[cfg(test)]
    pub fn client_count(&self) -> usize {
        self.clients.len()
    }

    pub fn control(&self) -> &C {
        &self.control
    }

    /// Sends what the clients' sockets take now, without waiting; e.g. after
    /// `quit`, before the VMM leaves its loop. Dropping the server does this too.
    pub fn flush(&self) {
        self.shared.flush_all();
    }

    fn alloc_token(&mut self) -> u32 {
        // Terminates: at most MAX_CLIENTS tokens are in use.
        loop {
            let t = self.next_token;
            self.next_token = self.next_token.checked_add(1).unwrap_or(FIRST_CLIENT);
            if t >= FIRST_CLIENT && !self.clients.contains_key(&t) {
                return t;
            }
        }
    }

    fn accept(&mut self, ops: &mut EventOps) {
        loop {
            let stream = match self.socket.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    log::warn!("QMP accept on {} failed: {e}", self.socket.path().display());
                    return;
                }
            };
            if self.clients.len() >= MAX_CLIENTS {
                log::warn!("QMP: {MAX_CLIENTS} clients already connected; closing a new one");
                continue;
            }
            if let Err(e) = stream.set_nonblocking(true) {
                log::warn!("QMP: cannot make client socket non-blocking: {e}");
                continue;
            }
            let token = self.alloc_token();
            let stream = Arc::new(stream);
            let interest = watching(false, false);
            if let Err(e) = ops.add(Events::with_data(&*stream, token, interest)) {
                log::warn!("QMP: cannot watch client socket: {e}");
                continue;
            }
            self.shared.add(token, stream.clone());
            self.shared.queue(token, &wire(&greeting()));
            self.clients.insert(token, Client { stream, framer: Framer::new(), interest, eof: false });
            log::debug!("QMP client {token} connected");
        }
    }

    fn serve(&mut self, token: u32, set: EventSet) {
        // On hang-up or error too: the failing write marks the client dead,
        // so a level-triggered HUP with output pending cannot spin the loop.
        if set.intersects(EventSet::OUT | EventSet::HANG_UP | EventSet::ERROR) {
            self.shared.flush(token);
        }
        let Some(client) = self.clients.get_mut(&token) else { return };
        if client.eof
            || !set.intersects(EventSet::IN | EventSet::READ_HANG_UP | EventSet::HANG_UP | EventSet::ERROR)
        {
            return;
        }
        let mut frames = Vec::new();
        let mut buf = [0u8; 4096];
        let mut budget = READ_BUDGET;
        while budget > 0 {
            match (&*client.stream).read(&mut buf) {
                Ok(0) => {
                    client.eof = true;
                    break;
                }
                Ok(n) => {
                    client.framer.push(&buf[..n], &mut frames);
                    budget = budget.saturating_sub(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    client.eof = true;
                    break;
                }
            }
        }
        // A half-sent message at EOF is dropped: there is no one to answer.
        for frame in frames {
            self.answer(token, frame);
        }
        if self.clients.get(&token).is_some_and(|c| c.eof) {
            log::debug!("QMP client {token} closed its end");
        }
    }

    fn answer(&mut self, token: u32, frame: Frame) {
        let negotiated = self.shared.is_negotiated(token);
        // No lock of ours is held while the command runs (see clients.rs).
        let control = &mut self.control;
        let (response, now_negotiated) = respond(frame, negotiated, &mut |cmd| control.execute(cmd));
        let line = wire(&response);
        if now_negotiated {
            // Reply and flag together, so no event can slip in before the
            // reply: clients (qemu.qmp among them) expect it next.
            self.shared.queue_then_negotiate(token, &line);
        } else {
            self.shared.queue(token, &line);
        }
    }

    fn drop_client(&mut self, token: u32, ops: &mut EventOps) {
        if let Some(c) = self.clients.remove(&token) {
            // Unregister before the fd can close (dropping the last Arc).
            let _ = ops.remove(Events::with_data(&*c.stream, token, EventSet::empty()));
            self.shared.remove(token);
            log::debug!("QMP client {token} disconnected");
        }
    }

    /// Closes finished or failed clients and watches for writability only
    /// while output is pending (level-triggered OUT would otherwise spin).
    fn sync(&mut self, ops: &mut EventOps) {
        let tokens: Vec<u32> = self.clients.keys().copied().collect();
        for token in tokens {
            let state = self.shared.state(token);
            let Some(client) = self.clients.get_mut(&token) else { continue };
            let want = match state {
                Some(s) if !s.dead && (s.pending || !client.eof) => watching(client.eof, s.pending),
                _ => {
                    self.drop_client(token, ops);
                    continue;
                }
            };
            if want != client.interest {
                match ops.modify(Events::with_data(&*client.stream, token, want)) {
                    Ok(()) => client.interest = want,
                    Err(e) => log::warn!("QMP: cannot update client {token}'s events: {e}"),
                }
            }
        }
    }
}

impl<C: VmControl> MutEventSubscriber for QmpServer<C> {
    fn init(&mut self, ops: &mut EventOps) {
        let listener = Events::with_data(&self.socket.listener, LISTENER, EventSet::IN);
        if let Err(e) = ops.add(listener) {
            log::error!("QMP: cannot watch {}: {e}", self.socket.path().display());
        }
        if let Err(e) = ops.add(Events::with_data(&self.shared.wake, WAKE, EventSet::IN)) {
            log::error!("QMP: cannot watch the wake-up eventfd: {e}");
        }
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        match events.data() {
            LISTENER => self.accept(ops),
            // Just wakes us for sync() below.
            WAKE => {
                let _ = self.shared.wake.read();
            }
            token => self.serve(token, events.event_set()),
        }
        self.sync(ops);
    }
}

impl<C> Drop for QmpServer<C> {
    fn drop(&mut self) {
        // Best effort: a `quit` reply still in the outbox goes now or never.
        self.shared.flush_all();
        // Close every client even though event sinks may outlive us.
        self.shared.clear();
    }
}
