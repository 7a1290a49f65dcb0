#!/usr/bin/env python3
"""A real QMP client (qemu.qmp) for kennel's end-to-end tests.

Connects to SOCKET, optionally sends `cont` (for kennel --start-paused),
prints every event as one JSON line ({"event": ...}), and executes each JSON
command read from stdin ({"execute": NAME, "arguments": {...}}), printing
{"return": ...} or {"error": "..."} for it. Exits when kennel closes the
connection or stdin says {"execute": "bye"}.
"""
import argparse
import asyncio
import json
import sys

from qemu.qmp import QMPClient


def out(obj):
    print(json.dumps(obj), flush=True)


async def events(qmp):
    with qmp.listener() as listener:
        async for ev in listener:
            out(dict(ev))


async def commands(qmp):
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        cmd = json.loads(line)
        if cmd["execute"] == "bye":
            return
        try:
            out({"return": await qmp.execute(cmd["execute"], cmd.get("arguments"))})
        except Exception as e:  # the test decides what an error means
            out({"error": f"{type(e).__name__}: {e}"})


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("socket")
    ap.add_argument("--cont", action="store_true")
    a = ap.parse_args()
    qmp = QMPClient("kennel-test")
    # kennel creates the socket once its checks pass: seconds on a slow
    # (emulated nested) host.
    deadline = asyncio.get_running_loop().time() + 90
    while True:
        try:
            await qmp.connect(a.socket)
            break
        except Exception:
            if asyncio.get_running_loop().time() > deadline:
                out({"error": "cannot connect"})
                return
            await asyncio.sleep(0.05)
    out({"connected": True})
    ev = asyncio.create_task(events(qmp))
    await asyncio.sleep(0)
    if a.cont:
        out({"return": await qmp.execute("cont")})
    cmds = asyncio.create_task(commands(qmp))
    gone = asyncio.create_task(qmp.runstate_changed())
    await asyncio.wait([ev, cmds, gone], return_when=asyncio.FIRST_COMPLETED)
    for t in (ev, cmds, gone):
        t.cancel()
    try:
        await qmp.disconnect()
    except Exception:
        pass


asyncio.run(main())
