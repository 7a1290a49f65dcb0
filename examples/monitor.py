#!/usr/bin/env python3
"""A reference monitor for kennel: one alarm per VM, kept the way README's
"How a monitor should use them" says.

    examples/monitor.py [NAME=]SOCKET [[NAME=]SOCKET ...]

Connects to each kennel's QMP socket with the `qemu.qmp` client (QEMU's own;
`pip install qemu.qmp`) and keeps one alarm per VM:

- raised on WATCHDOG or BOOT_DEADLINE_MISSED;
- never cleared on RESET or BOOT: a reboot proves nothing;
- cleared on WATCHDOG_FIRST_FEED of a cycle after the one that raised it,
  the proof that the rebooted guest's watchdog daemon runs again. A kennel
  that was restarted counts its cycles from 1 again, so a first feed from a
  later connection also clears it.

It reconnects whenever a kennel goes away and comes back (a restart under
systemd, say); the alarm survives that. It prints one JSON line per alarm
change and per connection change on standard output, e.g.

    {"vm": "web1", "alarm": "raised", "event": "WATCHDOG", "cycle": 3, "time": 1796063859.13}

and runs until interrupted.
"""
import asyncio
import json
import sys
import time

from qemu.qmp import QMPClient
from qemu.qmp.protocol import Runstate

RAISE = ("WATCHDOG", "BOOT_DEADLINE_MISSED")
RETRY_SECONDS = 0.2


def say(**fields):
    fields["time"] = round(time.time(), 3)
    print(json.dumps(fields), flush=True)


class Alarm:
    """One VM's alarm. Positions are (connection, cycle): a restarted kennel
    starts again at cycle 1 on a later connection, which is still later."""

    def __init__(self, vm):
        self.vm = vm
        self.raised_at = None

    def seen(self, connection, event):
        name = event.get("event")
        cycle = event.get("data", {}).get("cycle", 0)
        at = (connection, cycle)
        if name in RAISE:
            if self.raised_at is None:
                say(vm=self.vm, alarm="raised", event=name, cycle=cycle)
            # Already raised: a later failure moves the bar the guest must pass.
            self.raised_at = at
        elif name == "WATCHDOG_FIRST_FEED" and self.raised_at is not None and at > self.raised_at:
            self.raised_at = None
            say(vm=self.vm, alarm="cleared", event=name, cycle=cycle)


async def watch(vm, path):
    alarm = Alarm(vm)
    connection = 0
    while True:
        qmp = QMPClient(f"kennel-monitor-{vm}")
        try:
            await qmp.connect(path)
        except Exception:  # not there yet, or a kennel that is going away
            await asyncio.sleep(RETRY_SECONDS)
            continue
        connection += 1
        state = "clear" if alarm.raised_at is None else "raised"
        say(vm=vm, connected=True, connection=connection, alarm=state)
        gone = asyncio.ensure_future(disconnected(qmp))
        try:
            while not gone.done():
                get = asyncio.ensure_future(qmp.events.get())
                done, _ = await asyncio.wait({get, gone}, return_when=asyncio.FIRST_COMPLETED)
                if get in done:
                    alarm.seen(connection, get.result())
                else:
                    get.cancel()
            # Events that arrived just before the connection closed.
            for event in qmp.events.clear():
                alarm.seen(connection, event)
        finally:
            gone.cancel()
            try:
                await qmp.disconnect()
            except Exception:  # the EOF of a kennel that went away: expected
                pass
        say(vm=vm, connected=False, connection=connection)


async def disconnected(qmp):
    while qmp.runstate == Runstate.RUNNING:
        await qmp.runstate_changed()


def main(argv):
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if argv else 2
    vms = []
    for arg in argv:
        name, _, path = arg.rpartition("=")
        if not name:
            name = path.rsplit("/", 1)[-1].removesuffix(".qmp").removesuffix(".sock")
        vms.append((name, path))

    async def all_vms():
        await asyncio.gather(*(watch(name, path) for name, path in vms))

    try:
        asyncio.run(all_vms())
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
