//! The Intel 6300ESB watchdog on PCI, for the guest's stock `i6300esb` driver.
//!
//! Config 0x60/0x64/0x68 and the four BAR0 registers behave as the
//! datasheet (300641) and Linux's `i6300esb.c` expect; `regs` has the map, `timer` the
//! two-stage countdown. The device never sleeps or spawns threads: time comes
//! from the [`Clock`] it is given. The VMM calls [`I6300Esb::poll`] at
//! [`I6300Esb::next_deadline`]; every register access also brings the device
//! up to date first, so the guest never sees stale state even if the VMM's
//! timer is late.
//!
//! The device reports facts ([`WatchdogFact`]) and decides nothing: what an
//! expiry means (reset, pause, ...) is the VMM's business. On `Expired` the
//! countdown stops, as if waiting for the platform's reset.

mod device;
pub mod regs;
#[cfg(test)]
mod tests;
pub mod timer;

use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use crate::irq::InterruptLine;
use crate::pci::ConfigSpaceError;

pub use device::I6300Esb;
pub use timer::{ClockMode, Stage};

/// Something the watchdog did that a supervisor may care about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchdogFact {
    /// ENABLE went 0 -> 1; stage 1 is counting. The stage lengths are those
    /// of the current preloads and clock.
    Armed { stage1: Duration, stage2: Duration },
    /// A RELOAD while enabled: stage 1 restarted. Reloads while disabled (the
    /// driver writes them at probe and when setting the heartbeat) are not
    /// feeds and are not reported.
    Fed,
    /// ENABLE went 1 -> 0.
    Disarmed,
    /// Stage 1 ended (GINTSR bit 0 set). In free-running mode this recurs.
    PreTimeout,
    /// Stage 2 ended in watchdog mode with the output enabled: the timeout
    /// flag is set and the platform's watchdog action is due.
    Expired,
}

/// Receives facts. Called with the device's lock held, from whichever
/// thread touched the device (a vCPU or the VMM's timer): it must not call
/// back into the device, and should only record or forward the fact.
pub trait WatchdogObserver: Send + Sync {
    /// `at` is the clock time the fact happened (a computed expiry time, not
    /// the time it was noticed).
    fn report(&self, fact: WatchdogFact, at: Duration);
}

pub struct EsbParams {
    /// Where the VMM placed BAR0 (16 bytes, aligned to 16, not 0). It never moves.
    pub bar0_addr: u32,
    /// Written into config 0x3C for the guest to read.
    pub irq_line: u8,
    /// INTA#, level-triggered. None: the pre-timeout interrupt goes nowhere.
    pub irq: Option<Arc<dyn InterruptLine>>,
    pub clock: Arc<dyn Clock>,
    pub observer: Arc<dyn WatchdogObserver>,
    /// The timeout flag as it was before the system reset that led to this
    /// device being built (false at first boot).
    pub timeout_flag: bool,
}

/// Errors building the device.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EsbError {
    /// BAR0 cannot be placed there
    #[error("i6300esb BAR0: {0}")]
    Bar0(#[from] ConfigSpaceError),
}

/// Config 0x60 bits 1:0: what the end of stage 1 raises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InterruptType {
    Irq,
    Reserved,
    Smi,
    Disabled,
}

/// Where the countdown is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerState {
    /// ENABLE is 0.
    Disabled,
    Counting {
        stage: Stage,
        deadline: Duration,
    },
    /// Stage 2 ended with the output enabled; a feed restarts stage 1.
    Expired,
    /// Stage 2 ended with the output disabled; a feed restarts stage 1.
    Stopped,
}

/// Host-side counts for this device, i.e. this boot cycle (a reset builds a
/// new device).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EsbCounters {
    pub feeds: u64,
    pub pre_timeouts: u64,
    pub expiries: u64,
    /// Writes refused by LOCK or by the unlock sequence.
    pub refused_writes: u64,
}

/// A snapshot for the VMM's query command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EsbStatus {
    pub enabled: bool,
    pub locked: bool,
    pub free_running: bool,
    pub clock_mode: ClockMode,
    pub output_enabled: bool,
    pub interrupt_type: InterruptType,
    /// Raw 20-bit preload registers.
    pub preload1: u32,
    pub preload2: u32,
    /// How long each stage lasts with the current preloads and clock.
    pub stage1: Duration,
    pub stage2: Duration,
    pub timer: TimerState,
    pub gintsr: bool,
    pub timeout_flag: bool,
    pub counters: EsbCounters,
}
