//! PCI identity, capabilities, feature negotiation, the status machine,
//! queue setup, INTx plumbing and resets.

use super::*;
use crate::pci::config_space::{COMMAND_INTX_DISABLE, STATUS, STATUS_INTERRUPT};

#[derive(Debug, PartialEq, Eq)]
struct Cap {
    cfg_type: u8,
    bar: u8,
    offset: u32,
    length: u32,
}

/// virtio_pci_find_capability: follow 0x34 through the vendor caps.
fn walk(rig: &mut Rig) -> (Vec<Cap>, Option<u32>) {
    assert_ne!(rig.cfg_r(STATUS, 2) & u32::from(STATUS_CAP_LIST), 0, "status bit 4");
    let mut pos = rig.cfg_r(CAPABILITIES_POINTER, 1) as u16;
    let (mut caps, mut multiplier) = (Vec::new(), None);
    let mut ttl = 48;
    while pos != 0 {
        ttl -= 1;
        assert!(ttl > 0, "capability list loops");
        pos &= !3;
        assert_eq!(rig.cfg_r(pos, 1), u32::from(CAP_ID_VENDOR));
        let cap = Cap {
            cfg_type: rig.cfg_r(pos + 3, 1) as u8,
            bar: rig.cfg_r(pos + 4, 1) as u8,
            offset: rig.cfg_r(pos + 8, 4),
            length: rig.cfg_r(pos + 12, 4),
        };
        if cap.cfg_type == CFG_TYPE_NOTIFY {
            assert!(rig.cfg_r(pos + 2, 1) >= 20, "notify cap carries its multiplier");
            multiplier = Some(rig.cfg_r(pos + 16, 4));
        }
        caps.push(cap);
        pos = rig.cfg_r(pos + 1, 1) as u16;
    }
    (caps, multiplier)
}

#[test]
fn identity_and_interrupt_pin() {
    let mut rig = Rig::bare(&[0; 4096], false);
    assert_eq!(rig.cfg_r(0, 4), 0x1042_1AF4);
    assert_eq!(rig.cfg_r(0x08, 4), 0x0180_0001, "class 01/80, revision 1");
    assert_eq!(rig.cfg_r(0x2C, 4), 0x1100_1AF4);
    assert_eq!(rig.cfg_r(0x3C, 2), 0x010B, "INTA#, line 11");
    assert_eq!(rig.cfg_r(0x10, 4), BAR);
    rig.cfg_w(0x10, 4, 0xFFFF_FFFF);
    assert_eq!(rig.cfg_r(0x10, 4), !(BAR0_SIZE - 1), "16 KiB, 32-bit, non-prefetchable");
    rig.cfg_w(0x10, 4, BAR);
    assert_eq!(rig.cfg_r(0x10, 4), BAR);
}

#[test]
fn capability_walk_finds_all_four_structures() {
    let mut rig = Rig::bare(&[0; 4096], false);
    let (caps, multiplier) = walk(&mut rig);
    let want = |cfg_type, offset| Cap { cfg_type, bar: 0, offset, length: 0x1000 };
    assert_eq!(
        caps,
        vec![
            want(CFG_TYPE_COMMON, 0),
            want(CFG_TYPE_NOTIFY, 0x3000),
            want(CFG_TYPE_ISR, 0x1000),
            want(CFG_TYPE_DEVICE, 0x2000),
        ]
    );
    assert_eq!(multiplier, Some(NOTIFY_OFF_MULTIPLIER));
    for c in &caps {
        assert!(u64::from(c.offset) + u64::from(c.length) <= u64::from(BAR0_SIZE));
    }
}

#[test]
fn linux_bring_up_and_feature_offer() {
    let mut rig = Rig::bare(&[0; 4096], false);
    let offered = rig.device_features();
    assert_eq!(offered, F_VERSION_1 | F_FLUSH | F_SEG_MAX | F_SIZE_MAX | F_BLK_SIZE | F_EVENT_IDX);
    rig.linux_init();
    rig.bar_w(COMMON_OFFSET + DRIVER_FEATURE_SELECT, 4, 1);
    assert_eq!(rig.bar_r(COMMON_OFFSET + DRIVER_FEATURE, 4), 1, "VERSION_1 accepted");
    assert_eq!(rig.bar_r(COMMON_OFFSET + NUM_QUEUES, 2), 1);
    assert_eq!(rig.bar_r(COMMON_OFFSET + MSIX_CONFIG, 2), u64::from(NO_VECTOR));
    assert_eq!(rig.bar_r(COMMON_OFFSET + QUEUE_MSIX_VECTOR, 2), u64::from(NO_VECTOR));
    // Read-only disks say so.
    let mut ro = Rig::bare(&[0; 4096], true);
    assert_ne!(ro.device_features() & F_RO, 0);
}

#[test]
fn features_ok_refused_without_version_1_or_with_unoffered_bits() {
    let mut rig = Rig::bare(&[0; 4096], false);
    assert!(!rig.negotiate(F_FLUSH), "a legacy driver is turned away");
    // DRIVER_OK cannot follow a refused FEATURES_OK.
    rig.add_status(S_DRIVER_OK);
    assert_eq!(rig.status() & (S_DRIVER_OK | S_FEATURES_OK), 0);
    assert!(!rig.negotiate(F_VERSION_1 | 1 << 12), "MQ was not offered");
    assert!(!rig.negotiate(F_VERSION_1 | F_RO), "RO is offered only for read-only disks");
    assert!(rig.negotiate(F_VERSION_1));
    // Once FEATURES_OK holds, the features are frozen.
    rig.write_driver_features(F_VERSION_1 | F_FLUSH);
    rig.bar_w(COMMON_OFFSET + DRIVER_FEATURE_SELECT, 4, 0);
    assert_eq!(rig.bar_r(COMMON_OFFSET + DRIVER_FEATURE, 4), 0);
}

#[test]
fn status_bits_only_accumulate() {
    let mut rig = Rig::bare(&[0; 4096], false);
    rig.set_status(S_ACKNOWLEDGE | S_DRIVER);
    rig.set_status(S_ACKNOWLEDGE);
    assert_eq!(rig.status(), S_ACKNOWLEDGE | S_DRIVER, "clearing bits is not allowed");
    rig.add_status(S_FAILED);
    assert_eq!(rig.status(), S_ACKNOWLEDGE | S_DRIVER | S_FAILED);
}

#[test]
fn queue_registers_read_back_and_freeze_when_enabled() {
    let mut rig = Rig::new();
    let r = |rig: &mut Rig, reg, len| rig.bar_r(COMMON_OFFSET + reg, len);
    assert_eq!(r(&mut rig, QUEUE_SIZE, 2), u64::from(QUEUE_MAX_SIZE));
    assert_eq!(r(&mut rig, QUEUE_DESC, 8), DESC);
    assert_eq!(r(&mut rig, QUEUE_DRIVER, 4), AVAIL);
    assert_eq!(r(&mut rig, QUEUE_DEVICE + 4, 4), 0);
    assert_eq!(r(&mut rig, QUEUE_ENABLE, 2), 1);
    rig.write64(QUEUE_DESC, 0x8000);
    rig.bar_w(COMMON_OFFSET + QUEUE_SIZE, 2, 16);
    assert_eq!(r(&mut rig, QUEUE_DESC, 8), DESC);
    assert_eq!(r(&mut rig, QUEUE_SIZE, 2), u64::from(QUEUE_MAX_SIZE));
    // There is no queue 1.
    rig.bar_w(COMMON_OFFSET + QUEUE_SELECT, 2, 1);
    assert_eq!(r(&mut rig, QUEUE_SIZE, 2), 0);
    rig.bar_w(COMMON_OFFSET + QUEUE_SELECT, 2, 0);
    assert_eq!(rig.read(0, 512).0.status, S_OK);
}

#[test]
fn smaller_queue_sizes_work() {
    let mut rig = Rig::bare(&pattern(8192, 1), false);
    rig.bring_up_with_ring(4, F_VERSION_1);
    for i in 0..10 {
        let (done, data) = rig.read(i, 512);
        assert_eq!(done.status, S_OK);
        assert_eq!(data, pattern(8192, 1)[i as usize * 512..][..512]);
    }
}

#[test]
fn device_config_describes_the_disk() {
    let mut rig = Rig::bare(&vec![0; 3 * 512 + 100], false);
    let base = DEVICE_CFG_OFFSET;
    assert_eq!(rig.bar_r(base, 8), 3, "capacity rounds down to whole sectors");
    assert_eq!(rig.bar_r(base + 4, 4), 0);
    assert_eq!(rig.bar_r(base + 8, 4), u64::from(SIZE_MAX));
    assert_eq!(rig.bar_r(base + 12, 4), u64::from(SEG_MAX));
    assert_eq!(rig.bar_r(base + 20, 4), 512);
    assert_eq!(rig.dev().capacity(), 3);
    rig.bar_w(base, 4, 0x1234);
    assert_eq!(rig.bar_r(base, 8), 3, "device config is read-only");
    rig.linux_init();
    assert_eq!(rig.read(2, 512).0.status, S_OK);
    assert_eq!(rig.read(3, 512).0.status, S_IOERR, "the partial sector is not visible");
}

#[test]
fn completion_asserts_intx_until_the_isr_is_read() {
    let mut rig = Rig::new();
    assert!(!rig.line.level());
    assert_eq!(rig.read(0, 512).0.status, S_OK);
    assert!(rig.line.level());
    assert_ne!(rig.cfg_r(STATUS, 2) & u32::from(STATUS_INTERRUPT), 0);
    assert_eq!(rig.isr(), ISR_QUEUE);
    assert!(!rig.line.level());
    assert_eq!(rig.cfg_r(STATUS, 2) & u32::from(STATUS_INTERRUPT), 0);
    assert_eq!(rig.isr(), 0, "a second read finds nothing (shared-line check)");
}

#[test]
fn intx_disable_masks_the_line_but_not_the_status_bit() {
    let mut rig = Rig::new();
    rig.read(0, 512);
    assert!(rig.line.level());
    let cmd = rig.cfg_r(COMMAND, 2);
    rig.cfg_w(COMMAND, 2, cmd | u32::from(COMMAND_INTX_DISABLE));
    assert!(!rig.line.level());
    assert_ne!(rig.cfg_r(STATUS, 2) & u32::from(STATUS_INTERRUPT), 0);
    rig.cfg_w(COMMAND, 2, cmd);
    assert!(rig.line.level());
}

#[test]
fn device_reset_returns_to_the_initial_state() {
    let mut rig = Rig::new();
    rig.read(0, 512);
    assert!(rig.line.level());
    rig.set_status(0);
    assert_eq!(rig.status(), 0);
    assert!(!rig.line.level(), "reset drops a pending interrupt");
    assert_eq!(rig.isr(), 0);
    assert_eq!(rig.bar_r(COMMON_OFFSET + QUEUE_ENABLE, 2), 0);
    assert_eq!(rig.bar_r(COMMON_OFFSET + QUEUE_DESC, 8), 0);
    assert_eq!(rig.bar_r(COMMON_OFFSET + QUEUE_SIZE, 2), u64::from(QUEUE_MAX_SIZE));
    rig.bar_w(COMMON_OFFSET + DRIVER_FEATURE_SELECT, 4, 1);
    assert_eq!(rig.bar_r(COMMON_OFFSET + DRIVER_FEATURE, 4), 0);
    // Requests made available now are not looked at.
    rig.push(0);
    rig.kick();
    assert!(rig.take_used().is_empty());
    // The driver brings it up again from scratch (as after a kexec or a
    // watchdog-triggered reboot) and I/O works.
    rig.linux_init();
    assert_eq!(rig.read(1, 1024).0.status, S_OK);
}

#[test]
fn system_reset_restores_power_on_state() {
    let mut rig = Rig::new();
    rig.read(0, 512);
    rig.system_reset();
    assert!(!rig.line.level());
    assert_eq!(rig.cfg_r(COMMAND, 2), 0);
    assert_eq!(rig.cfg_r(0x10, 4), BAR, "BAR0 stays placed");
    rig.cfg_w(COMMAND, 2, u32::from(COMMAND_MEMORY | COMMAND_BUS_MASTER));
    assert_eq!(rig.status(), 0);
    assert_eq!(rig.dev().counters().reads, 0, "a new device counts from zero");
    rig.linux_init();
    assert_eq!(rig.read(0, 512).0.status, S_OK);
}

#[test]
fn bar_needs_memory_space_and_bus_mastering() {
    let mut rig = Rig::new();
    rig.cfg_w(COMMAND, 2, u32::from(COMMAND_MEMORY));
    rig.push(0);
    rig.kick();
    assert!(rig.take_used().is_empty(), "no DMA without bus mastering");
    rig.cfg_w(COMMAND, 2, 0);
    assert_eq!(rig.bar_r(COMMON_OFFSET + DEVICE_STATUS, 1), 0xFF);
    rig.set_status(0);
    rig.cfg_w(COMMAND, 2, u32::from(COMMAND_MEMORY | COMMAND_BUS_MASTER));
    assert_eq!(rig.status() & S_DRIVER_OK, S_DRIVER_OK, "the write was not seen");
    // The request made available while mastering was off goes through at
    // the next notification.
    rig.kick();
    assert_eq!(rig.take_used().len(), 1);
}

/// A notification through the VMM's ioeventfd (a `QueueServer`) is held to
/// what a write of the register is: memory decoding and bus mastering on,
/// the queue running; and then it is served like one.
#[test]
fn an_ioeventfd_notification_is_checked_like_a_register_write() {
    let mut rig = Rig::new().serve_from_a_thread();
    assert_eq!(rig.dev().notify_address(), u64::from(BAR) + NOTIFY_OFFSET);
    let hdr = [0u8; 16];
    rig.mem.write_slice(&hdr, GuestAddress(HDR)).unwrap();
    rig.put_desc(0, HDR, 16, NEXT, 1);
    rig.put_desc(1, DATA, 512, NEXT | WRITE, 2);
    rig.put_desc(2, STATUS_AT, 1, WRITE, 0);
    rig.push(0);
    for off in [0, COMMAND_MEMORY, COMMAND_BUS_MASTER] {
        rig.cfg_w(COMMAND, 2, u32::from(off));
        rig.kick();
        assert!(rig.take_used().is_empty(), "served with command {off:#x}");
    }
    rig.cfg_w(COMMAND, 2, u32::from(COMMAND_MEMORY | COMMAND_BUS_MASTER));
    rig.kick();
    assert_eq!(rig.take_used(), vec![(0, 513)]);
    assert_eq!(rig.status_byte(), S_OK);
    assert!(rig.line.level(), "the completion interrupts as after a register write");
    rig.set_status(0);
    rig.push(0);
    rig.kick();
    assert!(rig.take_used().is_empty(), "served after the driver reset the device");
}

/// While the disk thread executes a request, the device itself is free: a
/// vCPU can read its registers, and a driver that resets the device then
/// gets nothing back into the queue it dropped.
#[test]
fn a_request_in_flight_holds_only_the_engine() {
    let mut rig = Rig::new().serve_from_a_thread();
    let gate = rig.faults.hold();
    rig.mem.write_slice(&[0u8; 16], GuestAddress(HDR)).unwrap();
    rig.put_desc(0, HDR, 16, NEXT, 1);
    rig.put_desc(1, DATA, 512, NEXT | WRITE, 2);
    rig.put_desc(2, STATUS_AT, 1, WRITE, 0);
    rig.push(0);
    let server = rig.server.take().unwrap();
    let thread = std::thread::spawn(move || server.notified());
    gate.wait_for_request();
    // The request is between its fault decision and its disk read.
    assert!(rig.dev.try_lock().is_ok(), "the device is locked during the I/O");
    assert_eq!(rig.isr(), 0);
    rig.set_status(0);
    gate.open();
    thread.join().unwrap();
    assert!(rig.take_used().is_empty(), "a completion reached the queue the driver reset");
    assert!(!rig.line.level());
    assert_eq!(rig.dev().counters().reads, 1, "the read itself went ahead, as on a real disk");
    assert_eq!(rig.dev().counters().used_entries, 0);
}

#[test]
fn every_bar_offset_and_width_is_safe() {
    let mut rig = Rig::new();
    for bar in 0..7 {
        for len in [0usize, 1, 2, 3, 4, 8, 16] {
            for off in (0..u64::from(BAR0_SIZE) + 16).chain([u64::MAX - 3, u64::MAX]) {
                if bar > 0 && off % 64 != 0 {
                    continue;
                }
                let mut b = vec![0u8; len];
                rig.dev().bar_read(bar, off, &mut b);
                rig.dev().bar_write(bar, off, &vec![0xFF; len]);
                rig.dev().bar_write(bar, off, &vec![0x00; len]);
            }
        }
    }
    // Still a working device once the driver starts over.
    rig.linux_init();
    assert_eq!(rig.read(0, 512).0.status, S_OK);
}

#[test]
fn every_config_offset_is_safe() {
    let mut rig = Rig::new();
    for len in [1usize, 2, 3, 4, 8] {
        for off in 0..300u16 {
            if off == COMMAND {
                continue; // keep the device reachable
            }
            let mut b = vec![0u8; len];
            rig.dev().config_read(off, &mut b);
            rig.dev().config_write(off, &vec![0xFF; len]);
        }
    }
    rig.cfg_w(0x10, 4, BAR);
    assert_eq!(rig.cfg_r(0, 4), 0x1042_1AF4);
    assert_eq!(walk(&mut rig).0.len(), 4, "capabilities are read-only");
    assert_eq!(rig.read(0, 512).0.status, S_OK);
}

#[test]
fn wired_like_the_vmm_does_it() {
    use crate::bus::{Bus, BusDevice};
    use crate::pci::{PciBus, PciConfigIo};

    let rig = Rig::bare(&pattern(4096, 0), false);
    let dev = rig.dev.clone();
    let mut pci = PciBus::new();
    let mut mmio = Bus::new();
    pci.attach(4, dev.clone(), &mut mmio).unwrap();
    let mut io = PciConfigIo::new(pci);

    let select = |io: &mut PciConfigIo, reg: u32| io.write(0, &(0x8000_0000 | 4 << 11 | reg).to_le_bytes());
    select(&mut io, 0);
    let mut id = [0u8; 4];
    io.read(4, &mut id);
    assert_eq!(u32::from_le_bytes(id), 0x1042_1AF4);
    select(&mut io, u32::from(COMMAND));
    io.write(4, &(COMMAND_MEMORY | COMMAND_BUS_MASTER).to_le_bytes());
    let base = u64::from(BAR);
    assert!(mmio.write(base + COMMON_OFFSET + DEVICE_FEATURE_SELECT, &1u32.to_le_bytes()));
    let mut f = [0u8; 4];
    assert!(mmio.read(base + COMMON_OFFSET + DEVICE_FEATURE, &mut f));
    assert_eq!(u32::from_le_bytes(f), 1, "VERSION_1 through the MMIO bus");
    let mut cap = [0u8; 8];
    assert!(mmio.read(base + DEVICE_CFG_OFFSET, &mut cap));
    assert_eq!(u64::from_le_bytes(cap), 8);
    assert!(!mmio.read(base + u64::from(BAR0_SIZE), &mut f), "nothing past the BAR");
}
