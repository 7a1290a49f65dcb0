//! A hostile or broken driver: every case ends in an error status or a
//! dropped request, nothing outside guest RAM is written, and the next
//! valid request works.

use super::*;

/// Far outside the 4 MiB of guest memory.
const NOWHERE: u64 = 0xFFFF_FFFF_0000;

/// Writes a read header for `sector` at HDR.
fn header(rig: &Rig, kind: u32, sector: u64) {
    let mut h = [0u8; 16];
    h[..4].copy_from_slice(&kind.to_le_bytes());
    h[8..].copy_from_slice(&sector.to_le_bytes());
    rig.mem.write_slice(&h, GuestAddress(HDR)).unwrap();
    rig.mem.write_obj(UNTOUCHED, GuestAddress(STATUS_AT)).unwrap();
}

/// Submits the chain at descriptor 0; returns its used entry and status.
fn run(rig: &mut Rig) -> ((u32, u32), u8) {
    rig.push(0);
    rig.kick();
    let used = rig.take_used();
    assert_eq!(used.len(), 1);
    (used[0], rig.status_byte())
}

/// The device still serves a plain read correctly.
fn still_works(rig: &mut Rig) {
    let disk = rig.disk_bytes();
    let (done, data) = rig.read(2, 1024);
    assert_eq!(done, Done { status: S_OK, used_len: 1025 });
    assert_eq!(data, disk[1024..2048]);
}

#[test]
fn looping_chain_is_dropped() {
    let mut rig = Rig::new();
    header(&rig, T_IN, 0);
    rig.put_desc(0, HDR, 16, NEXT, 1);
    rig.put_desc(1, STATUS_AT, 1, NEXT | WRITE, 0);
    assert_eq!(run(&mut rig), ((0, 0), UNTOUCHED));
    // A descriptor pointing at itself.
    rig.put_desc(0, HDR, 16, NEXT, 0);
    assert_eq!(run(&mut rig), ((0, 0), UNTOUCHED));
    // `next` outside the table.
    rig.put_desc(0, HDR, 16, NEXT, 999);
    assert_eq!(run(&mut rig), ((0, 0), UNTOUCHED));
    assert_eq!(rig.dev().counters().dropped, 3);
    still_works(&mut rig);
}

#[test]
fn descriptors_outside_guest_memory() {
    let mut rig = Rig::new();
    // Data buffer outside memory: IOERR, status written.
    header(&rig, T_IN, 0);
    rig.put_desc(0, HDR, 16, NEXT, 1);
    rig.put_desc(1, NOWHERE, 512, NEXT | WRITE, 2);
    rig.put_desc(2, STATUS_AT, 1, WRITE, 0);
    assert_eq!(run(&mut rig), ((0, 1), S_IOERR));
    // Straddling the end of memory.
    rig.put_desc(1, MEM_SIZE as u64 - 256, 512, NEXT | WRITE, 2);
    assert_eq!(run(&mut rig), ((0, 1), S_IOERR));
    // Header outside memory.
    rig.put_desc(0, NOWHERE, 16, NEXT, 1);
    rig.put_desc(1, DATA, 512, NEXT | WRITE, 2);
    assert_eq!(run(&mut rig), ((0, 1), S_IOERR));
    // Address overflow.
    rig.put_desc(0, u64::MAX - 4, 16, NEXT, 1);
    assert_eq!(run(&mut rig), ((0, 1), S_IOERR));
    // Status outside memory: nowhere to report, dropped.
    header(&rig, T_IN, 0);
    rig.put_desc(0, HDR, 16, NEXT, 1);
    rig.put_desc(2, NOWHERE, 1, WRITE, 0);
    assert_eq!(run(&mut rig), ((0, 0), UNTOUCHED));
    rig.put_desc(2, u64::MAX, 1, WRITE, 0);
    assert_eq!(run(&mut rig).0, (0, 0));
    let c = rig.dev().counters();
    assert_eq!((c.errors, c.dropped, c.reads), (4, 2, 0));
    still_works(&mut rig);
}

#[test]
fn four_gib_lengths() {
    let mut rig = Rig::new();
    let before = rig.disk_bytes();
    for (kind, flags) in [(T_IN, NEXT | WRITE), (T_OUT, NEXT)] {
        for len in [0xFFFF_FE00, 0x8000_0000, u32::MAX] {
            header(&rig, kind, 0);
            rig.put_desc(0, HDR, 16, NEXT, 1);
            rig.put_desc(1, DATA, len, flags, 2);
            rig.put_desc(2, STATUS_AT, 1, WRITE, 0);
            // With the header, u32::MAX makes the chain longer than 2^32
            // bytes; virtio-queue stops walking it there, so it has no
            // status and is dropped. The others fit but leave guest RAM.
            let want = if len == u32::MAX { ((0, 0), UNTOUCHED) } else { ((0, 1), S_IOERR) };
            assert_eq!(run(&mut rig), want, "type {kind} len {len:#x}");
        }
    }
    // The status descriptor itself 4 GiB long: its last byte is outside.
    header(&rig, T_IN, 0);
    rig.put_desc(1, STATUS_AT, u32::MAX, WRITE, 0);
    rig.put_desc(0, HDR, 16, NEXT, 1);
    assert_eq!(run(&mut rig).0, (0, 0));
    // Two descriptors whose lengths add up past 4 GiB.
    rig.put_desc(0, HDR, 16, NEXT, 1);
    rig.put_desc(1, DATA, 0xFFFF_0000, NEXT | WRITE, 2);
    rig.put_desc(2, DATA, 0x0002_0000, WRITE, 0);
    assert_eq!(run(&mut rig).0 .1, 0, "dropped or refused, never executed");
    assert_eq!(rig.disk_bytes(), before);
    let c = rig.dev().counters();
    assert_eq!(c.reads + c.writes, 0);
    still_works(&mut rig);
}

#[test]
fn chains_without_a_writable_status_byte() {
    let mut rig = Rig::new();
    header(&rig, T_FLUSH, 0);
    // Only readable descriptors.
    rig.put_desc(0, HDR, 16, NEXT, 1);
    rig.put_desc(1, STATUS_AT, 1, 0, 0);
    assert_eq!(run(&mut rig), ((0, 0), UNTOUCHED));
    // A zero-length status descriptor.
    rig.put_desc(1, STATUS_AT, 0, WRITE, 0);
    assert_eq!(run(&mut rig), ((0, 0), UNTOUCHED));
    // A lone header.
    rig.put_desc(0, HDR, 16, 0, 0);
    assert_eq!(run(&mut rig), ((0, 0), UNTOUCHED));
    assert_eq!(rig.dev().counters().flushes, 0);
    assert_eq!(rig.dev().counters().dropped, 3);
    assert!(rig.faults.calls().is_empty());
    still_works(&mut rig);
}

#[test]
fn wrong_descriptor_directions() {
    let mut rig = Rig::new();
    let before = rig.disk_bytes();
    // A read whose data buffer is device-readable.
    rig.mem.write_slice(&[0xAA; 512], GuestAddress(DATA)).unwrap();
    assert_eq!(rig.submit(T_IN, 0, Some((512, false))).status, S_IOERR);
    let mut buf = [0u8; 512];
    rig.mem.read_slice(&mut buf, GuestAddress(DATA)).unwrap();
    assert_eq!(buf, [0xAA; 512]);
    // A write whose data buffer is device-writable.
    assert_eq!(rig.submit(T_OUT, 0, Some((512, true))).status, S_IOERR);
    // The header marked writable: no readable part at all.
    header(&rig, T_IN, 0);
    rig.put_desc(0, HDR, 16, NEXT | WRITE, 1);
    rig.put_desc(1, STATUS_AT, 1, WRITE, 0);
    assert_eq!(run(&mut rig).1, S_IOERR);
    // Readable after writable.
    rig.put_desc(0, HDR, 16, NEXT, 1);
    rig.put_desc(1, DATA, 512, NEXT | WRITE, 2);
    rig.put_desc(2, DATA + 512, 512, NEXT, 3);
    rig.put_desc(3, STATUS_AT, 1, WRITE, 0);
    assert_eq!(run(&mut rig).1, S_IOERR);
    // A short header.
    rig.put_desc(0, HDR, 8, NEXT, 3);
    assert_eq!(run(&mut rig).1, S_IOERR);
    assert_eq!(rig.disk_bytes(), before);
    assert_eq!(rig.dev().counters().errors, 5);
    still_works(&mut rig);
}

#[test]
fn head_index_outside_the_ring() {
    let mut rig = Rig::new();
    rig.push(QUEUE_MAX_SIZE);
    rig.push(u16::MAX);
    rig.kick();
    assert!(rig.take_used().is_empty(), "no slot to return them to");
    assert_eq!(rig.dev().counters().dropped, 2);
    still_works(&mut rig);
}

#[test]
fn available_index_running_ahead_stops_the_queue() {
    let mut rig = Rig::new();
    rig.mem.write_obj(rig.avail_idx.wrapping_add(1000), GuestAddress(AVAIL + 2)).unwrap();
    rig.kick();
    assert!(rig.take_used().is_empty());
    assert_ne!(rig.status() & S_NEEDS_RESET, 0);
    assert_eq!(rig.isr(), ISR_CONFIG, "the driver is told");
    rig.mem.write_obj(rig.avail_idx, GuestAddress(AVAIL + 2)).unwrap();
    rig.push(0);
    rig.kick();
    assert!(rig.take_used().is_empty(), "stopped until reset");
    rig.linux_init();
    still_works(&mut rig);
}

#[test]
fn rings_outside_guest_memory_are_refused() {
    let mut rig = Rig::bare(&pattern(8192, 0), false);
    for (desc, avail, used) in [(NOWHERE, AVAIL, USED), (DESC, MEM_SIZE as u64 - 16, USED), (DESC, AVAIL, 0)]
    {
        assert!(rig.negotiate(F_VERSION_1));
        rig.setup_queue(desc, avail, used);
        assert_ne!(rig.status() & S_NEEDS_RESET, 0);
        rig.add_status(S_DRIVER_OK);
        rig.push(0);
        rig.kick();
        assert!(rig.take_used().is_empty());
    }
    // Misaligned and oversized queues too.
    assert!(rig.negotiate(F_VERSION_1));
    rig.bar_w(COMMON_OFFSET + QUEUE_SIZE, 2, 3);
    rig.setup_queue(DESC + 1, AVAIL, USED);
    assert_ne!(rig.status() & S_NEEDS_RESET, 0);
    rig.linux_init();
    still_works(&mut rig);
}

#[test]
fn notifications_before_driver_ok_are_ignored() {
    let mut rig = Rig::bare(&pattern(8192, 0), false);
    assert!(rig.negotiate(F_VERSION_1));
    rig.setup_queue(DESC, AVAIL, USED);
    header(&rig, T_IN, 0);
    rig.put_desc(0, HDR, 16, NEXT, 1);
    rig.put_desc(1, STATUS_AT, 1, WRITE, 0);
    rig.push(0);
    rig.kick();
    assert!(rig.take_used().is_empty());
    // Notifications for other queues, or of odd widths, do nothing either.
    rig.add_status(S_DRIVER_OK);
    rig.bar_w(NOTIFY_OFFSET, 2, 1);
    rig.bar_w(NOTIFY_OFFSET + 2, 2, 0);
    rig.bar_w(NOTIFY_OFFSET, 1, 0);
    assert!(rig.take_used().is_empty());
    rig.kick();
    assert_eq!(rig.take_used(), vec![(0, 1)]);
    assert_eq!(rig.status_byte(), S_OK, "a zero-length read succeeds");
    // A driver that set FAILED gets nothing done.
    rig.add_status(S_FAILED);
    rig.push(0);
    rig.kick();
    assert!(rig.take_used().is_empty());
}

#[test]
fn requests_larger_than_advertised_fail_without_touching_anything() {
    // Enough guest memory and disk for a buffer past seg_max * size_max;
    // both are sparse, so nothing is really allocated.
    let huge = MAX_REQUEST_BYTES + 512;
    let mut rig = Rig::custom(&[], 2 * huge, 2 * huge as usize, false);
    rig.linux_init();
    for (kind, flags) in [(T_IN, NEXT | WRITE), (T_OUT, NEXT)] {
        header(&rig, kind, 0);
        rig.put_desc(0, HDR, 16, NEXT, 1);
        rig.put_desc(1, DATA, huge as u32, flags, 2);
        rig.put_desc(2, STATUS_AT, 1, WRITE, 0);
        assert_eq!(run(&mut rig), ((0, 1), S_IOERR));
    }
    assert!(rig.faults.calls().is_empty());
    let c = rig.dev().counters();
    assert_eq!((c.errors, c.bytes_read, c.bytes_written), (2, 0, 0));
}
