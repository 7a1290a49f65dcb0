"""One VMM process (kennel or QEMU) under measurement: its console and QMP
socket read in one select() loop, every read stamped with the host's wall
clock; and what /proc says about the process."""

import datetime
import json
import os
import platform
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
TARGET = os.path.join(REPO, "target")
OUT = os.path.join(TARGET, "bench")
KENNEL = os.path.join(TARGET, "release", "kennel")
TG = os.path.join(TARGET, "test-guests")
GUEST = os.path.join(TARGET, "guest")
QEMU = "qemu-system-x86_64"
QBOOT = "/usr/share/qemu/qboot.rom"
MEM_MIB = 128
PVM = os.path.exists("/sys/module/kvm_pvm")
PVM_CMDLINE = "noxsave clearcpuid=308,151 nopti mitigations=off lpj=5000000 tsc=reliable"
LINUX_CMDLINE = ("console=ttyS0 reboot=k panic=1 i6300esb.heartbeat=4 "
                 "kennel_feeder.interval_ms=1000 kennel_feeder.count=30")
CYCLE_PRELOAD = 0x40  # counts per stage in the reset-cycle run (~63 ms)
COUNT_S = 30e-9 * 2**15  # one count at 1 kHz: 2^15 PCI clocks of 30 ns


def scratch():
    """Where runs keep their sockets and logs: target/bench on the host;
    TMPDIR inside the nested host, whose view of the repository is
    read-only (and Unix sockets cannot live on its 9p share)."""
    d = os.environ.get("KENNEL_BENCH_SCRATCH") or OUT
    os.makedirs(d, exist_ok=True)
    return d


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


class Failed(Exception):
    """A run that did not get where it should, with what the VMM said."""



# --------------------------------------------------------------------------
# one VMM process: console + QMP in one select loop

class Run:
    def __init__(self, vmm, kernel, cmdline, *, qmp=False, paused=False, no_reboot=False,
                 linux=False, firmware="qboot", label="", mem_mib=MEM_MIB, initrd=None,
                 disk=None, disk_mode="readonly", vcpus=None, metrics=False):
        """disk_mode: "readonly" (both VMMs open the image read-only) or
        "snapshot" (the guest may write; kennel keeps the writes in memory,
        QEMU in a temporary qcow2 file under TMPDIR)."""
        self.vmm, self.label = vmm, label or vmm
        self.mem_mib = mem_mib
        self.dir = tempfile.mkdtemp(prefix=f"bench-{vmm}-", dir=scratch())
        self.qmp_path = os.path.join(self.dir, "qmp.sock") if qmp else None
        self.stderr_path = os.path.join(self.dir, "stderr")
        self.metrics_path = os.path.join(self.dir, "metrics.prom") if metrics else None
        if vmm == "kennel":
            argv = [KENNEL, "run", "--kernel", kernel, "--cmdline", cmdline,
                    "--memory", str(mem_mib)]
            if initrd:
                argv += ["--initrd", initrd]
            if disk:
                argv += ["--rootfs", disk,
                         "--rootfs-readonly" if disk_mode == "readonly" else "--rootfs-snapshot"]
            if vcpus:
                argv += ["--vcpus", str(vcpus)]
            if qmp:
                argv += ["--qmp", self.qmp_path]
            if paused:
                argv += ["--start-paused"]
            if no_reboot:
                argv += ["--no-reboot"]
            if self.metrics_path:
                argv += ["--metrics", self.metrics_path]
        else:
            # -cpu host fails on PVM ("failed to set MSR 0x10a"), so does
            # -cpu max; qemu64 needs -pni there. On real KVM: the host's CPU,
            # as kennel passes it through.
            if PVM:
                cpu = "qemu64,-pni" + (",-cx16,-popcnt" if linux else "")
            else:
                cpu = "host"
            argv = [QEMU, "-accel", "kvm", "-machine", "pc", "-cpu", cpu, "-m", str(mem_mib),
                    "-nodefaults", "-no-user-config", "-display", "none",
                    "-serial", "stdio", "-monitor", "none",
                    "-device", "i6300esb", "-action", "watchdog=reset",
                    "-kernel", kernel, "-append", cmdline]
            if initrd:
                argv += ["-initrd", initrd]
            if disk:
                opt = "readonly=on" if disk_mode == "readonly" else "snapshot=on"
                argv += ["-drive", f"file={disk},if=none,id=root,format=raw,{opt}",
                         "-device", "virtio-blk-pci,drive=root"]
            if vcpus:
                argv += ["-smp", str(vcpus)]
            if firmware == "qboot":
                argv += ["-bios", QBOOT]
            if qmp:
                argv += ["-qmp", f"unix:{self.qmp_path},server=on,wait=off"]
            if paused:
                argv += ["-S"]
            if no_reboot:
                argv += ["-no-reboot"]
        self.argv = argv
        # A VMM that stops its VM but stays up (QEMU after a KVM internal
        # error) is a failure, found in its stderr.
        self.abort_rx = re.compile(r"KVM internal error|emulation failure")
        self.buf = b""          # console bytes not yet split into lines
        self.console = b""      # everything
        self.lines = []         # (time, text)
        self.bytes_at = []      # (time, offset after this read)
        self.events = []        # (read time, event dict)
        self.replies = []
        self.qsock = None
        self.qbuf = b""
        self.sel = selectors.DefaultSelector()
        self.exited = None
        self.t0 = time.time()
        self.errf = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=self.errf)
        os.set_blocking(self.proc.stdout.fileno(), False)
        self.sel.register(self.proc.stdout, selectors.EVENT_READ, "console")
        if qmp:
            self._qmp_connect()

    # --- QMP
    def _qmp_connect(self):
        deadline = time.time() + 10
        while True:
            try:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(self.qmp_path)
                break
            except OSError:
                s.close()
                if time.time() > deadline or self.proc.poll() is not None:
                    raise Failed(f"{self.label}: no QMP socket: {self.stderr_tail()}")
                time.sleep(0.002)
        s.setblocking(False)
        self.qsock = s
        self.sel.register(s, selectors.EVENT_READ, "qmp")
        self.wait(lambda: self.greeted, 10, "QMP greeting")
        self.command("qmp_capabilities")

    greeted = False

    def command(self, name, args=None):
        msg = {"execute": name}
        if args:
            msg["arguments"] = args
        n = len(self.replies)
        self.qsock.sendall(json.dumps(msg).encode() + b"\r\n")
        t = time.time()
        self.wait(lambda: len(self.replies) > n, 10, f"reply to {name}")
        return t

    def _qmp_read(self, t):
        try:
            data = self.qsock.recv(65536)
        except BlockingIOError:
            return
        if not data:
            self.sel.unregister(self.qsock)
            self.qsock.close()
            self.qsock = None
            return
        self.qbuf += data
        while b"\n" in self.qbuf:
            line, self.qbuf = self.qbuf.split(b"\n", 1)
            if not line.strip():
                continue
            msg = json.loads(line)
            if "QMP" in msg:
                self.greeted = True
            elif "event" in msg:
                self.events.append((t, msg))
            else:
                self.replies.append(msg)

    # --- console
    def _console_read(self, t):
        try:
            data = os.read(self.proc.stdout.fileno(), 65536)
        except BlockingIOError:
            return
        if not data:
            self.sel.unregister(self.proc.stdout)
            self.exited = t
            return
        self.console += data
        self.bytes_at.append((t, len(self.console)))
        self.buf += data
        while b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            self.lines.append((t, line.decode(errors="replace").rstrip("\r")))

    def poll(self, timeout):
        for key, _ in self.sel.select(timeout):
            t = time.time()
            if key.data == "console":
                self._console_read(t)
            else:
                self._qmp_read(t)

    def wait(self, cond, timeout, what):
        deadline = time.time() + timeout
        while not cond():
            left = deadline - time.time()
            if left <= 0:
                raise Failed(f"{self.label}: timed out waiting for {what}; "
                             f"console tail {self.console[-300:]!r}; stderr {self.stderr_tail()}")
            if self.exited is not None and self.proc.poll() is not None and not self.sel.get_map():
                raise Failed(f"{self.label}: exited ({self.proc.returncode}) before {what}; "
                             f"console tail {self.console[-300:]!r}; stderr {self.stderr_tail()}")
            if not self.sel.get_map():
                time.sleep(min(left, 0.01))
                self.proc.poll()
                continue
            self.poll(min(left, 0.5))
            if time.time() - getattr(self, "_abort_checked", 0) > 0.5:
                self._abort_checked = time.time()
                err = self.stderr_text()
                if self.abort_rx.search(err):
                    time.sleep(0.2)
                    err = self.stderr_text()
                    keep = [ln for ln in err.splitlines()
                            if re.search(r"KVM internal error|emulation failure|^RIP=|^Code=", ln)]
                    raise Failed(f"{self.label}: after {time.time() - self.t0:.1f} s: "
                                 + " / ".join(keep))
        return True

    def wait_line(self, pattern, timeout, start=0):
        rx = re.compile(pattern)
        found = []

        def cond():
            for i in range(max(start, cond.i), len(self.lines)):
                if rx.search(self.lines[i][1]):
                    found.append(i)
                    return True
            cond.i = len(self.lines)
            return False
        cond.i = start
        self.wait(cond, timeout, f"console line /{pattern}/")
        return found[0]

    def wait_event(self, name, timeout, start=0):
        found = []

        def cond():
            for i in range(start, len(self.events)):
                if self.events[i][1]["event"] == name:
                    found.append(i)
                    return True
            return False
        self.wait(cond, timeout, f"event {name}")
        return found[0]

    def first_byte_time(self, marker=b"K", start=0):
        """Read time of the read that delivered the first `marker` at or after
        console offset `start`, and the offset after it."""
        pos = self.console.find(marker, start)
        if pos < 0:
            return None, None
        for t, end in self.bytes_at:
            if end > pos:
                return t, pos + 1
        return None, None

    def stderr_text(self):
        self.errf.flush()
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def stderr_tail(self):
        self.errf.flush()
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read()[-600:].decode(errors="replace").strip()
        except OSError:
            return ""

    def finish(self, timeout=10):
        """Wait for the process to exit by itself; kill it if it does not."""
        try:
            self.wait(lambda: self.proc.poll() is not None, timeout, "exit")
        except Failed:
            pass
        self.stop()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.qsock:
            self.qsock.close()
        self.proc.stdout.close()
        self.errf.close()
        shutil.rmtree(self.dir, ignore_errors=True)


# --------------------------------------------------------------------------
# /proc readings

def metric(run, name):
    """A sample of kennel's metrics file (--metrics), or None."""
    if not run.metrics_path:
        return None
    try:
        with open(run.metrics_path) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 2 and parts[0] == name:
                    return float(parts[1])
    except OSError:
        pass
    return None


def mem_outside_guest(pid, mem_mib=MEM_MIB):
    """(Pss KiB, private KiB) over the mappings that are not guest RAM:
    mappings whose size is between the guest RAM size and that plus 4 MiB
    (QEMU aligns its RAM block)."""
    lo, hi = mem_mib * 1024, (mem_mib + 4) * 1024
    pss = priv = 0
    guest_found = 0
    size = None
    cur_guest = False
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                a, b = line.split()[0].split("-")
                size = (int(b, 16) - int(a, 16)) // 1024
                cur_guest = lo <= size <= hi
                guest_found += cur_guest
                continue
            if cur_guest:
                continue
            k, _, v = line.partition(":")
            if k == "Pss":
                pss += int(v.split()[0])
            elif k in ("Private_Clean", "Private_Dirty"):
                priv += int(v.split()[0])
    return {"pss_kib": pss, "private_kib": priv, "guest_ram_mappings": guest_found}


def proc_status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "Threads"):
                out[k] = int(v.split()[0])
    out["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    return out


def ev_ts(ev):
    return ev["timestamp"]["seconds"] + ev["timestamp"]["microseconds"] / 1e6


# --------------------------------------------------------------------------
# setup

def sh(*argv, **kw):
    log("$ " + " ".join(argv))
    subprocess.run(argv, check=True, cwd=REPO, **kw)


def setup(linux, debian=False):
    os.makedirs(OUT, exist_ok=True)
    # The project's setup, not an install of its own: it picks the QEMU the
    # nested host needs (10, from bookworm-backports) and the test venv.
    sh(os.path.join(REPO, "scripts", "setup"), stdout=subprocess.DEVNULL)
    sh("cargo", "build", "--release", "--quiet")
    sh(os.path.join(REPO, "scripts", "build-test-guests"))
    if linux:
        sh(os.path.join(REPO, "scripts", "build-guest"), stdout=subprocess.DEVNULL)
    if debian:
        sh(os.path.join(REPO, "scripts", "build-debian-guest"), stdout=subprocess.DEVNULL)
        sh(os.path.join(REPO, "scripts", "nested"), "--prepare")


def cpu_model():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown"


def qemu_version():
    return subprocess.run([QEMU, "--version"], capture_output=True, text=True).stdout.splitlines()[0]


def machine():
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                            capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "src", "devices"], cwd=REPO,
                           capture_output=True, text=True).stdout.strip()
    return {"kvm": "PVM (kvm_pvm: no hardware virtualization; guest kernel code emulated)"
            if PVM else "real KVM (hardware virtualization)",
            "pvm": PVM, "cpu": cpu_model(), "cores": os.cpu_count(), "kernel": platform.release(),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "kennel_commit": commit + (" (src/devices modified)" if dirty else ""),
            "qemu": qemu_version(), "loadavg_before": open("/proc/loadavg").read().split()[:3]}


