//! The machine: guest memory and its layout, the vCPUs and what their exits
//! mean, the devices on their buses, and everything a boot writes before the
//! first instruction. A VM is built whole from its configuration and torn
//! down whole (`vm.rs`).

pub mod boot;
pub mod cpuid;
pub mod disk_thread;
pub mod exits;
pub mod layout;
pub mod platform;
pub mod pvm;
pub mod requests;
pub mod vcpu;
pub mod vm;
