//! Loading the kernel and initrd into guest memory.
//!
//! An ELF with a PVH note is entered through PVH (32-bit protected mode);
//! any other ELF (a Linux `vmlinux`) and a `bzImage` are entered through the
//! 64-bit Linux boot protocol.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use linux_loader::loader::bootparam::setup_header;
use linux_loader::loader::{BzImage, Elf, KernelLoader, PvhBootCapability};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use crate::machine::layout;

/// Errors loading a kernel or initrd.
#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    #[error("cannot open kernel image {0}: {1}")]
    OpenKernel(PathBuf, #[source] std::io::Error),
    #[error("kernel image {0} is empty")]
    EmptyKernel(PathBuf),
    #[error("kernel image {0} is neither an ELF vmlinux nor a bzImage (no ELF magic, no 'HdrS' header)")]
    UnknownFormat(PathBuf),
    #[error("kernel image {path} is not a loadable ELF: {source}")]
    BadElf {
        path: PathBuf,
        #[source]
        source: linux_loader::loader::Error,
    },
    #[error("kernel image {path} is not a loadable bzImage: {source}")]
    BadBzImage {
        path: PathBuf,
        #[source]
        source: linux_loader::loader::Error,
    },
    #[error("kernel image {0} is not a loadable bzImage: no setup header")]
    NoSetupHeader(PathBuf),
    #[error("bzImage {0} cannot be entered in 64-bit mode (its header lacks XLF_KERNEL_64)")]
    Not64Bit(PathBuf),
    #[error("kernel image {0} does not fit in guest memory")]
    KernelTooBig(PathBuf),
    #[error("kernel image {path} has its entry point {entry:#x} outside guest memory")]
    EntryOutsideMemory { path: PathBuf, entry: u64 },
    #[error("cannot open initrd {0}: {1}")]
    OpenInitrd(PathBuf, #[source] std::io::Error),
    #[error("initrd {path} ({size} bytes) does not fit in guest memory above the kernel")]
    InitrdTooBig { path: PathBuf, size: u64 },
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, #[source] std::io::Error),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryProtocol {
    /// 64-bit Linux boot protocol: long mode, paging on, rsi = zero page.
    Linux64,
    /// PVH: 32-bit protected mode, paging off, ebx = hvm_start_info.
    Pvh,
}

#[derive(Clone, Copy, Debug)]
pub struct LoadedKernel {
    pub entry: u64,
    pub protocol: EntryProtocol,
    pub kernel_end: u64,
    /// The bzImage's setup header, to be copied into the zero page.
    pub setup_header: Option<setup_header>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadedInitrd {
    pub addr: u64,
    pub size: u64,
}

const ELF_MAGIC: [u8; 4] = *b"\x7fELF";
const BZ_MAGIC_OFFSET: u64 = 0x202;
const XLF_KERNEL_64: u16 = 1;
/// The 64-bit entry point sits 0x200 bytes into a bzImage's protected-mode
/// part (arch/x86/boot/compressed/head_64.S).
const BZ_ENTRY64_OFFSET: u64 = 0x200;

enum Format {
    Elf,
    BzImage,
}

fn sniff(path: &Path, f: &mut File) -> Result<Format, LoaderError> {
    let len = f.metadata().map_err(|e| LoaderError::Read(path.into(), e))?.len();
    if len == 0 {
        return Err(LoaderError::EmptyKernel(path.into()));
    }
    let mut magic = [0u8; 4];
    f.seek(SeekFrom::Start(0)).map_err(|e| LoaderError::Read(path.into(), e))?;
    if f.read_exact(&mut magic).is_ok() && magic == ELF_MAGIC {
        return Ok(Format::Elf);
    }
    if len >= BZ_MAGIC_OFFSET + 4 {
        f.seek(SeekFrom::Start(BZ_MAGIC_OFFSET)).map_err(|e| LoaderError::Read(path.into(), e))?;
        if f.read_exact(&mut magic).is_ok() && &magic == b"HdrS" {
            return Ok(Format::BzImage);
        }
    }
    Err(LoaderError::UnknownFormat(path.into()))
}

pub fn load_kernel(mem: &GuestMemoryMmap, path: &Path) -> Result<LoadedKernel, LoaderError> {
    let mut f = File::open(path).map_err(|e| LoaderError::OpenKernel(path.into(), e))?;
    let k = match sniff(path, &mut f)? {
        Format::Elf => load_elf(mem, path, &mut f),
        Format::BzImage => load_bzimage(mem, path, &mut f),
    }?;
    // linux-loader checks where segments go, not where e_entry (or a PVH
    // note) points: a vCPU started there would fault with no RAM to run.
    if !mem.address_in_range(GuestAddress(k.entry)) {
        return Err(LoaderError::EntryOutsideMemory { path: path.into(), entry: k.entry });
    }
    // Nor does it check p_memsz (the BSS) beyond p_filesz: the kernel would
    // zero memory that is not there, and the initrd would be refused.
    if k.kernel_end > mem.last_addr().raw_value().saturating_add(1) {
        return Err(LoaderError::KernelTooBig(path.into()));
    }
    Ok(k)
}

fn is_memory_error(e: &linux_loader::loader::Error) -> bool {
    use linux_loader::loader::{elf, Error};
    matches!(
        e,
        Error::MemoryOverflow
            | Error::Elf(elf::Error::ReadKernelImage)
            | Error::Elf(elf::Error::InvalidProgramHeaderAddress)
    )
}

fn load_elf(mem: &GuestMemoryMmap, path: &Path, f: &mut File) -> Result<LoadedKernel, LoaderError> {
    let r = Elf::load(mem, None, f, Some(GuestAddress(layout::HIMEM_START))).map_err(|e| {
        if is_memory_error(&e) {
            LoaderError::KernelTooBig(path.into())
        } else {
            LoaderError::BadElf { path: path.into(), source: e }
        }
    })?;
    let (entry, protocol) = match r.pvh_boot_cap {
        PvhBootCapability::PvhEntryPresent(addr) => (addr.0, EntryProtocol::Pvh),
        _ => (r.kernel_load.0, EntryProtocol::Linux64),
    };
    Ok(LoadedKernel { entry, protocol, kernel_end: r.kernel_end, setup_header: None })
}

fn load_bzimage(mem: &GuestMemoryMmap, path: &Path, f: &mut File) -> Result<LoadedKernel, LoaderError> {
    let r = BzImage::load(mem, None, f, Some(GuestAddress(layout::HIMEM_START))).map_err(|e| {
        if is_memory_error(&e) {
            LoaderError::KernelTooBig(path.into())
        } else {
            LoaderError::BadBzImage { path: path.into(), source: e }
        }
    })?;
    let hdr = r.setup_header.ok_or_else(|| LoaderError::NoSetupHeader(path.into()))?;
    if hdr.xloadflags & XLF_KERNEL_64 == 0 {
        return Err(LoaderError::Not64Bit(path.into()));
    }
    Ok(LoadedKernel {
        entry: r.kernel_load.0 + BZ_ENTRY64_OFFSET,
        protocol: EntryProtocol::Linux64,
        kernel_end: r.kernel_end,
        setup_header: Some(hdr),
    })
}

/// Places the initrd page-aligned at the top of low RAM, as a bootloader
/// would, keeping clear of the kernel.
pub fn load_initrd(
    mem: &GuestMemoryMmap,
    mem_bytes: u64,
    kernel_end: u64,
    path: &Path,
) -> Result<LoadedInitrd, LoaderError> {
    let mut f = File::open(path).map_err(|e| LoaderError::OpenInitrd(path.into(), e))?;
    let size = f.metadata().map_err(|e| LoaderError::Read(path.into(), e))?.len();
    let top = layout::low_ram_end(mem_bytes);
    let too_big = || LoaderError::InitrdTooBig { path: path.into(), size };
    let addr = top.checked_sub(size).ok_or_else(too_big)? & !0xfff;
    if addr < kernel_end.max(layout::HIMEM_START) {
        return Err(too_big());
    }
    let len = usize::try_from(size).map_err(|_| too_big())?;
    mem.read_exact_volatile_from(GuestAddress(addr), &mut f, len)
        .map_err(|e| LoaderError::Read(path.into(), std::io::Error::other(e.to_string())))?;
    Ok(LoadedInitrd { addr, size })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn mem(bytes: u64) -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), bytes as usize)]).unwrap()
    }

    fn temp(name: &str, bytes: &[u8]) -> PathBuf {
        let p = std::env::temp_dir().join(format!("kennel-loader-{}-{name}", std::process::id()));
        File::create(&p).unwrap().write_all(bytes).unwrap();
        p
    }

    /// A minimal ELF64 with one PT_LOAD segment (and optionally a PVH note).
    pub(crate) fn tiny_elf(paddr: u64, code: &[u8], pvh_entry: Option<u32>) -> Vec<u8> {
        let mut note = Vec::new();
        if let Some(entry) = pvh_entry {
            note.extend_from_slice(&4u32.to_le_bytes()); // namesz "Xen\0"
            note.extend_from_slice(&4u32.to_le_bytes()); // descsz
            note.extend_from_slice(&18u32.to_le_bytes()); // XEN_ELFNOTE_PHYS32_ENTRY
            note.extend_from_slice(b"Xen\0");
            note.extend_from_slice(&entry.to_le_bytes());
        }
        let phnum: u16 = if pvh_entry.is_some() { 2 } else { 1 };
        let data_off = 64 + 56 * phnum as u64;
        let note_off = data_off + code.len() as u64;
        let mut v = Vec::new();
        v.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
        v.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        v.extend_from_slice(&0x3eu16.to_le_bytes());
        v.extend_from_slice(&1u32.to_le_bytes());
        v.extend_from_slice(&paddr.to_le_bytes()); // e_entry
        v.extend_from_slice(&64u64.to_le_bytes()); // e_phoff
        v.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
        v.extend_from_slice(&0u32.to_le_bytes());
        v.extend_from_slice(&64u16.to_le_bytes());
        v.extend_from_slice(&56u16.to_le_bytes());
        v.extend_from_slice(&phnum.to_le_bytes());
        v.extend_from_slice(&[0; 6]);
        let mut ph = |ty: u32, off: u64, addr: u64, len: u64| {
            v.extend_from_slice(&ty.to_le_bytes());
            v.extend_from_slice(&5u32.to_le_bytes());
            v.extend_from_slice(&off.to_le_bytes());
            v.extend_from_slice(&addr.to_le_bytes());
            v.extend_from_slice(&addr.to_le_bytes());
            v.extend_from_slice(&len.to_le_bytes());
            v.extend_from_slice(&len.to_le_bytes());
            v.extend_from_slice(&4u64.to_le_bytes());
        };
        ph(1, data_off, paddr, code.len() as u64);
        if pvh_entry.is_some() {
            ph(4, note_off, 0, note.len() as u64);
        }
        v.extend_from_slice(code);
        v.extend_from_slice(&note);
        v
    }

    #[test]
    fn elf_without_note_uses_linux64_entry() {
        let m = mem(16 << 20);
        let p = temp("plain.elf", &tiny_elf(0x20_0000, &[0xf4], None));
        let k = load_kernel(&m, &p).unwrap();
        assert_eq!((k.entry, k.protocol), (0x20_0000, EntryProtocol::Linux64));
        assert_eq!(m.read_obj::<u8>(GuestAddress(0x20_0000)).unwrap(), 0xf4);
    }

    #[test]
    fn elf_with_pvh_note_uses_pvh_entry() {
        let m = mem(16 << 20);
        let p = temp("pvh.elf", &tiny_elf(0x20_0000, &[0x90, 0xf4], Some(0x20_0001)));
        let k = load_kernel(&m, &p).unwrap();
        assert_eq!((k.entry, k.protocol), (0x20_0001, EntryProtocol::Pvh));
    }

    #[test]
    fn bad_images_are_named_errors() {
        let m = mem(16 << 20);
        let e = load_kernel(&m, Path::new("/nonexistent/vmlinux")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/vmlinux"), "{e}");
        let empty = temp("empty", b"");
        assert!(matches!(load_kernel(&m, &empty), Err(LoaderError::EmptyKernel(_))));
        let garbage = temp("garbage", &[0x55; 4096]);
        assert!(matches!(load_kernel(&m, &garbage), Err(LoaderError::UnknownFormat(_))));
        let mut truncated = tiny_elf(0x20_0000, &[0xf4; 64], None);
        truncated.truncate(100);
        let t = temp("truncated.elf", &truncated);
        assert!(matches!(load_kernel(&m, &t), Err(LoaderError::BadElf { .. })), "{:?}", load_kernel(&m, &t));
        let high = temp("high.elf", &tiny_elf(0x4000_0000, &[0xf4], None));
        assert!(matches!(load_kernel(&m, &high), Err(LoaderError::KernelTooBig(_))));
        let mut bz = vec![0u8; 0x400];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        let b = temp("bad.bz", &bz);
        assert!(matches!(load_kernel(&m, &b), Err(LoaderError::BadBzImage { .. })));
    }

    /// Found by the `loader` fuzz target: an ELF whose e_entry (or PVH
    /// note) points outside guest memory used to load "successfully".
    #[test]
    fn entry_point_outside_guest_memory_is_an_error() {
        let m = mem(16 << 20);
        let mut elf = tiny_elf(0x20_0000, &[0xf4], None);
        elf[24..32].copy_from_slice(&0xffdf_fffeu64.to_le_bytes()); // e_entry
        let p = temp("far-entry.elf", &elf);
        let e = load_kernel(&m, &p).unwrap_err();
        assert!(matches!(e, LoaderError::EntryOutsideMemory { entry: 0xffdf_fffe, .. }), "{e:?}");
        let p = temp("far-pvh.elf", &tiny_elf(0x20_0000, &[0xf4], Some(0x4000_0000)));
        assert!(matches!(
            load_kernel(&m, &p),
            Err(LoaderError::EntryOutsideMemory { entry: 0x4000_0000, .. })
        ));
    }

    /// Found by the `loader` fuzz target: a segment with one byte of file
    /// data and a memsz far past guest memory used to load, with a
    /// kernel_end of 0x7f00000000200001.
    #[test]
    fn segment_memsz_past_guest_memory_is_too_big() {
        let m = mem(16 << 20);
        let mut elf = tiny_elf(0x20_0000, &[0xf4], None);
        elf[64 + 40..64 + 48].copy_from_slice(&0x7f00_0000_0000_0001u64.to_le_bytes()); // p_memsz
        let p = temp("huge-bss.elf", &elf);
        assert!(
            matches!(load_kernel(&m, &p), Err(LoaderError::KernelTooBig(_))),
            "{:?}",
            load_kernel(&m, &p)
        );
    }

    #[test]
    fn initrd_goes_to_top_of_ram_or_errors() {
        let m = mem(16 << 20);
        let p = temp("initrd", &[7u8; 5000]);
        let r = load_initrd(&m, 16 << 20, 0x20_0000, &p).unwrap();
        assert_eq!(r.addr % 4096, 0);
        assert!(r.addr + r.size <= 16 << 20);
        assert_eq!(m.read_obj::<u8>(GuestAddress(r.addr + 4999)).unwrap(), 7);
        assert!(matches!(load_initrd(&m, 16 << 20, 0xff_f000, &p), Err(LoaderError::InitrdTooBig { .. })));
    }
}
