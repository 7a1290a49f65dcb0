//! Preparing guest memory and vCPU state for the first instruction.
//! The step-by-step sequence is in README.md ("Boot sequence").

pub mod acpi;
pub mod cmdline;
pub mod loader;
pub mod mptable;
pub mod params;
pub mod regs;
pub mod reset_vector;

/// vCPUs an MP table fits for in the space reserved for it.
pub const MAX_VCPUS: u8 = 32;
