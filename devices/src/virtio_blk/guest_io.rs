//! Disk reads straight into the guest's buffers.
//!
//! A read request's data goes from the image into guest memory with one
//! `preadv(2)` whose vectors are the request's writable descriptors: one
//! copy, made by the host kernel, as QEMU and cloud-hypervisor do. Going
//! through a host buffer costs a second copy of every byte, which on an
//! emulated nested host was most of the time a read took.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use vm_memory::{Address, Bytes, GuestAddress, GuestMemory, GuestMemoryMmap, Permissions, VolatileSlice};

/// The guest's buffers as host slices, in order, with their total length.
fn slices<'m>(
    mem: &'m GuestMemoryMmap,
    at: &[(GuestAddress, u32)],
) -> io::Result<Vec<VolatileSlice<'m, ()>>> {
    let mut out = Vec::with_capacity(at.len());
    for &(addr, len) in at {
        // A buffer may straddle two memory regions: one slice each.
        for s in mem.get_slices(addr, len as usize, Permissions::Write).map_err(io::Error::other)? {
            out.push(s.map_err(io::Error::other)?);
        }
    }
    Ok(out)
}

/// Reads the image at `pos` into the buffers `at`, filling each in turn;
/// all of them or an error (a short file is `UnexpectedEof`).
pub(super) fn read_into(
    disk: &File,
    pos: u64,
    mem: &GuestMemoryMmap,
    at: &[(GuestAddress, u32)],
) -> io::Result<()> {
    let slices = slices(mem, at)?;
    let guards: Vec<_> = slices.iter().map(|s| s.ptr_guard_mut()).collect();
    let mut iov: Vec<libc::iovec> =
        guards.iter().map(|g| libc::iovec { iov_base: g.as_ptr().cast(), iov_len: g.len() }).collect();
    let mut first = 0;
    let mut done = 0u64;
    while first < iov.len() {
        let rest = &iov[first..];
        let count = libc::c_int::try_from(rest.len().min(1024)).unwrap_or(1024);
        let off = libc::off_t::try_from(pos + done).map_err(|_| io::Error::other("offset out of range"))?;
        // SAFETY: every vector points into guest memory that `mem` keeps
        // mapped while the guards live, and has the length vm-memory
        // checked for it; preadv writes at most that much into each.
        let n = unsafe { libc::preadv(disk.as_raw_fd(), rest.as_ptr(), count, off) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        // A short read: skip what was filled, go on from the middle of
        // the vector it stopped in.
        let mut n = n as usize;
        done += n as u64;
        while n > 0 && first < iov.len() {
            let v = &mut iov[first];
            if n >= v.iov_len {
                n -= v.iov_len;
                first += 1;
            } else {
                // SAFETY: n < iov_len, so the result stays inside the vector.
                v.iov_base = unsafe { v.iov_base.cast::<u8>().add(n) }.cast();
                v.iov_len -= n;
                n = 0;
            }
        }
    }
    Ok(())
}

/// Writes `data` at byte `offset` of the buffers `at`, as if they were one
/// (how a snapshot's sectors land over what the image held).
pub(super) fn write_at(
    mem: &GuestMemoryMmap,
    at: &[(GuestAddress, u32)],
    mut offset: u64,
    mut data: &[u8],
) -> io::Result<()> {
    for &(addr, len) in at {
        let len = u64::from(len);
        if offset >= len {
            offset -= len;
            continue;
        }
        let n = (len - offset).min(data.len() as u64) as usize;
        let to = addr.checked_add(offset).ok_or_else(|| io::Error::other("buffer address overflows"))?;
        mem.write_slice(&data[..n], to).map_err(io::Error::other)?;
        data = &data[n..];
        offset = 0;
        if data.is_empty() {
            return Ok(());
        }
    }
    if data.is_empty() {
        Ok(())
    } else {
        Err(io::ErrorKind::UnexpectedEof.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm_sys_util::tempfile::TempFile;

    fn image(len: usize) -> (TempFile, Vec<u8>) {
        let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let f = TempFile::new().unwrap();
        std::fs::write(f.as_path(), &bytes).unwrap();
        (f, bytes)
    }

    /// Two regions back to back, as guest RAM is split around a hole.
    fn two_regions() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000), (GuestAddress(0x10000), 0x10000)]).unwrap()
    }

    fn guest(mem: &GuestMemoryMmap, addr: u64, len: usize) -> Vec<u8> {
        let mut b = vec![0; len];
        mem.read_slice(&mut b, GuestAddress(addr)).unwrap();
        b
    }

    #[test]
    fn buffers_are_filled_in_order_across_a_region_boundary() {
        let (f, bytes) = image(8192);
        let mem = two_regions();
        // 3000 bytes ending in the second region, then 1000 elsewhere.
        let at = [(GuestAddress(0xF800), 3000), (GuestAddress(0x100), 1000)];
        read_into(f.as_file(), 512, &mem, &at).unwrap();
        assert_eq!(guest(&mem, 0xF800, 3000), bytes[512..3512]);
        assert_eq!(guest(&mem, 0x100, 1000), bytes[3512..4512]);
    }

    #[test]
    fn a_short_image_is_an_error_not_a_partial_success() {
        let (f, _) = image(1024);
        let mem = two_regions();
        let e = read_into(f.as_file(), 512, &mem, &[(GuestAddress(0), 1024)]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn buffers_outside_guest_memory_are_refused() {
        let (f, _) = image(4096);
        let mem = two_regions();
        assert!(read_into(f.as_file(), 0, &mem, &[(GuestAddress(0x1F000), 0x2000)]).is_err());
    }

    #[test]
    fn write_at_spans_buffers_and_refuses_to_run_past_them() {
        let mem = two_regions();
        let at = [(GuestAddress(0x1000), 300), (GuestAddress(0x3000), 300)];
        write_at(&mem, &at, 200, &[7; 200]).unwrap();
        assert_eq!(guest(&mem, 0x1000 + 200, 100), [7; 100]);
        assert_eq!(guest(&mem, 0x3000, 100), [7; 100]);
        assert_eq!(guest(&mem, 0x3000 + 100, 1), [0]);
        assert!(write_at(&mem, &at, 500, &[1; 200]).is_err());
    }
}
