//! Turning a vCPU exit into an outcome.
//!
//! `handle` is a plain function over a plain enum so unit tests can drive it
//! with made-up exits; `Exit::from_kvm` is the only place that knows
//! kvm-ioctls' `VcpuExit`.

use kennel_devices::bus::Bus;
use kvm_ioctls::VcpuExit;

/// Why the VM should be reset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResetSource {
    /// The guest triple-faulted.
    TripleFault,
    /// KVM reported a system reset event.
    SystemEvent,
    /// The guest pulsed the reset line through the keyboard controller.
    Keyboard,
    /// The guest wrote the ACPI reset register.
    Acpi,
}

/// A vCPU exit, stripped of kvm-ioctls' types.
#[derive(Debug)]
pub enum Exit<'a> {
    IoIn {
        port: u16,
        data: &'a mut [u8],
    },
    IoOut {
        port: u16,
        data: &'a [u8],
    },
    MmioRead {
        addr: u64,
        data: &'a mut [u8],
    },
    MmioWrite {
        addr: u64,
        data: &'a [u8],
    },
    Hlt,
    /// A triple fault.
    Shutdown,
    SystemEvent {
        kind: u32,
    },
    InternalError,
    FailEntry {
        reason: u64,
    },
    Intr,
    Other(&'static str),
}

impl<'a> Exit<'a> {
    pub fn from_kvm(e: VcpuExit<'a>) -> Self {
        match e {
            VcpuExit::IoIn(port, data) => Exit::IoIn { port, data },
            VcpuExit::IoOut(port, data) => Exit::IoOut { port, data },
            VcpuExit::MmioRead(addr, data) => Exit::MmioRead { addr, data },
            VcpuExit::MmioWrite(addr, data) => Exit::MmioWrite { addr, data },
            VcpuExit::Hlt => Exit::Hlt,
            VcpuExit::Shutdown => Exit::Shutdown,
            VcpuExit::SystemEvent(kind, _) => Exit::SystemEvent { kind },
            VcpuExit::InternalError => Exit::InternalError,
            VcpuExit::FailEntry(reason, _) => Exit::FailEntry { reason },
            VcpuExit::Intr => Exit::Intr,
            VcpuExit::Unknown => Exit::Other("unknown"),
            VcpuExit::Exception => Exit::Other("exception"),
            VcpuExit::Debug(_) => Exit::Other("debug"),
            VcpuExit::IrqWindowOpen => Exit::Other("irq-window-open"),
            VcpuExit::Nmi => Exit::Other("nmi"),
            VcpuExit::IoapicEoi(_) => Exit::Other("ioapic-eoi"),
            _ => Exit::Other("unexpected exit reason"),
        }
    }
}

/// What the vCPU loop does next.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Continue,
    Reset(ResetSource),
    /// The guest powered off (KVM shutdown system event).
    PowerOff,
    /// The host could not emulate an instruction; the vCPU loop may be able
    /// to handle it (PVM int3), or it is fatal.
    EmulationFailure,
    Fatal(ExitError),
}

/// An exit the vCPU cannot go on from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ExitError {
    #[error("the guest crashed (KVM system event)")]
    GuestCrashed,
    #[error("unknown KVM system event {0}")]
    UnknownSystemEvent(u32),
    #[error("KVM could not enter the guest (hardware entry failure reason {0:#x})")]
    FailEntry(u64),
    #[error("unhandled vCPU exit: {0}")]
    Unhandled(&'static str),
}

/// The guest's view of ports and MMIO, shared by every vCPU.
#[derive(Debug, Default)]
pub struct Buses {
    pub pio: Bus,
    pub mmio: Bus,
}

// KVM_SYSTEM_EVENT_* from the KVM API.
const SYSTEM_EVENT_SHUTDOWN: u32 = 1;
const SYSTEM_EVENT_RESET: u32 = 2;
const SYSTEM_EVENT_CRASH: u32 = 3;

pub fn handle(exit: Exit<'_>, buses: &Buses) -> Outcome {
    match exit {
        Exit::IoIn { port, data } => {
            // An empty port floats high, as on a PC.
            if !buses.pio.read(u64::from(port), data) {
                data.fill(0xff);
            }
            Outcome::Continue
        }
        Exit::IoOut { port, data } => {
            buses.pio.write(u64::from(port), data);
            Outcome::Continue
        }
        Exit::MmioRead { addr, data } => {
            if !buses.mmio.read(addr, data) {
                data.fill(0xff);
            }
            Outcome::Continue
        }
        Exit::MmioWrite { addr, data } => {
            buses.mmio.write(addr, data);
            Outcome::Continue
        }
        // With the in-kernel irqchip HLT does not exit; if it does, the
        // guest will be woken by the next interrupt anyway.
        Exit::Hlt | Exit::Intr => Outcome::Continue,
        Exit::Shutdown => Outcome::Reset(ResetSource::TripleFault),
        Exit::SystemEvent { kind: SYSTEM_EVENT_RESET } => Outcome::Reset(ResetSource::SystemEvent),
        Exit::SystemEvent { kind: SYSTEM_EVENT_SHUTDOWN } => Outcome::PowerOff,
        Exit::SystemEvent { kind: SYSTEM_EVENT_CRASH } => Outcome::Fatal(ExitError::GuestCrashed),
        Exit::SystemEvent { kind } => Outcome::Fatal(ExitError::UnknownSystemEvent(kind)),
        Exit::InternalError => Outcome::EmulationFailure,
        Exit::FailEntry { reason } => Outcome::Fatal(ExitError::FailEntry(reason)),
        Exit::Other(what) => Outcome::Fatal(ExitError::Unhandled(what)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kennel_devices::bus::BusDevice;
    use std::sync::{Arc, Mutex};

    struct Echo(Vec<u8>);
    impl BusDevice for Echo {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8 + 1);
        }
        fn write(&mut self, _offset: u64, data: &[u8]) {
            self.0.extend_from_slice(data);
        }
    }

    fn buses() -> (Buses, Arc<Mutex<Echo>>) {
        let dev = Arc::new(Mutex::new(Echo(Vec::new())));
        let mut b = Buses::default();
        b.pio.insert(dev.clone(), 0x3f8, 8).unwrap();
        b.mmio.insert(dev.clone(), 0xc000_0000, 16).unwrap();
        (b, dev)
    }

    #[test]
    fn port_and_mmio_accesses_reach_devices() {
        let (b, dev) = buses();
        assert_eq!(handle(Exit::IoOut { port: 0x3f8, data: b"hi" }, &b), Outcome::Continue);
        let mut d = [0u8; 4];
        assert_eq!(handle(Exit::MmioRead { addr: 0xc000_0004, data: &mut d }, &b), Outcome::Continue);
        assert_eq!(d, [5; 4]);
        handle(Exit::MmioWrite { addr: 0xc000_0000, data: &[9] }, &b);
        assert_eq!(dev.lock().unwrap().0, b"hi\x09");
    }

    #[test]
    fn absent_ports_and_mmio_read_all_ones() {
        let (b, _) = buses();
        let mut d = [0u8; 2];
        handle(Exit::IoIn { port: 0x80, data: &mut d }, &b);
        assert_eq!(d, [0xff, 0xff]);
        let mut m = [0u8; 4];
        handle(Exit::MmioRead { addr: 0xd000_0000, data: &mut m }, &b);
        assert_eq!(m, [0xff; 4]);
    }

    #[test]
    fn resets_power_off_and_failures_are_told_apart() {
        let (b, _) = buses();
        assert_eq!(handle(Exit::Shutdown, &b), Outcome::Reset(ResetSource::TripleFault));
        assert_eq!(handle(Exit::SystemEvent { kind: 2 }, &b), Outcome::Reset(ResetSource::SystemEvent));
        assert_eq!(handle(Exit::SystemEvent { kind: 1 }, &b), Outcome::PowerOff);
        assert!(matches!(handle(Exit::SystemEvent { kind: 3 }, &b), Outcome::Fatal(_)));
        assert_eq!(handle(Exit::InternalError, &b), Outcome::EmulationFailure);
        assert!(
            matches!(handle(Exit::FailEntry { reason: 0x21 }, &b), Outcome::Fatal(m) if m.to_string().contains("0x21"))
        );
        assert!(
            matches!(handle(Exit::Other("debug"), &b), Outcome::Fatal(m) if m.to_string().contains("debug"))
        );
        assert_eq!(handle(Exit::Hlt, &b), Outcome::Continue);
    }
}
