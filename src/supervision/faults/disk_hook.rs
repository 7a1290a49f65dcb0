//! The disk's fault hook: the cycle's fault state decides, and every
//! injected fault worth reporting goes to the main loop as a
//! FAULT_INJECTED event.

use kennel_devices::virtio_blk::{BlockFaults, BlockOp, FaultDecision};

use crate::machine::requests::{RequestSender, VmRequest};
use crate::supervision::faults::BlockFaultState;

pub struct CycleDiskFaults {
    pub state: BlockFaultState,
    pub requests: RequestSender,
    pub generation: u64,
}

impl BlockFaults for CycleDiskFaults {
    fn decide(&self, op: BlockOp, sector: u64, sectors: u64) -> FaultDecision {
        let (decision, injected) = self.state.decide(op, sector, sectors);
        if let Some(i) = injected {
            self.requests
                .send(VmRequest::FaultInjected { data: i.event_data(), generation: self.generation });
        }
        decision
    }
}
