//! From a descriptor chain to a request: header, data streams, status byte.
//!
//! The rings and chains themselves are walked by `virtio-queue`, which
//! already bounds a chain to the queue size (so a looping chain ends) and
//! reads descriptors through checked guest-memory accesses. What is left
//! here is the virtio-blk framing, checked before anything is executed:
//!
//! - the last descriptor must be device-writable and its last byte inside
//!   guest memory: that byte is the status. Without it the request is
//!   *dropped* (returned to the guest unexecuted, used length 0).
//! - otherwise every other flaw ends in IOERR: readable descriptors after
//!   writable ones, no room for the 16-byte header, a descriptor outside
//!   guest memory.
//!
//! Data is not framed further (virtio 1.x drivers may split or merge
//! buffers as they like): the readable bytes after the header are the OUT
//! data, the writable bytes before the status are the IN data.

use std::io::Read;

use virtio_queue::desc::split::Descriptor;
use virtio_queue::{DescriptorChain, Reader, Writer};
use vm_memory::{Address, GuestAddress, GuestMemory, GuestMemoryMmap, Permissions};

use super::regs::{QUEUE_MAX_SIZE, REQ_HEADER_LEN};

/// A chain the device can act on.
pub(super) struct Request<'a> {
    pub kind: u32,
    pub sector: u64,
    /// The readable bytes after the header.
    pub data_out: u64,
    /// The writable bytes before the status byte.
    pub data_in: u64,
    /// Where those bytes are, in order: what a read fills straight from
    /// the disk. From the same walk as `status`, so the two agree however
    /// the driver rewrites the table meanwhile; each checked writable.
    pub data_in_at: Vec<(GuestAddress, u32)>,
    pub reader: Reader<'a>,
    pub writer: Writer<'a>,
    pub status: GuestAddress,
}

/// Why a chain cannot be executed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Malformed {
    /// No usable status byte: return the chain unexecuted.
    NoStatus(&'static str),
    /// Complete with IOERR in the status byte at this address.
    Bad(GuestAddress, &'static str),
}

/// Longest chain accepted. Without indirect descriptors (not offered) a
/// chain cannot be longer than the ring; `virtio-queue` follows indirect
/// tables anyway, so this also bounds what a driver that ignores the
/// feature bits can make us collect.
const MAX_CHAIN: usize = QUEUE_MAX_SIZE as usize;

pub(super) type Chain<'a> = DescriptorChain<&'a GuestMemoryMmap>;

/// Checks the framing of `chain` and opens its data streams.
pub(super) fn parse<'a>(mem: &'a GuestMemoryMmap, chain: Chain<'a>) -> Result<Request<'a>, Malformed> {
    let descs: Vec<Descriptor> = chain.clone().take(MAX_CHAIN + 1).collect();
    let last = descs.last().ok_or(Malformed::NoStatus("empty chain (head outside the table?)"))?;
    // The iterator stops without saying why; a last descriptor that still
    // points on means it was cut short: a loop, a chain longer than the
    // ring, or a `next` outside the table.
    if descs.len() > MAX_CHAIN || last.has_next() {
        return Err(Malformed::NoStatus("chain loops, is longer than the ring, or leaves the table"));
    }
    if !last.is_write_only() || last.len() == 0 {
        return Err(Malformed::NoStatus("the last descriptor is not a device-writable status byte"));
    }
    let status = last
        .addr()
        .checked_add(u64::from(last.len()) - 1)
        .filter(|&a| mem.check_range(a, 1, Permissions::Write))
        .ok_or(Malformed::NoStatus("the status byte is outside guest memory"))?;
    let bad = |why| Malformed::Bad(status, why);

    let first_writable = descs.iter().position(|d| d.is_write_only()).unwrap_or(descs.len());
    if descs[first_writable..].iter().any(|d| !d.is_write_only()) {
        return Err(bad("a device-readable descriptor follows a device-writable one"));
    }
    let sum = |ds: &[Descriptor]| ds.iter().map(|d| u64::from(d.len())).sum::<u64>();
    if sum(&descs[..first_writable]) < REQ_HEADER_LEN {
        return Err(bad("no room for the 16-byte request header"));
    }

    let mut data_in_at = Vec::with_capacity(descs.len() - first_writable);
    for (i, d) in descs.iter().enumerate().skip(first_writable) {
        // The status byte is the last one of the last descriptor.
        let len = if i + 1 == descs.len() { d.len() - 1 } else { d.len() };
        if len == 0 {
            continue;
        }
        if !mem.check_range(d.addr(), len as usize, Permissions::Write) {
            return Err(bad("a writable descriptor is outside guest memory"));
        }
        data_in_at.push((d.addr(), len));
    }

    // Both constructors check every descriptor against guest memory.
    let mut reader =
        Reader::new(mem, chain.clone()).map_err(|_| bad("a readable descriptor is outside guest memory"))?;
    let mut writer =
        Writer::new(mem, chain).map_err(|_| bad("a writable descriptor is outside guest memory"))?;
    let mut header = [0u8; REQ_HEADER_LEN as usize];
    reader.read_exact(&mut header).map_err(|_| bad("the request header cannot be read"))?;
    // Lengths from the streams themselves, not from the first walk: another
    // vCPU may rewrite the table in between, and what gets copied is what
    // the streams hold. The status byte is split off the writer's end.
    let data_in = writer.available_bytes().checked_sub(1).ok_or(bad("the chain changed under us"))?;
    writer.split_at(data_in).map_err(|_| bad("the status byte cannot be split off"))?;
    if data_in_at.iter().map(|&(_, n)| n as usize).sum::<usize>() != data_in {
        return Err(bad("the chain changed under us"));
    }

    let [t0, t1, t2, t3, _, _, _, _, s @ ..] = header;
    Ok(Request {
        kind: u32::from_le_bytes([t0, t1, t2, t3]),
        sector: u64::from_le_bytes(s),
        data_out: reader.available_bytes() as u64,
        data_in: data_in as u64,
        data_in_at,
        reader,
        writer,
        status,
    })
}
