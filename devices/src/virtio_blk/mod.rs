//! A virtio-blk disk on the modern (virtio 1.x) PCI transport, with a fault
//! injection hook.
//!
//! The disk exists so developers can reproduce boot failures, such as I/O
//! errors on the root disk after a watchdog reset: before executing each
//! request the device asks a [`BlockFaults`] what to do.
//!
//! - **Transport** (`device`, `common_cfg`): vendor 0x1AF4, device 0x1042,
//!   revision 1. One 32-bit memory BAR of [`BAR0_SIZE`] bytes holds the four
//!   structures the capability list at 0x34 points to: common configuration
//!   at 0x0000, ISR at 0x1000, device configuration at 0x2000, notifications
//!   at 0x3000 (queue 0 at 0x3000, multiplier 4). No MSI-X: the interrupt is
//!   INTA#, asserted while the ISR has a bit set and cleared by reading it.
//! - **Queue** (`request`, `exec`): one split virtqueue of up to 256 entries,
//!   parsed by rust-vmm's `virtio-queue`. A notification is a BAR write;
//!   the device serves the ring on the thread that brings it: the VMM's
//!   disk thread when it hangs an ioeventfd on the register
//!   ([`VirtioBlk::notify_address`], [`QueueServer`]: each request's I/O
//!   outside the device's lock), else the vCPU that wrote it.
//!   `VIRTIO_RING_F_EVENT_IDX` is offered: while the device works through
//!   the ring the driver is asked not to notify (without EVENT_IDX, by the
//!   used ring's NO_NOTIFY flag), what it added meanwhile is served before
//!   the device asks to hear again, and interrupts come when the driver's
//!   `used_event` (or, without EVENT_IDX, its NO_INTERRUPT flag) says.
//! - **Requests**: IN, OUT, FLUSH (`sync_data`), GET_ID; anything else is
//!   UNSUPP. Malformed chains complete with IOERR when they have somewhere
//!   to put a status, and are returned unexecuted otherwise.
//!
//! Nothing here panics on guest input, writes outside guest RAM (every
//! access goes through `vm-memory`'s checked accessors) or allocates per
//! request in proportion to what the guest asks: reads land straight in the
//! guest's buffers, writes move through one fixed 64 KiB buffer.

mod common_cfg;
mod device;
mod exec;
mod guest_io;
mod overlay;
pub mod regs;
mod request;
#[cfg(test)]
mod tests;

use std::fs::File;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vm_memory::GuestMemoryMmap;

use crate::irq::InterruptLine;
use crate::pci::ConfigSpaceError;

pub use device::{QueueServer, VirtioBlk};
pub use overlay::{Full, Overlay};
pub use regs::BAR0_SIZE;

/// What a request is about to do, as the fault policy sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BlockOp {
    Read,
    Write,
    Flush,
    GetId,
}

impl BlockOp {
    /// The name events and logs use.
    pub fn name(self) -> &'static str {
        match self {
            BlockOp::Read => "read",
            BlockOp::Write => "write",
            BlockOp::Flush => "flush",
            BlockOp::GetId => "get-id",
        }
    }
}

/// What the fault policy wants done with one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultDecision {
    Proceed,
    /// Complete with VIRTIO_BLK_S_IOERR without touching the disk.
    IoError,
    /// Sleep, then proceed. The sleep happens on the thread serving the
    /// queue: requests behind it wait, like a slow disk behind a
    /// single-queue controller. On the VMM's disk thread ([`QueueServer`])
    /// the device's registers stay free meanwhile; on a vCPU's they wait
    /// too. Capped at [`MAX_FAULT_DELAY`].
    Delay(Duration),
}

/// Longest [`FaultDecision::Delay`] honoured; longer ones are cut to this
/// (and logged), so a policy mistake cannot wedge a vCPU for good.
pub const MAX_FAULT_DELAY: Duration = Duration::from_secs(60);

/// The fault policy. Asked once per well-formed request, after validation
/// (bounds, read-only) and before the disk is touched; malformed and
/// unsupported requests are not offered to it. Called on the thread
/// serving the queue, with the request's engine locked (and the device too,
/// unless a [`QueueServer`] serves it): record or decide, never call back
/// into the device.
pub trait BlockFaults: Send + Sync {
    /// `sector` and `sectors` are in 512-byte units; both are 0 for flush
    /// and get-id.
    fn decide(&self, op: BlockOp, sector: u64, sectors: u64) -> FaultDecision;
}

/// The policy that never interferes.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoFaults;

impl BlockFaults for NoFaults {
    fn decide(&self, _: BlockOp, _: u64, _: u64) -> FaultDecision {
        FaultDecision::Proceed
    }
}

pub struct BlkParams {
    /// The disk image, opened (read-write unless `readonly`) and locked by
    /// the VMM. Its size fixes the capacity, rounded down to 512 bytes.
    pub disk: File,
    /// Offer VIRTIO_BLK_F_RO and refuse writes with IOERR.
    pub readonly: bool,
    /// Snapshot mode: writes go here, never to `disk` (which may then be
    /// opened read-only), and reads see them.
    pub overlay: Option<Arc<Mutex<Overlay>>>,
    /// Where the VMM placed BAR0: [`BAR0_SIZE`] bytes, aligned to its size,
    /// below 4 GiB. It never moves.
    pub bar0_addr: u32,
    /// Written into config 0x3C for the guest to read.
    pub irq_line: u8,
    /// INTA#, level-triggered. None: completions raise no interrupt.
    pub irq: Option<Arc<dyn InterruptLine>>,
    pub mem: Arc<GuestMemoryMmap>,
    pub faults: Arc<dyn BlockFaults>,
}

/// Errors building the device.
#[derive(Debug, thiserror::Error)]
pub enum BlkError {
    /// BAR0 cannot be placed there
    #[error("virtio-blk BAR0: {0}")]
    Bar0(#[from] ConfigSpaceError),
    /// the disk's size could not be read
    #[error("virtio-blk: cannot read the disk image's size: {0}")]
    DiskSize(#[source] std::io::Error),
}

/// Host-side counts for this device: kept across the driver's device resets;
/// a system reset builds a new device.
///
/// Each completed request counts once: under its kind when it completed
/// with OK, under `errors` when with IOERR (malformed, out of range,
/// read-only, host I/O error or injected), under `unsupported` when with
/// UNSUPP, and under `dropped` when it had no usable status byte and went
/// back to the guest unexecuted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlkCounters {
    pub reads: u64,
    pub writes: u64,
    pub flushes: u64,
    pub get_ids: u64,
    pub errors: u64,
    pub unsupported: u64,
    pub dropped: u64,
    /// Decisions other than Proceed.
    pub faults_injected: u64,
    /// Entries the device wrote to the used ring: the driver's view of
    /// completions (a chain with no slot to go back to gets none).
    pub used_entries: u64,
    /// Bytes copied from the disk to the guest, and from the guest to it.
    pub bytes_read: u64,
    pub bytes_written: u64,
}
