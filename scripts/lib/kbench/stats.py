"""Summaries (nearest-rank percentiles), interleaving, and cell formatting."""

import os
import time

from .vmm import Failed, log

# KENNEL_BENCH_VERBOSE=1: say when each run ends and how long it took
VERBOSE = os.environ.get("KENNEL_BENCH_VERBOSE", "0") != "0"
# Called with (vmm, result) after each run: inside the nested host, each run
# is passed out at once, so a host that freezes later loses only later runs.
ON_RUN = None


def pct(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    k = max(0, min(len(xs) - 1, int(-(-p * len(xs) // 100)) - 1))  # nearest rank
    return xs[k]


def summary(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None
    return {"n": len(xs), "median": pct(xs, 50), "p95": pct(xs, 95), "p99": pct(xs, 99),
            "min": min(xs), "max": max(xs)}


def interleave(reps, fn_k, fn_q, what):
    ks, qs = [], []
    for i in range(reps):
        for vmm, fn, acc in (("kennel", fn_k, ks), ("qemu", fn_q, qs)):
            if fn is None:
                continue
            t0 = time.time()
            try:
                res = fn()
            except Failed as e:
                res = {"error": str(e)[:600]}
            if "error" in res:
                log(f"{what} {vmm} run {i + 1}: {res['error']}")
            elif VERBOSE:
                log(f"{what} {vmm} run {i + 1}: {time.time() - t0:.1f} s")
            acc.append(res)
            if ON_RUN:
                ON_RUN(vmm, res)
    log(f"{what}: done")
    return ks, qs


def vals(runs, key):
    return [r[key] for r in runs if key in r]


def fmt(x, unit):
    if x is None:
        return "-"
    if unit == "ms" and abs(x) < 1:
        return f"{x * 1000:.0f} us"
    if unit in ("ms", "us") and abs(x) >= 100:
        return f"{x:.0f} {unit}"
    if unit == "s":
        return f"{x:.2f} s"
    if unit == "KiB":
        return f"{x / 1024:.1f} MiB" if x >= 1024 else f"{x:.0f} KiB"
    return f"{x:.2f} {unit}" if abs(x) < 10 else f"{x:.1f} {unit}"


def cell(s, unit):
    if not s:
        return "-"
    if s["n"] == 1:
        return fmt(s["median"], unit)
    return f"{fmt(s['median'], unit)} (p95 {fmt(s['p95'], unit)})"


def first_error(runs):
    for r in runs:
        if "error" in r:
            return r["error"]
    return None


def met_str(m):
    return {True: "met", False: "**missed**", None: ""}[m]


def md_table(rows):
    """The results table of a docs/benchmarks.md section, one line per row."""
    lines = ["| metric | kennel | QEMU | ratio | target | |", "|---|---|---|---|---|---|"]
    for r in rows:
        ratio = f"{r['ratio']:.3f}" if r["ratio"] is not None else ""
        note = f" ({r['note']})" if r.get("note") else ""
        lines.append(f"| {r['metric']}{note} | {r['kennel_cell'] or '-'} | {r['qemu_cell'] or '-'} "
                     f"| {ratio} | {r['target'] or ''} | {met_str(r['met'])} |")
    return lines


