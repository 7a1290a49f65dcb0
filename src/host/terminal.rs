//! The host terminal: raw mode while the guest owns the console, and
//! restored on every way out (drop, and the signal path in main).

use std::io::Write;
use std::os::fd::AsRawFd;
use std::sync::Mutex;

static SAVED: Mutex<Option<libc::termios>> = Mutex::new(None);

/// Puts stdin in raw mode if it is a terminal; a guard restores it.
pub struct RawMode(());

impl RawMode {
    pub fn enter() -> Option<RawMode> {
        let fd = std::io::stdin().as_raw_fd();
        // SAFETY: isatty and tcgetattr only read the fd's state into our struct.
        unsafe {
            if libc::isatty(fd) != 1 {
                return None;
            }
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(fd, &mut t) != 0 {
                return None;
            }
            *kennel_devices::bus::lock(&SAVED) = Some(t);
            let mut raw = t;
            libc::cfmakeraw(&mut raw);
            // Keep output processing so host-side log lines still start at column 0.
            raw.c_oflag |= libc::OPOST;
            if libc::tcsetattr(fd, libc::TCSANOW, &raw) != 0 {
                return None;
            }
        }
        Some(RawMode(()))
    }
}

/// Restores the terminal if raw mode was entered; safe to call twice.
pub fn restore() {
    if let Some(t) = kennel_devices::bus::lock(&SAVED).take() {
        // SAFETY: restores attributes saved from this same fd.
        unsafe { libc::tcsetattr(std::io::stdin().as_raw_fd(), libc::TCSANOW, &t) };
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        restore();
    }
}

/// The guest console's output: straight to stdout, flushed per write so a
/// reader (a test, `tee`) sees each line as the guest prints it.
pub struct ConsoleOut;

impl Write for ConsoleOut {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut out = std::io::stdout().lock();
        out.write_all(buf)?;
        out.flush()?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stdout().flush()
    }
}
