//! What a stock guest kernel needs on a PVM host, where KVM emulates guest
//! kernel code instruction by instruction (README.md, "Hosts without
//! hardware virtualization (PVM)").

use std::path::Path;

use kvm_ioctls::VcpuFd;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Errors handling an emulation failure.
#[derive(Debug, thiserror::Error)]
pub enum PvmError {
    #[error(
        "KVM could not emulate the instruction at RIP {rip:#x} (bytes: {bytes}); the guest cannot continue"
    )]
    Unhandled { rip: u64, bytes: String },
    #[error("cannot inspect the vCPU after an emulation failure: {0}")]
    Inspect(#[source] kvm_ioctls::Error),
}

/// True when `/dev/kvm` is served by the PVM backend.
pub fn host_is_pvm() -> bool {
    host_is_pvm_at(Path::new("/sys/module/kvm_pvm"))
}

pub fn host_is_pvm_at(module: &Path) -> bool {
    module.exists()
}

/// Guest command-line additions that avoid instructions PVM cannot emulate
/// (xsave/xrstor, SMAP's clac/stac, popcnt), slow calibration loops, and
/// work that costs seconds when every kernel instruction is emulated
/// (zeroing a 2 MiB per-cpu chunk; patching thousands of lock prefixes).
pub const CMDLINE_EXTRA: &str =
    "noxsave clearcpuid=308,151 nopti mitigations=off lpj=5000000 tsc=reliable percpu_alloc=page noreplace-smp";

const INT3: u8 = 0xcc;
const FWAIT: u8 = 0x9b;
const BP_VECTOR: u8 = 3;
const MF_VECTOR: u8 = 16;
/// x87 status word: error summary (an unmasked exception is pending).
const FSW_ES: u16 = 1 << 7;

/// Reads up to 16 instruction bytes at the guest's RIP.
fn instruction_bytes(vcpu: &VcpuFd, mem: &GuestMemoryMmap, rip: u64) -> Vec<u8> {
    let Ok(t) = vcpu.translate_gva(rip) else { return Vec::new() };
    if t.valid == 0 {
        return Vec::new();
    }
    let mut out = Vec::new();
    for i in 0..16 {
        match mem.read_obj::<u8>(GuestAddress(t.physical_address + i)) {
            Ok(b) => out.push(b),
            Err(_) => break,
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "unreadable".into();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ")
}

/// What the CPU would have done with an instruction PVM's emulator lacks.
#[derive(Debug, PartialEq, Eq)]
enum Emulated {
    /// Step past it and deliver this exception (a trap: after the instruction).
    SkipAndRaise(u8),
    /// Step past it: it had no effect.
    Skip,
}

/// `int3` (Linux's alternatives self-test) traps with #BP; `fwait` (Linux
/// touching FPU state for user space) does nothing unless an unmasked x87
/// exception is pending, which it reports as #MF.
fn emulate(first: u8, fsw: impl FnOnce() -> Option<u16>) -> Option<Emulated> {
    match first {
        INT3 => Some(Emulated::SkipAndRaise(BP_VECTOR)),
        FWAIT => match fsw()? & FSW_ES {
            0 => Some(Emulated::Skip),
            _ => Some(Emulated::SkipAndRaise(MF_VECTOR)),
        },
        _ => None,
    }
}

/// Handles an emulation failure if it is one we know (see `emulate`).
pub fn handle_emulation_failure(vcpu: &VcpuFd, mem: &GuestMemoryMmap) -> Result<(), PvmError> {
    let mut regs = vcpu.get_regs().map_err(PvmError::Inspect)?;
    let bytes = instruction_bytes(vcpu, mem, regs.rip);
    let what = bytes.first().and_then(|b| emulate(*b, || vcpu.get_fpu().ok().map(|f| f.fsw)));
    let Some(what) = what else {
        return Err(PvmError::Unhandled { rip: regs.rip, bytes: hex(&bytes) });
    };
    regs.rip = regs.rip.wrapping_add(1);
    vcpu.set_regs(&regs).map_err(PvmError::Inspect)?;
    if let Emulated::SkipAndRaise(vector) = what {
        let mut ev = vcpu.get_vcpu_events().map_err(PvmError::Inspect)?;
        ev.exception.injected = 1;
        ev.exception.nr = vector;
        ev.exception.has_error_code = 0;
        ev.exception.error_code = 0;
        vcpu.set_vcpu_events(&ev).map_err(PvmError::Inspect)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection_follows_the_module_directory() {
        let dir = std::env::temp_dir().join(format!("kennel-pvm-{}", std::process::id()));
        assert!(!host_is_pvm_at(&dir));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(host_is_pvm_at(&dir));
        std::fs::remove_dir(&dir).unwrap();
    }

    #[test]
    fn int3_and_fwait_are_emulated_as_the_cpu_would() {
        assert_eq!(emulate(0xcc, || None), Some(Emulated::SkipAndRaise(3)));
        assert_eq!(emulate(0x9b, || Some(0)), Some(Emulated::Skip));
        assert_eq!(emulate(0x9b, || Some(FSW_ES | 1)), Some(Emulated::SkipAndRaise(16)));
        assert_eq!(emulate(0x9b, || None), None, "unknown FPU state: do not guess");
        assert_eq!(emulate(0x0f, || Some(0)), None);
    }

    #[test]
    fn hex_formats_bytes_for_the_error_message() {
        assert_eq!(hex(&[0xf0, 0x48, 0x0f]), "f0 48 0f");
        assert_eq!(hex(&[]), "unreadable");
    }
}
