//! A snapshot disk's writes, kept in host memory (QEMU's `-snapshot`): the
//! image is opened read-only and never changes, the guest reads back what
//! it wrote, and everything is dropped when kennel exits. The VMM owns the
//! overlay and hands it to each device it builds, so writes outlive a
//! system reset as they would on a real disk. A test or a fault scenario can so boot the same pristine
//! image again and again, or from a read-only file system.

use std::collections::HashMap;

use super::regs::SECTOR_SIZE;

const SECTOR: usize = SECTOR_SIZE as usize;

/// Sectors the guest has written, by sector number. Bounded: past
/// `max_bytes` a write fails (IOERR) rather than growing kennel without end.
pub struct Overlay {
    sectors: HashMap<u64, Box<[u8; SECTOR]>>,
    max_sectors: usize,
}

/// The overlay is full: the write was not kept.
#[derive(Debug, PartialEq, Eq)]
pub struct Full;

impl std::fmt::Debug for Overlay {
    // The sectors themselves are guest data, not worth a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Overlay")
            .field("bytes", &self.bytes())
            .field("max_sectors", &self.max_sectors)
            .finish()
    }
}

impl Overlay {
    pub fn new(max_bytes: u64) -> Self {
        let max_sectors = usize::try_from(max_bytes / SECTOR_SIZE).unwrap_or(usize::MAX);
        Self { sectors: HashMap::new(), max_sectors }
    }

    /// Bytes of guest data held.
    pub fn bytes(&self) -> u64 {
        self.sectors.len() as u64 * SECTOR_SIZE
    }

    /// Stores whole sectors from `data` starting at `first`. All or nothing:
    /// a write that would pass the limit changes nothing.
    pub fn write(&mut self, first: u64, data: &[u8]) -> Result<(), Full> {
        // The engine checked that the request lies inside the disk, so
        // `first + i` cannot overflow for any of its sectors.
        let sectors = || data.chunks_exact(SECTOR).enumerate().map(|(i, c)| (first + i as u64, c));
        let new = sectors().filter(|(s, _)| !self.sectors.contains_key(s)).count();
        if self.sectors.len().saturating_add(new) > self.max_sectors {
            return Err(Full);
        }
        for (s, chunk) in sectors() {
            let slot = self.sectors.entry(s).or_insert_with(|| Box::new([0; SECTOR]));
            slot.copy_from_slice(chunk);
        }
        Ok(())
    }

    /// The sectors it holds among the `count` from `first`, each with its
    /// index from `first`: what a read must show instead of the image's.
    pub fn held(&self, first: u64, count: u64) -> impl Iterator<Item = (u64, &[u8])> + '_ {
        // Most reads of a snapshot find nothing: skip the lookups then.
        let count = if self.sectors.is_empty() { 0 } else { count };
        (0..count).filter_map(move |i| self.sectors.get(&first.wrapping_add(i)).map(|s| (i, &s[..])))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sectors(fill: &[u8]) -> Vec<u8> {
        fill.iter().flat_map(|&b| [b; SECTOR]).collect()
    }

    /// What a read of `buf` (the image's sectors from `first`) shows.
    trait Patch {
        fn patch(&self, first: u64, buf: &mut [u8]);
    }
    impl Patch for Overlay {
        fn patch(&self, first: u64, buf: &mut [u8]) {
            for (i, kept) in self.held(first, (buf.len() / SECTOR) as u64) {
                let at = i as usize * SECTOR;
                buf[at..at + SECTOR].copy_from_slice(kept);
            }
        }
    }

    #[test]
    fn reads_see_written_sectors_and_the_image_elsewhere() {
        let mut o = Overlay::new(1 << 20);
        o.write(5, &sectors(&[1, 2])).unwrap();
        let mut buf = sectors(&[9, 9, 9, 9]); // sectors 4..8 as the image has them
        o.patch(4, &mut buf);
        assert_eq!(buf, sectors(&[9, 1, 2, 9]));
        o.write(6, &sectors(&[3])).unwrap();
        o.patch(4, &mut buf);
        assert_eq!(buf, sectors(&[9, 1, 3, 9]));
        assert_eq!(o.bytes(), 2 * SECTOR_SIZE);
    }

    #[test]
    fn a_write_past_the_limit_changes_nothing_but_rewrites_still_fit() {
        let mut o = Overlay::new(3 * SECTOR_SIZE);
        o.write(0, &sectors(&[1, 1])).unwrap();
        assert_eq!(o.write(10, &sectors(&[2, 2])), Err(Full));
        let mut buf = sectors(&[0, 0]);
        o.patch(10, &mut buf);
        assert_eq!(buf, sectors(&[0, 0]), "a refused write left data behind");
        // Sectors already held cost nothing more.
        o.write(0, &sectors(&[3, 3])).unwrap();
        o.write(1, &sectors(&[4, 5])).unwrap();
        assert_eq!(o.bytes(), 3 * SECTOR_SIZE);
        assert_eq!(o.write(7, &sectors(&[7])), Err(Full));
    }

    #[test]
    fn the_last_sector_number_is_a_sector_too() {
        let mut o = Overlay::new(1 << 20);
        o.write(u64::MAX, &sectors(&[6])).unwrap();
        let mut buf = sectors(&[0]);
        o.patch(u64::MAX, &mut buf);
        assert_eq!(buf, sectors(&[6]));
    }

    #[test]
    fn a_zero_limit_keeps_nothing() {
        let mut o = Overlay::new(0);
        assert_eq!(o.write(0, &sectors(&[1])), Err(Full));
        assert_eq!(o.write(0, &[]), Ok(()));
    }
}
