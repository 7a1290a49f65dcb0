"""The host section's table and its part of docs/benchmarks.md."""

from . import host
from .stats import cell, first_error, fmt, md_table, met_str, pct, summary, vals


def table(R):
    rows = []

    def row(metric, k, q, unit, target=None, met=None, note=""):
        ratio = None
        if isinstance(k, dict) and isinstance(q, dict) and q["median"]:
            ratio = k["median"] / q["median"]
        rows.append({"metric": metric, "kennel": k, "qemu": q, "unit": unit,
                     "ratio": ratio, "target": target, "met": met, "note": note,
                     "kennel_cell": cell(k, unit) if isinstance(k, dict) else k,
                     "qemu_cell": cell(q, unit) if isinstance(q, dict) else q})

    def ratio_target(k, q, limit):
        if not (k and q and isinstance(k, dict) and isinstance(q, dict)):
            return None
        return k["median"] / q["median"] <= limit

    s = R["startup"]
    k = summary([x["startup_s"] * 1e3 for x in s["kennel"] if "startup_s" in x])
    q = summary([x["startup_s"] * 1e3 for x in s["qemu"] if "startup_s" in x])
    row("1 Start-up to first guest byte", k, q, "ms", "<= 1/10 of QEMU", ratio_target(k, q, 0.1))
    qs = summary([x["startup_s"] * 1e3 for x in s["qemu_seabios"] if "startup_s" in x])
    row("1b Start-up, QEMU with its default SeaBIOS", None, qs, "ms", note="reference")
    if qs and k:
        rows[-1]["ratio"] = k["median"] / qs["median"]

    L = R.get("linux")
    if L:
        k = summary([x["mem"]["pss_kib"] for x in L["kennel"] if "mem" in x])
        q = summary([x["mem"]["pss_kib"] for x in L["qemu"] if "mem" in x])
        qerr = first_error(L["qemu"]) if not q else None
        row("2 Memory outside guest RAM (Pss), Linux guest booted", k,
            "QEMU cannot run this on a PVM host (error below)" if qerr else q, "KiB",
            "<= 1/10 of QEMU", ratio_target(k, q, 0.1))
    k = summary([x["pss_kib"] for x in R["mem_tiny"]["kennel"] if "pss_kib" in x])
    q = summary([x["pss_kib"] for x in R["mem_tiny"]["qemu"] if "pss_kib" in x])
    row("2b Memory outside guest RAM (Pss), tiny guest halted", k, q, "KiB",
        "<= 1/10 of QEMU", ratio_target(k, q, 0.1))

    k = summary(vals(R["feed"]["kennel"], "feed_us"))
    q = summary(vals(R["feed"]["qemu"], "feed_us"))
    row("3 Feed cost (unlock, unlock, reload)", k, q, "us", "<= QEMU", ratio_target(k, q, 1.0))

    C = R["reset_cycles"]
    ke = C["kennel"]["expiry_err_ms"]
    qe = C["qemu"]["expiry_err_ms"]
    k, q = summary(ke), summary(qe)
    row("4 Expiry error, serial-line method (WATCHDOG ts - 'fed' line - nominal)", k, q, "ms",
        note=f"p1/p99 kennel {fmt(pct(ke, 1), 'ms')}/{fmt(pct(ke, 99), 'ms')}, "
        f"QEMU {fmt(pct(qe, 1), 'ms')}/{fmt(pct(qe, 99), 'ms')}; QEMU: {len(qe)} of "
        f"{C['qemu']['cycles_done']} cycles have a WATCHDOG event (QEMU rate-limits it to 1/s)")
    rows[-1]["ratio"] = None
    kv = C["kennel"]["expiry_err_events_ms"]
    k = summary(kv)
    met = None
    if kv:
        met = max(abs(pct(kv, 1)), abs(pct(kv, 99))) <= 1.0
    row("4b Expiry error, kennel's own clock (WATCHDOG ts - WATCHDOG_FIRST_FEED ts - nominal)",
        k, "no such event", "ms", "within 1 ms at p99", met,
        note=f"p1/p99 {fmt(pct(kv, 1), 'ms')}/{fmt(pct(kv, 99), 'ms')}")
    k = summary(C["kennel"]["reset_ms"])
    q = summary(C["qemu"]["reset_ms"])
    row("5 Reset latency (WATCHDOG to next boot's first byte)", k, q, "ms", "<= 1/5 of QEMU",
        ratio_target(k, q, 0.2))

    k = summary(vals(R["event_latency"]["kennel"], "event_latency_ms"))
    kb = summary(vals(R["event_latency"]["kennel"], "recv_minus_armed_line_ms"))
    row("6 Event latency (first feed to QMP client)", k, "no such event", "ms", "< 1 ms",
        (k["p95"] < 1.0) if k else None,
        note=f"upper bound (QMP read - 'armed' line before the feed): {cell(kb, 'ms')}")

    if L:
        k = summary(vals(L["kennel"], "boot_to_feed_s"))
        q = summary(vals(L["qemu"], "boot_to_feed_s"))
        qerr = first_error(L["qemu"]) if not q else None
        row("7 Linux boot to first feed (console line)", k,
            "QEMU cannot run this on a PVM host (error below)" if qerr else q, "s",
            note="kennel: vmlinux; QEMU: bzImage of the same build")
        kf = summary([x["first_feed_since_boot_ms"] / 1e3 for x in L["kennel"]
                      if "first_feed_since_boot_ms" in x])
        row("7b kennel WATCHDOG_FIRST_FEED since_boot", kf, None, "s", note="cross-check")

    n = R["reset_cycles"]
    k = summary(n["kennel"]["cycle_ms"])
    q = summary(n["qemu"]["cycle_ms"])
    row(f"8 Reset cycle time (kennel {n['kennel']['cycles_done']}, QEMU {n['qemu']['cycles_done']} "
        f"of {R['cycles']} cycles)", k, q, "ms",
        note=f"nominal expiry {n['kennel']['nominal_ms']:.1f} ms after a feed 20 ms after arming")
    for key, label in (("VmRSS", "RSS growth"), ("fds", "fd growth"), ("Threads", "thread growth")):
        vals_ = []
        for vmm in ("kennel", "qemu"):
            c = n[vmm]
            last = max([int(x[8:]) for x in c if x.startswith("proc_at_")] or [0])
            if "proc_at_10" in c and last > 10:
                d = c[f"proc_at_{last}"][key] - c["proc_at_10"][key]
                vals_.append(f"{d:+d}{' KiB' if key == 'VmRSS' else ''} "
                             f"({c['proc_at_10'][key]} -> {c[f'proc_at_{last}'][key]}, cycle 10 -> {last})")
            else:
                vals_.append("-")
        rows.append({"metric": f"8 {label}", "kennel_cell": vals_[0], "qemu_cell": vals_[1],
                     "ratio": None, "target": "zero growth" if key != "Threads" else None,
                     "met": vals_[0].startswith("+0 ") if key != "Threads" and vals_[0] != "-" else None,
                     "note": "", "unit": ""})
    return rows


def render_text(rows, R):
    out = [f"{R['machine']['kvm']}; {R['machine']['cpu']}; {R['mode']} run", ""]
    w = max(len(r["metric"]) for r in rows)
    for r in rows:
        ratio = f"{r['ratio']:.3f}" if r["ratio"] is not None else ""
        q = r["qemu_cell"] or ""
        out.append(f"{r['metric']:<{w}}  {r['kennel_cell'] or '-':<34} {q[:60]:<60} {ratio:>7}  "
                   f"{met_str(r['met'])}")
    return "\n".join(out)


def render_doc(rows, R):
    """The host section of docs/benchmarks.md."""
    m = R["machine"]
    doc = host.__doc__
    method = doc[doc.index("The VMMs, as configured here"):doc.index("Targets for kennel")]
    lines = [
        "## On this machine's /dev/kvm (`scripts/bench`)",
        "",
        "Raw figures: `target/bench/results.json`.",
        "",
        "| | |", "|---|---|",
        f"| host KVM | **{m['kvm']}** |",
        f"| CPU | {m['cpu']}, {m['cores']} cores (shared with other work) |",
        f"| host kernel | {m['kernel']} |",
        f"| date | {m['date']} |",
        f"| kennel commit | {m['kennel_commit']} |",
        f"| QEMU | {m['qemu']} |",
        f"| run | {R['mode']}: {R['reps']} interleaved repetitions, {R['cycles']} reset cycles, "
        f"{R['feeds_per_run']} feeds per feed-cost run, guest RAM {R['guest_memory_mib']} MiB; "
        f"took {R['total_runtime_s']:.0f} s |",
        f"| host load average (1/5/15 min) | before the run "
        f"{' '.join(m.get('loadavg_before', ['not recorded']))}; after "
        f"{' '.join(R.get('loadavg_after', ['not recorded']))} (2 cores shared with other "
        f"work: tails of the latency figures are mostly scheduling delay) |",
        "",
    ]
    if m["pvm"]:
        lines += [
            "**This is a PVM host**: guest kernel-mode code is emulated instruction by",
            "instruction, so every guest exit and every guest instruction costs far more",
            "than on real KVM. The figures compare the two VMMs on the same host; they are",
            "not what either VMM does on a host with hardware virtualization.",
            ""]
    lines += ["Cells are median (p95) over the runs (or over the cycles for 4, 5 and 8);",
              "ratio = kennel median / QEMU median.", ""]
    lines += md_table(rows)
    L = R.get("linux")
    qerr = first_error(L["qemu"]) if L else None
    if qerr:
        lines += ["", "### QEMU and the Linux guest on this host", "",
                  f"QEMU stopped the VM in {sum('error' in x for x in L['qemu'])} of "
                  f"{len(L['qemu'])} runs; the first run's error, as QEMU printed it:",
                  "", "```text", qerr.replace(" / ", "\n"), "```", "",
                  "It is the `int3` of Linux's alternatives self-test, which this host's",
                  "emulator does not implement; kennel steps past it and injects #BP itself",
                  "(README, \"Hosts without hardware virtualization\"). QEMU has no such",
                  "workaround, so rows 2 and 7 have no QEMU figure here."]
    lines += ["", "### Method (this machine)", "", "From `scripts/lib/kbench/host.py`:", "", "```text",
              method.rstrip(), "```", ""]
    lines += ["Targets for kennel (reported, not asserted): start-up and memory <= 1/10 of",
              "QEMU's; reset latency <= 1/5; feed cost no worse than QEMU's; expiry within",
              "1 ms of nominal at p99; event latency < 1 ms (judged at p95 of the runs).", ""]
    return "\n".join(lines)

