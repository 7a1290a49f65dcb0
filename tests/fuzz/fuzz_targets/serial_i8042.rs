//! The 16550A UART and the i8042 stub driven by arbitrary port accesses.
//!
//! Invariants: no panic; the i8042 requests a reset exactly for a one-byte
//! write of 0xFE at its command port (offset 4) and reads all zeros; UART
//! accesses that are not one byte inside its 8 ports read all ones; the
//! receive FIFO never reports more room than it had at start, and the UART
//! never transmits more bytes than the guest wrote to it.
#![no_main]

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

use kennel_devices::bus::BusDevice;
use kennel_devices::i8042::{ResetRequest, I8042};
use kennel_devices::irq::EdgeInterrupt;
use kennel_devices::serial::Serial;

#[derive(Default)]
struct Count(AtomicUsize);
impl ResetRequest for Count {
    fn request_reset(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}
impl EdgeInterrupt for Count {
    fn trigger(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Collects the UART's output; optionally fails every write.
#[derive(Clone, Default)]
struct Sink {
    out: Arc<Mutex<Vec<u8>>>,
    broken: bool,
}
impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.broken {
            return Err(std::io::Error::other("broken pipe"));
        }
        self.out.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[derive(Arbitrary, Debug)]
enum Op {
    SerialRead { offset: u8, len: u8 },
    SerialWrite { offset: u8, data: Vec<u8> },
    Enqueue(Vec<u8>),
    KbdRead { offset: u8, len: u8 },
    KbdWrite { offset: u8, data: Vec<u8> },
}

#[derive(Arbitrary, Debug)]
struct Input {
    broken_output: bool,
    ops: Vec<Op>,
}

fuzz_target!(|input: Input| {
    let edges = Arc::new(Count::default());
    let sink = Sink { broken: input.broken_output, ..Sink::default() };
    let mut serial = Serial::new(edges.clone(), Box::new(sink.clone()));
    let resets = Arc::new(Count::default());
    let mut kbd = I8042::new(resets.clone());
    let capacity = serial.fifo_capacity();
    let (mut expected_resets, mut thr_writes) = (0usize, 0usize);

    for op in input.ops.into_iter().take(1000) {
        match op {
            Op::SerialRead { offset, len } => {
                let mut d = vec![0x5A; usize::from(len % 10)];
                serial.read(u64::from(offset % 16), &mut d);
                if d.len() != 1 || offset % 16 >= 8 {
                    assert!(d.iter().all(|&b| b == 0xFF), "non-register read {d:x?}");
                }
            }
            Op::SerialWrite { offset, mut data } => {
                data.truncate(9);
                if data.len() == 1 {
                    thr_writes += 1;
                }
                serial.write(u64::from(offset % 16), &data);
            }
            Op::Enqueue(bytes) => {
                let room = serial.fifo_capacity();
                let n = serial.enqueue_input(&bytes);
                assert!(n <= bytes.len() && n <= room, "enqueued {n} of {} into {room}", bytes.len());
            }
            Op::KbdRead { offset, len } => {
                let mut d = vec![0x5A; usize::from(len % 10)];
                kbd.read(u64::from(offset % 8), &mut d);
                assert!(d.iter().all(|&b| b == 0), "i8042 read {d:x?}");
            }
            Op::KbdWrite { offset, mut data } => {
                data.truncate(5);
                let offset = u64::from(offset % 8);
                if offset == 4 && data == [0xFE] {
                    expected_resets += 1;
                }
                kbd.write(offset, &data);
            }
        }
        assert!(serial.fifo_capacity() <= capacity);
        assert_eq!(resets.0.load(Ordering::SeqCst), expected_resets, "i8042 reset without command 0xFE");
        assert!(sink.out.lock().unwrap().len() <= thr_writes, "the UART sent more than it was given");
    }
});
