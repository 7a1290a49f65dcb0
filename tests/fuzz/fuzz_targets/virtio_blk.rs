//! virtio-blk over 64 KiB of guest memory filled from the input, with a
//! 16-sector temp-file disk. The driver init is done properly (reset,
//! ACKNOWLEDGE, DRIVER, features, queue 0 from the input's addresses and
//! size, DRIVER_OK); then the input's operations run: notifications
//! (through the register, and as the VMM's disk thread serves them),
//! guest-memory rewrites (descriptor tables, rings, headers), arbitrary BAR
//! and config accesses, system resets with a fresh init.
//!
//! Invariants:
//! - the disk file's size never changes, and a read-only disk's content
//!   never changes;
//! - per notification, by the device's own count of the used entries it
//!   wrote (never the guest-writable used idx, which the guest may poke):
//!   at most one ring's worth, no more than the requests it counted, and
//!   none without a notification; each entry it wrote (found through the
//!   idx it just wrote, while the ring is where the harness put it and no
//!   writable buffer lies over the used ring or the descriptor table: the
//!   device writes where the driver says, so such a driver gets garbage
//!   there, as from any device) names a descriptor inside the ring and says
//!   no more than the data a request can move plus its status byte;
//! - nothing hangs (looping chains end: libFuzzer's -timeout catches it).
#![no_main]

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::tempfile::TempFile;

use kennel_devices::pci::PciDevice;
use kennel_devices::virtio_blk::regs::*;
use kennel_devices::virtio_blk::{
    BlkCounters, BlkParams, BlockFaults, BlockOp, FaultDecision, Overlay, QueueServer, VirtioBlk,
};

const MEM: usize = 64 << 10;
const DISK: u64 = 16 * 512;
const BAR: u32 = 0xE000_0000;

/// Injects an error or a zero delay for some requests (never a real sleep).
struct Faults(u8);
impl BlockFaults for Faults {
    fn decide(&self, op: BlockOp, sector: u64, _: u64) -> FaultDecision {
        match (self.0 >> (op as u8 * 2)) & 3 {
            1 if sector % 2 == 0 => FaultDecision::IoError,
            2 => FaultDecision::Delay(std::time::Duration::ZERO),
            _ => FaultDecision::Proceed,
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Op {
    Notify,
    /// A notification of an absent queue, or of the wrong width.
    BadNotify {
        value: u32,
        width: u8,
    },
    Poke {
        addr: u16,
        bytes: Vec<u8>,
    },
    /// Make the chain at `head` available and bump the avail index.
    Push {
        head: u16,
    },
    SetAvailIdx(u16),
    BarWrite {
        offset: u16,
        width: u8,
        value: u64,
    },
    BarRead {
        offset: u16,
        width: u8,
    },
    CfgWrite {
        offset: u8,
        width: u8,
        value: u32,
    },
    SystemReset,
    /// A notification through the VMM's ioeventfd: the queue served as the
    /// disk thread serves it, each request outside the device's lock.
    NotifyFromThread,
}

#[derive(Arbitrary, Debug)]
struct Input {
    /// 0: read-write; 1: read-only; 2: a snapshot (overlay of 8 sectors).
    mode: u8,
    faults: u8,
    /// log2 of the queue size (0..=8 valid; larger is refused by the device).
    size_log2: u8,
    desc: u16,
    avail: u16,
    used: u16,
    features: u64,
    memory: Vec<u8>,
    ops: Vec<Op>,
}

impl Op {
    /// The operations that reach the notify register or the queue server
    /// (a fuzzed BAR write may hit the register too).
    fn may_serve(&self) -> bool {
        matches!(self, Op::Notify | Op::BadNotify { .. } | Op::BarWrite { .. } | Op::NotifyFromThread)
    }
}

fn width(w: u8) -> usize {
    [1, 2, 4, 8, 1, 2, 4, 8, 3, 0][usize::from(w % 10)]
}

struct Rig {
    dev: Arc<Mutex<VirtioBlk>>,
    mem: Arc<GuestMemoryMmap>,
    qsize: u16,
    desc: u64,
    avail: u64,
    used: u64,
    avail_idx: u16,
}

impl Rig {
    fn d(&self) -> std::sync::MutexGuard<'_, VirtioBlk> {
        self.dev.lock().unwrap()
    }

    fn bar_w(&mut self, off: u64, len: usize, v: u64) {
        self.d().bar_write(0, off, &v.to_le_bytes()[..len]);
    }

    fn bar_r(&mut self, off: u64, len: usize) -> u64 {
        let mut b = [0u8; 8];
        self.d().bar_read(0, off, &mut b[..len]);
        u64::from_le_bytes(b)
    }

    /// Whether a descriptor in the table lets the device write over the
    /// used ring or the table itself.
    fn buffers_over_rings(&self) -> bool {
        let n = u64::from(self.qsize);
        let areas = [(self.used, 6 + 8 * n), (self.desc, 16 * n)];
        (0..n).any(|i| {
            let Ok(d) = self.mem.read_obj::<[u8; 16]>(GuestAddress(self.desc + 16 * i)) else {
                return false;
            };
            let addr = u64::from_le_bytes(d[..8].try_into().unwrap());
            let len = u64::from(u32::from_le_bytes(d[8..12].try_into().unwrap()));
            let writable = u16::from_le_bytes([d[12], d[13]]) & 2 != 0;
            writable && areas.iter().any(|&(a, l)| addr < a + l && a < addr.saturating_add(len))
        })
    }

    fn add_status(&mut self, s: u8) {
        let old = self.bar_r(DEVICE_STATUS, 1);
        self.bar_w(DEVICE_STATUS, 1, old | u64::from(s));
    }

    /// What Linux does at probe, with the input's queue parameters.
    fn init(&mut self, inp: &Input) {
        // pci_enable_device + pci_set_master
        self.d().config_write(0x04, &[0x06, 0x00]);
        self.bar_w(DEVICE_STATUS, 1, 0);
        self.add_status(S_ACKNOWLEDGE);
        self.add_status(S_DRIVER);
        self.bar_w(DEVICE_FEATURE_SELECT, 4, 0);
        let lo = self.bar_r(DEVICE_FEATURE, 4);
        self.bar_w(DEVICE_FEATURE_SELECT, 4, 1);
        let hi = self.bar_r(DEVICE_FEATURE, 4);
        let f = (hi << 32 | lo) & (inp.features | F_VERSION_1);
        self.bar_w(DRIVER_FEATURE_SELECT, 4, 0);
        self.bar_w(DRIVER_FEATURE, 4, f & 0xFFFF_FFFF);
        self.bar_w(DRIVER_FEATURE_SELECT, 4, 1);
        self.bar_w(DRIVER_FEATURE, 4, f >> 32);
        self.add_status(S_FEATURES_OK);
        self.bar_w(QUEUE_SELECT, 2, 0);
        let size = 1u64 << (inp.size_log2 % 10).min(15);
        self.bar_w(QUEUE_SIZE, 2, size);
        self.bar_w(QUEUE_DESC, 8, u64::from(inp.desc));
        self.bar_w(QUEUE_DRIVER, 4, u64::from(inp.avail));
        self.bar_w(QUEUE_DRIVER + 4, 4, 0);
        self.bar_w(QUEUE_DEVICE, 8, u64::from(inp.used));
        self.bar_w(QUEUE_ENABLE, 2, 1);
        self.add_status(S_DRIVER_OK);
        self.qsize = size as u16;
        self.desc = u64::from(inp.desc);
        self.avail = u64::from(inp.avail);
        self.used = u64::from(inp.used);
        self.avail_idx = self.mem.read_obj(GuestAddress(self.avail + 2)).unwrap_or(0);
    }
}

fn total(c: &BlkCounters) -> u64 {
    c.reads + c.writes + c.flushes + c.get_ids + c.errors + c.unsupported + c.dropped
}

/// What every input starts from, made once: creating a temp file, writing
/// the disk and mapping guest memory per input cost more than the device
/// work (~750 executions a second). Each input restores both instead.
struct Fixture {
    disk: TempFile,
    rw: std::fs::File,
    ro: std::fs::File,
    content: Vec<u8>,
    mem: Arc<GuestMemoryMmap>,
}

fn fixture() -> &'static Fixture {
    static F: std::sync::OnceLock<Fixture> = std::sync::OnceLock::new();
    F.get_or_init(|| {
        let disk = TempFile::new().unwrap();
        let content: Vec<u8> = (0..DISK).map(|i| (i * 7 + i / 512) as u8).collect();
        std::fs::write(disk.as_path(), &content).unwrap();
        let rw = OpenOptions::new().read(true).write(true).open(disk.as_path()).unwrap();
        let ro = OpenOptions::new().read(true).open(disk.as_path()).unwrap();
        let mem = Arc::new(GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM)]).unwrap());
        Fixture { disk, rw, ro, content, mem }
    })
}

fuzz_target!(|inp: Input| {
    let fx = fixture();
    fx.rw.write_all_at(&fx.content, 0).unwrap();
    fx.rw.set_len(DISK).unwrap();
    let disk = &fx.disk;
    let content = &fx.content;
    let mem = fx.mem.clone();
    let n = inp.memory.len().min(MEM);
    mem.write_slice(&inp.memory[..n], GuestAddress(0)).unwrap();
    mem.write_slice(&[0u8; MEM][n..], GuestAddress(n as u64)).unwrap();
    let (readonly, snapshot) = (inp.mode % 3 == 1, inp.mode % 3 == 2);
    // Half the disk: enough for a write to find the overlay full.
    let overlay = snapshot.then(|| Arc::new(Mutex::new(Overlay::new(DISK / 2))));
    // A system reset is what the VMM does: a new device on the same disk
    // (and the same overlay).
    let new_dev = || {
        let file = if readonly || snapshot { &fx.ro } else { &fx.rw }.try_clone().unwrap();
        VirtioBlk::new(BlkParams {
            disk: file,
            readonly,
            overlay: overlay.clone(),
            bar0_addr: BAR,
            irq_line: 11,
            irq: None,
            mem: mem.clone(),
            faults: Arc::new(Faults(inp.faults)),
        })
        .map(|d| Arc::new(Mutex::new(d)))
        .unwrap()
    };
    let dev = new_dev();
    let mut rig = Rig { dev, mem: mem.clone(), qsize: 1, desc: 0, avail: 0, used: 0, avail_idx: 0 };
    rig.init(&inp);
    // The ring where `init` put it, at the size it chose: until a fuzzed BAR
    // write may have changed either.
    let mut transport_as_set_up = true;

    for op in inp.ops.iter().take(64) {
        let before = rig.d().counters();
        let notified = op.may_serve();
        // Read before the op: its writes could hide the buffer that made them.
        let clobbered = notified && transport_as_set_up && rig.buffers_over_rings();
        match op {
            Op::Notify => {
                rig.bar_w(NOTIFY_OFFSET, 2, 0);
            }
            Op::BadNotify { value, width: w } => {
                rig.bar_w(NOTIFY_OFFSET + u64::from(*value >> 16) % 8, width(*w), u64::from(*value));
            }
            Op::Poke { addr, bytes } => {
                let a = u64::from(*addr);
                let n = bytes.len().min(MEM - a as usize);
                rig.mem.write_slice(&bytes[..n], GuestAddress(a)).unwrap();
            }
            Op::Push { head } => {
                let slot = rig.avail + 4 + 2 * u64::from(rig.avail_idx % rig.qsize.max(1));
                let _ = rig.mem.write_obj(*head, GuestAddress(slot));
                rig.avail_idx = rig.avail_idx.wrapping_add(1);
                let _ = rig.mem.write_obj(rig.avail_idx, GuestAddress(rig.avail + 2));
            }
            Op::SetAvailIdx(i) => {
                rig.avail_idx = *i;
                let _ = rig.mem.write_obj(*i, GuestAddress(rig.avail + 2));
            }
            Op::BarWrite { offset, width: w, value } => {
                rig.bar_w(u64::from(*offset) % 0x4100, width(*w), *value);
                transport_as_set_up = false;
            }
            Op::BarRead { offset, width: w } => {
                rig.bar_r(u64::from(*offset) % 0x4100, width(*w));
            }
            Op::CfgWrite { offset, width: w, value } => {
                let b = u64::from(*value).to_le_bytes();
                rig.d().config_write(u16::from(*offset), &b[..width(*w).min(4)]);
            }
            Op::NotifyFromThread => {
                QueueServer::new(rig.dev.clone()).notified();
            }
            Op::SystemReset => {
                rig.dev = new_dev();
                rig.init(&inp);
                transport_as_set_up = true;
                // A new device counts from zero: nothing to compare with.
                continue;
            }
        }
        let after = rig.d().counters();
        // What the device promises, from its own count of the used entries
        // it wrote, never from guest memory: the guest may poke the used
        // ring's idx (or anything else) between notifications.
        let added = after.used_entries - before.used_entries;
        let requests = total(&after) - total(&before);
        if notified {
            let cap = u64::from(QUEUE_MAX_SIZE);
            assert!(added <= cap, "{added} used entries from one notification (at most a ring of {cap})");
            assert!(requests >= added, "{added} used entries for {requests} requests");
            // The entries it just wrote, where the idx it just wrote says,
            // as long as the ring is the one the harness set up (a fuzzed
            // BAR write may have moved or resized it).
            if added > 0 && transport_as_set_up && !clobbered {
                let used_after: u16 = rig.mem.read_obj(GuestAddress(rig.used + 2)).unwrap();
                for k in 0..added as u16 {
                    let slot = used_after.wrapping_sub(added as u16).wrapping_add(k) % rig.qsize;
                    let at = rig.used + 4 + 8 * u64::from(slot);
                    let id: u32 = rig.mem.read_obj(GuestAddress(at)).unwrap();
                    let len: u32 = rig.mem.read_obj(GuestAddress(at + 4)).unwrap();
                    assert!(id < u32::from(rig.qsize), "used id {id} outside a ring of {}", rig.qsize);
                    assert!(u64::from(len) <= DISK + 1, "used length {len} for a {DISK}-byte disk");
                }
            }
        } else {
            assert_eq!(requests, 0, "requests ran without a notification");
            assert_eq!(added, 0, "used entries without a notification");
        }
        let meta = std::fs::metadata(disk.as_path()).unwrap();
        assert_eq!(meta.len(), DISK, "the disk changed size");
    }
    if readonly || snapshot {
        assert!(
            &std::fs::read(disk.as_path()).unwrap() == content,
            "a read-only or snapshot image was written"
        );
    }
});
