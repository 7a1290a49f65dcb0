//! Supervision: the boot-cycle lifecycle (a pure state machine), the events
//! it reports and their sinks, the faults a developer injects, and the
//! controller (the main loop) that ties them to the machine.

pub mod controller;
pub mod events;
pub mod faults;
pub mod lifecycle;
