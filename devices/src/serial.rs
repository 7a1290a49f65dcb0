//! The 8250/16550A UART at 0x3F8 (COM1), from vm-superio, as a bus device.
//!
//! Put it on the port I/O bus with length 8. Its interrupt is an edge (an
//! irqfd on the VMM side); what the guest transmits goes to the writer it is
//! given; the VMM feeds stdin through [`Serial::enqueue_input`].

use std::convert::Infallible;
use std::io::Write;
use std::sync::Arc;

use vm_superio::serial::{Error as UartError, NoEvents};
use vm_superio::Trigger;

use crate::bus::BusDevice;
use crate::irq::EdgeInterrupt;
use crate::log_limit::LogLimit;
use crate::warn_limited;

pub const COM1_BASE: u64 = 0x3F8;
pub const SERIAL_LEN: u64 = 8;

/// vm-superio's interrupt hook, forwarded to our edge interrupt.
pub struct IrqTrigger(pub Arc<dyn EdgeInterrupt>);

impl Trigger for IrqTrigger {
    type E = Infallible;

    fn trigger(&self) -> Result<(), Infallible> {
        self.0.trigger();
        Ok(())
    }
}

pub type SerialOut = Box<dyn Write + Send>;

pub struct Serial {
    uart: vm_superio::Serial<IrqTrigger, NoEvents, SerialOut>,
    write_errors: LogLimit,
}

impl std::fmt::Debug for Serial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Serial").field("fifo_capacity", &self.uart.fifo_capacity()).finish()
    }
}

impl Serial {
    pub fn new(irq: Arc<dyn EdgeInterrupt>, out: SerialOut) -> Self {
        Self { uart: vm_superio::Serial::new(IrqTrigger(irq), out), write_errors: LogLimit::default() }
    }

    /// Queues bytes for the guest to read; returns how many fit in the
    /// receive FIFO (the rest are the caller's to retry later).
    pub fn enqueue_input(&mut self, bytes: &[u8]) -> usize {
        self.uart.enqueue_raw_bytes(bytes).unwrap_or(0)
    }

    /// Free space in the receive FIFO.
    pub fn fifo_capacity(&self) -> usize {
        self.uart.fifo_capacity()
    }
}

/// UART registers are one byte wide; anything else is not a UART access.
fn register(offset: u64, len: usize) -> Option<u8> {
    (len == 1).then_some(offset).filter(|&o| o < SERIAL_LEN).map(|o| o as u8)
}

impl BusDevice for Serial {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match register(offset, data.len()) {
            Some(reg) => data[0] = self.uart.read(reg),
            None => data.fill(0xFF),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(reg) = register(offset, data.len()) else {
            return;
        };
        match self.uart.write(reg, data[0]) {
            Ok(()) => {}
            Err(UartError::IOError(e)) => warn_limited!(self.write_errors, "serial: output lost: {e}"),
            Err(e) => warn_limited!(self.write_errors, "serial: {e:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    #[derive(Default)]
    struct Edges(AtomicUsize);
    impl EdgeInterrupt for Edges {
        fn trigger(&self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    impl Edges {
        fn count(&self) -> usize {
            self.0.load(Ordering::SeqCst)
        }
    }

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    struct Broken;
    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("closed"))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    const IER: u64 = 1;
    const LSR: u64 = 5;

    fn setup() -> (Serial, Arc<Edges>, Sink) {
        let edges = Arc::new(Edges::default());
        let sink = Sink::default();
        (Serial::new(edges.clone(), Box::new(sink.clone())), edges, sink)
    }

    #[test]
    fn output_reaches_the_writer_and_raises_thre() {
        let (mut s, edges, sink) = setup();
        for b in b"hi\n" {
            s.write(0, &[*b]);
        }
        assert_eq!(&*sink.0.lock().unwrap(), b"hi\n");
        assert_eq!(edges.count(), 0, "interrupts masked");
        s.write(IER, &[0x02]); // THR empty
        assert_eq!(edges.count(), 1, "enabling THRE with an empty THR fires at once");
        s.write(0, b"x");
        assert!(edges.count() >= 1);
    }

    #[test]
    fn input_is_queued_read_and_interrupts() {
        let (mut s, edges, _) = setup();
        s.write(IER, &[0x01]); // received data available
        assert_eq!(s.enqueue_input(b"ok"), 2);
        assert_eq!(edges.count(), 1);
        let mut b = [0u8];
        s.read(LSR, &mut b);
        assert_eq!(b[0] & 1, 1, "data ready");
        s.read(0, &mut b);
        assert_eq!(b, *b"o");
        s.read(0, &mut b);
        assert_eq!(b, *b"k");
        s.read(LSR, &mut b);
        assert_eq!(b[0] & 1, 0);
    }

    #[test]
    fn input_respects_fifo_capacity() {
        let (mut s, _, _) = setup();
        let cap = s.fifo_capacity();
        assert_eq!(s.enqueue_input(&vec![b'a'; cap + 10]), cap);
        assert_eq!(s.fifo_capacity(), 0);
        assert_eq!(s.enqueue_input(b"more"), 0);
        assert_eq!(s.enqueue_input(b""), 0);
    }

    #[test]
    fn odd_accesses_and_broken_output_are_harmless() {
        let edges = Arc::new(Edges::default());
        let mut s = Serial::new(edges, Box::new(Broken));
        s.write(0, b"x");
        s.write(0, b"xy");
        s.write(9, b"x");
        let mut w = [0u8; 2];
        s.read(0, &mut w);
        assert_eq!(w, [0xFF; 2]);
        let mut b = [0u8];
        s.read(12, &mut b);
        assert_eq!(b, [0xFF]);
    }
}
