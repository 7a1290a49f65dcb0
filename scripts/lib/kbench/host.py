"""Host-section metrics: kennel and QEMU on this machine's /dev/kvm.

The VMMs, as configured here
  kennel: target/release/kennel run --memory 128 (stderr, its log, to a file;
          default log level). Serial console on stdout.
  QEMU:   qemu-system-x86_64 -accel kvm -machine pc -m 128 -nodefaults
          -no-user-config -display none -serial stdio -monitor none
          -device i6300esb -action watchdog=reset -bios qboot.rom
          -cpu qemu64,-pni (Linux: also -cx16,-popcnt). qboot is QEMU's
          fastest firmware for direct kernel boot (SeaBIOS, the default,
          costs seconds of emulated real-mode code on a PVM host; start-up is
          also measured with SeaBIOS for reference). -cpu host fails on PVM
          ("failed to set MSR 0x10a"), so does -cpu max; qemu64 needs -pni.
  Both get the guest on -kernel/--kernel and the command line on
  -append/--cmdline; for Linux, QEMU's command line carries explicitly what
  kennel appends by itself on a PVM host, so both kernels see the same line.
  Events: both through QMP (kennel --qmp, QEMU -qmp unix:...), read by the
  same stdlib client in the same loop as the console; runs that need events
  start paused (kennel --start-paused, QEMU -S) and are started by QMP `cont`
  once the client has negotiated, so no event is missed.

Clocks: one select() loop reads the console pipe and the QMP socket and
stamps every read with time.time() (host wall clock, the clock both VMMs put
in their event timestamps). "Line time" is the stamp of the read that
delivered the line's last byte.

Metrics and their exact method
 1 Start-up: guest bench.elf (resources/test-guests/bench.c) whose first
   action is `outb 'K'` to COM1, command line `reset`, --no-reboot/-no-reboot.
   Time from just before Popen to the read that delivers that 'K' (QEMU's
   firmware prints nothing with qboot; with SeaBIOS its banner precedes the
   'K', which is the guest's byte that is timed).
 2 Memory: VMM memory outside guest RAM = sum of Pss over the mappings of
   /proc/PID/smaps except the guest RAM mapping(s): mappings whose size is
   between the guest RAM size (128 MiB) and that plus 4 MiB (QEMU aligns its
   RAM block). Measured (a) after the Linux guest printed
   "kennel_feeder: feed 1" (b) with bench.elf halted (`halt`), 0.5 s after
   its 'K'. Private_Dirty+Private_Clean is also recorded.
 3 Feed cost: bench.elf `arm bench_feeds=N reset` (each feed is the Linux
   driver's unlock, unlock, reload: three 16-bit MMIO writes, as in
   esb.elf). Time between the lines "bench: armed" and "bench: done",
   divided by N. The error is
   one serial line's output time (~15 port writes) over N feeds.
 4 Expiry accuracy: bench.elf `arm preload1=P preload2=P feed_after_ms=20`
   in the reset-cycle run (metric 8): the guest arms, feeds once 20 ms later
   and prints "bench: fed", then halts. Error = WATCHDOG event timestamp (the
   VMM's own) - line time of "bench: fed" - nominal. Nominal = 2 stages x
   P counts x 983.04 us (2^15 PCI clocks of 30 ns: the datasheet's 1 kHz
   mode, and the model of both kennel and QEMU). The error of the method:
   the line time lags the feed
   by the time to print one line and read it (measured for kennel in metric
   6 as "feed line - event timestamp"), so this method reads early by that
   much (and by any scheduling delay of the bench process, which shows as
   outliers on a busy host); the event timestamp is taken by each VMM when
   it handles the expiry. For kennel the same cycles are also measured on
   its own clock: WATCHDOG ts - WATCHDOG_FIRST_FEED ts (the 20 ms feed is the
   cycle's first feed) - nominal; QEMU has no first-feed event.
   QEMU rate-limits WATCHDOG to one event a second (the last of a second is
   delivered late, with its own timestamp), so events are matched to cycles
   by time (between the cycle's "fed" line and the next 'K') and QEMU has a
   sample only for the cycles whose event came through.
 5 Reset latency: same run: the next boot's 'K' read time - the WATCHDOG
   event timestamp. Includes tearing down and rebuilding the VM (kennel) /
   the system reset and firmware (QEMU, qboot).
 6 Event latency (kennel only: QEMU has no such event): esb.elf `heartbeat=2
   feeds=1 interval_ms=0 disarm` with --start-paused and a QMP client.
   Latency = QMP read time of WATCHDOG_FIRST_FEED - the event's timestamp.
   The feed itself lies between the line times of "esb: armed" and "esb:
   feed 1" (recorded as a bracket): the event timestamp is taken by kennel's
   main loop when it handles the vCPU's feed, so the vCPU-to-main-loop hop is
   inside the bracket, not in the latency.
 7 Linux boot to first feed: the guest kit's kernel (kennel: vmlinux; QEMU:
   bzImage of the same build, since QEMU cannot boot that vmlinux), no disk,
   command line `console=ttyS0 reboot=k panic=1 i6300esb.heartbeat=4
   kennel_feeder.interval_ms=1000 kennel_feeder.count=30` (+ the PVM
   additions on a PVM host). Time from Popen to the console line
   "kennel_feeder: feed 1" (same console-line method for both); kennel's
   WATCHDOG_FIRST_FEED `since_boot_ms` is recorded as a cross-check.
 8 Reset endurance: bench.elf `arm preload1=P preload2=P feed_after_ms=20`
   with the watchdog action reset, for C consecutive cycles (200; --quick 30)
   in one VMM process. Time per cycle = between consecutive 'K's. RSS
   (VmRSS), fd count (/proc/PID/fd) and threads of the VMM process are read
   after "bench: fed" of cycle 10 and of cycle C; growth = C - 10.

Targets for kennel (reported, not asserted): start-up and memory <= 1/10 of
QEMU's; reset latency <= 1/5; feed cost <= QEMU's; expiry within 1 ms of
nominal at p99; event latency < 1 ms.
"""

import os
import time

from .vmm import COUNT_S, GUEST, LINUX_CMDLINE, PVM, PVM_CMDLINE, TG, Failed, Run, ev_ts, mem_outside_guest, proc_status

def tg(name):
    return os.path.join(TG, name)


def run_startup(vmm, firmware="qboot"):
    r = Run(vmm, tg("bench.elf"), "reset", no_reboot=True, firmware=firmware,
            label=f"{vmm}/{firmware}" if vmm == "qemu" else vmm)
    try:
        r.wait(lambda: r.first_byte_time()[0] is not None, 120, "first byte 'K'")
        t, _ = r.first_byte_time()
        first_any = r.bytes_at[0][0]
        r.finish()
        return {"startup_s": t - r.t0, "first_any_byte_s": first_any - r.t0}
    finally:
        r.stop()


def run_mem_tiny(vmm):
    r = Run(vmm, tg("bench.elf"), "halt")
    try:
        r.wait(lambda: r.first_byte_time()[0] is not None, 60, "first byte 'K'")
        time.sleep(0.5)
        return mem_outside_guest(r.proc.pid)
    finally:
        r.stop()


def run_feed(vmm, n):
    r = Run(vmm, tg("bench.elf"), f"arm bench_feeds={n} reset", no_reboot=True)
    try:
        a = r.wait_line(r"bench: armed", 60)
        b = r.wait_line(r"bench: done", 600, a)
        return {"feed_us": (r.lines[b][0] - r.lines[a][0]) / n * 1e6, "n": n}
    finally:
        r.stop()


def run_event_latency():
    r = Run("kennel", tg("esb.elf"), "heartbeat=2 feeds=1 interval_ms=0 disarm", qmp=True, paused=True)
    try:
        r.command("cont")
        i = r.wait_event("WATCHDOG_FIRST_FEED", 30)
        a = r.wait_line(r"esb: armed", 30)
        b = r.wait_line(r"esb: feed 1", 30, a)
        t_recv, ev = r.events[i]
        ts = ev["timestamp"]["seconds"] + ev["timestamp"]["microseconds"] / 1e6
        return {"event_latency_ms": (t_recv - ts) * 1e3,
                "recv_minus_feed_line_ms": (t_recv - r.lines[b][0]) * 1e3,
                "recv_minus_armed_line_ms": (t_recv - r.lines[a][0]) * 1e3,
                "feed_line_minus_event_ts_ms": (r.lines[b][0] - ts) * 1e3}
    finally:
        r.stop()


def run_cycles(vmm, cycles, preload):
    nominal = 2 * preload * COUNT_S
    cmd = f"arm preload1={preload} preload2={preload} feed_after_ms=20"
    r = Run(vmm, tg("bench.elf"), cmd, qmp=True, paused=True)
    res = {"nominal_ms": nominal * 1e3, "expiry_err_ms": [], "expiry_err_events_ms": [],
           "reset_ms": [], "cycle_ms": [], "cycles_done": 0, "watchdog_events": 0}
    ks, feds = [], []
    try:
        r.command("cont")
        off, li = 0, 0
        t_start = time.time()
        for c in range(1, cycles + 2):  # the 'K' of cycle C+1 ends cycle C
            r.wait(lambda: r.first_byte_time(b"K", off)[0] is not None, 60, f"'K' of cycle {c}")
            tk, off = r.first_byte_time(b"K", off)
            ks.append(tk)
            if c > cycles:
                break
            li = r.wait_line(r"bench: fed", 60, li)
            feds.append(r.lines[li][0])
            li += 1
            if c in (10, cycles):
                res[f"proc_at_{c}"] = proc_status(r.proc.pid)
            res["cycles_done"] = c
        res["total_s"] = time.time() - t_start
        if vmm == "qemu":
            time.sleep(1.1)  # QEMU holds back WATCHDOG events: at most one a second
            r.poll(0.1)
    except Failed as e:
        res["error"] = str(e)
    finally:
        r.stop()
    # Each WATCHDOG event belongs to the cycle whose feed line precedes it and
    # whose next 'K' follows it: matched by time, not by count, because QEMU
    # rate-limits WATCHDOG to one a second (delivering the last of a second
    # late, with its own timestamp) and so drops most of them on short cycles.
    first_feed = {}
    for _, ev in r.events:
        if ev["event"] != "WATCHDOG_FIRST_FEED":
            continue
        first_feed[ev["data"].get("cycle")] = ev_ts(ev)
    for _, ev in r.events:
        if ev["event"] != "WATCHDOG":
            continue
        res["watchdog_events"] += 1
        ts = ev_ts(ev)
        for i in range(len(feds)):
            if i + 1 < len(ks) and feds[i] < ts < ks[i + 1]:
                res["expiry_err_ms"].append((ts - feds[i] - nominal) * 1e3)
                res["reset_ms"].append((ks[i + 1] - ts) * 1e3)
                ff = first_feed.get(ev["data"].get("cycle"))
                if ff is not None:  # kennel only: its own first-feed timestamp
                    res["expiry_err_events_ms"].append((ts - ff - nominal) * 1e3)
                break
    res["cycle_ms"] = [(b - a) * 1e3 for a, b in zip(ks, ks[1:])]
    return res


def run_linux(vmm):
    cmdline = LINUX_CMDLINE
    if vmm == "kennel":
        kernel = os.path.join(GUEST, "vmlinux")
    else:
        kernel = os.path.join(GUEST, "bzImage")
        if PVM:
            cmdline += " " + PVM_CMDLINE
    r = Run(vmm, kernel, cmdline, qmp=(vmm == "kennel"), linux=True)
    try:
        try:
            i = r.wait_line(r"kennel_feeder: feed 1\b", 300)
        except Failed as e:
            return {"error": str(e)[:1000], "after_s": time.time() - r.t0}
        res = {"boot_to_feed_s": r.lines[i][0] - r.t0}
        res["mem"] = mem_outside_guest(r.proc.pid)
        if vmm == "kennel":
            j = r.wait_event("WATCHDOG_FIRST_FEED", 10)
            res["first_feed_since_boot_ms"] = r.events[j][1]["data"]["since_boot_ms"]
        return res
    finally:
        r.stop()


