//! Command line.

use std::path::PathBuf;

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::supervision::lifecycle::{DeadlineAction, WatchdogAction};

#[derive(Debug, Parser)]
#[command(
    name = "kennel",
    version,
    about = "A small KVM VMM with watchdog supervision an operator can trust"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Boot a guest and supervise its watchdog.
    Run(Box<RunArgs>),
    /// Draw the boot cycles of an events file (--events) as an SVG timeline.
    Timeline {
        /// A JSON-lines events file written by `kennel run --events`.
        #[arg(value_name = "EVENTS.jsonl")]
        input: PathBuf,
        /// Where to write the SVG.
        #[arg(short, long, value_name = "SVG")]
        output: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Guest kernel: an uncompressed ELF vmlinux (64-bit Linux boot protocol,
    /// or PVH when it carries a PVH note) or a bzImage.
    #[arg(long, value_name = "PATH")]
    pub kernel: PathBuf,

    /// Initial ramdisk, placed at the top of low guest memory.
    #[arg(long, value_name = "PATH")]
    pub initrd: Option<PathBuf>,

    /// Kernel command line. On PVM hosts kennel appends what a stock kernel
    /// needs there (see README).
    #[arg(long, value_name = "STR", default_value = DEFAULT_CMDLINE)]
    pub cmdline: String,

    /// Guest memory in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 128, value_parser = clap::value_parser!(u64).range(8..=1 << 20))]
    pub memory: u64,

    /// Number of vCPUs.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=crate::machine::boot::MAX_VCPUS as i64))]
    pub vcpus: u8,

    /// Turn a guest reset into a clean exit (status 0) instead of rebooting,
    /// as QEMU's -no-reboot.
    #[arg(long)]
    pub no_reboot: bool,

    /// Do not apply the PVM host settings even when /dev/kvm is PVM.
    #[arg(long)]
    pub no_pvm_quirks: bool,

    /// What happens when the watchdog's second stage runs out (QEMU's set):
    /// reset, shutdown (press the ACPI power button), poweroff, pause, none,
    /// debug, inject-nmi.
    #[arg(long, value_name = "ACTION", default_value = "reset")]
    pub watchdog_action: WatchdogAction,

    /// After the watchdog's `shutdown` action pressed the power button, how
    /// long the guest has to power off before kennel powers it off itself
    /// (decimals allowed).
    #[arg(long, value_name = "SECS", value_parser = parse_seconds, default_value = "30")]
    pub shutdown_grace: Duration,

    /// Give the guest no ACPI tables or registers (no power button, no ACPI
    /// power-off or reset); it finds its CPUs and interrupts in the MP table.
    #[arg(long)]
    pub no_acpi: bool,

    /// Report BOOT_DEADLINE_MISSED when a boot cycle has not fed its
    /// watchdog this many seconds after it started (decimals allowed).
    #[arg(long, value_name = "SECS", value_parser = parse_seconds)]
    pub boot_deadline: Option<Duration>,

    /// What happens on a missed boot deadline: none, reset, poweroff, pause.
    #[arg(long, value_name = "ACTION", default_value = "none")]
    pub boot_deadline_action: DeadlineAction,

    /// Append every event as one JSON line to this file (created if absent).
    #[arg(long, value_name = "PATH")]
    pub events: Option<PathBuf>,

    /// Keep the supervision state in this file in the Prometheus text format
    /// (for node_exporter's textfile collector), rewritten atomically on
    /// every event and every 5 seconds.
    #[arg(long, value_name = "PATH")]
    pub metrics: Option<PathBuf>,

    /// Serve QMP on a Unix socket at this path (must not exist; mode 0600).
    #[arg(long, value_name = "PATH")]
    pub qmp: Option<PathBuf>,

    /// Attach this raw disk image as a virtio-blk PCI disk (read-write,
    /// locked against other users); adds root=/dev/vda unless the command
    /// line names a root.
    #[arg(long, value_name = "PATH")]
    pub rootfs: Option<PathBuf>,

    /// Attach the --rootfs image read-only.
    #[arg(long, requires = "rootfs")]
    pub rootfs_readonly: bool,

    /// Attach the --rootfs image as a snapshot (QEMU's -snapshot): the
    /// image is opened read-only and never changes; the guest's writes are
    /// kept in kennel's memory (up to 1 GiB), survive the guest's resets
    /// and are gone when kennel exits.
    #[arg(long, requires = "rootfs", conflicts_with = "rootfs_readonly")]
    pub rootfs_snapshot: bool,

    /// Inject a fault, tied to boot cycles (repeatable), e.g.
    /// blk:read-error,cycle=2  blk:delay=200ms  boot:hang,after=5s,cycle=3
    /// boot:cmdline=root=/dev/nonexistent panic=1,cycle=2. See README.
    #[arg(long, value_name = "SPEC")]
    pub fault: Vec<String>,

    /// Seed for probabilistic faults, so a run can be repeated exactly.
    #[arg(long, value_name = "N", default_value_t = crate::supervision::faults::DEFAULT_SEED)]
    pub fault_seed: u64,

    /// Do not start the VM until a QMP client sends `cont` (as QEMU's -S),
    /// so a monitor sees the very first BOOT. Needs --qmp.
    #[arg(long, requires = "qmp")]
    pub start_paused: bool,

    /// Do not confine kennel's threads with seccomp filters (README,
    /// "Threat model"); for debugging with tools that need more calls.
    #[arg(long)]
    pub no_seccomp: bool,
}

fn parse_seconds(s: &str) -> Result<Duration, String> {
    let v: f64 = s.parse().map_err(|_| format!("'{s}' is not a number of seconds"))?;
    if !(v > 0.0 && v < 1e9) {
        return Err(format!("'{s}' must be more than 0 seconds"));
    }
    Ok(Duration::from_secs_f64(v))
}

/// Without `reboot=`, Linux reboots through the ACPI reset register when
/// the tables offer it and through the keyboard controller otherwise.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 panic=1";
