//! Executing requests against the disk image, with the fault hook.
//!
//! Every request ends in exactly one status byte and one counter. Reads go
//! from the image straight into the guest's buffers (`guest_io`); writes
//! move through one fixed buffer in chunks. Either way a request's size
//! costs time (bounded by [`MAX_REQUEST_BYTES`]), never memory.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex, PoisonError};

use vm_memory::{Bytes, GuestMemoryMmap};

use super::guest_io;
use super::overlay::Overlay;
use super::regs::*;
use super::request::{parse, Chain, Malformed, Request};
use super::{BlkCounters, BlockFaults, BlockOp, FaultDecision, MAX_FAULT_DELAY};
use crate::log_limit::LogLimit;
use crate::warn_limited;

/// Bytes copied per step between the disk and guest memory.
const CHUNK: usize = 64 * 1024;

#[derive(Default)]
struct Logs {
    malformed: LogLimit,
    rejected: LogLimit,
    host_io: LogLimit,
    delay_capped: LogLimit,
}

/// How a request ended: the status byte and how many data bytes the device
/// wrote into the guest's buffers.
type Outcome = (u8, u64);

pub(super) struct Engine {
    disk: File,
    /// In 512-byte sectors.
    capacity: u64,
    readonly: bool,
    overlay: Option<Arc<Mutex<Overlay>>>,
    faults: Arc<dyn BlockFaults>,
    buf: Vec<u8>,
    pub counters: BlkCounters,
    logs: Logs,
}

impl Engine {
    pub fn new(
        disk: File,
        capacity: u64,
        readonly: bool,
        overlay: Option<Arc<Mutex<Overlay>>>,
        faults: Arc<dyn BlockFaults>,
    ) -> Self {
        Self {
            disk,
            capacity,
            readonly,
            overlay,
            faults,
            buf: vec![0; CHUNK],
            counters: BlkCounters::default(),
            logs: Logs::default(),
        }
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Handles one chain. Returns the used length for the used ring: the
    /// bytes written into the chain, status included; 0 when dropped.
    pub fn handle(&mut self, mem: &GuestMemoryMmap, chain: Chain<'_>) -> u32 {
        let (status_addr, (status, written)) = match parse(mem, chain) {
            Ok(req) => (req.status, self.execute(mem, req)),
            Err(Malformed::Bad(addr, why)) => {
                warn_limited!(self.logs.malformed, "virtio-blk: malformed request: {why}; IOERR");
                (addr, (S_IOERR, 0))
            }
            Err(Malformed::NoStatus(why)) => {
                warn_limited!(self.logs.malformed, "virtio-blk: malformed request: {why}; dropped");
                self.counters.dropped += 1;
                return 0;
            }
        };
        if mem.write_obj(status, status_addr).is_err() {
            // `parse` checked the address; only a memory map change could
            // get here, and there is none at run time.
            self.counters.dropped += 1;
            return 0;
        }
        match status {
            S_OK => {}
            S_UNSUPP => self.counters.unsupported += 1,
            _ => self.counters.errors += 1,
        }
        // written <= MAX_REQUEST_BYTES < 4 GiB, but stay total anyway.
        u32::try_from(written.saturating_add(1)).unwrap_or(u32::MAX)
    }

    fn execute(&mut self, mem: &GuestMemoryMmap, mut req: Request<'_>) -> Outcome {
        match req.kind {
            T_IN => self.read(mem, &req),
            T_OUT => self.write(&mut req),
            T_FLUSH => self.flush(),
            T_GET_ID => self.get_id(&mut req),
            other => {
                warn_limited!(self.logs.rejected, "virtio-blk: request type {other} unsupported");
                (S_UNSUPP, 0)
            }
        }
    }

    /// Validates the data length and range of an IN or OUT request;
    /// returns (byte offset, bytes).
    fn range(&mut self, what: &str, sector: u64, len: u64) -> Option<(u64, u64)> {
        let why = if len % SECTOR_SIZE != 0 {
            "data length is not a multiple of 512"
        } else if len > MAX_REQUEST_BYTES {
            "data length exceeds seg_max * size_max"
        } else if sector.checked_add(len / SECTOR_SIZE).is_none_or(|end| end > self.capacity) {
            "beyond the end of the disk"
        } else {
            return Some((sector * SECTOR_SIZE, len));
        };
        warn_limited!(
            self.logs.rejected,
            "virtio-blk: {what} of {len} bytes at sector {sector} (capacity {}): {why}; IOERR",
            self.capacity
        );
        None
    }

    /// Asks the fault policy; true when the request may go ahead.
    fn may_proceed(&mut self, op: BlockOp, sector: u64, sectors: u64) -> bool {
        match self.faults.decide(op, sector, sectors) {
            FaultDecision::Proceed => true,
            FaultDecision::IoError => {
                self.counters.faults_injected += 1;
                false
            }
            FaultDecision::Delay(d) => {
                self.counters.faults_injected += 1;
                if d > MAX_FAULT_DELAY {
                    warn_limited!(
                        self.logs.delay_capped,
                        "virtio-blk: fault delay {d:?} capped to {MAX_FAULT_DELAY:?}"
                    );
                }
                std::thread::sleep(d.min(MAX_FAULT_DELAY));
                true
            }
        }
    }

    fn host_error(&mut self, what: &str, e: std::io::Error) {
        warn_limited!(self.logs.host_io, "virtio-blk: {what} failed: {e}; IOERR");
    }

    fn read(&mut self, mem: &GuestMemoryMmap, req: &Request<'_>) -> Outcome {
        if req.data_out != 0 {
            warn_limited!(self.logs.malformed, "virtio-blk: read request carries data for the device; IOERR");
            return (S_IOERR, 0);
        }
        let Some((pos, len)) = self.range("read", req.sector, req.data_in) else {
            return (S_IOERR, 0);
        };
        if !self.may_proceed(BlockOp::Read, req.sector, len / SECTOR_SIZE) {
            return (S_IOERR, 0);
        }
        let step = guest_io::read_into(&self.disk, pos, mem, &req.data_in_at).and_then(|()| {
            let Some(o) = &self.overlay else {
                return Ok(());
            };
            // A poisoned lock only means another device panicked mid-copy;
            // the sectors it holds are still whole.
            let o = o.lock().unwrap_or_else(PoisonError::into_inner);
            for (i, kept) in o.held(req.sector, len / SECTOR_SIZE) {
                guest_io::write_at(mem, &req.data_in_at, i * SECTOR_SIZE, kept)?;
            }
            Ok(())
        });
        if let Err(e) = step {
            // The guest's buffers may hold part of the data: the status
            // says none of it counts.
            self.host_error("disk read", e);
            return (S_IOERR, 0);
        }
        self.counters.bytes_read += len;
        self.counters.reads += 1;
        (S_OK, len)
    }

    fn write(&mut self, req: &mut Request<'_>) -> Outcome {
        if req.data_in != 0 {
            warn_limited!(self.logs.malformed, "virtio-blk: write request has writable data buffers; IOERR");
            return (S_IOERR, 0);
        }
        if self.readonly {
            warn_limited!(self.logs.rejected, "virtio-blk: write to a read-only disk; IOERR");
            return (S_IOERR, 0);
        }
        let Some((pos, len)) = self.range("write", req.sector, req.data_out) else {
            return (S_IOERR, 0);
        };
        if !self.may_proceed(BlockOp::Write, req.sector, len / SECTOR_SIZE) {
            return (S_IOERR, 0);
        }
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(CHUNK as u64) as usize;
            let buf = &mut self.buf[..n];
            let step = req.reader.read_exact(buf).and_then(|()| match &self.overlay {
                None => self.disk.write_all_at(buf, pos + done),
                Some(o) => o
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .write((pos + done) / SECTOR_SIZE, buf)
                    .map_err(|_| std::io::Error::other("the snapshot overlay is full")),
            });
            if let Err(e) = step {
                self.host_error("disk write", e);
                return (S_IOERR, 0);
            }
            done += n as u64;
            self.counters.bytes_written += n as u64;
        }
        self.counters.writes += 1;
        (S_OK, 0)
    }

    /// Flushes reach the disk for real: the whole point of a flush test
    /// is to see what survives a reset.
    fn flush(&mut self) -> Outcome {
        if !self.may_proceed(BlockOp::Flush, 0, 0) {
            return (S_IOERR, 0);
        }
        // A snapshot's writes live in memory: nothing to make durable.
        if self.overlay.is_some() {
            self.counters.flushes += 1;
            return (S_OK, 0);
        }
        if let Err(e) = self.disk.sync_data() {
            self.host_error("disk flush", e);
            return (S_IOERR, 0);
        }
        self.counters.flushes += 1;
        (S_OK, 0)
    }

    fn get_id(&mut self, req: &mut Request<'_>) -> Outcome {
        if !self.may_proceed(BlockOp::GetId, 0, 0) {
            return (S_IOERR, 0);
        }
        let mut id = [0u8; ID_BYTES];
        id[..SERIAL.len()].copy_from_slice(SERIAL);
        let n = (req.data_in as usize).min(ID_BYTES);
        if let Err(e) = req.writer.write_all(&id[..n]) {
            self.host_error("get-id copy", e);
            return (S_IOERR, 0);
        }
        self.counters.get_ids += 1;
        (S_OK, n as u64)
    }
}
