//! The device driven the way Linux's virtio_pci_modern and virtio_blk drive
//! it, over a real `GuestMemoryMmap` and a temporary disk file. `Rig` plays
//! the driver, including a minimal split-ring driver of its own.

mod hostile;
mod requests;
mod suppression;
mod transport;

use std::collections::VecDeque;
use std::fs::OpenOptions;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::tempfile::TempFile;

use super::regs::*;
use super::*;
use crate::pci::config_space::{COMMAND, COMMAND_BUS_MASTER, COMMAND_MEMORY};
use crate::pci::PciDevice;

pub(super) const VRING_USED_F_NO_NOTIFY: u16 = virtio_bindings::virtio_ring::VRING_USED_F_NO_NOTIFY as u16;

pub(super) const BAR: u32 = 0xE000_0000;
pub(super) const MEM_SIZE: usize = 4 << 20;
pub(super) const DESC: u64 = 0x1000;
pub(super) const AVAIL: u64 = 0x3000;
pub(super) const USED: u64 = 0x4000;
pub(super) const HDR: u64 = 0x10000;
pub(super) const STATUS_AT: u64 = 0x11000;
pub(super) const DATA: u64 = 0x100000;
pub(super) const NEXT: u16 = 1;
pub(super) const WRITE: u16 = 2;
/// What the status byte holds until the device writes it.
pub(super) const UNTOUCHED: u8 = 0xEE;
/// Features Linux 6.1's virtio_blk asks for, among those we could offer
/// (EVENT_IDX is the ring's, which virtio_ring keeps).
pub(super) const LINUX_WANTS: u64 =
    F_VERSION_1 | F_FLUSH | F_SEG_MAX | F_SIZE_MAX | F_BLK_SIZE | F_RO | F_EVENT_IDX;

pub(super) use crate::irq::testing::RecordingLine as Line;

/// Hands out scripted decisions (Proceed once the script runs out) and
/// records every question.
#[derive(Default)]
pub(super) struct Script {
    pub(super) next: Mutex<VecDeque<FaultDecision>>,
    pub(super) calls: Mutex<Vec<(BlockOp, u64, u64)>>,
    /// While set, a decision waits for `open` (see `hold`).
    gate: Mutex<Option<Arc<Gate>>>,
    /// Run at each decision: the guest acting while a request is served.
    pub(super) meanwhile: Mutex<Option<Box<dyn Fn() + Send>>>,
}
impl BlockFaults for Script {
    fn decide(&self, op: BlockOp, sector: u64, sectors: u64) -> FaultDecision {
        self.calls.lock().unwrap().push((op, sector, sectors));
        let gate = self.gate.lock().unwrap().clone();
        if let Some(g) = gate {
            g.pass();
        }
        if let Some(f) = &*self.meanwhile.lock().unwrap() {
            f();
        }
        self.next.lock().unwrap().pop_front().unwrap_or(FaultDecision::Proceed)
    }
}

/// Stops a request in the middle of its execution, where a real disk is
/// slow, until the test lets it go.
#[derive(Default)]
pub(super) struct Gate {
    state: Mutex<(bool, bool)>, // (a request is waiting, the gate is open)
    changed: Condvar,
}
impl Gate {
    fn pass(&self) {
        let mut s = self.state.lock().unwrap();
        s.0 = true;
        self.changed.notify_all();
        while !s.1 {
            s = self.changed.wait(s).unwrap();
        }
    }
    pub(super) fn wait_for_request(&self) {
        let mut s = self.state.lock().unwrap();
        while !s.0 {
            s = self.changed.wait(s).unwrap();
        }
    }
    pub(super) fn open(&self) {
        self.state.lock().unwrap().1 = true;
        self.changed.notify_all();
    }
}
impl Script {
    pub(super) fn push(&self, d: FaultDecision) {
        self.next.lock().unwrap().push_back(d);
    }
    pub(super) fn calls(&self) -> Vec<(BlockOp, u64, u64)> {
        self.calls.lock().unwrap().clone()
    }
    /// Every decision from now on waits at the returned gate.
    pub(super) fn hold(&self) -> Arc<Gate> {
        let g = Arc::new(Gate::default());
        *self.gate.lock().unwrap() = Some(g.clone());
        g
    }
}

/// Bytes that differ from sector to sector and within each.
pub(super) fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(7) ^ (i / 512) as u8 ^ seed).collect()
}

/// What one request came back with.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Done {
    pub(super) status: u8,
    pub(super) used_len: u32,
}

pub(super) struct Rig {
    pub(super) dev: Arc<Mutex<VirtioBlk>>,
    /// Set: notifications go through a `QueueServer`, as from the VMM's
    /// disk thread, instead of the notify register.
    pub(super) server: Option<QueueServer>,
    pub(super) mem: Arc<GuestMemoryMmap>,
    pub(super) line: Arc<Line>,
    pub(super) faults: Arc<Script>,
    pub(super) disk: TempFile,
    pub(super) avail_idx: u16,
    pub(super) used_seen: u16,
    pub(super) qsize: u16,
    /// Features `linux_init` asks for.
    pub(super) wants: u64,
    /// EVENT_IDX was negotiated.
    pub(super) event_idx: bool,
    /// With EVENT_IDX, `take_used` moves `used_event` on, as Linux's
    /// virtblk_done does when it re-enables its callback.
    pub(super) move_used_event: bool,
    readonly: bool,
    overlay: Option<Arc<Mutex<Overlay>>>,
}

impl Rig {
    /// A device on a disk holding `content`, PCI-enabled but not yet
    /// touched by the virtio driver.
    pub(super) fn bare(content: &[u8], readonly: bool) -> Self {
        Self::custom(content, content.len() as u64, MEM_SIZE, readonly)
    }

    /// `content` at the start of a (sparse) disk of `disk_len` bytes, and
    /// `mem_size` bytes of guest memory.
    pub(super) fn custom(content: &[u8], disk_len: u64, mem_size: usize, readonly: bool) -> Self {
        Self::build(content, disk_len, mem_size, readonly, None)
    }

    /// A snapshot disk holding `content`: the file opened read-only, the
    /// guest's writes kept in an overlay of at most `max_bytes`; the driver
    /// has brought the device up.
    pub(super) fn snapshot(content: &[u8], max_bytes: u64) -> Self {
        let overlay = Arc::new(Mutex::new(Overlay::new(max_bytes)));
        let mut rig = Self::build(content, content.len() as u64, MEM_SIZE, false, Some(overlay));
        rig.linux_init();
        rig
    }

    fn build(
        content: &[u8],
        disk_len: u64,
        mem_size: usize,
        readonly: bool,
        overlay: Option<Arc<Mutex<Overlay>>>,
    ) -> Self {
        let disk = TempFile::new().unwrap();
        std::fs::write(disk.as_path(), content).unwrap();
        disk.as_file().set_len(disk_len.max(content.len() as u64)).unwrap();
        let mem = Arc::new(GuestMemoryMmap::from_ranges(&[(GuestAddress(0), mem_size)]).unwrap());
        let line = Arc::new(Line::default());
        let faults = Arc::new(Script::default());
        let dev = Self::device(&disk, readonly, &overlay, &mem, &line, &faults);
        let mut rig = Self {
            dev,
            server: None,
            mem,
            line,
            faults,
            disk,
            avail_idx: 0,
            used_seen: 0,
            qsize: 0,
            wants: LINUX_WANTS,
            event_idx: false,
            move_used_event: true,
            readonly,
            overlay,
        };
        // pci_enable_device + pci_set_master
        rig.cfg_w(COMMAND, 2, u32::from(COMMAND_MEMORY | COMMAND_BUS_MASTER));
        rig
    }

    /// The device as the VMM builds it; a snapshot's file is read-only.
    fn device(
        disk: &TempFile,
        readonly: bool,
        overlay: &Option<Arc<Mutex<Overlay>>>,
        mem: &Arc<GuestMemoryMmap>,
        line: &Arc<Line>,
        faults: &Arc<Script>,
    ) -> Arc<Mutex<VirtioBlk>> {
        let writable = !readonly && overlay.is_none();
        let file = OpenOptions::new().read(true).write(writable).open(disk.as_path()).unwrap();
        VirtioBlk::new(BlkParams {
            disk: file,
            readonly,
            overlay: overlay.clone(),
            bar0_addr: BAR,
            irq_line: 11,
            irq: Some(line.clone()),
            mem: mem.clone(),
            faults: faults.clone(),
        })
        .map(|d| Arc::new(Mutex::new(d)))
        .unwrap()
    }

    /// A system reset as the VMM does it: a new device on the same disk (and
    /// overlay) and guest memory, behind a new interrupt line, not yet
    /// PCI-enabled.
    pub(super) fn system_reset(&mut self) {
        self.line = Arc::new(Line::default());
        self.dev =
            Self::device(&self.disk, self.readonly, &self.overlay, &self.mem, &self.line, &self.faults);
        (self.avail_idx, self.used_seen, self.qsize) = (0, 0, 0);
        if self.server.is_some() {
            self.server = Some(QueueServer::new(self.dev.clone()));
        }
    }

    pub(super) fn dev(&self) -> MutexGuard<'_, VirtioBlk> {
        self.dev.lock().unwrap()
    }

    /// From now on, notify as the VMM's disk thread would.
    pub(super) fn serve_from_a_thread(mut self) -> Self {
        self.server = Some(QueueServer::new(self.dev.clone()));
        self
    }

    /// A device the driver has brought up, on a 1 MiB patterned disk.
    pub(super) fn new() -> Self {
        Self::with_disk(&pattern(1 << 20, 0), false)
    }

    pub(super) fn with_disk(content: &[u8], readonly: bool) -> Self {
        let mut rig = Self::bare(content, readonly);
        rig.linux_init();
        rig
    }

    pub(super) fn disk_bytes(&self) -> Vec<u8> {
        std::fs::read(self.disk.as_path()).unwrap()
    }

    // ---- register access ----

    pub(super) fn cfg_r(&mut self, off: u16, len: usize) -> u32 {
        let mut b = [0u8; 4];
        self.dev().config_read(off, &mut b[..len]);
        u32::from_le_bytes(b)
    }

    pub(super) fn cfg_w(&mut self, off: u16, len: usize, v: u32) {
        self.dev().config_write(off, &v.to_le_bytes()[..len]);
    }

    pub(super) fn bar_r(&mut self, off: u64, len: usize) -> u64 {
        let mut b = [0u8; 8];
        self.dev().bar_read(0, off, &mut b[..len]);
        u64::from_le_bytes(b)
    }

    pub(super) fn bar_w(&mut self, off: u64, len: usize, v: u64) {
        self.dev().bar_write(0, off, &v.to_le_bytes()[..len]);
    }

    pub(super) fn status(&mut self) -> u8 {
        self.bar_r(COMMON_OFFSET + DEVICE_STATUS, 1) as u8
    }

    /// vp_set_status: the driver writes the whole byte.
    pub(super) fn set_status(&mut self, s: u8) {
        self.bar_w(COMMON_OFFSET + DEVICE_STATUS, 1, u64::from(s));
    }

    pub(super) fn add_status(&mut self, s: u8) {
        let old = self.status();
        self.set_status(old | s);
    }

    pub(super) fn isr(&mut self) -> u8 {
        self.bar_r(ISR_OFFSET, 1) as u8
    }

    pub(super) fn device_features(&mut self) -> u64 {
        self.bar_w(COMMON_OFFSET + DEVICE_FEATURE_SELECT, 4, 0);
        let lo = self.bar_r(COMMON_OFFSET + DEVICE_FEATURE, 4);
        self.bar_w(COMMON_OFFSET + DEVICE_FEATURE_SELECT, 4, 1);
        let hi = self.bar_r(COMMON_OFFSET + DEVICE_FEATURE, 4);
        hi << 32 | lo
    }

    pub(super) fn write_driver_features(&mut self, f: u64) {
        self.bar_w(COMMON_OFFSET + DRIVER_FEATURE_SELECT, 4, 0);
        self.bar_w(COMMON_OFFSET + DRIVER_FEATURE, 4, f & 0xFFFF_FFFF);
        self.bar_w(COMMON_OFFSET + DRIVER_FEATURE_SELECT, 4, 1);
        self.bar_w(COMMON_OFFSET + DRIVER_FEATURE, 4, f >> 32);
    }

    /// vp_iowrite64_twopart: low half, then high half.
    pub(super) fn write64(&mut self, reg: u64, v: u64) {
        self.bar_w(COMMON_OFFSET + reg, 4, v & 0xFFFF_FFFF);
        self.bar_w(COMMON_OFFSET + reg + 4, 4, v >> 32);
    }

    /// Reset, ACKNOWLEDGE, DRIVER, features; true if FEATURES_OK stuck.
    pub(super) fn negotiate(&mut self, features: u64) -> bool {
        self.set_status(0);
        assert_eq!(self.status(), 0, "reset completes at once");
        self.add_status(S_ACKNOWLEDGE);
        self.add_status(S_DRIVER);
        self.write_driver_features(features);
        self.add_status(S_FEATURES_OK);
        self.event_idx = features & F_EVENT_IDX != 0;
        self.status() & S_FEATURES_OK != 0
    }

    /// Queue 0 the way vp_modern's setup_vq and find_vqs set it up.
    pub(super) fn setup_queue(&mut self, desc: u64, avail: u64, used: u64) {
        self.bar_w(COMMON_OFFSET + QUEUE_SELECT, 2, 0);
        let num = self.bar_r(COMMON_OFFSET + QUEUE_SIZE, 2) as u16;
        assert!(num > 0 && self.bar_r(COMMON_OFFSET + QUEUE_ENABLE, 2) == 0);
        self.bar_w(COMMON_OFFSET + QUEUE_SIZE, 2, u64::from(num));
        self.write64(QUEUE_DESC, desc);
        self.write64(QUEUE_DRIVER, avail);
        self.write64(QUEUE_DEVICE, used);
        assert_eq!(self.bar_r(COMMON_OFFSET + QUEUE_NOTIFY_OFF, 2), 0);
        self.bar_w(COMMON_OFFSET + QUEUE_ENABLE, 2, 1);
        self.qsize = num;
        self.avail_idx = 0;
        self.used_seen = 0;
        // A fresh ring: zeroed flags and indices.
        self.mem.write_slice(&[0u8; 4], GuestAddress(avail)).unwrap();
        self.mem.write_slice(&[0u8; 4], GuestAddress(used)).unwrap();
    }

    /// Reset, the offered features among `wants`, queue 0 at DESC, AVAIL
    /// and USED with `size` entries, DRIVER_OK; the rings' memory is left as
    /// it is.
    pub(super) fn bring_up_with_ring(&mut self, size: u16, wants: u64) {
        let offered = self.device_features();
        assert!(self.negotiate(offered & wants), "features refused");
        self.bar_w(COMMON_OFFSET + QUEUE_SIZE, 2, u64::from(size));
        self.write64(QUEUE_DESC, DESC);
        self.write64(QUEUE_DRIVER, AVAIL);
        self.write64(QUEUE_DEVICE, USED);
        self.bar_w(COMMON_OFFSET + QUEUE_ENABLE, 2, 1);
        self.add_status(S_DRIVER_OK);
        (self.qsize, self.avail_idx, self.used_seen) = (size, 0, 0);
    }

    /// The whole bring-up virtio_pci + virtio_blk do at probe.
    pub(super) fn linux_init(&mut self) {
        let offered = self.device_features();
        assert!(self.negotiate(offered & self.wants), "features refused");
        self.setup_queue(DESC, AVAIL, USED);
        self.add_status(S_DRIVER_OK);
        assert_eq!(self.status(), S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK);
    }

    // ---- the split ring ----

    pub(super) fn put_desc(&self, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let mut d = [0u8; 16];
        d[..8].copy_from_slice(&addr.to_le_bytes());
        d[8..12].copy_from_slice(&len.to_le_bytes());
        d[12..14].copy_from_slice(&flags.to_le_bytes());
        d[14..].copy_from_slice(&next.to_le_bytes());
        self.mem.write_slice(&d, GuestAddress(DESC + 16 * u64::from(i))).unwrap();
    }

    /// Makes the chain at `head` available (without notifying).
    pub(super) fn push(&mut self, head: u16) {
        let slot = AVAIL + 4 + 2 * u64::from(self.avail_idx % self.qsize);
        self.mem.write_obj(head, GuestAddress(slot)).unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.mem.write_obj(self.avail_idx, GuestAddress(AVAIL + 2)).unwrap();
    }

    pub(super) fn kick(&mut self) {
        match &self.server {
            Some(s) => while s.notified() {},
            None => self.bar_w(NOTIFY_OFFSET, 2, 0),
        }
    }

    pub(super) fn used_idx(&self) -> u16 {
        self.mem.read_obj(GuestAddress(USED + 2)).unwrap()
    }

    /// Used entries (id, len) added since the last call.
    pub(super) fn take_used(&mut self) -> Vec<(u32, u32)> {
        let mut out = Vec::new();
        while self.used_seen != self.used_idx() {
            let at = USED + 4 + 8 * u64::from(self.used_seen % self.qsize);
            let id: u32 = self.mem.read_obj(GuestAddress(at)).unwrap();
            let len: u32 = self.mem.read_obj(GuestAddress(at + 4)).unwrap();
            out.push((id, len));
            self.used_seen = self.used_seen.wrapping_add(1);
        }
        if self.event_idx && self.move_used_event {
            self.set_used_event(self.used_seen);
        }
        out
    }

    /// The driver's `used_event`: interrupt me once you have used this entry.
    pub(super) fn set_used_event(&self, idx: u16) {
        self.mem.write_obj(idx, GuestAddress(AVAIL + 4 + 2 * u64::from(self.qsize))).unwrap();
    }

    /// The device's `avail_event`: notify me once you have made this one
    /// available.
    pub(super) fn avail_event(&self) -> u16 {
        self.mem.read_obj(GuestAddress(USED + 4 + 8 * u64::from(self.qsize))).unwrap()
    }

    pub(super) fn used_flags(&self) -> u16 {
        self.mem.read_obj(GuestAddress(USED)).unwrap()
    }

    /// Whether Linux's virtqueue_kick_prepare would notify after making
    /// `new - old` requests available, `old` being the index before them.
    pub(super) fn kick_wanted(&self, old: u16, new: u16) -> bool {
        if self.event_idx {
            // vring_need_event
            new.wrapping_sub(self.avail_event()).wrapping_sub(1) < new.wrapping_sub(old)
        } else {
            self.used_flags() & VRING_USED_F_NO_NOTIFY == 0
        }
    }

    pub(super) fn status_byte(&self) -> u8 {
        self.mem.read_obj(GuestAddress(STATUS_AT)).unwrap()
    }

    /// Header, optional data buffer, status: the chain virtio_blk builds,
    /// in descriptors 0..3, submitted alone and completed synchronously.
    pub(super) fn submit(&mut self, kind: u32, sector: u64, data: Option<(u32, bool)>) -> Done {
        let mut hdr = [0u8; 16];
        hdr[..4].copy_from_slice(&kind.to_le_bytes());
        hdr[8..].copy_from_slice(&sector.to_le_bytes());
        self.mem.write_slice(&hdr, GuestAddress(HDR)).unwrap();
        self.mem.write_obj(UNTOUCHED, GuestAddress(STATUS_AT)).unwrap();
        match data {
            Some((len, writable)) => {
                self.put_desc(0, HDR, 16, NEXT, 1);
                self.put_desc(1, DATA, len, NEXT | if writable { WRITE } else { 0 }, 2);
            }
            None => self.put_desc(0, HDR, 16, NEXT, 2),
        }
        self.put_desc(2, STATUS_AT, 1, WRITE, 0);
        self.push(0);
        self.kick();
        let used = self.take_used();
        assert_eq!(used.len(), 1, "one request, one used entry");
        assert_eq!(used[0].0, 0);
        Done { status: self.status_byte(), used_len: used[0].1 }
    }

    pub(super) fn read(&mut self, sector: u64, len: u32) -> (Done, Vec<u8>) {
        self.mem.write_slice(&vec![0xAA; len as usize], GuestAddress(DATA)).unwrap();
        let done = self.submit(T_IN, sector, Some((len, true)));
        let mut buf = vec![0u8; len as usize];
        self.mem.read_slice(&mut buf, GuestAddress(DATA)).unwrap();
        (done, buf)
    }

    pub(super) fn write(&mut self, sector: u64, bytes: &[u8]) -> Done {
        self.mem.write_slice(bytes, GuestAddress(DATA)).unwrap();
        self.submit(T_OUT, sector, Some((bytes.len() as u32, false)))
    }
}
