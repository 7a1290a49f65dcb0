//! kennel: a small KVM VMM for watchdog supervision. See README.md for the
//! code map.

pub mod events;
pub mod lifecycle;
pub mod qmp;
