//! Notification and interrupt suppression (EVENT_IDX, and the ring flags
//! without it): each side exits to the other only when it must, and no
//! request or completion is lost for it.

use std::sync::atomic::{AtomicU16, Ordering};

use super::*;
use crate::virtio_blk::device::VCPU_PASSES;

/// A driver that did not take EVENT_IDX.
fn without_event_idx() -> Rig {
    let mut rig = Rig::new();
    rig.wants &= !F_EVENT_IDX;
    rig.linux_init();
    assert!(!rig.event_idx);
    rig
}

fn both_paths(rig: impl Fn() -> Rig) -> [Rig; 2] {
    [rig(), rig().serve_from_a_thread()]
}

/// A read of `sector` in descriptors 3*n..3*n+3, its data at DATA +
/// n * 4 KiB and its status at STATUS_AT + n: chain n.
fn prepare_read(rig: &Rig, n: u16, sector: u64) -> u16 {
    let mut hdr = [0u8; 16];
    hdr[..4].copy_from_slice(&T_IN.to_le_bytes());
    hdr[8..].copy_from_slice(&sector.to_le_bytes());
    let at = HDR + 16 * u64::from(n);
    rig.mem.write_slice(&hdr, GuestAddress(at)).unwrap();
    rig.mem.write_obj(UNTOUCHED, GuestAddress(STATUS_AT + u64::from(n))).unwrap();
    let d = 3 * n;
    rig.put_desc(d, at, 16, NEXT, d + 1);
    rig.put_desc(d + 1, DATA + 0x1000 * u64::from(n), 512, NEXT | WRITE, d + 2);
    rig.put_desc(d + 2, STATUS_AT + u64::from(n), 1, WRITE, 0);
    d
}

#[test]
fn linux_takes_event_idx() {
    let mut rig = Rig::bare(&[0; 4096], false);
    assert_ne!(rig.device_features() & F_EVENT_IDX, 0);
    rig.linux_init();
    assert!(rig.event_idx);
}

#[test]
fn with_event_idx_the_device_asks_to_hear_of_the_next_request_only() {
    for mut rig in both_paths(Rig::new) {
        for sector in 0..3 {
            assert_eq!(rig.read(sector, 512).0.status, S_OK);
            let idx = rig.avail_idx;
            assert_eq!(rig.avail_event(), idx);
            assert!(rig.kick_wanted(idx, idx.wrapping_add(1)), "the next request is announced");
            let (next, after) = (idx.wrapping_add(1), idx.wrapping_add(2));
            assert!(!rig.kick_wanted(next, after), "the one after it, made before the device ran, is not");
        }
    }
}

#[test]
fn with_event_idx_interrupts_come_when_the_driver_asks() {
    for mut rig in both_paths(Rig::new) {
        rig.move_used_event = false;
        rig.set_used_event(0);
        rig.read(0, 512);
        assert!(rig.line.level(), "the first entry is the one asked for");
        assert_eq!(rig.isr(), ISR_QUEUE);
        // The driver has not asked again: used entries 1 and 2 are quiet.
        rig.read(1, 512);
        rig.read(2, 512);
        assert!(!rig.line.level());
        assert_eq!(rig.isr(), 0);
        // It asks for entry 4: 3 is quiet, 4 interrupts.
        rig.set_used_event(4);
        rig.read(3, 512);
        assert!(!rig.line.level());
        rig.read(4, 512);
        assert!(rig.line.level());
        assert_eq!(rig.used_idx(), 5, "every completion reached the ring");
    }
}

#[test]
fn without_event_idx_the_avail_flag_still_silences_interrupts() {
    for mut rig in [without_event_idx(), without_event_idx().serve_from_a_thread()] {
        rig.mem.write_obj(1u16, GuestAddress(AVAIL)).unwrap();
        assert_eq!(rig.read(0, 512).0.status, S_OK);
        assert!(!rig.line.level());
        rig.mem.write_obj(0u16, GuestAddress(AVAIL)).unwrap();
        assert_eq!(rig.read(0, 512).0.status, S_OK);
        assert!(rig.line.level());
        assert_eq!(rig.used_flags() & VRING_USED_F_NO_NOTIFY, 0, "notifications wanted when idle");
    }
}

/// While a request is in the device's hands, the driver is told not to
/// notify; a request it adds then is served all the same, before the
/// device asks to hear of the next one.
fn requests_made_while_the_device_works_are_served(mut rig: Rig, threaded: bool) {
    let first = prepare_read(&rig, 0, 1);
    let second = prepare_read(&rig, 1, 2);
    let gate = rig.faults.hold();
    rig.push(first);
    std::thread::scope(|s| {
        let dev = rig.dev.clone();
        let serving = s.spawn(move || {
            if threaded {
                let server = QueueServer::new(dev);
                while server.notified() {}
            } else {
                dev.lock().unwrap().bar_write(0, NOTIFY_OFFSET, &[0, 0]);
            }
        });
        gate.wait_for_request();
        let old = rig.avail_idx;
        rig.push(second);
        assert!(!rig.kick_wanted(old, rig.avail_idx), "the driver was asked not to notify");
        gate.open();
        serving.join().unwrap();
    });
    let used = rig.take_used();
    assert_eq!(used.iter().map(|u| u.0 as u16).collect::<Vec<_>>(), [first, second]);
    for n in 0..2 {
        let status: u8 = rig.mem.read_obj(GuestAddress(STATUS_AT + n)).unwrap();
        assert_eq!(status, S_OK);
    }
    let idx = rig.avail_idx;
    assert!(rig.kick_wanted(idx, idx.wrapping_add(1)), "and then to notify again");
}

#[test]
fn requests_made_while_the_device_works_are_served_on_every_path() {
    for threaded in [false, true] {
        requests_made_while_the_device_works_are_served(Rig::new(), threaded);
        requests_made_while_the_device_works_are_served(without_event_idx(), threaded);
    }
}

/// A guest whose every served request makes another available: the ring
/// never drains.
fn endless(rig: &mut Rig) -> Arc<AtomicU16> {
    let head = prepare_read(rig, 0, 0);
    let (mem, qsize) = (rig.mem.clone(), rig.qsize);
    let idx = Arc::new(AtomicU16::new(0));
    let i = idx.clone();
    let push = move || {
        let n = i.fetch_add(1, Ordering::SeqCst);
        mem.write_obj(head, GuestAddress(AVAIL + 4 + 2 * u64::from(n % qsize))).unwrap();
        mem.write_obj(n.wrapping_add(1), GuestAddress(AVAIL + 2)).unwrap();
    };
    push();
    *rig.faults.meanwhile.lock().unwrap() = Some(Box::new(push));
    idx
}

#[test]
fn a_driver_that_never_stops_adding_cannot_hold_a_vcpu() {
    for mut rig in [Rig::new(), without_event_idx()] {
        let idx = endless(&mut rig);
        rig.bar_w(NOTIFY_OFFSET, 2, 0);
        let served = VCPU_PASSES * usize::from(rig.qsize);
        assert_eq!(usize::from(rig.used_idx()), served, "a bounded number of passes");
        assert!(rig.line.level());
        // What is left is served at the driver's next notification, which
        // its next request must therefore send.
        let now = idx.load(Ordering::SeqCst);
        assert_eq!(usize::from(now), served + 1);
        assert!(rig.kick_wanted(now, now.wrapping_add(1)));
    }
}

#[test]
fn a_driver_that_never_stops_adding_lets_the_disk_thread_check_in() {
    for rig in [Rig::new(), without_event_idx()] {
        let mut rig = rig.serve_from_a_thread();
        endless(&mut rig);
        let server = rig.server.take().unwrap();
        let ring = rig.qsize;
        for pass in 1..=3u16 {
            assert!(server.notified(), "more is waiting");
            assert_eq!(rig.used_idx(), pass * ring, "one ring's worth a call");
        }
    }
}

/// A device the driver brought up with a ring of `size` entries.
fn with_ring(size: u16, wants: u64) -> Rig {
    let mut rig = Rig::bare(&pattern(1 << 20, 0), false);
    rig.bring_up_with_ring(size, wants);
    rig
}

/// The race `listen` closes: a request made available after a pass's last
/// look at the ring, while the driver was told not to notify.
#[test]
fn a_request_made_as_a_pass_ends_is_served_without_a_notification() {
    for wants in [LINUX_WANTS, LINUX_WANTS & !F_EVENT_IDX] {
        for threaded in [false, true] {
            let mut rig = with_ring(2, wants);
            if threaded {
                rig = rig.serve_from_a_thread();
            }
            // One flush chain, made available three times; a pass takes two.
            let mut hdr = [0u8; 16];
            hdr[..4].copy_from_slice(&T_FLUSH.to_le_bytes());
            rig.mem.write_slice(&hdr, GuestAddress(HDR)).unwrap();
            rig.put_desc(0, HDR, 16, NEXT, 1);
            rig.put_desc(1, STATUS_AT, 1, WRITE, 0);
            rig.push(0);
            rig.push(0);
            let mem = rig.mem.clone();
            let decisions = AtomicU16::new(0);
            let third = move || {
                if decisions.fetch_add(1, Ordering::SeqCst) == 1 {
                    mem.write_obj(0u16, GuestAddress(AVAIL + 4)).unwrap();
                    mem.write_obj(3u16, GuestAddress(AVAIL + 2)).unwrap();
                }
            };
            *rig.faults.meanwhile.lock().unwrap() = Some(Box::new(third));
            rig.kick();
            assert_eq!(rig.used_idx(), 3, "event_idx {}, threaded {threaded}", rig.event_idx);
            assert_eq!(rig.dev().counters().flushes, 3);
        }
    }
}

/// A driver that resets the device and sets the queue up again on the same
/// memory, without clearing the used ring, is still notified of.
#[test]
fn a_reused_ring_starts_out_asking_for_notifications() {
    for wants in [LINUX_WANTS, LINUX_WANTS & !F_EVENT_IDX] {
        let mut rig = with_ring(4, wants);
        // What a pass cut short by a reset leaves behind.
        rig.mem.write_obj(VRING_USED_F_NO_NOTIFY, GuestAddress(USED)).unwrap();
        rig.mem.write_obj(77u16, GuestAddress(USED + 4 + 8 * 4)).unwrap();
        rig.bring_up_with_ring(4, wants);
        rig.mem.write_slice(&[0u8; 4], GuestAddress(AVAIL)).unwrap();
        assert!(rig.kick_wanted(0, 1), "event_idx {}", rig.event_idx);
    }
}
