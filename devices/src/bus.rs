//! Flat address buses (one for port I/O, one for MMIO).
//!
//! A bus is a sorted map of non-overlapping ranges. It is built before the
//! vCPUs start and never changes afterwards, so vCPU threads share it through
//! an `Arc` without locking the map. Each access takes exactly one lock, the
//! device's own: a range leads to a [`BusTarget`], which is either a device
//! behind its `Mutex` or a stateless forwarder (a PCI BAR) to one.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// A device on a bus. Offsets are relative to the start of its range.
///
/// Accesses come straight from the guest: an implementation must accept any
/// offset and any length without panicking.
pub trait BusDevice: Send {
    fn read(&mut self, offset: u64, data: &mut [u8]);
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// Errors building a bus.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    /// a bus range must not be empty (base {0:#x})
    #[error("a bus range must not be empty (base {0:#x})")]
    Empty(u64),
    /// range overflows the address space
    #[error("bus range {base:#x}+{len:#x} overflows the address space")]
    Overflow { base: u64, len: u64 },
    /// ranges overlap
    #[error("bus range {base:#x}+{len:#x} overlaps an existing device at {other:#x}")]
    Overlap { base: u64, len: u64, other: u64 },
}

/// What a bus range leads to. Shared by every vCPU thread, so it takes
/// `&self`: whoever holds state locks it, once per access.
pub trait BusTarget: Send + Sync {
    fn read(&self, offset: u64, data: &mut [u8]);
    fn write(&self, offset: u64, data: &[u8]);
}

impl<T: BusDevice + ?Sized> BusTarget for Mutex<T> {
    fn read(&self, offset: u64, data: &mut [u8]) {
        lock(self).read(offset, data);
    }
    fn write(&self, offset: u64, data: &[u8]) {
        lock(self).write(offset, data);
    }
}

pub type SharedTarget = Arc<dyn BusTarget>;

#[derive(Default)]
pub struct Bus {
    // keyed by base; value is (len, target)
    ranges: BTreeMap<u64, (u64, SharedTarget)>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list: Vec<_> = self.ranges.iter().map(|(b, (l, _))| (*b, *l)).collect();
        f.debug_struct("Bus").field("ranges", &list).finish()
    }
}

impl Bus {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, device: SharedTarget, base: u64, len: u64) -> Result<(), BusError> {
        if len == 0 {
            return Err(BusError::Empty(base));
        }
        let end = base.checked_add(len - 1).ok_or(BusError::Overflow { base, len })?;
        // The only candidates for overlap are the last range starting at or
        // before `end`.
        if let Some((&other, &(olen, _))) = self.ranges.range(..=end).next_back() {
            if other + (olen - 1) >= base {
                return Err(BusError::Overlap { base, len, other });
            }
        }
        self.ranges.insert(base, (len, device));
        Ok(())
    }

    /// The device covering `[addr, addr + len)` and the offset of `addr` in it.
    /// An access straddling the end of a range matches nothing.
    fn resolve(&self, addr: u64, len: usize) -> Option<(&SharedTarget, u64)> {
        let (&base, (rlen, dev)) = self.ranges.range(..=addr).next_back()?;
        let offset = addr - base;
        let last = offset.checked_add((len as u64).saturating_sub(1))?;
        (last < *rlen).then_some((dev, offset))
    }

    /// Reads from the device at `addr`; returns false when nothing is there.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.resolve(addr, data.len()) {
            Some((dev, offset)) => {
                dev.read(offset, data);
                true
            }
            None => false,
        }
    }

    /// Writes to the device at `addr`; returns false when nothing is there.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.resolve(addr, data.len()) {
            Some((dev, offset)) => {
                dev.write(offset, data);
                true
            }
            None => false,
        }
    }
}

/// Locks a device, recovering from poisoning: a device whose previous
/// holder panicked is still the best state we have, and one bad access must
/// not take the whole VM down with it.
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder {
        last: Option<(u64, Vec<u8>)>,
    }
    impl BusDevice for Recorder {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.last = Some((offset, data.to_vec()));
        }
    }

    fn dev() -> Arc<Mutex<Recorder>> {
        Arc::new(Mutex::new(Recorder::default()))
    }

    #[test]
    fn routes_by_range_with_relative_offsets() {
        let mut bus = Bus::new();
        let a = dev();
        bus.insert(a.clone(), 0x3f8, 8).unwrap();
        let mut buf = [0u8; 1];
        assert!(bus.read(0x3fa, &mut buf));
        assert_eq!(buf, [2]);
        assert!(bus.write(0x3ff, &[7]));
        assert_eq!(a.lock().unwrap().last, Some((7, vec![7])));
        assert!(!bus.read(0x400, &mut buf));
        assert!(!bus.read(0x3f7, &mut buf));
    }

    #[test]
    fn refuses_overlaps_and_empty_ranges() {
        let mut bus = Bus::new();
        bus.insert(dev(), 0x1000, 0x10).unwrap();
        assert_eq!(
            bus.insert(dev(), 0x100f, 1),
            Err(BusError::Overlap { base: 0x100f, len: 1, other: 0x1000 })
        );
        assert!(matches!(bus.insert(dev(), 0xff8, 0x10), Err(BusError::Overlap { .. })));
        assert_eq!(bus.insert(dev(), 0x2000, 0), Err(BusError::Empty(0x2000)));
        assert!(matches!(bus.insert(dev(), u64::MAX, 2), Err(BusError::Overflow { .. })));
        bus.insert(dev(), 0x1010, 0x10).unwrap();
        bus.insert(dev(), 0xff0, 0x10).unwrap();
    }

    #[test]
    fn access_straddling_range_end_matches_nothing() {
        let mut bus = Bus::new();
        bus.insert(dev(), 0x1000, 4).unwrap();
        let mut buf = [0u8; 4];
        assert!(bus.read(0x1000, &mut buf));
        assert!(!bus.read(0x1002, &mut buf));
        assert!(!bus.write(u64::MAX, &[1, 2]));
    }
}
