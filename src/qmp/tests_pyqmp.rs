//! Checks against the real qemu.qmp Python client (written next).
