//! PCI: configuration mechanism #1, a config-space helper, the host bridge.
//!
//! A PCI device is five methods: its placed BARs, config space read/write and
//! BAR read/write.
//! BARs are placed by the VMM when the VM is built and never move (see
//! `config_space` for what happens when a guest tries); [`PciBus::attach`]
//! puts a function in its slot and its BARs on the MMIO bus in one call.

pub mod bar_region;
pub mod config_io;
pub mod config_space;
pub mod host_bridge;
pub mod intx;

pub use bar_region::PciBarRegion;
pub use config_io::{PciBus, PciBusError, PciConfigIo, SharedPciDevice};
pub use config_space::{BarKind, ConfigSpace, ConfigSpaceError, PciIdentity, PlacedBar};
pub use host_bridge::HostBridge;
pub use intx::IntxPin;

/// A function on the PCI bus. All methods take guest-controlled offsets and
/// lengths and must not panic on any of them.
pub trait PciDevice: Send {
    /// Where the VMM placed this function's BARs and how large each is:
    /// what attaching it puts on the MMIO bus ([`PciBus::attach`]).
    fn bars(&self) -> Vec<PlacedBar>;
    /// Config space access; `offset` in 0..256, `data.len()` in {1, 2, 4}
    /// and naturally aligned (the config mechanism guarantees both).
    fn config_read(&mut self, offset: u16, data: &mut [u8]);
    fn config_write(&mut self, offset: u16, data: &[u8]);
    /// Access to BAR `bar` at `offset` within it. Called for every guest
    /// access to the BAR's placed range; the device itself decides whether
    /// its command register lets the access through.
    fn bar_read(&mut self, bar: usize, offset: u64, data: &mut [u8]);
    fn bar_write(&mut self, bar: usize, offset: u64, data: &[u8]);
}
