#![allow(clippy::unwrap_used, clippy::panic)]
//! Long runs and hostile peers with the tiny 6300ESB guest: a thousand
//! watchdog reset cycles with no event lost and no resource growth; a guest
//! hammering the watchdog; QMP clients that misbehave; stop signals.
//! Figures are printed (`--nocapture`) for the record.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{kvm_or_skip, scratch, test_guest, Kennel};
use serde_json::Value;

const CYCLES: u64 = 1000;
/// preload 20 + 20 ticks at 1 kHz: one watchdog reset every ~40 ms.
const FAST_RESET: &str = "preload1=20 preload2=20 feeds=0";

fn start(
    name: &str,
    cmdline: &str,
    qmp: bool,
    extra: &[&str],
) -> (Kennel, std::path::PathBuf, std::path::PathBuf) {
    let sock = scratch(&format!("{name}.qmp"));
    let events = scratch(&format!("{name}.jsonl"));
    let _ = std::fs::remove_file(&sock);
    let _ = std::fs::remove_file(&events);
    let k = run_on(&sock, &events, cmdline, qmp, extra);
    (k, sock, events)
}

/// The tiny 6300ESB guest on these paths, whatever is there already.
fn run_on(sock: &Path, events: &Path, cmdline: &str, qmp: bool, extra: &[&str]) -> Kennel {
    let kernel = test_guest("esb");
    let mut args = vec!["run", "--kernel", kernel.to_str().unwrap(), "--memory", "16", "--cmdline", cmdline];
    args.extend(["--events", events.to_str().unwrap()]);
    if qmp {
        args.extend(["--qmp", sock.to_str().unwrap()]);
    }
    args.extend_from_slice(extra);
    Kennel::start(&args)
}

fn events(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    // The last line may be half-written while kennel runs.
    text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// The newest BOOT's cycle. Reads only the file's tail: polled every
/// 50 ms over thousands of events, reading it all would make the test
/// compete with kennel for the CPU (it did, on an emulated nested host).
fn max_boot(path: &Path) -> u64 {
    use std::io::{Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else { return 0 };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(4096)));
    let mut tail = String::new();
    let _ = f.read_to_string(&mut tail);
    tail.lines()
        .rev()
        .find_map(|l| {
            let v: Value = serde_json::from_str(l).ok()?;
            (v["event"] == "BOOT").then(|| v["data"]["cycle"].as_u64()).flatten()
        })
        .unwrap_or(0)
}

fn wait_cycle(k: &mut Kennel, path: &Path, n: u64, timeout: Duration) {
    let end = Instant::now() + timeout;
    while max_boot(path) < n {
        assert!(Instant::now() < end, "cycle {n} not reached; at {}\n{}", max_boot(path), k.transcript());
        k.wait_for("\u{0}never", Duration::from_millis(50));
    }
}

#[derive(Debug, Clone, Copy)]
struct Usage {
    rss_kib: u64,
    pss_kib: u64,
    fds: usize,
    threads: usize,
}

fn field(text: &str, key: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The smallest of a few samples: a sample taken mid-rebuild sees the old
/// and the new VM at once, which is not growth.
fn usage(pid: u32) -> Usage {
    let mut best: Option<Usage> = None;
    for _ in 0..10 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
        let u = Usage {
            rss_kib: field(&status, "VmRSS:"),
            pss_kib: field(&rollup, "Pss:"),
            fds: std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count(),
            threads: std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().count(),
        };
        best = Some(match best {
            None => u,
            Some(b) => Usage {
                rss_kib: b.rss_kib.min(u.rss_kib),
                pss_kib: b.pss_kib.min(u.pss_kib),
                fds: b.fds.min(u.fds),
                threads: b.threads.min(u.threads),
            },
        });
        std::thread::sleep(Duration::from_millis(7));
    }
    best.unwrap()
}

fn signal(k: &Kennel, sig: libc::c_int) {
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(k.pid() as libc::pid_t, sig) }, 0);
}

#[test]
fn a_thousand_watchdog_resets_lose_nothing_and_leak_nothing() {
    if !kvm_or_skip("a_thousand_watchdog_resets_lose_nothing_and_leak_nothing") {
        return;
    }
    let (mut k, _, path) = start("thousand", FAST_RESET, false, &[]);
    let t0 = Instant::now();
    wait_cycle(&mut k, &path, 50, Duration::from_secs(60));
    let early = usage(k.pid());
    let t50 = Instant::now();
    // A safety net, not a speed check: ~55 s on PVM, 3-8 minutes on an
    // emulated nested KVM host.
    wait_cycle(&mut k, &path, CYCLES + 1, Duration::from_secs(900));
    let late = usage(k.pid());
    let rate = (CYCLES - 49) as f64 / t50.elapsed().as_secs_f64();
    signal(&k, libc::SIGTERM);
    let st = k.wait_exit(Duration::from_secs(20)).expect("exits after SIGTERM");
    eprintln!(
        "{CYCLES} cycles in {:.1} s ({rate:.1} cycles/s); at cycle 50 {early:?}, at cycle {} {late:?}",
        t0.elapsed().as_secs_f64(),
        CYCLES + 1
    );
    assert_eq!(st.code(), Some(0), "{}", k.transcript());

    // Every cycle's events, in order.
    let ev = events(&path);
    let mut it =
        ev.iter().map(|e| (e["event"].as_str().unwrap().to_string(), e["data"]["cycle"].as_u64().unwrap()));
    for n in 1..=CYCLES {
        for name in ["BOOT", "WATCHDOG_ARMED", "WATCHDOG", "RESET"] {
            let cycle = |c: u64| ev.iter().filter(move |e| e["data"]["cycle"].as_u64() == Some(c));
            let around: Vec<String> =
                (n.saturating_sub(1)..=n + 1).flat_map(cycle).map(|e| e.to_string()).collect();
            assert!(
                it.any(|(e, c)| e == name && c == n),
                "{name} {n} missing or out of order; cycles {}..={}:\n{}\n{}",
                n.saturating_sub(1),
                n + 1,
                around.join("\n"),
                k.transcript()
            );
        }
    }
    let last = ev.last().unwrap();
    assert_eq!((last["event"].as_str(), last["data"]["cause"].as_str()), (Some("SHUTDOWN"), Some("signal")));
    // Per cycle: BOOT, ARMED, PRETIMEOUT, WATCHDOG, RESET; nothing else.
    let per_cycle = ev.len() as f64 / max_boot(&path) as f64;
    assert!(per_cycle <= 5.1, "{per_cycle} events per cycle");

    // No growth: the guest's 16 MiB is remapped each cycle, so allow a few
    // MiB of allocator noise. The previous VM is torn down on a helper
    // thread while the next one runs, so a sample may see one VM in
    // teardown: its VM fd, vCPU fd and irqfd, and the helper thread. A leak
    // of anything per cycle would show as hundreds here.
    const ONE_VM_IN_TEARDOWN_FDS: usize = 3;
    assert!(late.rss_kib <= early.rss_kib + 4096, "RSS grew: {early:?} -> {late:?}");
    assert!(late.pss_kib <= early.pss_kib + 4096, "PSS grew: {early:?} -> {late:?}");
    assert!(late.fds <= early.fds + ONE_VM_IN_TEARDOWN_FDS, "fds grew: {early:?} -> {late:?}");
    // Threads: the main thread, the one vCPU's, and the teardown helper.
    // A sample taken between two VMs sees fewer, so the bound is absolute
    // (a sample at cycle 50 once saw only the main thread).
    assert!(late.threads <= 3, "threads grew: {early:?} -> {late:?}");
}

/// A negotiated raw QMP client.
struct Client {
    r: BufReader<UnixStream>,
    w: UnixStream,
    name: &'static str,
    started: Instant,
}

impl Client {
    fn connect(sock: &Path, name: &'static str) -> Client {
        let end = Instant::now() + Duration::from_secs(20);
        let s = loop {
            match UnixStream::connect(sock) {
                Ok(s) => break s,
                Err(_) if Instant::now() < end => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => panic!("connect {sock:?}: {e}"),
            }
        };
        // A safety net, not a bound: latency is measured and asserted where
        // it matters. On an emulated nested host the main loop can sit in
        // one KVM_CREATE_VM or VM teardown for seconds (RCU under emulation).
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut c = Client { r: BufReader::new(s.try_clone().unwrap()), w: s, name, started: Instant::now() };
        assert!(c.line().contains("QMP"), "greeting");
        c.cmd("qmp_capabilities");
        c
    }

    fn line(&mut self) -> String {
        let mut l = String::new();
        if let Err(e) = self.r.read_line(&mut l) {
            panic!(
                "QMP client {:?}, {:?} after it connected: no whole line from kennel: {e}",
                self.name,
                self.started.elapsed()
            );
        }
        l
    }

    /// Sends a command; returns its reply and the events met on the way.
    fn cmd(&mut self, name: &str) -> (Value, Vec<Value>) {
        writeln!(self.w, "{{\"execute\":\"{name}\"}}").unwrap();
        let mut evs = Vec::new();
        loop {
            let v: Value = serde_json::from_str(&self.line()).unwrap();
            if v.get("event").is_some() {
                evs.push(v);
            } else {
                return (v, evs);
            }
        }
    }

    /// The slowest `query-status` round trip over `dur`.
    fn worst_latency(&mut self, dur: Duration) -> (Duration, usize) {
        let end = Instant::now() + dur;
        let (mut worst, mut events) = (Duration::ZERO, 0);
        while Instant::now() < end {
            let t = Instant::now();
            let (reply, evs) = self.cmd("query-status");
            worst = worst.max(t.elapsed());
            events += evs.len();
            assert!(reply.get("return").is_some(), "{reply}");
            std::thread::sleep(Duration::from_millis(50));
        }
        (worst, events)
    }
}

fn hammered(name: &str, cmdline: &str, extra: &[&str]) {
    let (mut k, sock, path) = start(name, cmdline, true, extra);
    let mut c = Client::connect(&sock, "hammer");
    std::thread::sleep(Duration::from_secs(1));
    let before = k.stderr.len() + k.stdout.len();
    let (worst, _) = c.worst_latency(Duration::from_secs(8));
    k.wait_for("\u{0}never", Duration::from_millis(100));
    let logs = k.stderr.len() + k.stdout.len() - before;
    let all = events(&path);
    let ev = all.len();
    let cycles = all.iter().filter(|e| e["event"] == "BOOT").count();
    let rss = usage(k.pid()).rss_kib;
    signal(&k, libc::SIGTERM);
    let st = k.wait_exit(Duration::from_secs(20));
    eprintln!(
        "{name}: worst query-status {worst:?}; {ev} events and {logs} log/console lines over {cycles} boot cycles in ~9 s; RSS {rss} KiB"
    );
    assert_eq!(st.and_then(|s| s.code()), Some(0), "{}", k.transcript());
    // Starvation would show as seconds. A round trip takes ~15 ms here on
    // PVM and ~250 ms on an emulated nested KVM host (its CPU is emulated,
    // ~10-50x slower) while the guest resets as fast as it can; the figure
    // is printed above for the record, and speed lives in scripts/bench.
    assert!(worst < Duration::from_secs(1), "{name}: QMP took {worst:?}");
    assert!(rss < 64 * 1024, "{name}: RSS {rss} KiB");
    // Whatever the guest does within a boot cycle, it costs a handful of
    // events and log lines (BOOT, ARMED, PRETIMEOUT, WATCHDOG, RESET; rate
    // limits do the rest). How many cycles a second a resetting guest gets
    // is the host's reset speed, not flooding.
    assert!(ev <= 6 * cycles + 10, "{name}: {ev} events for {cycles} cycles");
    assert!(logs <= 8 * cycles + 50, "{name}: {logs} lines for {cycles} cycles");
}

#[test]
fn a_guest_hammering_the_watchdog_leaves_qmp_responsive() {
    if !kvm_or_skip("a_guest_hammering_the_watchdog_leaves_qmp_responsive") {
        return;
    }
    // Back-to-back feeds: three MMIO exits each, as fast as the guest can.
    hammered("bench-feeds", "heartbeat=30 bench_feeds=5000000", &[]);
    // A free-running 1 MHz watchdog with 1-tick preloads: resets as fast as
    // kennel can rebuild the VM.
    hammered("mhz-resets", "config=7 preload1=1 preload2=1 feeds=0", &[]);
    // The same with the action `none`: expiries must not flood.
    hammered("mhz-none", "config=7 preload1=1 preload2=1 feeds=0", &["--watchdog-action", "none"]);
}

/// Writes all of `bytes` to a kennel that must keep reading; returns the
/// longest wait for it to take more. In one CI run (stop 20) a 1 MiB write
/// here took nothing for 20 s; it never happened again here, idle or with
/// both cores busy, and the test then had only a bare `WouldBlock` to show.
/// So a long wait is measured and printed, and only a kennel that takes
/// nothing for a minute fails, with its threads' states and its log.
fn write_watched(s: &mut UnixStream, mut bytes: &[u8], k: &mut Kennel) -> Duration {
    const GIVE_UP: Duration = Duration::from_secs(60);
    s.set_write_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut longest = Duration::ZERO;
    let mut since = Instant::now();
    while !bytes.is_empty() {
        match s.write(bytes) {
            Ok(n) => {
                longest = longest.max(since.elapsed());
                since = Instant::now();
                bytes = &bytes[n..];
            }
            Err(e)
                if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted) =>
            {
                assert!(
                    since.elapsed() < GIVE_UP,
                    "kennel read nothing from a client for {GIVE_UP:?}\n{}\n{}",
                    common::threads_report(k.pid()),
                    k.transcript()
                );
            }
            Err(e) => panic!("writing to kennel's QMP socket: {e}\n{}", k.transcript()),
        }
    }
    longest
}

#[test]
fn misbehaving_qmp_clients_do_not_hurt_others() {
    if !kvm_or_skip("misbehaving_qmp_clients_do_not_hurt_others") {
        return;
    }
    let (mut k, sock, _) = start("abuse", FAST_RESET, true, &[]);
    let mut good = Client::connect(&sock, "good");
    let rss0 = usage(k.pid()).rss_kib;

    // Never reads: asks for replies and leaves them unread until dropped.
    let mut deaf = Client::connect(&sock, "deaf");
    let flood = b"{\"execute\":\"query-watchdog\"}".repeat(2000);
    let _ = deaf.w.set_write_timeout(Some(Duration::from_secs(2)));
    for _ in 0..20 {
        if deaf.w.write_all(&flood).is_err() {
            break;
        }
    }
    // 10 MB with no newline and no end of message.
    let mut big = UnixStream::connect(&sock).unwrap();
    let mut chunk = b"{\"execute\":\"".to_vec();
    chunk.resize(1 << 20, b'a');
    let mut big_stall = Duration::ZERO;
    for _ in 0..10 {
        big_stall = big_stall.max(write_watched(&mut big, &chunk, &mut k));
    }
    // Hundreds of connections, held open.
    let crowd: Vec<UnixStream> = (0..300).filter_map(|_| UnixStream::connect(&sock).ok()).collect();

    let (worst, events) = good.worst_latency(Duration::from_secs(3));
    let rss1 = usage(k.pid()).rss_kib;
    eprintln!(
        "abuse: {} crowd connections; good client worst {worst:?}, {events} events; RSS {rss0} -> {rss1} KiB; \
         the 10 MB sender's longest wait {big_stall:?}",
        crowd.len()
    );
    // Starvation by the crowd would show as seconds; a round trip here costs
    // what one VM rebuild does (~15 ms on PVM, up to ~150 ms on an emulated
    // nested host, where the guest resets every 40 ms of its time).
    assert!(worst < Duration::from_secs(1), "good client waited {worst:?}");
    assert!(events > 0, "good client got no events");
    // Outboxes are capped at 1 MiB per client and messages at 64 KiB.
    assert!(rss1 < rss0 + 20 * 1024, "RSS {rss0} -> {rss1} KiB");
    // The oversized message got its error and that connection still works.
    write_watched(&mut big, b"\n{\"execute\":\"qmp_capabilities\"}", &mut k);
    big.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut got = vec![0u8; 4096];
    let n = big.read(&mut got).unwrap();
    assert!(n > 0, "oversized-message client closed");
    drop(crowd);
    drop(deaf);
    // Slots freed: a new client can connect and talk.
    std::thread::sleep(Duration::from_millis(300));
    let (reply, _) = Client::connect(&sock, "after the crowd").cmd("query-status");
    assert_eq!(reply["return"]["running"], true);
    signal(&k, libc::SIGTERM);
    assert_eq!(k.wait_exit(Duration::from_secs(20)).and_then(|s| s.code()), Some(0));
}

#[test]
fn sigterm_and_sigint_stop_cleanly() {
    if !kvm_or_skip("sigterm_and_sigint_stop_cleanly") {
        return;
    }
    for (sig, name) in [(libc::SIGTERM, "sigterm"), (libc::SIGINT, "sigint")] {
        let (mut k, sock, path) = start(name, FAST_RESET, true, &[]);
        wait_cycle(&mut k, &path, 3, Duration::from_secs(30));
        signal(&k, sig);
        let st = k.wait_exit(Duration::from_secs(20)).expect("exits");
        assert_eq!(st.code(), Some(0), "{name}: {}", k.transcript());
        let ev = events(&path);
        let last = ev.last().unwrap();
        assert_eq!(last["event"], "SHUTDOWN", "{name}");
        assert_eq!(last["data"]["cause"], "signal", "{name}");
        assert!(std::fs::read_to_string(&path).unwrap().ends_with('\n'), "{name}: last line flushed whole");
        assert!(sock.symlink_metadata().is_err(), "{name}: socket left behind");
    }
}

/// A kennel killed outright (OOM killer, `kill -9`, a crash) leaves its QMP
/// socket file behind. Started again on the same paths, as a supervisor
/// would, it replaces that leftover and runs; the events file holds only
/// whole JSON lines, the new run's appended after the old run's.
#[test]
fn a_restart_after_kill_9_on_the_same_paths_just_works() {
    if !kvm_or_skip("a_restart_after_kill_9_on_the_same_paths_just_works") {
        return;
    }
    let (mut k, sock, path) = start("killed", FAST_RESET, true, &[]);
    wait_cycle(&mut k, &path, 3, Duration::from_secs(30));
    signal(&k, libc::SIGKILL);
    assert!(k.wait_exit(Duration::from_secs(20)).is_some(), "SIGKILL ends it");
    assert!(sock.symlink_metadata().is_ok(), "a killed kennel cannot remove its socket");
    let before = events(&path).len();

    // The same paths again, as they are (`start` would remove them first; a
    // supervisor does not).
    let mut again = run_on(&sock, &path, FAST_RESET, true, &[]);
    let mut c = Client::connect(&sock, "after the restart");
    let (reply, _) = c.cmd("query-status");
    assert_eq!(reply["return"]["running"], true, "{reply}");
    assert!(
        again.wait_for("replaced it", Duration::from_secs(10)).is_some(),
        "the replacement is logged\n{}",
        again.transcript()
    );
    signal(&again, libc::SIGTERM);
    assert_eq!(
        again.wait_exit(Duration::from_secs(20)).and_then(|s| s.code()),
        Some(0),
        "{}",
        again.transcript()
    );

    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    // The killed run may have been cut mid-write at most in its last line;
    // kennel writes each line with one O_APPEND write, so it is not.
    for (i, l) in lines.iter().enumerate() {
        assert!(serde_json::from_str::<Value>(l).is_ok(), "line {} is not whole JSON: {l:?}", i + 1);
    }
    assert!(text.ends_with('\n'));
    let boots: Vec<u64> = events(&path)
        .iter()
        .filter(|v| v["event"] == "BOOT")
        .map(|v| v["data"]["cycle"].as_u64().unwrap())
        .collect();
    assert!(lines.len() > before, "the new run appended");
    assert_eq!(boots.iter().filter(|&&c| c == 1).count(), 2, "two power-on BOOTs, one a run: {boots:?}");
}
