//! Messages from vCPU threads and devices to the main loop.
//!
//! Anything outside the main thread that needs the VMM to act (a vCPU that
//! saw a reset, a watchdog fact, the keyboard controller's reset line) sends
//! a request here; the main loop wakes on the eventfd and drains the queue.

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::Duration;

use kennel_devices::i6300esb::WatchdogFact;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::machine::exits::ResetSource;

/// Each carries the generation (VM build) it came from: a request still in
/// the queue when the VM is rebuilt must not act on the new VM (a panicking
/// guest pulses the reset line and then triple-faults: two resets asked,
/// one meant).
#[derive(Debug)]
pub enum VmRequest {
    /// The guest reset itself (keyboard controller, triple fault, KVM event).
    GuestReset {
        source: ResetSource,
        generation: u64,
    },
    GuestPowerOff {
        generation: u64,
    },
    /// A vCPU cannot go on; the VM must stop with an error.
    Fatal {
        vcpu: u8,
        error: crate::machine::vcpu::VcpuError,
        generation: u64,
    },
    /// A fault was injected; `data` is the FAULT_INJECTED event's data.
    FaultInjected {
        data: serde_json::Value,
        generation: u64,
    },
    /// The watchdog reported a fact at watchdog-clock time `at`.
    Watchdog {
        fact: WatchdogFact,
        at: Duration,
        generation: u64,
    },
}

#[derive(Clone, Debug)]
pub struct RequestSender {
    tx: Sender<VmRequest>,
    wake: Arc<EventFd>,
}

impl RequestSender {
    /// Sends a request. A closed channel means the main loop is gone and the
    /// process is exiting; there is nobody left to tell.
    pub fn send(&self, r: VmRequest) {
        if self.tx.send(r).is_ok() {
            let _ = self.wake.write(1);
        }
    }
}

pub struct RequestQueue {
    rx: Receiver<VmRequest>,
    pub wake: Arc<EventFd>,
}

pub fn channel_pair() -> std::io::Result<(RequestSender, RequestQueue)> {
    let (tx, rx) = channel();
    let wake = Arc::new(EventFd::new(EFD_NONBLOCK)?);
    Ok((RequestSender { tx, wake: wake.clone() }, RequestQueue { rx, wake }))
}

impl VmRequest {
    pub fn generation(&self) -> u64 {
        match self {
            VmRequest::GuestReset { generation, .. }
            | VmRequest::GuestPowerOff { generation }
            | VmRequest::Fatal { generation, .. }
            | VmRequest::FaultInjected { generation, .. }
            | VmRequest::Watchdog { generation, .. } => *generation,
        }
    }
}

impl RequestQueue {
    /// Takes every pending request, clearing the wake-up.
    pub fn drain(&self) -> Vec<VmRequest> {
        let _ = self.wake.read();
        self.rx.try_iter().collect()
    }
}
