//! Command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

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
    Run(RunArgs),
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
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=crate::boot::MAX_VCPUS as i64))]
    pub vcpus: u8,

    /// Turn a guest reset into a clean exit (status 0) instead of rebooting,
    /// as QEMU's -no-reboot.
    #[arg(long)]
    pub no_reboot: bool,

    /// Do not apply the PVM host settings even when /dev/kvm is PVM.
    #[arg(long)]
    pub no_pvm_quirks: bool,
}

pub const DEFAULT_CMDLINE: &str = "console=ttyS0 reboot=k panic=1";
