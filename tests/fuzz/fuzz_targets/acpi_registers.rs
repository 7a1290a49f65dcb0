//! The hardware-reduced ACPI registers (sleep control and status, reset,
//! GED event) driven by arbitrary port accesses and power-button presses.
//!
//! Invariants, checked against a model written from the register table:
//! no panic; a power-off exactly for a one-byte write to sleep control with
//! SLP_EN set and SLP_TYP = S5; a reset exactly for a one-byte write of the
//! reset value to the reset register; one GED edge per press; the event
//! register reads the power-button bit once after any number of presses
//! and 0 otherwise; every other read is all zeros.
#![no_main]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

use kennel_devices::acpi::{self, AcpiPlatform, PowerRequests};
use kennel_devices::bus::BusDevice;
use kennel_devices::irq::EdgeInterrupt;

#[derive(Default)]
struct Seen {
    power_offs: AtomicUsize,
    resets: AtomicUsize,
    edges: AtomicUsize,
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
        self.edges.fetch_add(1, Ordering::SeqCst);
    }
}

#[derive(Arbitrary, Debug)]
enum Op {
    Read { offset: u8, len: u8 },
    Write { offset: u8, data: Vec<u8> },
    Press,
}

fuzz_target!(|ops: Vec<Op>| {
    let seen = Arc::new(Seen::default());
    let mut dev = AcpiPlatform::new(seen.clone(), seen.clone());
    let (mut power_offs, mut resets, mut presses, mut pending) = (0, 0, 0, false);
    for op in ops.into_iter().take(1000) {
        match op {
            Op::Read { offset, len } => {
                let mut buf = vec![0xAA; usize::from(len % 9)];
                let offset = u64::from(offset % 8);
                dev.read(offset, &mut buf);
                let want: Vec<u8> = match (offset, buf.len()) {
                    (acpi::GED_EVENT, 1) => {
                        vec![if std::mem::take(&mut pending) { acpi::EVENT_POWER_BUTTON } else { 0 }]
                    }
                    _ => vec![0; buf.len()],
                };
                assert_eq!(buf, want, "read {offset} len {len}");
            }
            Op::Write { offset, data } => {
                let offset = u64::from(offset % 8);
                let data: Vec<u8> = data.into_iter().take(8).collect();
                dev.write(offset, &data);
                match (offset, data.as_slice()) {
                    (acpi::SLEEP_CONTROL, &[v]) if v & (1 << 5) != 0 && (v >> 2) & 7 == acpi::S5_SLP_TYP => {
                        power_offs += 1
                    }
                    (acpi::RESET, &[acpi::RESET_VALUE]) => resets += 1,
                    _ => {}
                }
            }
            Op::Press => {
                dev.press_power_button();
                presses += 1;
                pending = true;
            }
        }
        let got = |a: &AtomicUsize| a.load(Ordering::SeqCst);
        assert_eq!(got(&seen.power_offs), power_offs);
        assert_eq!(got(&seen.resets), resets);
        assert_eq!(got(&seen.edges), presses);
    }
});
