//! kennel's exit statuses (documented in README.md, "Exit status").

/// The guest powered off, `--no-reboot` turned a reset into an exit, or a
/// QMP client asked to quit.
pub const CLEAN: i32 = 0;
/// A host-side problem: bad image, bad option value, no KVM, cannot create a
/// file or socket. Nothing ran, or the VM could not be (re)built.
pub const HOST_ERROR: i32 = 1;
/// The command line could not be parsed (clap's own status).
pub const USAGE: i32 = 2;
/// The VM failed while running: an instruction KVM could not emulate, a
/// KVM error, a guest crash event.
pub const VM_FAILED: i32 = 3;
/// The watchdog or boot-deadline action powered the VM off.
pub const WATCHDOG_POWEROFF: i32 = 4;
