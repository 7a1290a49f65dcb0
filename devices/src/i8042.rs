//! Just enough of the i8042 keyboard controller for Linux to reboot.
//!
//! Without ACPI, Linux reboots by writing 0xFE ("pulse the reset line") to
//! the controller's command port after waiting for its input buffer to be
//! empty. Put this on the port I/O bus at 0x60 with length 5: offset 0 is the
//! data port, offset 4 status (read) and command (write); 0x61..0x63 inside
//! the range are ignored. There is no keyboard: status always reads 0 (no
//! output data, input buffer empty), so Linux's i8042 driver finds nothing
//! to talk to and the reboot path never waits.

use std::sync::Arc;

use crate::bus::BusDevice;

pub const I8042_BASE: u64 = 0x60;
pub const I8042_LEN: u64 = 5;

const STATUS_COMMAND: u64 = 4;
const CMD_RESET: u8 = 0xFE;

/// Asks the VMM to reset the VM. Called from a vCPU thread with the i8042's
/// lock held; it should only record the request.
pub trait ResetRequest: Send + Sync {
    fn request_reset(&self);
}

pub struct I8042 {
    reset: Arc<dyn ResetRequest>,
}

impl std::fmt::Debug for I8042 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("I8042").finish_non_exhaustive()
    }
}

impl I8042 {
    pub fn new(reset: Arc<dyn ResetRequest>) -> Self {
        Self { reset }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        // Data (offset 0) and status (offset 4) both read 0, and so does
        // everything else in the range.
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset == STATUS_COMMAND && data == [CMD_RESET] {
            log::info!("i8042: guest pulsed the reset line");
            self.reset.request_reset();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Default)]
    struct Count(AtomicUsize);
    impl ResetRequest for Count {
        fn request_reset(&self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn command_fe_requests_a_reset() {
        let count = Arc::new(Count::default());
        let mut kbd = I8042::new(count.clone());
        let mut status = [0xAAu8];
        kbd.read(4, &mut status);
        assert_eq!(status, [0], "input buffer empty: Linux may write the command");
        kbd.write(4, &[0xFE]);
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn everything_else_is_ignored() {
        let count = Arc::new(Count::default());
        let mut kbd = I8042::new(count.clone());
        kbd.write(0, &[0xFE]);
        kbd.write(1, &[0xFE]);
        kbd.write(4, &[0xAA]);
        kbd.write(4, &[0xFE, 0x00]);
        kbd.write(4, &[]);
        for off in 0..8 {
            let mut b = [0xAAu8; 4];
            kbd.read(off, &mut b);
            assert_eq!(b, [0; 4]);
        }
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
    }
}
