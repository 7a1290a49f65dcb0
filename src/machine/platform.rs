//! The machine's devices, wired to KVM at the places `layout.rs` gives them
//! (its table says which device sits where).

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use kennel_devices::acpi::{AcpiPlatform, PowerRequests};
use kennel_devices::bus::Bus;
use kennel_devices::clock::Clock;
use kennel_devices::i6300esb::{EsbParams, I6300Esb, WatchdogFact, WatchdogObserver};
use kennel_devices::i8042::{ResetRequest, I8042};
use kennel_devices::irq::{EdgeInterrupt, InterruptLine};
use kennel_devices::pci::config_io::{PciBus, PciConfigIo, CONFIG_IO_BASE, CONFIG_IO_LEN};
use kennel_devices::pci::host_bridge::HostBridge;
use kennel_devices::pci::PciDevice;
use kennel_devices::serial::Serial;
use kennel_devices::virtio_blk::{BlkParams, BlockFaults, VirtioBlk};
use kvm_ioctls::VmFd;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use crate::machine::boot::mptable::PciIntx;
use crate::machine::exits::{Buses, ResetSource};
use crate::machine::layout;
use crate::machine::requests::{RequestSender, VmRequest};

/// Errors wiring devices.
#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    #[error("cannot place a device on the bus: {0}")]
    Bus(#[from] kennel_devices::bus::BusError),
    #[error("cannot add a PCI device: {0}")]
    Pci(#[from] kennel_devices::pci::config_io::PciBusError),
    #[error("cannot create the 6300ESB: {0}")]
    Esb(#[from] kennel_devices::i6300esb::EsbError),
    #[error("cannot create the virtio-blk disk: {0}")]
    Blk(#[from] kennel_devices::virtio_blk::BlkError),
    #[error("cannot set up an interrupt ({what}): {source}")]
    Irq {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// The root disk for one VM build.
pub struct DiskParams {
    pub file: std::fs::File,
    pub readonly: bool,
    pub overlay: Option<Arc<Mutex<kennel_devices::virtio_blk::Overlay>>>,
    pub faults: Arc<dyn BlockFaults>,
}

/// What a VM build needs from outside the VM: host-side sinks and state
/// that outlive a reset.
pub struct PlatformParams {
    pub console: Box<dyn Write + Send>,
    pub clock: Arc<dyn Clock>,
    pub requests: RequestSender,
    /// The 6300ESB's timeout flag, kept across a system reset.
    pub esb_timeout_flag: bool,
    /// Distinguishes facts of this VM from a previous one's in the queue.
    pub generation: u64,
    pub disk: Option<DiskParams>,
    /// Attach the ACPI registers (the tables are written with them).
    pub acpi: bool,
}

pub struct Platform {
    pub buses: Arc<Buses>,
    pub serial: Arc<Mutex<Serial>>,
    pub esb: Arc<Mutex<I6300Esb>>,
    /// The ACPI registers and power button; `None` with --no-acpi.
    pub acpi: Option<Arc<Mutex<AcpiPlatform>>>,
    /// The root disk, for the VM to give its queue a thread.
    pub blk: Option<Arc<Mutex<VirtioBlk>>>,
    pub intx: Vec<PciIntx>,
    pub requests: RequestSender,
    pub generation: u64,
}

struct IrqFd(EventFd);
impl EdgeInterrupt for IrqFd {
    fn trigger(&self) {
        // A full eventfd counter still has the interrupt pending.
        let _ = self.0.write(1);
    }
}

struct KvmLine {
    vm: Arc<VmFd>,
    gsi: u32,
}
impl InterruptLine for KvmLine {
    fn set_level(&self, asserted: bool) {
        if let Err(e) = self.vm.set_irq_line(self.gsi, asserted) {
            log::warn!("cannot set GSI {} to {asserted}: {e}", self.gsi);
        }
    }
}

struct ResetToMainLoop {
    requests: RequestSender,
    generation: u64,
}
impl ResetRequest for ResetToMainLoop {
    fn request_reset(&self) {
        self.requests
            .send(VmRequest::GuestReset { source: ResetSource::Keyboard, generation: self.generation });
    }
}

/// S5 and the ACPI reset register, to the main loop.
struct PowerToMainLoop {
    requests: RequestSender,
    generation: u64,
}
impl PowerRequests for PowerToMainLoop {
    fn power_off(&self) {
        self.requests.send(VmRequest::GuestPowerOff { generation: self.generation });
    }
    fn reset(&self) {
        self.requests.send(VmRequest::GuestReset { source: ResetSource::Acpi, generation: self.generation });
    }
}

/// Passes the device's facts to the main loop, except feeds after the
/// first of each arming: those mean nothing new to the lifecycle (the device
/// counts them), and waking the main loop for each would put two host
/// system calls and a thread switch on every guest feed.
struct FactsToMainLoop {
    requests: RequestSender,
    generation: u64,
    fed_since_armed: AtomicBool,
}
impl WatchdogObserver for FactsToMainLoop {
    fn report(&self, fact: WatchdogFact, at: std::time::Duration) {
        match fact {
            WatchdogFact::Fed if self.fed_since_armed.swap(true, Ordering::Relaxed) => return,
            WatchdogFact::Armed { .. } => self.fed_since_armed.store(false, Ordering::Relaxed),
            _ => {}
        }
        self.requests.send(VmRequest::Watchdog { fact, at, generation: self.generation });
    }
}

/// PCI bus 0 while the machine is built, and the INTx routing the MP table
/// will describe.
struct Pci {
    bus: PciBus,
    intx: Vec<PciIntx>,
}

impl Pci {
    /// Slot, device, BARs (sizes from the device) and INTA in one call.
    fn attach<D: PciDevice + 'static>(
        &mut self,
        at: layout::PciSlot,
        device: Arc<Mutex<D>>,
        mmio: &mut Bus,
    ) -> Result<(), PlatformError> {
        self.bus.attach(at.slot, device, mmio)?;
        self.intx.push(PciIntx { slot: at.slot, pin: 1, gsi: at.gsi });
        Ok(())
    }
}

pub fn build(
    vm: &Arc<VmFd>,
    mem: &Arc<GuestMemoryMmap>,
    p: PlatformParams,
) -> Result<Platform, PlatformError> {
    let mut buses = Buses { pio: Bus::new(), mmio: Bus::new() };

    let irq = EventFd::new(libc::EFD_NONBLOCK)
        .map_err(|source| PlatformError::Irq { what: "serial eventfd", source })?;
    vm.register_irqfd(&irq, layout::SERIAL_IRQ)
        .map_err(|e| PlatformError::Irq { what: "serial irqfd", source: e.into() })?;
    let serial = Arc::new(Mutex::new(Serial::new(Arc::new(IrqFd(irq)), p.console)));
    buses.pio.insert(serial.clone(), layout::SERIAL_PORT, layout::SERIAL_PORT_LEN)?;

    let i8042 = Arc::new(Mutex::new(I8042::new(Arc::new(ResetToMainLoop {
        requests: p.requests.clone(),
        generation: p.generation,
    }))));
    buses.pio.insert(i8042, layout::I8042_PORT, layout::I8042_PORT_LEN)?;

    let acpi = match p.acpi {
        true => {
            let irq = EventFd::new(libc::EFD_NONBLOCK)
                .map_err(|source| PlatformError::Irq { what: "GED eventfd", source })?;
            vm.register_irqfd(&irq, layout::GED_GSI)
                .map_err(|e| PlatformError::Irq { what: "GED irqfd", source: e.into() })?;
            let requests =
                Arc::new(PowerToMainLoop { requests: p.requests.clone(), generation: p.generation });
            let dev = Arc::new(Mutex::new(AcpiPlatform::new(requests, Arc::new(IrqFd(irq)))));
            buses.pio.insert(dev.clone(), layout::ACPI_PORT, kennel_devices::acpi::LEN)?;
            Some(dev)
        }
        false => None,
    };

    let esb = Arc::new(Mutex::new(I6300Esb::new(EsbParams {
        bar0_addr: layout::ESB.bar0,
        irq_line: layout::ESB.gsi,
        irq: Some(Arc::new(KvmLine { vm: vm.clone(), gsi: layout::ESB.gsi.into() })),
        clock: p.clock.clone(),
        observer: Arc::new(FactsToMainLoop {
            requests: p.requests.clone(),
            generation: p.generation,
            fed_since_armed: AtomicBool::new(false),
        }),
        timeout_flag: p.esb_timeout_flag,
    })?));
    let mut pci = Pci { bus: PciBus::new(), intx: Vec::new() };
    pci.bus.add(layout::HOST_BRIDGE_SLOT, Arc::new(Mutex::new(HostBridge::new())))?;
    pci.attach(layout::ESB, esb.clone(), &mut buses.mmio)?;
    let mut disk = None;
    if let Some(d) = p.disk {
        let blk = VirtioBlk::new(BlkParams {
            disk: d.file,
            readonly: d.readonly,
            overlay: d.overlay,
            bar0_addr: layout::BLK.bar0,
            irq_line: layout::BLK.gsi,
            irq: Some(Arc::new(KvmLine { vm: vm.clone(), gsi: layout::BLK.gsi.into() })),
            mem: mem.clone(),
            faults: d.faults,
        })?;
        let blk = Arc::new(Mutex::new(blk));
        pci.attach(layout::BLK, blk.clone(), &mut buses.mmio)?;
        disk = Some(blk);
    }
    let intx = pci.intx;
    buses.pio.insert(Arc::new(Mutex::new(PciConfigIo::new(pci.bus))), CONFIG_IO_BASE, CONFIG_IO_LEN)?;

    Ok(Platform {
        buses: Arc::new(buses),
        serial,
        esb,
        acpi,
        blk: disk,
        intx,
        requests: p.requests,
        generation: p.generation,
    })
}
