//! The host: opening KVM, signals, the terminal, the root disk image, and
//! the seccomp filters that confine each thread. Nothing here knows about
//! the guest.

pub mod kvm;
pub mod rootdisk;
pub mod seccomp;
pub mod signals;
pub mod terminal;
