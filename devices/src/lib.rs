//! kennel's emulated devices.
//!
//! This crate knows nothing about KVM: devices see byte offsets within their
//! own ranges, take time from a [`clock::Clock`] they are given, raise
//! interrupts through [`irq::InterruptLine`] / [`irq::EdgeInterrupt`], and
//! report watchdog facts through [`i6300esb::WatchdogObserver`]. The VMM core
//! wires them to KVM.
//!
//! | module | what |
//! | --- | --- |
//! | [`acpi`] | hardware-reduced ACPI: sleep control/status, reset register, GED with the power button |
//! | [`bus`] | flat port-I/O and MMIO buses of non-overlapping ranges |
//! | [`clock`] | the `Clock` trait; a virtual clock for tests, a pausable one for the VMM |
//! | [`irq`] | level (`InterruptLine`) and edge (`EdgeInterrupt`) interrupt outputs |
//! | [`pci`] | config mechanism #1 (0xCF8), config-space helper with fixed BARs, host bridge, BAR regions |
//! | [`i6300esb`] | the Intel 6300ESB watchdog: registers, two-stage countdown, facts |
//! | [`i8042`] | keyboard controller stub: command 0xFE requests a reset |
//! | [`serial`] | the 16550A UART (vm-superio) as a bus device |
//! | [`virtio_blk`] | virtio-blk on the modern PCI transport, INTx, with a fault-injection hook |
//! | [`log_limit`] | rate limiting for log lines a guest can provoke |

pub mod acpi;
pub mod bus;
pub mod clock;
pub mod i6300esb;
pub mod i8042;
pub mod irq;
pub mod log_limit;
pub mod pci;
pub mod serial;
pub mod virtio_blk;
