//! kennel's emulated devices.
//!
//! This crate knows nothing about KVM: devices see byte offsets within their
//! own ranges, take time from a [`clock::Clock`] they are given, raise
//! interrupts through [`irq::InterruptLine`], and report watchdog facts
//! through [`i6300esb::WatchdogObserver`]. The VMM core wires them to KVM.

pub mod bus;
pub mod clock;
pub mod i6300esb;
pub mod irq;
pub mod log_limit;
pub mod pci;
