"""Real-KVM metrics: run inside the nested KVM host (scripts/nested), where
both VMMs use the same kvm_amd a bare-metal AMD host runs.

Method of each figure (the real-KVM section of docs/benchmarks.md quotes this)
  Both VMMs run inside the same nested host, one VM at a time, interleaved
  (kennel, QEMU, kennel, ...). QEMU: -accel kvm -cpu host -machine pc
  -nodefaults -bios qboot.rom -device i6300esb -action watchdog=reset; the
  disk as -drive if=none,format=raw (readonly=on or snapshot=on) and
  -device virtio-blk-pci. kennel: the same kernel, initrd, disk, memory and
  vCPUs (--rootfs-readonly or --rootfs-snapshot). Same command line for
  both. The console is read by one select() loop that stamps every read with
  the host's wall clock; "line time" is the stamp of the read that delivered
  the line's last byte. Time zero is just before the VMM process starts.
  The nested host's CPU is emulated by QEMU (TCG) on a PVM machine, so
  absolute times are slow; the ratios compare the two VMMs on the same
  real KVM.
 N1 Start-up: bench.elf, as host metric 1.
 N2 Feed cost: bench.elf, as host metric 3 (fewer feeds per run).
 N3 Guest kit, boot to first feed: the kit's kernel (kennel: vmlinux; QEMU:
   the bzImage of the same build) with its busybox root disk read-only,
   init=/sbin/kennel-spin and the kit's in-kernel feeder
   (kennel_feeder.after_root=1: it opens /dev/watchdog once the root is
   mounted and init is about to start, and prints each feed): time to the
   line "kennel_feeder: feed 1". The feeder feeds 3 times a second apart,
   then stops with the device open, so the watchdog (heartbeat 4 s) expires
   and resets the guest, which boots again: that gives N4.
 N4 Guest kit, watchdog expiry to the next boot's first feed: the next
   "kennel_feeder: feed 1" line time - the WATCHDOG event's timestamp (the
   VMM's own, read over QMP), for each of the cycles after the first.
   Includes the reset, the kernel's boot and mounting the root disk.
 N5 Debian 12 guest, boot to first feed: Debian's stock kernel and initrd
   (scripts/build-debian-guest), its disk as a snapshot, 512 MiB, 1 vCPU,
   fed by Debian's watchdog daemon (kennel.feeder=daemon: it starts once
   multi-user services are up and feeds while its test of the demo service
   passes): time to the line "kennel-debian: watchdog daemon feeding", which
   the unit's ExecStartPost writes to /dev/kmsg once the daemon has started.
   (systemd's own feeder says nothing on the console once journald runs, so
   QEMU would give no time for it.) kennel's WATCHDOG_FIRST_FEED timestamp -
   that line time is recorded as a check of the method.
 N6 Memory outside guest RAM: Pss over /proc/PID/smaps except the guest RAM
   mapping (as host metric 2), read right after the first-feed line of N3
   (128 MiB guest) and of N5 (512 MiB guest). kennel's snapshot overlay (the
   Debian guest's writes) is in its heap and counts; QEMU's goes to a
   temporary qcow2 file and does not.
 N7 Disk read: the kit's kernel and busybox user space (rcS, knob
   kennel.read_disk) on a 512 MiB root disk (the kit's rootfs.ext4 grown
   with truncate, in the nested host's tmpfs: the host side reads memory),
   read-only; the guest runs `dd if=/dev/vda of=/dev/null bs=1M` right
   after init starts. Throughput = 512 MiB / (line time of "disk read
   done" - line time of "disk read start"). Also: boot to "kennel-guest:
   init started" (the root disk mounted, init run from it).
"""

import os
import shutil
import time

from .host import run_feed, run_startup
from .stats import interleave
from .vmm import GUEST, Failed, Run, cpu_model, ev_ts, mem_outside_guest, metric

KIT_BASE = "console=ttyS0 reboot=k panic=1 i6300esb.heartbeat=4 root=/dev/vda ro"
KIT_FEEDER = ("init=/sbin/kennel-spin kennel_feeder.after_root=1 kennel_feeder.interval_ms=1000 "
              "kennel_feeder.count=3 kennel_feeder.close=none")
DEBIAN_CMDLINE = "console=ttyS0 root=/dev/vda2 ro panic=1 kennel.feeder=daemon"
DEBIAN_MIB = 512
DAEMON_FEEDING = r"kennel-debian: watchdog daemon feeding"
DISK_MIB = 512


def kit_kernel(vmm):
    return os.path.join(GUEST, "vmlinux" if vmm == "kennel" else "bzImage")


def run_kit_cycles(vmm, cycles):
    """N3, N4 and the kit's N6 from one VMM process."""
    r = Run(vmm, kit_kernel(vmm), f"{KIT_BASE} {KIT_FEEDER}", qmp=True, linux=True,
            disk=os.path.join(GUEST, "rootfs.ext4"))
    res = {"reset_to_feed_s": []}
    try:
        # ~15 s when all is well; QEMU's guest has been seen to stop for good
        # in the kernel's timer check ("APIC: Switch to symmetric I/O mode")
        i = r.wait_line(r"kennel_feeder: feed 1\b", 120)
        res["boot_to_feed_s"] = r.lines[i][0] - r.t0
        res["mem"] = mem_outside_guest(r.proc.pid, r.mem_mib)
        ev = 0
        for c in range(2, cycles + 2):
            ev = r.wait_event("WATCHDOG", 60, ev)
            ts = ev_ts(r.events[ev][1])
            i = r.wait_line(r"kennel_feeder: feed 1\b", 120, i + 1)
            res["reset_to_feed_s"].append(r.lines[i][0] - ts)
            ev += 1
        return res
    except Failed as e:
        res["error"] = str(e)[:1000]
        return res
    finally:
        r.stop()


def run_debian(vmm):
    """N5 and the Debian guest's N6."""
    d = os.path.join(GUEST, "debian")
    r = Run(vmm, os.path.join(d, "vmlinuz"), DEBIAN_CMDLINE, qmp=(vmm == "kennel"), linux=True,
            initrd=os.path.join(d, "initrd.img"), disk=os.path.join(d, "rootfs.img"),
            disk_mode="snapshot", mem_mib=DEBIAN_MIB, vcpus=1, metrics=(vmm == "kennel"))
    try:
        i = r.wait_line(DAEMON_FEEDING, 400)
        res = {"boot_to_feed_s": r.lines[i][0] - r.t0,
               "mem": mem_outside_guest(r.proc.pid, r.mem_mib)}
        # The guest's writes kennel holds (QEMU keeps them in a file, outside
        # its Pss); the file is rewritten at WATCHDOG_FIRST_FEED, just before
        # the daemon's line.
        snap = metric(r, "kennel_disk_snapshot_bytes")
        if snap is not None:
            res["snapshot_kib"] = snap / 1024
        if vmm == "kennel":
            j = r.wait_event("WATCHDOG_FIRST_FEED", 10)
            res["event_minus_line_ms"] = (ev_ts(r.events[j][1]) - r.lines[i][0]) * 1e3
        return res
    except Failed as e:
        return {"error": str(e)[:1000], "after_s": time.time() - r.t0}
    finally:
        r.stop()


def grown_disk(scratch):
    """The kit's root disk grown to DISK_MIB in scratch (a tmpfs in the
    nested host), made on first use and kept for the later runs."""
    path = os.path.join(scratch, "bench-disk.ext4")
    if not os.path.exists(path):
        shutil.copyfile(os.path.join(GUEST, "rootfs.ext4"), path)
        os.truncate(path, DISK_MIB << 20)
    return path


def run_disk(vmm, disk):
    """N7."""
    r = Run(vmm, kit_kernel(vmm), f"{KIT_BASE} kennel.watchdog=0 kennel.read_disk=/dev/vda",
            linux=True, disk=disk)
    try:
        i = r.wait_line(r"kennel-guest: init started", 300)
        a = r.wait_line(r"kennel-guest: disk read start", 60, i)
        b = r.wait_line(r"kennel-guest: disk read done", 600, a)
        secs = r.lines[b][0] - r.lines[a][0]
        return {"boot_to_init_s": r.lines[i][0] - r.t0, "read_s": secs,
                "read_mib_s": DISK_MIB / secs}
    except Failed as e:
        return {"error": str(e)[:1000]}
    finally:
        r.stop()


# Sections of short bench.elf runs, made `reps` times for each VMM; the
# others boot a Linux guest, `linux_reps` times.
SHORT_SECTIONS = ("startup", "feed")


def default_reps(quick):
    """Runs of each VMM by default: (short sections, Linux sections)."""
    return (3, 1) if quick else (10, 3)


def run_all(quick, only=None, linux_reps=None, reps=None):
    """Every real-KVM metric (or those sections named in `only`); returns the
    results dict. `reps` and `linux_reps` override the runs of each VMM in
    the short sections and in the Linux ones."""
    short, linux = default_reps(quick)
    reps = reps or short
    linux_reps = linux_reps or linux
    feeds = 2000 if quick else 5000
    scratch = os.environ.get("KENNEL_BENCH_SCRATCH") or "/tmp"
    R = {"reps": reps, "linux_reps": linux_reps, "feeds_per_run": feeds,
         "mode": "quick" if quick else "full", "kvm": kvm_module(), "cpu": cpu_model()}
    t0 = time.time()
    cycles = 2 if quick else 3
    sections = [
        ("startup", reps, "start-up", run_startup),
        ("feed", reps, "feed cost", lambda vmm: run_feed(vmm, feeds)),
        ("kit", linux_reps, "guest kit boot and reset cycles",
         lambda vmm: run_kit_cycles(vmm, cycles)),
        ("disk", linux_reps, "disk read", lambda vmm: run_disk(vmm, grown_disk(scratch))),
        ("debian", linux_reps, "Debian boot", run_debian),
    ]
    for key, n, what, fn in sections:
        if only and key not in only:
            R[key] = {"kennel": [], "qemu": []}
            continue
        k, q = interleave(n, lambda: fn("kennel"), lambda: fn("qemu"), what)
        R[key] = {"kennel": k, "qemu": q}
    R["kit"]["cycles"] = cycles
    R["disk"]["mib"] = DISK_MIB
    R["runtime_s"] = time.time() - t0
    return R


def kvm_module():
    for m in ("kvm_amd", "kvm_intel", "kvm_pvm"):
        if os.path.exists(f"/sys/module/{m}"):
            return m
    return "none"
