//! Well-formed requests, their results on the disk file, and the fault hook.

use std::time::{Duration, Instant};

use super::*;

#[test]
fn read_returns_the_files_bytes() {
    let disk = pattern(1 << 20, 3);
    let mut rig = Rig::with_disk(&disk, false);
    let (done, data) = rig.read(3, 4096);
    assert_eq!(done, Done { status: S_OK, used_len: 4097 });
    assert_eq!(data, disk[3 * 512..][..4096]);
    // Larger than the copy buffer: several chunks, one request.
    let (done, data) = rig.read(100, 300 * 1024);
    assert_eq!(done.status, S_OK);
    assert_eq!(data, disk[100 * 512..][..300 * 1024]);
    let last = rig.dev().capacity() - 1;
    assert_eq!(rig.read(last, 512).1, disk[disk.len() - 512..]);
    let c = rig.dev().counters();
    assert_eq!((c.reads, c.bytes_read, c.errors), (3, 4096 + 300 * 1024 + 512, 0));
}

#[test]
fn write_reaches_the_file() {
    let mut rig = Rig::new();
    let before = rig.disk_bytes();
    let data = pattern(200 * 1024, 9);
    assert_eq!(rig.write(5, &data), Done { status: S_OK, used_len: 1 });
    let after = rig.disk_bytes();
    assert_eq!(after[5 * 512..][..data.len()], data[..]);
    assert_eq!(after[..5 * 512], before[..5 * 512], "nothing before the range");
    assert_eq!(after[5 * 512 + data.len()..], before[5 * 512 + data.len()..], "nothing after");
    // And reads see it.
    assert_eq!(rig.read(5, 1024).1, data[..1024]);
    let c = rig.dev().counters();
    assert_eq!((c.writes, c.bytes_written), (1, data.len() as u64));
}

#[test]
fn flush_and_get_id() {
    let mut rig = Rig::new();
    assert_eq!(rig.submit(T_FLUSH, 0, None), Done { status: S_OK, used_len: 1 });
    assert_eq!(rig.dev().counters().flushes, 1);
    let done = rig.submit(T_GET_ID, 0, Some((20, true)));
    assert_eq!(done, Done { status: S_OK, used_len: 21 });
    let mut id = [0u8; 20];
    rig.mem.read_slice(&mut id, GuestAddress(DATA)).unwrap();
    assert_eq!(&id, b"kennel-rootfs\0\0\0\0\0\0\0");
    assert_eq!(rig.dev().counters().get_ids, 1);
    let calls = rig.faults.calls();
    assert_eq!(calls, vec![(BlockOp::Flush, 0, 0), (BlockOp::GetId, 0, 0)]);
}

#[test]
fn unsupported_types_answer_unsupp() {
    let mut rig = Rig::new();
    let before = rig.disk_bytes();
    for kind in [2, 11, 13, 14, 0x8000_0000, u32::MAX] {
        assert_eq!(rig.submit(kind, 0, Some((512, false))).status, S_UNSUPP, "type {kind}");
    }
    assert_eq!(rig.disk_bytes(), before);
    assert_eq!(rig.dev().counters().unsupported, 6);
    assert!(rig.faults.calls().is_empty(), "the policy is not asked about them");
}

#[test]
fn writes_to_a_read_only_disk_fail() {
    let disk = pattern(64 * 1024, 5);
    let mut rig = Rig::with_disk(&disk, true);
    assert_eq!(rig.write(0, &[0u8; 512]).status, S_IOERR);
    assert_eq!(rig.disk_bytes(), disk);
    let (done, data) = rig.read(0, 512);
    assert_eq!(done.status, S_OK);
    assert_eq!(data, disk[..512]);
    assert_eq!(rig.submit(T_FLUSH, 0, None).status, S_OK);
    assert_eq!(rig.dev().counters().errors, 1);
}

#[test]
fn a_snapshot_reads_back_its_writes_and_leaves_the_image_alone() {
    let disk = pattern(64 * 1024, 5);
    let mut rig = Rig::snapshot(&disk, 1 << 20);
    assert_eq!(rig.device_features() & F_RO, 0, "a snapshot is a writable disk to the guest");
    // Two sectors in the middle of an eight-sector read.
    assert_eq!(rig.write(3, &[0xAB; 1024]).status, S_OK);
    let (done, data) = rig.read(0, 4096);
    assert_eq!(done.status, S_OK);
    let mut want = disk[..4096].to_vec();
    want[3 * 512..5 * 512].fill(0xAB);
    assert_eq!(data, want);
    assert_eq!(rig.submit(T_FLUSH, 0, None).status, S_OK);
    assert_eq!(rig.disk_bytes(), disk, "the image changed");
    // The guest's next boot, on a new device, still sees its writes.
    rig.system_reset();
    rig.cfg_w(COMMAND, 2, u32::from(COMMAND_MEMORY | COMMAND_BUS_MASTER));
    rig.linux_init();
    assert_eq!(rig.read(0, 4096).1, want);
}

#[test]
fn a_full_snapshot_fails_new_writes_but_takes_rewrites() {
    let disk = pattern(64 * 1024, 5);
    let mut rig = Rig::snapshot(&disk, 2 * 512);
    assert_eq!(rig.write(0, &[1; 1024]).status, S_OK);
    assert_eq!(rig.write(8, &[2; 512]).status, S_IOERR, "a third sector does not fit");
    assert_eq!(rig.read(8, 512).1, disk[8 * 512..9 * 512], "the refused write left data behind");
    assert_eq!(rig.write(1, &[3; 512]).status, S_OK, "a sector already held costs nothing");
    assert_eq!(rig.read(0, 1024).1, [[1u8; 512], [3u8; 512]].concat());
    assert_eq!(rig.dev().counters().errors, 1);
    assert_eq!(rig.disk_bytes(), disk);
}

#[test]
fn requests_beyond_the_end_fail() {
    let mut rig = Rig::with_disk(&pattern(16 * 512, 0), false);
    let before = rig.disk_bytes();
    assert_eq!(rig.read(15, 512).0.status, S_OK);
    assert_eq!(rig.read(16, 512).0.status, S_IOERR);
    assert_eq!(rig.read(15, 1024).0.status, S_IOERR);
    assert_eq!(rig.read(u64::MAX, 512).0.status, S_IOERR, "sector + count overflows");
    assert_eq!(rig.read(u64::MAX / 512, 512).0.status, S_IOERR);
    assert_eq!(rig.write(16, &[1; 512]).status, S_IOERR);
    assert_eq!(rig.write(u64::MAX, &[1; 512]).status, S_IOERR);
    assert_eq!(rig.read(0, 300).0.status, S_IOERR, "not a whole number of sectors");
    assert_eq!(rig.disk_bytes(), before);
    assert_eq!(rig.dev().counters().errors, 7);
    assert_eq!(rig.faults.calls(), vec![(BlockOp::Read, 15, 1)]);
}

#[test]
fn injected_io_error_leaves_the_disk_untouched() {
    let mut rig = Rig::new();
    let before = rig.disk_bytes();
    rig.faults.push(FaultDecision::IoError);
    assert_eq!(rig.write(7, &[0x55; 1024]).status, S_IOERR);
    assert_eq!(rig.disk_bytes(), before);
    rig.faults.push(FaultDecision::IoError);
    let (done, data) = rig.read(7, 512);
    assert_eq!(done.status, S_IOERR);
    assert_eq!(data, vec![0xAA; 512], "guest buffer not written");
    rig.faults.push(FaultDecision::IoError);
    assert_eq!(rig.submit(T_FLUSH, 0, None).status, S_IOERR);
    rig.faults.push(FaultDecision::IoError);
    assert_eq!(rig.submit(T_GET_ID, 0, Some((20, true))).status, S_IOERR);
    // The policy saw exactly what each request covered.
    let calls = rig.faults.calls();
    assert_eq!(
        calls,
        vec![(BlockOp::Write, 7, 2), (BlockOp::Read, 7, 1), (BlockOp::Flush, 0, 0), (BlockOp::GetId, 0, 0)]
    );
    let c = rig.dev().counters();
    assert_eq!((c.faults_injected, c.errors, c.writes, c.reads, c.flushes, c.get_ids), (4, 4, 0, 0, 0, 0));
    // Next time the write goes through.
    assert_eq!(rig.write(7, &[0x55; 1024]).status, S_OK);
    assert_eq!(rig.disk_bytes()[7 * 512..][..1024], [0x55; 1024]);
}

#[test]
fn injected_delay_stalls_then_proceeds() {
    let disk = pattern(1 << 20, 0);
    let mut rig = Rig::with_disk(&disk, false);
    let delay = Duration::from_millis(60);
    rig.faults.push(FaultDecision::Delay(delay));
    let t = Instant::now();
    let (done, data) = rig.read(1, 512);
    assert!(t.elapsed() >= delay, "returned after {:?}", t.elapsed());
    assert_eq!(done.status, S_OK);
    assert_eq!(data, disk[512..1024]);
    rig.faults.push(FaultDecision::Delay(delay));
    let t = Instant::now();
    assert_eq!(rig.write(2, &[9; 512]).status, S_OK);
    assert!(t.elapsed() >= delay);
    assert_eq!(rig.disk_bytes()[1024..1536], [9; 512]);
    let c = rig.dev().counters();
    assert_eq!((c.faults_injected, c.errors, c.reads, c.writes), (2, 0, 1, 1));
}

#[test]
fn proceed_is_the_default() {
    let mut rig = Rig::new();
    assert_eq!(NoFaults.decide(BlockOp::Write, 0, 1), FaultDecision::Proceed);
    assert_eq!(rig.read(0, 512).0.status, S_OK);
    assert_eq!(rig.dev().counters().faults_injected, 0);
}

#[test]
fn several_requests_per_notification() {
    let disk = pattern(1 << 20, 2);
    let mut rig = Rig::with_disk(&disk, false);
    // Three reads: header i, data i, status i at descriptors 3i..3i+3.
    for i in 0..3u16 {
        let hdr = HDR + 0x100 * u64::from(i);
        let mut h = [0u8; 16];
        h[8..].copy_from_slice(&u64::from(i * 10).to_le_bytes());
        rig.mem.write_slice(&h, GuestAddress(hdr)).unwrap();
        let d = 3 * i;
        rig.put_desc(d, hdr, 16, NEXT, d + 1);
        rig.put_desc(d + 1, DATA + 0x1000 * u64::from(i), 512, NEXT | WRITE, d + 2);
        rig.put_desc(d + 2, STATUS_AT + u64::from(i), 1, WRITE, 0);
        rig.push(d);
    }
    rig.kick();
    assert_eq!(rig.take_used(), vec![(0, 513), (3, 513), (6, 513)]);
    for i in 0..3u64 {
        let mut buf = [0u8; 512];
        rig.mem.read_slice(&mut buf, GuestAddress(DATA + 0x1000 * i)).unwrap();
        assert_eq!(buf[..], disk[i as usize * 10 * 512..][..512]);
        assert_eq!(rig.mem.read_obj::<u8>(GuestAddress(STATUS_AT + i)).unwrap(), S_OK);
    }
    assert_eq!(rig.isr(), ISR_QUEUE);
}

#[test]
fn framing_is_not_assumed() {
    let disk = pattern(1 << 20, 4);
    let mut rig = Rig::with_disk(&disk, false);
    // Header in two halves; data and status in one writable buffer.
    let mut h = [0u8; 16];
    h[8..].copy_from_slice(&4u64.to_le_bytes());
    rig.mem.write_slice(&h, GuestAddress(HDR)).unwrap();
    rig.put_desc(0, HDR, 8, NEXT, 1);
    rig.put_desc(1, HDR + 8, 8, NEXT, 2);
    rig.put_desc(2, DATA, 1025, WRITE, 0);
    rig.push(0);
    rig.kick();
    assert_eq!(rig.take_used(), vec![(0, 1025)]);
    let mut buf = vec![0u8; 1025];
    rig.mem.read_slice(&mut buf, GuestAddress(DATA)).unwrap();
    assert_eq!(buf[..1024], disk[4 * 512..][..1024]);
    assert_eq!(buf[1024], S_OK);
}

#[test]
fn used_entries_count_what_the_driver_gets_back() {
    let mut rig = Rig::new();
    for sector in 0..3 {
        assert_eq!(rig.read(sector, 512).0.status, S_OK);
    }
    assert_eq!(rig.dev().counters().used_entries, 3);
    assert_eq!(rig.dev().counters().reads, 3);
}

/// Reads land straight in the guest's buffers: scattered, of odd sizes,
/// with a sector split across two of them, and the status byte sharing the
/// last buffer.
fn scattered_read(rig: &mut Rig, sector: u64) -> (Done, Vec<u8>) {
    let bufs = [(DATA, 100u32), (DATA + 0x2000, 700), (DATA + 0x5000, 224), (DATA + 0x8000, 1025)];
    let mut h = [0u8; 16];
    h[8..].copy_from_slice(&sector.to_le_bytes());
    rig.mem.write_slice(&h, GuestAddress(HDR)).unwrap();
    rig.put_desc(0, HDR, 16, NEXT, 1);
    for (i, &(addr, len)) in bufs.iter().enumerate() {
        let last = i + 1 == bufs.len();
        rig.mem.write_slice(&vec![0xAA; len as usize], GuestAddress(addr)).unwrap();
        rig.put_desc(i as u16 + 1, addr, len, WRITE | if last { 0 } else { NEXT }, i as u16 + 2);
    }
    rig.push(0);
    rig.kick();
    let used = rig.take_used();
    assert_eq!(used.len(), 1);
    let mut got = Vec::new();
    for &(addr, len) in &bufs {
        let mut b = vec![0u8; len as usize];
        rig.mem.read_slice(&mut b, GuestAddress(addr)).unwrap();
        got.extend(b);
    }
    let status = got.pop().unwrap();
    (Done { status, used_len: used[0].1 }, got)
}

#[test]
fn a_read_fills_scattered_buffers_in_order() {
    let disk = pattern(1 << 20, 5);
    let mut rig = Rig::with_disk(&disk, false);
    let (done, got) = scattered_read(&mut rig, 3);
    assert_eq!(done, Done { status: S_OK, used_len: 2049 });
    assert_eq!(got, disk[3 * 512..][..2048]);
    assert_eq!(rig.dev().counters().bytes_read, 2048);
}

#[test]
fn a_snapshot_sector_split_across_buffers_reads_back_whole() {
    let disk = pattern(64 << 10, 6);
    let mut rig = Rig::snapshot(&disk, 1 << 20);
    // Sector 4 is bytes 512..1024 of a read from sector 3: it straddles
    // the second and third buffers.
    let mine = pattern(512, 0x5A);
    assert_eq!(rig.write(4, &mine).status, S_OK);
    let (done, got) = scattered_read(&mut rig, 3);
    assert_eq!(done.status, S_OK);
    assert_eq!(got[..512], disk[3 * 512..][..512]);
    assert_eq!(got[512..1024], mine[..]);
    assert_eq!(got[1024..], disk[5 * 512..][..1024]);
}

#[test]
fn an_image_shrunk_under_the_device_fails_reads_past_its_end() {
    let disk = pattern(1 << 20, 7);
    let mut rig = Rig::with_disk(&disk, false);
    rig.disk.as_file().set_len(4096).unwrap();
    assert_eq!(rig.read(0, 4096).0.status, S_OK);
    let (done, _) = rig.read(4, 4096);
    assert_eq!(done.status, S_IOERR);
    assert_eq!(rig.dev().counters().errors, 1);
}

/// The request paths again, served as the VMM's disk thread serves them.
#[test]
fn requests_served_from_a_thread_behave_the_same() {
    let disk = pattern(1 << 20, 8);
    let mut rig = Rig::with_disk(&disk, false).serve_from_a_thread();
    let (done, got) = rig.read(7, 4096);
    assert_eq!(done, Done { status: S_OK, used_len: 4097 });
    assert_eq!(got, disk[7 * 512..][..4096]);
    assert!(rig.line.level());
    assert_eq!(rig.isr(), ISR_QUEUE);
    let mine = pattern(1024, 0x33);
    assert_eq!(rig.write(2, &mine).status, S_OK);
    assert_eq!(rig.disk_bytes()[2 * 512..][..1024], mine[..]);
    assert_eq!(rig.submit(T_FLUSH, 0, None).status, S_OK);
    rig.faults.push(FaultDecision::IoError);
    assert_eq!(rig.read(0, 512).0.status, S_IOERR);
    assert_eq!(rig.read(1 << 11, 512).0.status, S_IOERR, "beyond the end");
    let (done, got) = scattered_read(&mut rig, 9);
    assert_eq!(done.status, S_OK);
    assert_eq!(got, disk[9 * 512..][..2048]);
    let c = rig.dev().counters();
    assert_eq!((c.reads, c.writes, c.flushes, c.errors, c.used_entries), (2, 1, 1, 2, 6));
}
