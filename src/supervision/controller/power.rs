//! The ACPI power button: the watchdog's `shutdown` action and QMP
//! `system_powerdown` press it; the guest answers by powering off (S5) or,
//! if it is hung, does not, and after `--shutdown-grace` the watchdog's
//! press ends in a forced power-off.
//!
//! QEMU's `system_powerdown` waits for the guest forever, and so does a
//! press from QMP here: the operator is there to `quit`. The watchdog's
//! press has nobody waiting on it, and a guest whose watchdog expired is
//! likely hung, hence the grace period.

use kennel_devices::bus::lock;
use kennel_devices::clock::Clock;

use super::Controller;
use crate::supervision::lifecycle::{Cause, Input, PowerOff};

/// Why the button could not be pressed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PowerButtonError {
    #[error("the VM has not been started")]
    NotStarted,
    #[error("the VM has no ACPI (--no-acpi): it has no power button to press")]
    NoAcpi,
}

impl Controller {
    /// Presses the power button, for the lifecycle's `PowerButton` action.
    /// Without ACPI the guest cannot hear it, so the VM is powered off at
    /// once, and the event says it was forced.
    pub(super) fn power_button(&mut self, cause: Cause) {
        match self.press(cause) {
            Ok(()) => {}
            Err(PowerButtonError::NoAcpi) => {
                log::warn!("{cause}: the guest has no ACPI power button (--no-acpi); powering off at once");
                self.powered_off(cause, PowerOff::Forced);
            }
            Err(PowerButtonError::NotStarted) => {}
        }
    }

    /// Presses the button if there is a VM with ACPI; reports POWERDOWN.
    /// A press by the watchdog starts the grace period (once: later
    /// presses do not extend it).
    pub(super) fn press(&mut self, cause: Cause) -> Result<(), PowerButtonError> {
        if self.exit.is_some() {
            return Ok(());
        }
        let vm = self.vm.as_ref().ok_or(PowerButtonError::NotStarted)?;
        let acpi = vm.platform.acpi.as_ref().ok_or(PowerButtonError::NoAcpi)?;
        lock(acpi).press_power_button();
        log::info!("{cause}: pressed the guest's ACPI power button");
        if cause == Cause::Watchdog && self.grace_deadline.is_none() {
            let now = self.clock.now();
            let at = now.saturating_add(self.cfg.shutdown_grace);
            self.grace_deadline = Some(at);
            super::arm(&mut self.grace_timer, Some(at), now);
            self.powerdown = Some(cause);
        } else if self.powerdown.is_none() {
            self.powerdown = Some(cause);
        }
        self.input(Input::PowerButton { cause });
        Ok(())
    }

    /// The guest powered off (ACPI S5): in answer to a press, or by itself.
    pub(super) fn guest_powered_off(&mut self) {
        let cause = self.powerdown.unwrap_or(Cause::Guest);
        self.powered_off(cause, PowerOff::Guest);
    }

    /// The grace timer runs in real time, the grace on the pausable clock:
    /// a paused guest cannot shut down, so its grace waits with it.
    pub(super) fn grace_timer_fired(&mut self) {
        let Some(at) = self.grace_deadline else { return };
        let now = self.clock.now();
        if now < at {
            super::arm(&mut self.grace_timer, Some(at), now);
            return;
        }
        let cause = self.powerdown.unwrap_or(Cause::Watchdog);
        log::warn!(
            "{cause}: the guest did not power off within {:?} of the power button; powering it off",
            self.cfg.shutdown_grace
        );
        self.powered_off(cause, PowerOff::Forced);
    }

    /// Forgets a press: the VM it was for is gone (reset or powered off).
    pub(super) fn cancel_powerdown(&mut self) {
        self.powerdown = None;
        if self.grace_deadline.take().is_some() {
            super::arm(&mut self.grace_timer, None, self.clock.now());
        }
    }
}
