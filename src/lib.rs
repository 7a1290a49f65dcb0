//! kennel: a small KVM VMM for watchdog supervision. README.md has the code
//! map and the boot sequence.

pub mod boot;
pub mod cli;
pub mod cmdline;
pub mod controller;
pub mod cpuid;
pub mod disk_faults;
pub mod events;
pub mod exit_code;
pub mod exits;
pub mod faults;
pub mod host;
pub mod layout;
pub mod lifecycle;
pub mod platform;
pub mod pvm;
pub mod qmp;
pub mod requests;
pub mod rootdisk;
pub mod run;
pub mod seccomp;
pub mod signals;
pub mod terminal;
pub mod timeline;
pub mod vcpu;
pub mod vm;
