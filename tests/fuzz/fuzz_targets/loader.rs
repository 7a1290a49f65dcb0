//! `load_kernel` on arbitrary bytes written to a temp file (the seeds start
//! with an ELF header and with a bzImage setup header).
//!
//! Invariants: an error or a kernel, never a panic; a loaded kernel's entry
//! point lies inside guest memory, above the 1 MiB mark where kernels go,
//! and its end does not pass the end of guest memory.
#![no_main]

use std::io::Write;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vm_memory::{GuestAddress, GuestMemoryMmap};

use kennel::machine::boot::loader::{load_kernel, EntryProtocol};

const MEM: u64 = 16 << 20;

fn mem() -> &'static GuestMemoryMmap {
    static MEM_MAP: OnceLock<GuestMemoryMmap> = OnceLock::new();
    MEM_MAP.get_or_init(|| GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM as usize)]).unwrap())
}

fuzz_target!(|data: &[u8]| {
    let path = std::env::temp_dir().join(format!("kennel-fuzz-loader-{}", std::process::id()));
    std::fs::File::create(&path).unwrap().write_all(data).unwrap();
    let r = load_kernel(mem(), &path);
    let _ = std::fs::remove_file(&path);
    if let Ok(k) = r {
        assert!(k.entry < MEM, "entry {:#x} outside guest memory: {k:?}", k.entry);
        assert!(k.entry >= 0x10_0000 || k.protocol == EntryProtocol::Pvh, "entry {:#x} below 1 MiB", k.entry);
        assert!(k.kernel_end <= MEM, "kernel end {:#x} past guest memory", k.kernel_end);
        assert_eq!(k.setup_header.is_some(), data.get(..4) != Some(b"\x7fELF".as_slice()));
    }
});
