//! The hardware-reduced ACPI registers: sleep control and status, the reset
//! register, and a Generic Event Device (GED) that carries the power button.
//!
//! A hardware-reduced platform (ACPI 6.5, section 4.1) has no PM1 blocks, no
//! PM timer, no GPE blocks and no SCI. The FADT points at three one-byte
//! registers instead, and platform events reach the OS through a GED
//! (`ACPI0013`): an interrupt, and the `_EVT` method of the DSDT reading an
//! event register to find out which event it was. So the whole guest-facing
//! surface is four one-byte ports, at offsets 0..=3 of this device's range:
//!
//! | offset | register | guest access |
//! | --- | --- | --- |
//! | 0 | sleep control | write: `SLP_TYP` (bits 2-4) with `SLP_EN` (bit 5); S5 powers off |
//! | 1 | sleep status | reads 0 (never woken); writes (clearing `WAK_STS`) ignored |
//! | 2 | reset | write [`RESET_VALUE`]: reset the machine |
//! | 3 | GED event | read: pending events ([`EVENT_POWER_BUTTON`]), cleared by the read |
//!
//! Anything else (another width, another value, a read of a write-only
//! register) is ignored and reads as 0: the guest is untrusted.

use std::sync::Arc;

use crate::bus::BusDevice;
use crate::irq::EdgeInterrupt;
use crate::log_limit::LogLimit;

/// Registers in the device's range (one byte each).
pub const SLEEP_CONTROL: u64 = 0;
pub const SLEEP_STATUS: u64 = 1;
pub const RESET: u64 = 2;
pub const GED_EVENT: u64 = 3;
/// Length of the device's port range.
pub const LEN: u64 = 4;

/// The value the FADT tells the OS to write to the reset register.
pub const RESET_VALUE: u8 = 0x01;
/// `SLP_TYP` for S5 (soft off): the first element of the DSDT's `\_S5` package.
pub const S5_SLP_TYP: u8 = 5;
const SLP_TYP_SHIFT: u8 = 2;
const SLP_TYP_MASK: u8 = 0b111;
const SLP_EN: u8 = 1 << 5;

/// GED event bits, as `_EVT` tests them.
pub const EVENT_POWER_BUTTON: u8 = 1 << 0;

/// What the guest asked the platform for. Called from a vCPU thread with the
/// device's lock held: only record the request.
pub trait PowerRequests: Send + Sync {
    /// S5: the guest has shut down and asks to be powered off.
    fn power_off(&self);
    /// The reset register was written.
    fn reset(&self);
}

/// What the device has seen, for tests, fuzzing and `query-acpi`-style reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AcpiCounters {
    pub button_presses: u64,
    /// Events the guest collected from the GED event register.
    pub events_read: u64,
    pub power_offs: u64,
    pub resets: u64,
    /// Sleep states other than S5 that were asked for (not supported; ignored).
    pub other_sleeps: u64,
    /// Accesses that did nothing (bad width, value or register).
    pub ignored: u64,
}

pub struct AcpiPlatform {
    requests: Arc<dyn PowerRequests>,
    ged_irq: Arc<dyn EdgeInterrupt>,
    pending: u8,
    counters: AcpiCounters,
    odd_access: LogLimit,
}

impl std::fmt::Debug for AcpiPlatform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcpiPlatform")
            .field("pending", &self.pending)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl AcpiPlatform {
    pub fn new(requests: Arc<dyn PowerRequests>, ged_irq: Arc<dyn EdgeInterrupt>) -> Self {
        Self {
            requests,
            ged_irq,
            pending: 0,
            counters: AcpiCounters::default(),
            odd_access: LogLimit::default(),
        }
    }

    /// Presses the power button: the event is latched until the guest's
    /// `_EVT` reads it, and the GED interrupt fires on every press (a guest
    /// that missed one edge sees the next).
    pub fn press_power_button(&mut self) {
        self.pending |= EVENT_POWER_BUTTON;
        self.counters.button_presses += 1;
        self.ged_irq.trigger();
    }

    pub fn counters(&self) -> AcpiCounters {
        self.counters
    }

    fn ignore(&mut self, what: &str, offset: u64, len: usize) {
        self.counters.ignored += 1;
        if let Some(n) = self.odd_access.hit() {
            log::debug!("acpi: ignored {what} of {len} byte(s) at offset {offset} (#{n})");
        }
    }

    fn sleep_control(&mut self, v: u8) {
        if v & SLP_EN == 0 {
            return;
        }
        let typ = (v >> SLP_TYP_SHIFT) & SLP_TYP_MASK;
        if typ == S5_SLP_TYP {
            log::info!("acpi: guest entered S5 (soft off)");
            self.counters.power_offs += 1;
            self.requests.power_off();
        } else {
            // Only \_S5 is in the DSDT, so an OS that asks for another state
            // ignored the tables; carry on as if nothing was written.
            self.counters.other_sleeps += 1;
            if let Some(n) = self.odd_access.hit() {
                log::warn!("acpi: guest asked for sleep type {typ}, which kennel does not offer (#{n})");
            }
        }
    }
}

impl BusDevice for AcpiPlatform {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        match (offset, data.len()) {
            (GED_EVENT, 1) => {
                data[0] = std::mem::take(&mut self.pending);
                if data[0] != 0 {
                    self.counters.events_read += 1;
                }
            }
            (SLEEP_STATUS, 1) => {}
            (o, n) => self.ignore("read", o, n),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        match (offset, data) {
            (SLEEP_CONTROL, &[v]) => self.sleep_control(v),
            (SLEEP_STATUS, &[_]) => {}
            (RESET, &[RESET_VALUE]) => {
                log::info!("acpi: guest wrote the reset register");
                self.counters.resets += 1;
                self.requests.reset();
            }
            (o, d) => self.ignore("write", o, d.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Default)]
    struct Seen {
        power_offs: AtomicUsize,
        resets: AtomicUsize,
        irqs: AtomicUsize,
    }
    impl PowerRequests for Seen {
        fn power_off(&self) {
            self.power_offs.fetch_add(1, Ordering::SeqCst);
        }
        fn reset(&self) {
            self.resets.fetch_add(1, Ordering::SeqCst);
        }
    }
    impl EdgeInterrupt for Seen {
        fn trigger(&self) {
            self.irqs.fetch_add(1, Ordering::SeqCst);
        }
    }
    impl Seen {
        fn get(&self) -> (usize, usize, usize) {
            let l = |a: &AtomicUsize| a.load(Ordering::SeqCst);
            (l(&self.power_offs), l(&self.resets), l(&self.irqs))
        }
    }

    fn device() -> (AcpiPlatform, Arc<Seen>) {
        let seen = Arc::new(Seen::default());
        (AcpiPlatform::new(seen.clone(), seen.clone()), seen)
    }

    fn read(d: &mut AcpiPlatform, offset: u64) -> u8 {
        let mut b = [0xAA];
        d.read(offset, &mut b);
        b[0]
    }

    /// What Linux's acpi_hw_extended_sleep() writes for S5.
    const S5: u8 = (S5_SLP_TYP << 2) | SLP_EN;

    #[test]
    fn s5_with_slp_en_powers_off_once_per_write() {
        let (mut d, seen) = device();
        d.write(SLEEP_STATUS, &[0x80]); // Linux clears WAK_STS first
        d.write(SLEEP_CONTROL, &[S5_SLP_TYP << 2]); // type without SLP_EN: nothing yet
        assert_eq!(seen.get(), (0, 0, 0));
        d.write(SLEEP_CONTROL, &[S5]);
        assert_eq!(seen.get(), (1, 0, 0));
        assert_eq!(d.counters().power_offs, 1);
    }

    #[test]
    fn other_sleep_types_are_refused() {
        let (mut d, seen) = device();
        for typ in (0..8).filter(|t| *t != S5_SLP_TYP) {
            d.write(SLEEP_CONTROL, &[(typ << 2) | SLP_EN]);
        }
        assert_eq!(seen.get(), (0, 0, 0));
        assert_eq!(d.counters().other_sleeps, 7);
    }

    #[test]
    fn the_reset_value_resets_and_nothing_else_does() {
        let (mut d, seen) = device();
        for v in (0..=255u8).filter(|v| *v != RESET_VALUE) {
            d.write(RESET, &[v]);
        }
        assert_eq!(seen.get(), (0, 0, 0));
        d.write(RESET, &[RESET_VALUE]);
        assert_eq!(seen.get(), (0, 1, 0));
    }

    #[test]
    fn a_press_raises_the_ged_interrupt_and_is_read_once() {
        let (mut d, seen) = device();
        assert_eq!(read(&mut d, GED_EVENT), 0, "nothing pending before a press");
        d.press_power_button();
        assert_eq!(seen.get(), (0, 0, 1));
        assert_eq!(read(&mut d, GED_EVENT), EVENT_POWER_BUTTON);
        assert_eq!(read(&mut d, GED_EVENT), 0, "reading clears the event");
        // Two presses before the guest looks: one event, two edges.
        d.press_power_button();
        d.press_power_button();
        assert_eq!(seen.get(), (0, 0, 3));
        assert_eq!(read(&mut d, GED_EVENT), EVENT_POWER_BUTTON);
        let c = d.counters();
        assert_eq!((c.button_presses, c.events_read), (3, 2));
    }

    #[test]
    fn hostile_widths_offsets_and_values_do_nothing() {
        let (mut d, seen) = device();
        d.press_power_button();
        for offset in [0, 1, 2, 3, 4, 7, u64::MAX] {
            for len in [0, 2, 4, 8] {
                let mut buf = vec![0xAA; len];
                d.read(offset, &mut buf);
                assert!(buf.iter().all(|b| *b == 0), "offset {offset} len {len} read {buf:?}");
                d.write(offset, &vec![S5; len]);
                d.write(offset, &vec![RESET_VALUE; len]);
            }
        }
        for offset in [4, 5, 0xffff, u64::MAX] {
            d.write(offset, &[S5]);
            d.write(offset, &[RESET_VALUE]);
            assert_eq!(read(&mut d, offset), 0);
        }
        assert_eq!(read(&mut d, SLEEP_CONTROL), 0, "write-only");
        assert_eq!(read(&mut d, RESET), 0, "write-only");
        assert_eq!(read(&mut d, SLEEP_STATUS), 0);
        d.write(GED_EVENT, &[0]); // read-only: the pending press survives
        assert_eq!(seen.get(), (0, 0, 1));
        assert_eq!(read(&mut d, GED_EVENT), EVENT_POWER_BUTTON);
        assert!(d.counters().ignored > 50);
    }
}
