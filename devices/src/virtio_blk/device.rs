//! The PCI function: config space with the virtio capabilities, BAR0
//! dispatch, the queue's life cycle, and INTx.

use std::sync::atomic::{fence, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use virtio_bindings::virtio_ring::VRING_AVAIL_F_NO_INTERRUPT;
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemory, GuestMemoryMmap, Permissions};

use super::common_cfg::{CommonCfg, Effect, QueueRegs};
use super::exec::Engine;
use super::regs::*;
use super::request::Chain;
use super::{BlkCounters, BlkError, BlkParams};
use crate::log_limit::LogLimit;
use crate::pci::config_space::{
    BarKind, ConfigSpace, PciIdentity, COMMAND_BUS_MASTER, INTERRUPT_LINE, PIN_INTA, STATUS,
};
use crate::pci::IntxPin;
use crate::pci::{PciDevice, PlacedBar};
use crate::warn_limited;

/// Passes a vCPU makes over the ring for one notification, a ring's worth
/// each, when the driver keeps adding requests meanwhile (from another
/// vCPU): bounded, so that a guest cannot keep a vCPU thread, and with it
/// a reset, waiting in here.
pub(super) const VCPU_PASSES: usize = 2;

#[derive(Default)]
struct Logs {
    bad_access: LogLimit,
    queue: LogLimit,
}

pub struct VirtioBlk {
    config: ConfigSpace,
    // what a system reset goes back to
    common: CommonCfg,
    device_cfg: [u8; DEVICE_CFG_LEN],
    isr: u8,
    intx: IntxPin,
    mem: Arc<GuestMemoryMmap>,
    /// Present while queue 0 is enabled with registers that passed checks.
    queue: Option<Queue>,
    /// Bumped whenever `queue` goes away: a request served outside the
    /// lock (`QueueServer`) completes only into the queue it came from.
    queue_gen: u64,
    /// Its own lock, so that a request's I/O never holds the device's:
    /// a vCPU reading the ISR meanwhile is not kept waiting.
    engine: Arc<Mutex<Engine>>,
    used_entries: u64,
    bar0_addr: u32,
    logs: Logs,
}

impl std::fmt::Debug for VirtioBlk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtioBlk")
            .field("status", &self.common.status())
            .field("isr", &self.isr)
            .field("used_entries", &self.used_entries)
            .finish()
    }
}

/// One virtio PCI capability: cap_vndr, cap_next, cap_len, cfg_type, bar,
/// id, padding[2], offset, length (and the notify multiplier).
fn capability(next: u16, cfg_type: u8, offset: u64, multiplier: Option<u32>) -> Vec<u8> {
    let len = if multiplier.is_some() { NOTIFY_CAP_LEN } else { CAP_LEN };
    let mut c = vec![CAP_ID_VENDOR, next as u8, len, cfg_type, 0, 0, 0, 0];
    c.extend_from_slice(&(offset as u32).to_le_bytes());
    c.extend_from_slice(&(WINDOW_SIZE as u32).to_le_bytes());
    if let Some(m) = multiplier {
        c.extend_from_slice(&m.to_le_bytes());
    }
    c
}

fn build_config(bar0_addr: u32, irq_line: u8) -> Result<ConfigSpace, BlkError> {
    let mut config = ConfigSpace::new(PciIdentity {
        vendor_id: VENDOR_ID,
        device_id: DEVICE_ID,
        class: CLASS,
        subclass: SUBCLASS,
        revision: REVISION,
        subsystem_vendor_id: VENDOR_ID,
        subsystem_id: SUBSYSTEM_ID,
        interrupt_pin: PIN_INTA,
        ..Default::default()
    });
    config.add_bar(0, bar0_addr, BAR0_SIZE, BarKind::Memory32)?;
    config.set_u8(INTERRUPT_LINE, irq_line);
    config.set_u16(STATUS, STATUS_CAP_LIST);
    config.set_u8(CAPABILITIES_POINTER, CAP_COMMON_AT as u8);
    config.set_bytes(CAP_COMMON_AT, &capability(CAP_NOTIFY_AT, CFG_TYPE_COMMON, COMMON_OFFSET, None));
    let notify = capability(CAP_ISR_AT, CFG_TYPE_NOTIFY, NOTIFY_OFFSET, Some(NOTIFY_OFF_MULTIPLIER));
    config.set_bytes(CAP_NOTIFY_AT, &notify);
    config.set_bytes(CAP_ISR_AT, &capability(CAP_DEVICE_AT, CFG_TYPE_ISR, ISR_OFFSET, None));
    config.set_bytes(CAP_DEVICE_AT, &capability(0, CFG_TYPE_DEVICE, DEVICE_CFG_OFFSET, None));
    Ok(config)
}

fn device_config(capacity: u64) -> [u8; DEVICE_CFG_LEN] {
    let mut c = [0u8; DEVICE_CFG_LEN];
    let mut put = |at: usize, b: &[u8]| c[at..at + b.len()].copy_from_slice(b);
    put(CFG_CAPACITY, &capacity.to_le_bytes());
    put(CFG_SIZE_MAX, &SIZE_MAX.to_le_bytes());
    put(CFG_SEG_MAX, &SEG_MAX.to_le_bytes());
    put(CFG_BLK_SIZE, &(SECTOR_SIZE as u32).to_le_bytes());
    put(CFG_NUM_QUEUES, &NUM_QUEUES_VALUE.to_le_bytes());
    c
}

/// Builds the queue the driver described, or says why not. The rings'
/// extents are checked against guest memory once here; guest memory never
/// changes at run time, so they stay valid.
fn build_queue(mem: &GuestMemoryMmap, r: QueueRegs, event_idx: bool) -> Result<Queue, String> {
    let mut q = Queue::new(QUEUE_MAX_SIZE).map_err(|e| e.to_string())?;
    q.set_event_idx(event_idx);
    q.try_set_size(r.size).map_err(|_| format!("size {} is not a power of two up to 256", r.size))?;
    let misaligned = |what: &str, a: u64| format!("{what} at {a:#x} is misaligned");
    q.try_set_desc_table_address(GuestAddress(r.desc)).map_err(|_| misaligned("descriptor table", r.desc))?;
    q.try_set_avail_ring_address(GuestAddress(r.driver)).map_err(|_| misaligned("driver area", r.driver))?;
    q.try_set_used_ring_address(GuestAddress(r.device)).map_err(|_| misaligned("device area", r.device))?;
    let n = usize::from(r.size);
    // The driver and device areas' last fields are used_event and
    // avail_event, used with EVENT_IDX.
    let areas = [
        ("descriptor table", r.desc, 16 * n, Permissions::Read),
        ("driver area", r.driver, 6 + 2 * n, Permissions::Read),
        ("device area", r.device, 6 + 8 * n, Permissions::Write),
    ];
    for (what, addr, len, access) in areas {
        // `virtio-queue` takes a zero address for "never set up".
        if addr == 0 || !mem.check_range(GuestAddress(addr), len, access) {
            return Err(format!("{what} {addr:#x}+{len:#x} is unset or outside guest memory"));
        }
    }
    q.set_ready(true);
    Ok(q)
}

impl VirtioBlk {
    pub fn new(p: BlkParams) -> Result<Self, BlkError> {
        let size = p.disk.metadata().map_err(BlkError::DiskSize)?.len();
        if size % SECTOR_SIZE != 0 {
            log::warn!(
                "virtio-blk: disk size {size} is not a multiple of 512; the last {} bytes are not visible",
                size % SECTOR_SIZE
            );
        }
        let capacity = size / SECTOR_SIZE;
        let config = build_config(p.bar0_addr, p.irq_line)?;
        let mut offered = F_VERSION_1 | F_FLUSH | F_SEG_MAX | F_SIZE_MAX | F_BLK_SIZE | F_EVENT_IDX;
        if p.readonly {
            offered |= F_RO;
        }
        Ok(Self {
            config,
            common: CommonCfg::new(offered),
            device_cfg: device_config(capacity),
            isr: 0,
            intx: IntxPin::new(p.irq),
            mem: p.mem,
            queue: None,
            queue_gen: 0,
            engine: Arc::new(Mutex::new(Engine::new(p.disk, capacity, p.readonly, p.overlay, p.faults))),
            used_entries: 0,
            bar0_addr: p.bar0_addr,
            logs: Logs::default(),
        })
    }

    /// The guest-physical address of queue 0's notification register,
    /// where the VMM may hang an ioeventfd (BAR0 never moves).
    pub fn notify_address(&self) -> u64 {
        u64::from(self.bar0_addr) + NOTIFY_OFFSET
    }

    /// Disk size in 512-byte sectors.
    pub fn capacity(&self) -> u64 {
        lock(&self.engine).capacity()
    }

    pub fn counters(&self) -> BlkCounters {
        BlkCounters { used_entries: self.used_entries, ..lock(&self.engine).counters }
    }

    /// What the driver's write of 0 to device_status does.
    fn device_reset(&mut self) {
        self.common.reset();
        self.drop_queue();
        self.isr = 0;
        self.update_irq();
    }

    /// INTA# is asserted while the ISR has a bit set, unless the command
    /// register disables INTx; the status register's interrupt bit follows
    /// the ISR regardless, as PCI asks.
    fn update_irq(&mut self) {
        let pending = self.isr != 0;
        self.intx.update(&mut self.config, pending);
    }

    fn enable_queue(&mut self) {
        let event_idx = self.common.driver_features() & F_EVENT_IDX != 0;
        match build_queue(&self.mem, self.common.queue, event_idx) {
            Ok(q) => {
                self.queue = Some(q);
                // The used ring is the device's to write: a ring the driver
                // reuses after a reset may still say "do not notify" from a
                // pass the reset cut short.
                let mem = Arc::clone(&self.mem);
                self.listen(&mem);
            }
            Err(why) => {
                warn_limited!(
                    self.logs.queue,
                    "virtio-blk: cannot enable queue 0: {why}; device needs reset"
                );
                self.set_needs_reset();
            }
        }
    }

    /// Stops the queue until the driver resets the device, and tells it so
    /// with a configuration-change interrupt once it is running.
    fn set_needs_reset(&mut self) {
        let was_running = self.common.status() & S_DRIVER_OK != 0;
        self.common.needs_reset();
        self.drop_queue();
        if was_running {
            self.isr |= ISR_CONFIG;
            self.update_irq();
        }
    }

    fn notify(&mut self, value: u64) {
        if value != 0 {
            warn_limited!(self.logs.queue, "virtio-blk: notification for absent queue {value} ignored");
        } else if self.may_serve() {
            self.process_queue();
        }
    }

    /// Whether a notification of queue 0 may be acted on now; says why not.
    fn may_serve(&mut self) -> bool {
        if !self.common.running() {
            warn_limited!(self.logs.queue, "virtio-blk: notification while the queue is not running ignored");
        } else if self.config.command() & COMMAND_BUS_MASTER == 0 {
            // A real device cannot reach memory without bus mastering; Linux
            // always enables it, so this is a guest bug worth seeing.
            warn_limited!(self.logs.queue, "virtio-blk: notification with bus mastering off ignored");
        } else {
            return true;
        }
        false
    }

    fn drop_queue(&mut self) {
        self.queue = None;
        self.queue_gen = self.queue_gen.wrapping_add(1);
    }

    /// The next request the driver made available, for `QueueServer`;
    /// None when there is none, or the ring is unusable (the device then
    /// needs a reset).
    fn take<'m>(&mut self, m: &'m GuestMemoryMmap) -> Option<(Chain<'m>, u64)> {
        let q = self.queue.as_mut()?;
        match q.iter(m) {
            Ok(mut it) => it.next().map(|c| (c, self.queue_gen)),
            Err(e) => {
                warn_limited!(
                    self.logs.queue,
                    "virtio-blk: available ring unusable: {e}; device needs reset"
                );
                self.set_needs_reset();
                None
            }
        }
    }

    /// Puts a served request into the used ring, unless its queue has gone
    /// meanwhile (the driver reset the device while it was served outside
    /// the lock); true when the driver gets an entry.
    fn complete(&mut self, m: &GuestMemoryMmap, head: u16, used_len: u32, gen: u64) -> bool {
        let Some(q) = self.queue.as_mut().filter(|_| gen == self.queue_gen) else {
            return false;
        };
        if head >= q.size() {
            // An empty chain, counted as dropped: no slot to go back to.
            return false;
        }
        if let Err(e) = q.add_used(m, head, used_len) {
            warn_limited!(self.logs.queue, "virtio-blk: used ring write failed: {e}");
            return false;
        }
        self.used_entries += 1;
        true
    }

    /// Tells the driver about used entries, as it wants.
    fn interrupt_queue(&mut self) {
        if self.interrupt_wanted() {
            self.isr |= ISR_QUEUE;
            self.update_irq();
        }
    }

    /// While the device works through the ring, the driver need not notify
    /// it of more: each notification is an exit. Without EVENT_IDX the
    /// used ring's NO_NOTIFY flag says so; with it, `avail_event` simply
    /// stays behind until `listen`.
    fn quiet(&mut self, m: &GuestMemoryMmap) {
        if let Some(q) = self.queue.as_mut() {
            if let Err(e) = q.disable_notification(m) {
                warn_limited!(self.logs.queue, "virtio-blk: used ring flags write failed: {e}");
            }
        }
    }

    /// Asks for notifications again, from the next request on; true when
    /// the driver made requests available meanwhile, which no notification
    /// will announce: the caller serves them now.
    fn listen(&mut self, m: &GuestMemoryMmap) -> bool {
        let Some(q) = self.queue.as_mut() else {
            return false;
        };
        q.enable_notification(m).unwrap_or_else(|e| {
            warn_limited!(self.logs.queue, "virtio-blk: notification suppression write failed: {e}");
            false
        })
    }

    /// Serves the requests `listen` found but a bounded pass left alone,
    /// at the driver's next notification: with EVENT_IDX that one must be
    /// asked for, since `avail_event` already lies behind the driver.
    fn listen_from_the_driver_on(&mut self, m: &GuestMemoryMmap) {
        let Some(q) = self.queue.as_ref().filter(|q| q.event_idx_enabled()) else {
            return;
        };
        let avail_event = GuestAddress(q.used_ring() + 4 + 8 * u64::from(q.size()));
        let written = match q.avail_idx(m, Ordering::Acquire) {
            Ok(latest) => {
                m.store(u16::to_le(latest.0), avail_event, Ordering::Release).map_err(|e| e.to_string())
            }
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = written {
            warn_limited!(self.logs.queue, "virtio-blk: avail_event write failed: {e}");
        }
    }

    /// Completes every request the driver has made available right here on
    /// the notifying vCPU's thread (the VMM has no disk thread), at most
    /// [`VCPU_PASSES`] rings' worth, with one interrupt at the end.
    fn process_queue(&mut self) {
        let mem = Arc::clone(&self.mem);
        let m: &GuestMemoryMmap = &mem;
        let mut completed = false;
        let mut more = false;
        for _ in 0..VCPU_PASSES {
            self.quiet(m);
            let size = self.queue.as_ref().map_or(0, |q| q.size());
            for _ in 0..size {
                let Some((chain, gen)) = self.take(m) else {
                    break;
                };
                let head = chain.head_index();
                let used_len = lock(&self.engine).handle(m, chain);
                completed |= self.complete(m, head, used_len, gen);
            }
            more = self.listen(m);
            if !more {
                break;
            }
        }
        if more {
            self.listen_from_the_driver_on(m);
        }
        if completed {
            self.interrupt_queue();
        }
    }

    /// Whether the driver wants an interrupt for the entries used since the
    /// last one: with EVENT_IDX, when they reach its `used_event`; without,
    /// unless the available ring's flags hold VRING_AVAIL_F_NO_INTERRUPT.
    /// Either spares Linux interrupts that find nothing to do.
    fn interrupt_wanted(&mut self) -> bool {
        let Some(q) = self.queue.as_mut() else {
            return true;
        };
        if q.event_idx_enabled() {
            return q.needs_notification(&*self.mem).unwrap_or(true);
        }
        // Our used-ring writes must be visible before the flags are read.
        fence(Ordering::SeqCst);
        let flags: u16 = self.mem.load(GuestAddress(q.avail_ring()), Ordering::Acquire).unwrap_or(0);
        u16::from_le(flags) & VRING_AVAIL_F_NO_INTERRUPT as u16 == 0
    }

    /// The window an access falls in and the offset inside it; None for
    /// accesses this BAR does not serve.
    fn decode(&self, bar: usize, offset: u64, len: usize) -> Option<(u64, u64)> {
        let end = offset.checked_add(len as u64)?;
        let ok = bar == 0
            && self.config.memory_enabled()
            && matches!(len, 1 | 2 | 4 | 8)
            && end <= u64::from(BAR0_SIZE)
            && offset / WINDOW_SIZE == (end - 1) / WINDOW_SIZE;
        ok.then_some((offset - offset % WINDOW_SIZE, offset % WINDOW_SIZE))
    }
}

impl PciDevice for VirtioBlk {
    fn bars(&self) -> Vec<PlacedBar> {
        self.config.placed_bars()
    }

    fn config_read(&mut self, offset: u16, data: &mut [u8]) {
        self.config.read(offset, data);
    }

    fn config_write(&mut self, offset: u16, data: &[u8]) {
        self.config.write(offset, data);
        // The command register's INTx-disable bit may have changed.
        self.update_irq();
    }

    fn bar_read(&mut self, bar: usize, offset: u64, data: &mut [u8]) {
        let Some((window, off)) = self.decode(bar, offset, data.len()) else {
            warn_limited!(
                self.logs.bad_access,
                "virtio-blk: BAR{bar} read of {} bytes at {offset:#x}",
                data.len()
            );
            data.fill(0xFF);
            return;
        };
        data.fill(0);
        match window {
            COMMON_OFFSET => self.common.read(off, data),
            ISR_OFFSET if off == 0 => {
                // Reading the ISR acknowledges the interrupt.
                data[0] = std::mem::take(&mut self.isr);
                self.update_irq();
            }
            DEVICE_CFG_OFFSET => {
                for (i, d) in data.iter_mut().enumerate() {
                    *d = self.device_cfg.get(off as usize + i).copied().unwrap_or(0);
                }
            }
            _ => {}
        }
    }

    fn bar_write(&mut self, bar: usize, offset: u64, data: &[u8]) {
        let Some((window, off)) = self.decode(bar, offset, data.len()) else {
            warn_limited!(
                self.logs.bad_access,
                "virtio-blk: BAR{bar} write of {} bytes at {offset:#x}",
                data.len()
            );
            return;
        };
        match window {
            COMMON_OFFSET => match self.common.write(off, data) {
                Effect::None => {}
                Effect::Reset => self.device_reset(),
                Effect::EnableQueue => self.enable_queue(),
            },
            NOTIFY_OFFSET if off == 0 && data.len() >= 2 => {
                let mut v = [0u8; 8];
                v[..data.len()].copy_from_slice(data);
                self.notify(u64::from_le_bytes(v) & 0xFFFF);
            }
            _ => {
                warn_limited!(self.logs.bad_access, "virtio-blk: write at BAR0+{offset:#x} ignored");
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere while holding the lock leaves state whole enough
    // to serve or refuse requests; a dead disk is worse.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Serves queue 0 from a thread other than a vCPU's: the VMM's disk
/// thread, woken by an ioeventfd on [`VirtioBlk::notify_address`].
///
/// Each request is taken off the ring and put back under the device's
/// lock, and executed (the disk I/O) under the engine's alone, so a vCPU
/// touching the device's registers meanwhile (the ISR read that follows
/// each interrupt) waits for a ring update at most, never for the disk.
pub struct QueueServer {
    dev: Arc<Mutex<VirtioBlk>>,
    engine: Arc<Mutex<Engine>>,
    mem: Arc<GuestMemoryMmap>,
}

impl std::fmt::Debug for QueueServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueServer").finish_non_exhaustive()
    }
}

impl QueueServer {
    pub fn new(dev: Arc<Mutex<VirtioBlk>>) -> Self {
        let (engine, mem) = {
            let d = lock(&dev);
            (d.engine.clone(), d.mem.clone())
        };
        Self { dev, engine, mem }
    }

    /// A notification of queue 0 that came other than through the bus (an
    /// ioeventfd): held to the checks a write of the register meets (memory
    /// decoding too: KVM signals whatever the command register says), so a
    /// guest gains nothing by the shortcut; then the available requests
    /// are served, at most one ring's worth. True when more came meanwhile
    /// that no notification will announce: call again (the caller may stop
    /// first; the requests wait in the ring).
    pub fn notified(&self) -> bool {
        let m: &GuestMemoryMmap = &self.mem;
        let size = {
            let mut d = lock(&self.dev);
            if !d.config.memory_enabled() {
                warn_limited!(d.logs.queue, "virtio-blk: notification with memory decoding off ignored");
                return false;
            }
            if !d.may_serve() {
                return false;
            }
            d.quiet(m);
            d.queue.as_ref().map_or(0, |q| q.size())
        };
        for _ in 0..size {
            let Some((chain, gen)) = lock(&self.dev).take(m) else {
                break;
            };
            let head = chain.head_index();
            let used_len = lock(&self.engine).handle(m, chain);
            let mut d = lock(&self.dev);
            // An interrupt as soon as the driver wants one: it may start on
            // the data while the next request is read.
            if d.complete(m, head, used_len, gen) {
                d.interrupt_queue();
            }
        }
        lock(&self.dev).listen(m)
    }
}
