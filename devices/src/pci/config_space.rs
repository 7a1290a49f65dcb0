//! A 256-byte type-0 configuration space.
//!
//! Storage plus the rules every function shares: per-byte writable masks,
//! write-1-to-clear status bits, and BARs that answer size probes but never
//! move. Device-specific registers (0x40..0x100) are stored here too; the
//! device declares their writable bits with [`ConfigSpace::set_writable`] and
//! keeps read-only values current with the `set_*` methods.
//!
//! **BARs do not move.** The VMM places every BAR when it builds the VM and
//! maps it on the MMIO bus once. A guest may size a BAR (write all ones, read
//! the mask) and write the placed address back; any other address is ignored
//! and the register keeps the placed address. Linux accepts firmware-assigned
//! BARs that lie inside its root bus window, so it never tries.

use crate::log_limit::LogLimit;
use crate::warn_limited;

pub const CONFIG_SPACE_SIZE: usize = 256;
pub const NUM_BARS: usize = 6;

pub const VENDOR_ID: u16 = 0x00;
pub const DEVICE_ID: u16 = 0x02;
pub const COMMAND: u16 = 0x04;
pub const STATUS: u16 = 0x06;
pub const REVISION_ID: u16 = 0x08;
pub const PROG_IF: u16 = 0x09;
pub const SUBCLASS: u16 = 0x0A;
pub const CLASS: u16 = 0x0B;
pub const HEADER_TYPE: u16 = 0x0E;
pub const BAR0: u16 = 0x10;
pub const SUBSYSTEM_VENDOR_ID: u16 = 0x2C;
pub const SUBSYSTEM_ID: u16 = 0x2E;
pub const INTERRUPT_LINE: u16 = 0x3C;
pub const INTERRUPT_PIN: u16 = 0x3D;

pub const COMMAND_IO: u16 = 1 << 0;
pub const COMMAND_MEMORY: u16 = 1 << 1;
pub const COMMAND_BUS_MASTER: u16 = 1 << 2;
pub const COMMAND_INTX_DISABLE: u16 = 1 << 10;
const COMMAND_WRITABLE: u16 = COMMAND_IO | COMMAND_MEMORY | COMMAND_BUS_MASTER | COMMAND_INTX_DISABLE;

/// Set by the device while its INTx condition is pending (regardless of
/// INTx-disable, as the PCI spec asks).
pub const STATUS_INTERRUPT: u16 = 1 << 3;
/// The error bits: parity, target/master aborts, SERR, detected parity.
pub const STATUS_W1C: u16 = 0xF900;

/// `interrupt_pin` value for INTA#.
pub const PIN_INTA: u8 = 1;

/// What a function says it is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PciIdentity {
    pub vendor_id: u16,
    pub device_id: u16,
    pub class: u8,
    pub subclass: u8,
    pub prog_if: u8,
    pub revision: u8,
    pub subsystem_vendor_id: u16,
    pub subsystem_id: u16,
    /// 0 = none, [`PIN_INTA`] = INTA#.
    pub interrupt_pin: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarKind {
    /// 32-bit, non-prefetchable memory (type bits 0000).
    Memory32,
}

impl BarKind {
    fn type_bits(self) -> u32 {
        match self {
            BarKind::Memory32 => 0,
        }
    }
}

/// Errors declaring a BAR.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigSpaceError {
    /// BAR index out of range
    #[error("BAR index {0} is out of range (a type-0 header has 6)")]
    BarIndex(usize),
    /// BAR already declared
    #[error("BAR {0} is already declared")]
    BarInUse(usize),
    /// bad BAR size
    #[error("BAR size {0:#x} is not a power of two of at least 16 bytes")]
    BarSize(u32),
    /// BAR address not aligned to its size, or zero
    #[error("BAR address {addr:#x} is zero or not aligned to the BAR size {size:#x}")]
    BarAddress { addr: u32, size: u32 },
}

#[derive(Clone, Copy, Debug)]
struct Bar {
    addr: u32,
    size: u32,
    kind: BarKind,
    // true between a write of all ones and the next write
    sizing: bool,
}

impl Bar {
    fn mask(&self) -> u32 {
        !(self.size - 1)
    }

    fn value(&self) -> u32 {
        (if self.sizing { self.mask() } else { self.addr }) | self.kind.type_bits()
    }
}

/// A BAR as placed by the VMM: fixed for the life of the VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlacedBar {
    pub index: usize,
    pub addr: u32,
    pub size: u32,
}

#[derive(Clone, Debug)]
pub struct ConfigSpace {
    regs: [u8; CONFIG_SPACE_SIZE],
    writable: [u8; CONFIG_SPACE_SIZE],
    w1c: [u8; CONFIG_SPACE_SIZE],
    bars: [Option<Bar>; NUM_BARS],
    bar_moves: LogLimit,
    bad_access: LogLimit,
}

/// Whether `len` bytes at `offset` is an access we serve at all.
fn in_range(offset: u16, len: usize) -> bool {
    matches!(len, 1 | 2 | 4) && usize::from(offset) + len <= CONFIG_SPACE_SIZE
}

/// The BAR index a config offset belongs to, if any.
fn bar_of(offset: usize) -> Option<usize> {
    let first = usize::from(BAR0);
    (first..first + 4 * NUM_BARS).contains(&offset).then(|| (offset - first) / 4)
}

impl ConfigSpace {
    pub fn new(id: PciIdentity) -> Self {
        let mut c = Self {
            regs: [0; CONFIG_SPACE_SIZE],
            writable: [0; CONFIG_SPACE_SIZE],
            w1c: [0; CONFIG_SPACE_SIZE],
            bars: [None; NUM_BARS],
            bar_moves: LogLimit::default(),
            bad_access: LogLimit::default(),
        };
        c.set_u16(VENDOR_ID, id.vendor_id);
        c.set_u16(DEVICE_ID, id.device_id);
        c.set_u8(REVISION_ID, id.revision);
        c.set_u8(PROG_IF, id.prog_if);
        c.set_u8(SUBCLASS, id.subclass);
        c.set_u8(CLASS, id.class);
        c.set_u8(HEADER_TYPE, 0);
        c.set_u16(SUBSYSTEM_VENDOR_ID, id.subsystem_vendor_id);
        c.set_u16(SUBSYSTEM_ID, id.subsystem_id);
        c.set_u8(INTERRUPT_PIN, id.interrupt_pin);
        c.set_writable(COMMAND, &COMMAND_WRITABLE.to_le_bytes());
        c.set_writable(INTERRUPT_LINE, &[0xFF]);
        let w1c = STATUS_W1C.to_le_bytes();
        c.w1c[usize::from(STATUS)..usize::from(STATUS) + 2].copy_from_slice(&w1c);
        c
    }

    /// Declares BAR `index` placed at `addr` with `size` bytes.
    pub fn add_bar(
        &mut self,
        index: usize,
        addr: u32,
        size: u32,
        kind: BarKind,
    ) -> Result<(), ConfigSpaceError> {
        let slot = self.bars.get_mut(index).ok_or(ConfigSpaceError::BarIndex(index))?;
        if slot.is_some() {
            return Err(ConfigSpaceError::BarInUse(index));
        }
        if !size.is_power_of_two() || size < 16 {
            return Err(ConfigSpaceError::BarSize(size));
        }
        if addr == 0 || addr & (size - 1) != 0 {
            return Err(ConfigSpaceError::BarAddress { addr, size });
        }
        *slot = Some(Bar { addr, size, kind, sizing: false });
        Ok(())
    }

    /// Every placed BAR, in index order.
    pub fn placed_bars(&self) -> Vec<PlacedBar> {
        (0..NUM_BARS)
            .filter_map(|index| self.bar(index).map(|(addr, size)| PlacedBar { index, addr, size }))
            .collect()
    }

    /// The placed address and size of BAR `index`.
    pub fn bar(&self, index: usize) -> Option<(u32, u32)> {
        self.bars.get(index).copied().flatten().map(|b| (b.addr, b.size))
    }

    pub fn command(&self) -> u16 {
        self.u16_at(COMMAND)
    }

    pub fn memory_enabled(&self) -> bool {
        self.command() & COMMAND_MEMORY != 0
    }

    pub fn intx_disabled(&self) -> bool {
        self.command() & COMMAND_INTX_DISABLE != 0
    }

    pub fn set_interrupt_status(&mut self, pending: bool) {
        let s = self.u16_at(STATUS);
        self.set_u16(STATUS, if pending { s | STATUS_INTERRUPT } else { s & !STATUS_INTERRUPT });
    }

    /// Declares which bits of the bytes at `offset` the guest may write.
    /// Out-of-range bytes are ignored.
    pub fn set_writable(&mut self, offset: u16, mask: &[u8]) {
        for (i, m) in mask.iter().enumerate() {
            if let Some(w) = self.writable.get_mut(usize::from(offset) + i) {
                *w = *m;
            }
        }
    }

    /// Sets bytes as the device sees them (no masks). BAR registers are
    /// computed from the declared BARs, so setting them has no visible effect.
    pub fn set_bytes(&mut self, offset: u16, bytes: &[u8]) {
        for (i, b) in bytes.iter().enumerate() {
            if let Some(r) = self.regs.get_mut(usize::from(offset) + i) {
                *r = *b;
            }
        }
    }

    pub fn set_u8(&mut self, offset: u16, v: u8) {
        self.set_bytes(offset, &[v]);
    }

    pub fn set_u16(&mut self, offset: u16, v: u16) {
        self.set_bytes(offset, &v.to_le_bytes());
    }

    pub fn set_u32(&mut self, offset: u16, v: u32) {
        self.set_bytes(offset, &v.to_le_bytes());
    }

    fn byte_at(&self, offset: usize) -> u8 {
        match bar_of(offset) {
            Some(i) => {
                let v = self.bars[i].map_or(0, |b| b.value());
                v.to_le_bytes()[offset % 4]
            }
            None => self.regs.get(offset).copied().unwrap_or(0xFF),
        }
    }

    pub fn u8_at(&self, offset: u16) -> u8 {
        self.byte_at(usize::from(offset))
    }

    pub fn u16_at(&self, offset: u16) -> u16 {
        let o = usize::from(offset);
        u16::from_le_bytes([self.byte_at(o), self.byte_at(o + 1)])
    }

    pub fn u32_at(&self, offset: u16) -> u32 {
        let o = usize::from(offset);
        u32::from_le_bytes([self.byte_at(o), self.byte_at(o + 1), self.byte_at(o + 2), self.byte_at(o + 3)])
    }

    /// A guest read. Accesses that are not 1, 2 or 4 bytes inside the space
    /// read all ones, like an absent register.
    pub fn read(&mut self, offset: u16, data: &mut [u8]) {
        if !in_range(offset, data.len()) {
            warn_limited!(self.bad_access, "pci: config read of {} bytes at {offset:#x} ignored", data.len());
            data.fill(0xFF);
            return;
        }
        for (i, d) in data.iter_mut().enumerate() {
            *d = self.byte_at(usize::from(offset) + i);
        }
    }

    /// A guest write, through the writable and write-1-to-clear masks.
    pub fn write(&mut self, offset: u16, data: &[u8]) {
        if !in_range(offset, data.len()) {
            warn_limited!(
                self.bad_access,
                "pci: config write of {} bytes at {offset:#x} ignored",
                data.len()
            );
            return;
        }
        let start = usize::from(offset);
        let mut bar_writes: [Option<[u8; 4]>; NUM_BARS] = [None; NUM_BARS];
        for (i, &v) in data.iter().enumerate() {
            let o = start + i;
            if let Some(b) = bar_of(o) {
                // Collect the new register image; BARs act on whole values.
                let img = bar_writes[b].get_or_insert_with(|| self.u32_at(BAR0 + 4 * b as u16).to_le_bytes());
                img[o % 4] = v;
                continue;
            }
            let (w, c) = (self.writable[o], self.w1c[o]);
            let kept = self.regs[o] & !(v & c);
            self.regs[o] = (kept & !w) | (v & w);
        }
        for (i, img) in bar_writes.iter().enumerate() {
            if let Some(img) = img {
                self.write_bar(i, u32::from_le_bytes(*img));
            }
        }
    }

    fn write_bar(&mut self, index: usize, value: u32) {
        let Some(bar) = self.bars[index].as_mut() else {
            return; // unimplemented BAR: hardwired to zero
        };
        let addr = value & bar.mask();
        if addr == bar.mask() {
            bar.sizing = true;
        } else if addr == bar.addr {
            bar.sizing = false;
        } else {
            bar.sizing = false;
            let placed = bar.addr;
            warn_limited!(
                self.bar_moves,
                "pci: guest tried to move BAR{index} from {placed:#x} to {addr:#x}; BARs do not move, ignored"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space() -> ConfigSpace {
        let mut c = ConfigSpace::new(PciIdentity {
            vendor_id: 0x8086,
            device_id: 0x1234,
            class: 0x08,
            subclass: 0x80,
            interrupt_pin: PIN_INTA,
            ..Default::default()
        });
        c.add_bar(0, 0xFEBF_0000, 16, BarKind::Memory32).unwrap();
        c
    }

    fn rd(c: &mut ConfigSpace, off: u16, len: usize) -> u32 {
        let mut b = [0u8; 4];
        c.read(off, &mut b[..len]);
        u32::from_le_bytes(b)
    }

    fn wr(c: &mut ConfigSpace, off: u16, len: usize, v: u32) {
        c.write(off, &v.to_le_bytes()[..len]);
    }

    #[test]
    fn identity_and_read_only_header() {
        let mut c = space();
        assert_eq!(rd(&mut c, 0, 4), 0x1234_8086);
        assert_eq!(rd(&mut c, 0x08, 4), 0x0880_0000);
        assert_eq!(rd(&mut c, 0x0E, 1), 0);
        assert_eq!(rd(&mut c, 0x3D, 1), 1);
        wr(&mut c, 0, 4, 0xFFFF_FFFF);
        wr(&mut c, 0x3D, 1, 4);
        wr(&mut c, 0x08, 4, 0);
        assert_eq!(rd(&mut c, 0, 4), 0x1234_8086);
        assert_eq!(rd(&mut c, 0x3D, 1), 1);
        assert_eq!(rd(&mut c, 0x08, 4), 0x0880_0000);
    }

    #[test]
    fn command_register_writable_bits() {
        let mut c = space();
        assert!(!c.memory_enabled());
        wr(&mut c, COMMAND, 2, 0xFFFF);
        assert_eq!(c.command(), 0x0407);
        assert!(c.memory_enabled() && c.intx_disabled());
        wr(&mut c, COMMAND, 1, 0x01);
        assert_eq!(c.command(), 0x0401);
        assert!(!c.memory_enabled());
    }

    #[test]
    fn interrupt_line_is_writable() {
        let mut c = space();
        wr(&mut c, INTERRUPT_LINE, 1, 0x0B);
        assert_eq!(rd(&mut c, INTERRUPT_LINE, 2), 0x010B);
        wr(&mut c, INTERRUPT_LINE, 2, 0x0505);
        assert_eq!(rd(&mut c, INTERRUPT_LINE, 2), 0x0105);
    }

    #[test]
    fn status_error_bits_are_write_one_to_clear() {
        let mut c = space();
        c.set_u16(STATUS, 0xF900 | STATUS_INTERRUPT);
        wr(&mut c, STATUS, 2, 0x0000);
        assert_eq!(c.u16_at(STATUS), 0xF908);
        wr(&mut c, STATUS, 2, 0x8100);
        assert_eq!(c.u16_at(STATUS), 0x7808);
        // The interrupt-status bit is the device's, not the guest's.
        wr(&mut c, STATUS, 2, 0xFFFF);
        assert_eq!(c.u16_at(STATUS), STATUS_INTERRUPT);
        c.set_interrupt_status(false);
        assert_eq!(c.u16_at(STATUS), 0);
        // Writing the command word alone leaves status untouched.
        c.set_u16(STATUS, 0x0100);
        wr(&mut c, COMMAND, 2, 0x0002);
        assert_eq!(c.u16_at(STATUS), 0x0100);
    }

    #[test]
    fn bar_sizing_and_restore() {
        let mut c = space();
        assert_eq!(rd(&mut c, BAR0, 4), 0xFEBF_0000);
        wr(&mut c, BAR0, 4, 0xFFFF_FFFF);
        assert_eq!(rd(&mut c, BAR0, 4), 0xFFFF_FFF0);
        wr(&mut c, BAR0, 4, 0xFEBF_0000);
        assert_eq!(rd(&mut c, BAR0, 4), 0xFEBF_0000);
        assert_eq!(c.bar(0), Some((0xFEBF_0000, 16)));
    }

    #[test]
    fn bar_size_mask_follows_size() {
        let mut c = space();
        c.add_bar(2, 0x8000_0000, 0x1000, BarKind::Memory32).unwrap();
        wr(&mut c, BAR0 + 8, 4, 0xFFFF_FFFF);
        assert_eq!(rd(&mut c, BAR0 + 8, 4), 0xFFFF_F000);
        wr(&mut c, BAR0 + 8, 4, 0x8000_0000);
        assert_eq!(rd(&mut c, BAR0 + 8, 4), 0x8000_0000);
    }

    #[test]
    fn bars_do_not_move() {
        let mut c = space();
        wr(&mut c, BAR0, 4, 0xE000_0000);
        assert_eq!(rd(&mut c, BAR0, 4), 0xFEBF_0000);
        // Not even from the sizing state, and not by halves.
        wr(&mut c, BAR0, 4, 0xFFFF_FFFF);
        wr(&mut c, BAR0, 4, 0);
        assert_eq!(rd(&mut c, BAR0, 4), 0xFEBF_0000);
        wr(&mut c, BAR0 + 2, 2, 0x1234);
        assert_eq!(rd(&mut c, BAR0, 4), 0xFEBF_0000);
        assert!(c.bar_moves.seen() >= 3);
    }

    #[test]
    fn unimplemented_bars_read_zero_even_when_sized() {
        let mut c = space();
        for i in 1..6u16 {
            wr(&mut c, BAR0 + 4 * i, 4, 0xFFFF_FFFF);
            assert_eq!(rd(&mut c, BAR0 + 4 * i, 4), 0);
        }
        wr(&mut c, 0x30, 4, 0xFFFF_FFFF);
        assert_eq!(rd(&mut c, 0x30, 4), 0);
    }

    #[test]
    fn add_bar_validates() {
        let mut c = space();
        assert_eq!(c.add_bar(6, 0x1000, 16, BarKind::Memory32), Err(ConfigSpaceError::BarIndex(6)));
        assert_eq!(c.add_bar(0, 0x1000, 16, BarKind::Memory32), Err(ConfigSpaceError::BarInUse(0)));
        assert_eq!(c.add_bar(1, 0x1000, 8, BarKind::Memory32), Err(ConfigSpaceError::BarSize(8)));
        assert_eq!(c.add_bar(1, 0x1000, 24, BarKind::Memory32), Err(ConfigSpaceError::BarSize(24)));
        assert!(matches!(
            c.add_bar(1, 0x1008, 16, BarKind::Memory32),
            Err(ConfigSpaceError::BarAddress { .. })
        ));
        assert!(matches!(c.add_bar(1, 0, 16, BarKind::Memory32), Err(ConfigSpaceError::BarAddress { .. })));
    }

    #[test]
    fn device_registers_follow_their_masks() {
        let mut c = space();
        c.set_u16(0x60, 0x0003);
        c.set_writable(0x60, &[0x27, 0x00]);
        wr(&mut c, 0x60, 2, 0xFFFF);
        assert_eq!(rd(&mut c, 0x60, 2), 0x0027);
        c.set_writable(0xFF, &[0xFF, 0xFF]); // the byte past the end is dropped
        wr(&mut c, 0xFF, 1, 0xAA);
        assert_eq!(rd(&mut c, 0xFF, 1), 0xAA);
    }

    #[test]
    fn word_and_byte_reads_at_every_offset() {
        let mut c = space();
        assert_eq!(rd(&mut c, 1, 1), 0x80);
        assert_eq!(rd(&mut c, 2, 2), 0x1234);
        assert_eq!(rd(&mut c, BAR0 + 2, 2), 0xFEBF);
        // Unaligned but inside the space: served byte by byte.
        assert_eq!(rd(&mut c, 1, 2), 0x3480);
    }

    #[test]
    fn any_offset_and_width_is_safe() {
        let mut c = space();
        for len in [0usize, 1, 2, 3, 4, 8] {
            for off in 0..=300u16 {
                let mut b = vec![0u8; len];
                c.read(off, &mut b);
                if !in_range(off, len) {
                    assert!(b.iter().all(|&x| x == 0xFF), "len {len} off {off:#x}");
                }
                c.write(off, &vec![0xFF; len]);
            }
        }
        assert_eq!(rd(&mut c, 0, 4), 0x1234_8086);
    }
}
