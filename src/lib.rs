//! kennel: a small KVM VMM for watchdog supervision. docs/ARCHITECTURE.md
//! has the code map, the boot sequence and the path of a feed and a reset.
//!
//! Four layers, each a folder: `host` (what this process gets from the
//! host), `machine` (the VM: memory, vCPUs, devices on their buses),
//! `supervision` (boot cycles, events, faults, the main loop) and
//! `interfaces` (QMP, the timeline). The entry points stay at the top.

pub mod cli;
pub mod exit_code;
pub mod host;
pub mod interfaces;
pub mod machine;
pub mod run;
pub mod supervision;
