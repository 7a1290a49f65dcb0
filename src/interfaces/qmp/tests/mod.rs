//! The server end to end: real sockets, a real `EventManager` loop, and a
//! fake VMM wired the way the real one is meant to be (lifecycle + hub).

mod pyqmp;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use event_manager::{EventManager, SubscriberId, SubscriberOps};
use serde_json::{json, Value};
use vmm_sys_util::tempdir::TempDir;

use super::*;
use crate::supervision::events::EventHub;
use crate::supervision::lifecycle::{Cause, Config, Input, Lifecycle, PowerOff};

/// The VMM side: what `VmControl::execute` reaches, shared with the test.
pub(super) struct Vm {
    pub lifecycle: Lifecycle,
    pub hub: EventHub,
    pub quit: bool,
}

impl Vm {
    pub fn input(&mut self, input: Input) {
        let out = self.lifecycle.handle(Duration::ZERO, SystemTime::now(), input);
        self.hub.emit_all(&out.events);
    }
}

pub(super) struct FakeControl(pub Arc<Mutex<Vm>>);

impl VmControl for FakeControl {
    fn execute(&mut self, cmd: QmpCommand) -> Result<Value, QmpError> {
        let mut vm = self.0.lock().map_err(|_| QmpError::generic("VM state poisoned"))?;
        match cmd {
            QmpCommand::QueryStatus => return Ok(query_status_reply(vm.lifecycle.run_state())),
            QmpCommand::QueryWatchdog => return Ok(vm.lifecycle.status().to_json()),
            QmpCommand::WatchdogSetAction { action } => vm.lifecycle.set_watchdog_action(action),
            QmpCommand::SystemReset => vm.input(Input::Reset { cause: Cause::Qmp }),
            QmpCommand::SystemPowerdown => vm.input(Input::PowerButton { cause: Cause::Qmp }),
            QmpCommand::Stop => vm.input(Input::Pause { cause: Cause::Qmp }),
            QmpCommand::Cont => vm.input(Input::Resume { cause: Cause::Qmp }),
            QmpCommand::Quit => {
                vm.input(Input::Shutdown { cause: Cause::Qmp, by: PowerOff::Vmm });
                vm.quit = true;
            }
        }
        Ok(json!({}))
    }
}

pub(super) struct Setup {
    pub em: EventManager<QmpServer<FakeControl>>,
    pub id: SubscriberId,
    pub vm: Arc<Mutex<Vm>>,
    pub path: PathBuf,
    _dir: TempDir,
}

impl Setup {
    pub fn new() -> Self {
        let dir = TempDir::new_with_prefix("/tmp/kennel-qmp").expect("tempdir");
        let path = dir.as_path().join("qmp.sock");
        let vm = Arc::new(Mutex::new(Vm {
            lifecycle: Lifecycle::new(Config::default()),
            hub: EventHub::new(),
            quit: false,
        }));
        let server = QmpServer::bind(&path, FakeControl(vm.clone())).expect("bind");
        vm.lock().expect("vm").hub.add_sink(Box::new(server.event_sink()));
        vm.lock().expect("vm").input(Input::Boot { cause: Cause::PowerOn });
        let mut em = EventManager::new().expect("event manager");
        let id = em.add_subscriber(server);
        Self { em, id, vm, path, _dir: dir }
    }

    pub fn pump(&mut self) {
        self.em.run_with_timeout(5).expect("event loop");
    }

    pub fn connect(&mut self) -> Client {
        let stream = UnixStream::connect(&self.path).expect("connect");
        stream.set_nonblocking(true).expect("nonblocking");
        Client { stream, buf: Vec::new() }
    }

    /// Connected, greeted and negotiated.
    pub fn ready_client(&mut self) -> Client {
        let mut c = self.connect();
        assert!(c.recv(self).get("QMP").is_some());
        c.send(r#"{"execute":"qmp_capabilities"}"#);
        assert_eq!(c.recv(self), json!({"return": {}}));
        c
    }

    pub fn clients(&mut self) -> usize {
        self.em.subscriber_mut(self.id).expect("server").client_count()
    }
}

pub(super) struct Client {
    pub stream: UnixStream,
    buf: Vec<u8>,
}

impl Client {
    pub fn send(&mut self, text: &str) {
        self.stream.write_all(text.as_bytes()).expect("send");
    }

    /// Sends more than a socket buffer holds, running the loop meanwhile.
    pub fn send_big(&mut self, s: &mut Setup, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match self.stream.write(bytes) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => s.pump(),
                r => bytes = &bytes[r.expect("client write")..],
            }
        }
    }

    fn read_some(&mut self) -> bool {
        let mut chunk = [0u8; 65536];
        match self.stream.read(&mut chunk) {
            Ok(0) => false,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => true,
            // A server that closes with our bytes unread resets the connection.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => false,
            r => {
                let n = r.expect("client read");
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// The next message, running the loop until it arrives.
    pub fn recv(&mut self, s: &mut Setup) -> Value {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(pos) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..pos + 2).collect();
                return serde_json::from_slice(&line[..pos]).expect("server sends JSON");
            }
            assert!(Instant::now() < deadline, "no message; have {:?}", String::from_utf8_lossy(&self.buf));
            s.pump();
            assert!(self.read_some(), "server closed the connection");
        }
    }

    /// Nothing more arrives while the loop runs a little.
    pub fn assert_quiet(&mut self, s: &mut Setup) {
        for _ in 0..5 {
            s.pump();
            self.read_some();
        }
        assert!(self.buf.is_empty(), "unexpected: {:?}", String::from_utf8_lossy(&self.buf));
    }

    /// True once the server has closed the connection.
    pub fn closed(&mut self, s: &mut Setup) -> bool {
        for _ in 0..50 {
            s.pump();
            if !self.read_some() {
                return true;
            }
        }
        false
    }
}

fn event_names(c: &mut Client, s: &mut Setup, n: usize) -> Vec<String> {
    (0..n).map(|_| c.recv(s)["event"].as_str().unwrap_or("not an event").to_string()).collect()
}

#[test]
fn greeting_and_negotiation() {
    let mut s = Setup::new();
    let mut c = s.connect();
    let g = c.recv(&mut s);
    assert_eq!(g, json!({"QMP": {"version": version(), "capabilities": []}}));
    c.send(r#"{"execute":"query-status","id":1}"#);
    let expecting = json!({"id": 1, "error": {"class": "CommandNotFound",
        "desc": "Expecting capabilities negotiation with 'qmp_capabilities'"}});
    assert_eq!(c.recv(&mut s), expecting);
    c.send(r#"{"execute":"no-such-thing","id":2}"#);
    assert_eq!(c.recv(&mut s)["error"]["class"], "CommandNotFound");
    c.send(r#"{"execute":"qmp_capabilities","id":"neg"}"#);
    assert_eq!(c.recv(&mut s), json!({"return": {}, "id": "neg"}));
    c.send(r#"{"execute":"qmp_capabilities"}"#);
    assert_eq!(
        c.recv(&mut s)["error"]["desc"],
        "Capabilities negotiation is already complete, command ignored"
    );
    c.send(r#"{"execute":"no-such-thing","id":3}"#);
    assert_eq!(
        c.recv(&mut s),
        json!({"id": 3, "error": {"class": "CommandNotFound", "desc": "The command no-such-thing has not been found"}})
    );
}

#[test]
fn each_command_replies_in_shape() {
    let mut s = Setup::new();
    let mut c = s.ready_client();
    c.send(r#"{"execute":"query-status","id":"a"}"#);
    assert_eq!(
        c.recv(&mut s),
        json!({"id": "a", "return": {"running": true, "status": "running", "singlestep": false}})
    );
    c.send(r#"{"execute":"query-version"}"#);
    assert_eq!(c.recv(&mut s), json!({"return": version()}));
    c.send(r#"{"execute":"query-commands"}"#);
    let cmds = c.recv(&mut s)["return"].clone();
    assert!(cmds.as_array().is_some_and(|a| a.contains(&json!({"name": "query-watchdog"}))));
    c.send(r#"{"execute":"watchdog-set-action","arguments":{"action":"pause"}}"#);
    assert_eq!(c.recv(&mut s), json!({"return": {}}));
    c.send(r#"{"execute":"watchdog-set-action","arguments":{"action":"explode"}}"#);
    assert_eq!(c.recv(&mut s)["error"]["desc"], "Parameter 'action' does not accept value 'explode'");
    c.send(r#"{"execute":"query-watchdog"}"#);
    let w = c.recv(&mut s)["return"].clone();
    assert_eq!(
        (w["action"].clone(), w["cycle"].clone(), w["state"].clone()),
        (json!("pause"), json!(1), json!("booting"))
    );

    // Events a command causes come before its reply.
    c.send(r#"{"execute":"stop","id":5}"#);
    assert_eq!(c.recv(&mut s)["event"], "STOP");
    assert_eq!(c.recv(&mut s), json!({"return": {}, "id": 5}));
    c.send(r#"{"execute":"query-status"}"#);
    assert_eq!(c.recv(&mut s)["return"], json!({"running": false, "status": "paused", "singlestep": false}));
    c.send(r#"{"execute":"cont"}"#);
    assert_eq!(c.recv(&mut s)["data"], json!({"cycle": 1, "cause": "qmp"}));
    assert_eq!(c.recv(&mut s), json!({"return": {}}));
    c.send(r#"{"execute":"system_reset"}"#);
    assert_eq!(event_names(&mut c, &mut s, 2), ["RESET", "BOOT"]);
    assert_eq!(c.recv(&mut s), json!({"return": {}}));
    c.send(r#"{"execute":"quit"}"#);
    let shutdown = c.recv(&mut s);
    assert_eq!(shutdown["event"], "SHUTDOWN");
    assert_eq!(shutdown["data"]["reason"], "host-qmp-quit");
    assert!(shutdown["timestamp"]["seconds"].as_u64().is_some_and(|t| t > 1_600_000_000));
    assert_eq!(c.recv(&mut s), json!({"return": {}}));
    assert!(s.vm.lock().expect("vm").quit);
}

#[test]
fn malformed_input_gets_errors_and_the_connection_stays_usable() {
    let mut s = Setup::new();
    let mut c = s.ready_client();
    c.send("this is not json\n");
    assert_eq!(c.recv(&mut s)["error"]["class"], "GenericError");
    c.send("[1, 2]\r\n");
    assert_eq!(c.recv(&mut s)["error"]["desc"], "QMP input must be a JSON object");
    c.send(r#"{"execute": nope}"#);
    assert!(c.recv(&mut s)["error"]["desc"].as_str().is_some_and(|d| d.starts_with("JSON parse error")));
    c.send(r#"{"execute":"stop","arguments":{"force":true},"id":9}"#);
    assert_eq!(
        c.recv(&mut s),
        json!({"id": 9, "error": {"class": "GenericError", "desc": "Parameter 'force' is unexpected"}})
    );
    c.send("\u{0}\u{ff}garbage\n");
    assert_eq!(c.recv(&mut s)["error"]["class"], "GenericError");
    // Two commands in one write, with no newline (as qemu.qmp sends them).
    c.send(r#"{"execute":"query-status","id":1}{"execute":"query-version","id":2}"#);
    assert_eq!(c.recv(&mut s)["id"], 1);
    assert_eq!(c.recv(&mut s)["id"], 2);
}

#[test]
fn oversized_message_is_refused_and_the_connection_recovers() {
    let mut s = Setup::new();
    let mut c = s.ready_client();
    // Four times the limit, then the end of the line.
    let big = format!("{{\"execute\":\"{}\"}}\n", "a".repeat(4 * MAX_MESSAGE));
    c.send_big(&mut s, big.as_bytes());
    let e = c.recv(&mut s);
    assert!(e["error"]["desc"].as_str().is_some_and(|d| d.contains("longer than 65536 bytes")), "{e}");
    c.send(r#"{"execute":"query-status","id":"after"}"#);
    let r = c.recv(&mut s);
    assert_eq!(r["id"], "after", "the tail of the long line was discarded, the next command served: {r}");
    assert_eq!(s.clients(), 1);
}

#[test]
fn events_from_execute_reach_every_negotiated_client_without_deadlock() {
    let mut s = Setup::new();
    let mut a = s.ready_client();
    let mut b = s.ready_client();
    let mut unnegotiated = s.connect();
    assert!(unnegotiated.recv(&mut s).get("QMP").is_some());
    a.send(r#"{"execute":"system_reset","id":"r"}"#);
    // The caller: events first, then its reply.
    assert_eq!(event_names(&mut a, &mut s, 2), ["RESET", "BOOT"]);
    assert_eq!(a.recv(&mut s), json!({"return": {}, "id": "r"}));
    let reset = b.recv(&mut s);
    assert_eq!(reset["event"], "RESET");
    assert_eq!(
        reset["data"],
        json!({"cycle": 1, "cause": "qmp", "guest": false, "reason": "host-qmp-system-reset"})
    );
    assert_eq!(b.recv(&mut s)["data"], json!({"cycle": 2, "cause": "qmp"}));
    b.assert_quiet(&mut s);
    unnegotiated.assert_quiet(&mut s);
}

#[test]
fn events_emitted_outside_the_loop_and_from_other_threads_arrive() {
    let mut s = Setup::new();
    let mut a = s.ready_client();
    s.vm.lock().expect("vm").input(Input::Pause { cause: Cause::Watchdog });
    assert_eq!(a.recv(&mut s)["data"]["cause"], "watchdog");
    let vm = s.vm.clone();
    std::thread::spawn(move || {
        if let Ok(mut vm) = vm.lock() {
            vm.input(Input::Resume { cause: Cause::Qmp })
        }
    })
    .join()
    .expect("thread");
    assert_eq!(a.recv(&mut s)["event"], "RESUME");
}

#[test]
fn output_a_socket_cannot_take_at_once_is_delivered_in_order_later() {
    let mut s = Setup::new();
    let mut a = s.ready_client();
    // About 600 KiB of events while the client reads nothing: more than the
    // socket buffer, less than MAX_OUTBOX. Emitted outside the loop, so the
    // sink must wake the server to watch for writability.
    let pad = "x".repeat(1000);
    let n = 600;
    for i in 0..n {
        let mut data = serde_json::Map::new();
        data.insert("i".into(), json!(i));
        data.insert("pad".into(), json!(pad));
        let e = crate::supervision::events::Event::new(
            crate::supervision::events::EventName::Stop,
            data,
            SystemTime::now(),
        );
        s.vm.lock().expect("vm").hub.emit(&e);
    }
    for i in 0..n {
        assert_eq!(a.recv(&mut s)["data"]["i"], i);
    }
    a.assert_quiet(&mut s);
    assert_eq!(s.clients(), 1);
}

#[test]
fn client_disconnecting_mid_line_is_dropped_and_others_carry_on() {
    let mut s = Setup::new();
    let mut a = s.ready_client();
    let mut b = s.ready_client();
    assert_eq!(s.clients(), 2);
    b.send(r#"{"execute":"sys"#);
    drop(b);
    for _ in 0..10 {
        s.pump();
    }
    assert_eq!(s.clients(), 1);
    a.send(r#"{"execute":"system_reset"}"#);
    assert_eq!(event_names(&mut a, &mut s, 2), ["RESET", "BOOT"]);
    assert_eq!(a.recv(&mut s), json!({"return": {}}));
}

#[test]
fn half_closed_client_still_gets_its_replies() {
    // `echo '{...}' | socat - UNIX-CONNECT:...` sends, then shuts down its
    // write side and waits for the answers.
    let mut s = Setup::new();
    let mut c = s.connect();
    c.send(r#"{"execute":"qmp_capabilities"}{"execute":"query-status","id":7}"#);
    c.stream.shutdown(Shutdown::Write).expect("half-close");
    assert!(c.recv(&mut s).get("QMP").is_some());
    assert_eq!(c.recv(&mut s), json!({"return": {}}));
    assert_eq!(c.recv(&mut s)["id"], 7);
    assert!(c.closed(&mut s));
    assert_eq!(s.clients(), 0);
}

#[test]
fn clients_beyond_the_limit_are_closed() {
    let mut s = Setup::new();
    let mut kept: Vec<Client> = (0..MAX_CLIENTS).map(|_| s.connect()).collect();
    for c in &mut kept {
        assert!(c.recv(&mut s).get("QMP").is_some());
    }
    let mut extra = s.connect();
    assert!(extra.closed(&mut s));
    assert_eq!(s.clients(), MAX_CLIENTS);
}

#[test]
fn socket_is_owner_only_refuses_existing_paths_and_goes_away() {
    let s = Setup::new();
    let mode = s.path.symlink_metadata().expect("socket exists").mode();
    assert_eq!(mode & 0o777, 0o600);
    let vm = s.vm.clone();
    let err = QmpServer::bind(&s.path, FakeControl(vm.clone())).expect_err("in use");
    assert!(err.to_string().contains(&s.path.display().to_string()), "{err}");
    let Setup { em, path, _dir: dir, .. } = s;
    drop(em);
    assert!(!Path::new(&path).exists(), "socket removed with the server");
    drop(dir);
}

#[test]
fn the_pieces_the_vmm_shares_across_threads_are_send() {
    fn send<T: Send>() {}
    send::<QmpServer<FakeControl>>();
    send::<QmpEventSink>();
    send::<EventHub>();
    send::<Lifecycle>();
}
