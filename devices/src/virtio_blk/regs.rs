//! Numbers: PCI identity, the BAR0 layout, the virtio PCI capabilities, the
//! common configuration registers, feature and status bits, request types.
//!
//! Request and feature numbers come from `virtio-bindings`; the virtio PCI
//! transport has no bindings there, so its numbers are spelled out here from
//! the virtio 1.2 specification, section 4.1.

use virtio_bindings::virtio_blk as vb;
use virtio_bindings::virtio_config as vc;

// ---- PCI identity (virtio 1.2, 4.1.2) ----
pub const VENDOR_ID: u16 = 0x1AF4;
/// 0x1040 + device type 2 (block): a modern-only, non-transitional device.
pub const DEVICE_ID: u16 = 0x1042;
/// Non-transitional devices have revision 1 or higher.
pub const REVISION: u8 = 1;
/// Mass storage, "other".
pub const CLASS: u8 = 0x01;
pub const SUBCLASS: u8 = 0x80;
/// Non-transitional devices SHOULD have a subsystem ID of 0x40 or higher.
pub const SUBSYSTEM_ID: u16 = 0x1100;

// ---- PCI header bits this device needs beyond `ConfigSpace` ----
pub const CAPABILITIES_POINTER: u16 = 0x34;
pub const STATUS_CAP_LIST: u16 = 1 << 4;
pub const CAP_ID_VENDOR: u8 = 0x09;

// ---- BAR0: one 16 KiB 32-bit memory BAR, four 4 KiB windows ----
pub const BAR0_SIZE: u32 = 0x4000;
pub const WINDOW_SIZE: u64 = 0x1000;
pub const COMMON_OFFSET: u64 = 0x0000;
pub const ISR_OFFSET: u64 = 0x1000;
pub const DEVICE_CFG_OFFSET: u64 = 0x2000;
pub const NOTIFY_OFFSET: u64 = 0x3000;
/// Queue n is notified at NOTIFY_OFFSET + queue_notify_off(n) * this.
pub const NOTIFY_OFF_MULTIPLIER: u32 = 4;

// ---- virtio PCI capabilities (virtio 1.2, 4.1.4) ----
pub const CFG_TYPE_COMMON: u8 = 1;
pub const CFG_TYPE_NOTIFY: u8 = 2;
pub const CFG_TYPE_ISR: u8 = 3;
pub const CFG_TYPE_DEVICE: u8 = 4;
/// Where each capability sits in config space. Dword-aligned, because
/// Linux's capability walk masks the low two bits of every pointer.
pub const CAP_COMMON_AT: u16 = 0x40;
pub const CAP_NOTIFY_AT: u16 = 0x50; // 20 bytes: the notify cap has a multiplier
pub const CAP_ISR_AT: u16 = 0x64;
pub const CAP_DEVICE_AT: u16 = 0x74;
pub const CAP_LEN: u8 = 16;
pub const NOTIFY_CAP_LEN: u8 = 20;

// ---- common configuration (struct virtio_pci_common_cfg) ----
pub const DEVICE_FEATURE_SELECT: u64 = 0x00;
pub const DEVICE_FEATURE: u64 = 0x04;
pub const DRIVER_FEATURE_SELECT: u64 = 0x08;
pub const DRIVER_FEATURE: u64 = 0x0C;
pub const MSIX_CONFIG: u64 = 0x10;
pub const NUM_QUEUES: u64 = 0x12;
pub const DEVICE_STATUS: u64 = 0x14;
pub const CONFIG_GENERATION: u64 = 0x15;
pub const QUEUE_SELECT: u64 = 0x16;
pub const QUEUE_SIZE: u64 = 0x18;
pub const QUEUE_MSIX_VECTOR: u64 = 0x1A;
pub const QUEUE_ENABLE: u64 = 0x1C;
pub const QUEUE_NOTIFY_OFF: u64 = 0x1E;
pub const QUEUE_DESC: u64 = 0x20;
pub const QUEUE_DRIVER: u64 = 0x28;
pub const QUEUE_DEVICE: u64 = 0x30;
/// End of the registers we implement; the rest of the window reads zero.
pub const COMMON_CFG_LEN: usize = 0x38;
/// There is no MSI-X: vector registers always read "no vector".
pub const NO_VECTOR: u16 = 0xFFFF;

// ---- ISR status bits ----
pub const ISR_QUEUE: u8 = 1 << 0;
pub const ISR_CONFIG: u8 = 1 << 1;

// ---- device status (virtio 1.2, 2.1) ----
pub const S_ACKNOWLEDGE: u8 = vc::VIRTIO_CONFIG_S_ACKNOWLEDGE as u8;
pub const S_DRIVER: u8 = vc::VIRTIO_CONFIG_S_DRIVER as u8;
pub const S_DRIVER_OK: u8 = vc::VIRTIO_CONFIG_S_DRIVER_OK as u8;
pub const S_FEATURES_OK: u8 = vc::VIRTIO_CONFIG_S_FEATURES_OK as u8;
pub const S_NEEDS_RESET: u8 = vc::VIRTIO_CONFIG_S_NEEDS_RESET as u8;
pub const S_FAILED: u8 = vc::VIRTIO_CONFIG_S_FAILED as u8;

// ---- features ----
pub const F_VERSION_1: u64 = 1 << vc::VIRTIO_F_VERSION_1;
pub const F_SIZE_MAX: u64 = 1 << vb::VIRTIO_BLK_F_SIZE_MAX;
pub const F_SEG_MAX: u64 = 1 << vb::VIRTIO_BLK_F_SEG_MAX;
pub const F_RO: u64 = 1 << vb::VIRTIO_BLK_F_RO;
pub const F_BLK_SIZE: u64 = 1 << vb::VIRTIO_BLK_F_BLK_SIZE;
pub const F_FLUSH: u64 = 1 << vb::VIRTIO_BLK_F_FLUSH;
/// The driver says in `used_event` which completion it wants an interrupt
/// for, and the device in `avail_event` which request it wants a
/// notification for: each side exits to the other only when it must.
pub const F_EVENT_IDX: u64 = 1 << virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;

// ---- the one queue ----
pub const NUM_QUEUES_VALUE: u16 = 1;
pub const QUEUE_MAX_SIZE: u16 = 256;
/// Linux needs seg_max + 2 descriptors per request (header, status) and,
/// without indirect descriptors, they must fit in the ring.
pub const SEG_MAX: u32 = QUEUE_MAX_SIZE as u32 - 2;
pub const SIZE_MAX: u32 = 1 << 20;
/// No request may move more data than the driver was told it could send.
pub const MAX_REQUEST_BYTES: u64 = SEG_MAX as u64 * SIZE_MAX as u64;

// ---- requests ----
pub const SECTOR_SIZE: u64 = 512;
pub const REQ_HEADER_LEN: u64 = 16;
pub const T_IN: u32 = vb::VIRTIO_BLK_T_IN;
pub const T_OUT: u32 = vb::VIRTIO_BLK_T_OUT;
pub const T_FLUSH: u32 = vb::VIRTIO_BLK_T_FLUSH;
pub const T_GET_ID: u32 = vb::VIRTIO_BLK_T_GET_ID;
pub const S_OK: u8 = vb::VIRTIO_BLK_S_OK as u8;
pub const S_IOERR: u8 = vb::VIRTIO_BLK_S_IOERR as u8;
pub const S_UNSUPP: u8 = vb::VIRTIO_BLK_S_UNSUPP as u8;
pub const ID_BYTES: usize = vb::VIRTIO_BLK_ID_BYTES as usize;
/// What GET_ID answers, NUL-padded to 20 bytes.
pub const SERIAL: &[u8] = b"kennel-rootfs";

// ---- device configuration (struct virtio_blk_config) ----
pub const CFG_CAPACITY: usize = 0;
pub const CFG_SIZE_MAX: usize = 8;
pub const CFG_SEG_MAX: usize = 12;
pub const CFG_BLK_SIZE: usize = 20;
pub const CFG_NUM_QUEUES: usize = 34;
/// Up to and including the write-zeroes fields; everything past reads zero.
pub const DEVICE_CFG_LEN: usize = 64;
