//! The disk's fault hook: the cycle's fault state decides, and every
//! injected fault worth reporting goes to the main loop as a
//! FAULT_INJECTED event.

use kennel_devices::virtio_blk::{BlockFaults, BlockOp as DevOp, FaultDecision};

use crate::machine::requests::{RequestSender, VmRequest};
use crate::supervision::faults::{BlockFaultState, BlockOp, Decision};

pub struct CycleDiskFaults {
    pub state: BlockFaultState,
    pub requests: RequestSender,
    pub generation: u64,
}

impl BlockFaults for CycleDiskFaults {
    fn decide(&self, op: DevOp, sector: u64, sectors: u64) -> FaultDecision {
        let op = match op {
            DevOp::Read => BlockOp::Read,
            DevOp::Write => BlockOp::Write,
            DevOp::Flush => BlockOp::Flush,
            DevOp::GetId => BlockOp::GetId,
        };
        let (decision, injected) = self.state.decide(op, sector, sectors);
        if let Some(i) = injected {
            self.requests
                .send(VmRequest::FaultInjected { data: i.event_data(), generation: self.generation });
        }
        match decision {
            Decision::Proceed => FaultDecision::Proceed,
            Decision::IoError => FaultDecision::IoError,
            Decision::Delay(d) => FaultDecision::Delay(d),
        }
    }
}
