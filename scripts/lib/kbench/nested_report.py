"""The real-KVM section of docs/benchmarks.md, from scripts/bench --nested."""

from . import nested
from .stats import cell, md_table, met_str, summary, vals


def table(N):
    rows = []

    def row(metric, key_k, key_q, unit, limit=None, higher_better=False, note=""):
        k, q = summary(key_k), summary(key_q)
        ratio = k["median"] / q["median"] if k and q and q["median"] else None
        met, target = None, ""
        if limit is not None:
            target = (f">= {limit}x QEMU" if higher_better else f"<= {limit}x QEMU")
            if ratio is not None:
                met = ratio >= limit if higher_better else ratio <= limit
        rows.append({"metric": metric, "kennel_cell": cell(k, unit), "qemu_cell": cell(q, unit),
                     "ratio": ratio, "target": target, "met": met, "note": note})

    def both(section, fn):
        return [fn(x) for x in N[section]["kennel"] if "error" not in x], \
               [fn(x) for x in N[section]["qemu"] if "error" not in x]

    k, q = both("startup", lambda x: x["startup_s"] * 1e3)
    row("N1 Start-up to first guest byte (bench.elf)", k, q, "ms", 0.1)
    row("N2 Feed cost (unlock, unlock, reload)", vals(N["feed"]["kennel"], "feed_us"),
        vals(N["feed"]["qemu"], "feed_us"), "us", 1.0)
    k, q = both("kit", lambda x: x.get("boot_to_feed_s"))
    row("N3 Guest kit: process start to first feed", k, q, "s", 0.8)
    k, q = both("debian", lambda x: x.get("boot_to_feed_s"))
    ev = [x["event_minus_line_ms"] for x in N["debian"]["kennel"] if "event_minus_line_ms" in x]
    row("N5 Debian 12 (watchdog daemon): process start to first feed", k, q, "s", 0.8,
        note=f"kennel's WATCHDOG_FIRST_FEED - the daemon's line: {cell(summary(ev), 'ms')}")
    k = [v for x in N["kit"]["kennel"] for v in x.get("reset_to_feed_s", [])]
    q = [v for x in N["kit"]["qemu"] for v in x.get("reset_to_feed_s", [])]
    row("N4 Guest kit: watchdog expiry to the next boot's first feed", k, q, "s", 0.5,
        note=f"{len(k)} and {len(q)} cycles")
    k, q = both("kit", lambda x: x["mem"]["pss_kib"] if "mem" in x else None)
    row("N6 Memory outside guest RAM (Pss), guest kit at first feed (128 MiB)", k, q, "KiB", 0.2)
    k, q = both("debian", lambda x: x["mem"]["pss_kib"] if "mem" in x else None)
    row("N6b Memory outside guest RAM (Pss), Debian at first feed (512 MiB)", k, q, "KiB", 0.2,
        note="kennel's includes the snapshot overlay")
    k = [x["mem"]["pss_kib"] - x["snapshot_kib"] for x in N["debian"]["kennel"]
         if "mem" in x and "snapshot_kib" in x]
    if k:
        row("N6c The same, kennel without its snapshot overlay (QEMU keeps those writes in a file)",
            k, q, "KiB", 0.2)
    k, q = both("disk", lambda x: x.get("read_mib_s"))
    mib = N["disk"].get("mib", nested.DISK_MIB)
    row(f"N7 Guest disk read, sequential {mib} MiB, dd bs=1M", k, q, "MiB/s", 1.0,
        higher_better=True)
    k, q = both("disk", lambda x: x.get("read_s"))
    row("N7b Time that read takes", k, q, "s")
    k, q = both("disk", lambda x: x.get("boot_to_init_s"))
    row("N7c Guest kit: process start to init running from the disk", k, q, "s")
    return rows


def errors(N):
    out = []
    for section in ("startup", "feed", "kit", "disk", "debian"):
        for vmm in ("kennel", "qemu"):
            runs = N[section][vmm]
            bad = [x["error"] for x in runs if "error" in x]
            if bad:
                out.append(f"{section}, {vmm}: {len(bad)} of {len(runs)} runs failed; first: "
                           f"{bad[0][:300]}")
    return out


def render_text(rows):
    w = max(len(r["metric"]) for r in rows)
    out = []
    for r in rows:
        ratio = f"{r['ratio']:.3f}" if r["ratio"] is not None else ""
        out.append(f"{r['metric']:<{w}}  {r['kennel_cell']:<28} {r['qemu_cell']:<28} {ratio:>7}  "
                   f"{met_str(r['met'])}")
    return "\n".join(out)


def render_section(rows, N, meta):
    doc = nested.__doc__
    method = doc[doc.index("Method of each figure"):].rstrip()
    lines = [
        "## On real KVM: the nested KVM host (`scripts/bench --nested`)", "",
        "| | |", "|---|---|",
        f"| KVM | **real KVM: {N['kvm']}** inside the nested host (`scripts/nested`; "
        f"its CPU: {N['cpu']}) |",
        f"| outer machine | {meta['outer']} |",
        f"| date | {meta['date']} |",
        f"| kennel commit | {meta['commit']} |",
        f"| QEMU | {meta['qemu']} (the same binary runs inside) |",
        f"| run | {N['mode']}: {N['reps']} interleaved repetitions of N1 and N2 "
        f"({N['feeds_per_run']} feeds per run), {N['linux_reps']} of each Linux guest run "
        f"({N['kit'].get('cycles', '-')} reset cycles each); took {N['runtime_s']:.0f} s inside, "
        f"{meta['wall_s']:.0f} s with the nested hosts |",
        "",
        "Cells are median (p95) over the runs (over the cycles for N4); ratio = kennel",
        "median / QEMU median. The nested host's CPU is emulated, so every figure is",
        "slower than on hardware; both VMMs pay that alike.", ""]
    lines += md_table(rows)
    errs = errors(N) + meta.get("notes", [])
    if errs:
        lines += ["", "Runs that failed, and nested hosts that froze:", ""] + [f"- {e}" for e in errs]
    lines += ["", "### Method (real KVM)", "", "From `scripts/lib/kbench/nested.py`:", "",
              "```text", method, "```", ""]
    return "\n".join(lines)

