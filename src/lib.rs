//! kennel: a small KVM VMM for watchdog supervision. README.md has the code
//! map and the boot sequence.

pub mod boot;
pub mod cli;
pub mod controller;
pub mod cpuid;
pub mod exit_code;
pub mod exits;
pub mod faults;
pub mod host;
pub mod layout;
pub mod platform;
pub mod pvm;
pub mod requests;
pub mod run;
pub mod terminal;
pub mod timeline;
pub mod vcpu;
pub mod vm;
