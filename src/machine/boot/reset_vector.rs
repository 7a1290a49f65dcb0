//! The only firmware kennel's machine has: sixteen bytes at the x86 reset
//! vector (physical 0xFFFF0) that reset the machine.
//!
//! A Linux kernel built with EFI support, on a hardware-reduced ACPI
//! platform, reboots the EFI way (`efi_reboot_required()`), and without EFI
//! runtime services falls back to a BIOS reboot: it drops to real mode and
//! jumps to F000:FFF0, where a PC's firmware starts over. With nothing
//! there, the vCPU would run through zeroed memory forever, the guest's
//! reboot never reaching kennel. So the reset vector asks for a reset, the
//! same way a guest would: the ACPI reset register when the machine has
//! ACPI, the keyboard controller's reset line otherwise. Then it halts.

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::machine::layout;

/// Errors writing the reset vector.
#[derive(Debug, thiserror::Error)]
pub enum ResetVectorError {
    #[error("cannot write the reset vector into guest memory: {0}")]
    Write(#[source] vm_memory::GuestMemoryError),
}

/// Real-mode code for the reset vector.
pub fn code(acpi: bool) -> Vec<u8> {
    let mut c = Vec::with_capacity(16);
    if acpi {
        let [lo, hi] = ((layout::ACPI_PORT + kennel_devices::acpi::RESET) as u16).to_le_bytes();
        c.extend_from_slice(&[0xb0, kennel_devices::acpi::RESET_VALUE]); // mov al, RESET_VALUE
        c.extend_from_slice(&[0xba, lo, hi]); // mov dx, reset register
        c.push(0xee); // out dx, al
    } else {
        c.extend_from_slice(&[0xb0, 0xfe]); // mov al, 0xfe (pulse the reset line)
        c.extend_from_slice(&[0xe6, (layout::I8042_PORT + 4) as u8]); // out 0x64, al
    }
    // cli; hlt; jmp back to the hlt, in case something wakes it.
    c.extend_from_slice(&[0xfa, 0xf4, 0xeb, 0xfd]);
    c
}

pub fn write(mem: &GuestMemoryMmap, acpi: bool) -> Result<(), ResetVectorError> {
    mem.write_slice(&code(acpi), GuestAddress(layout::RESET_VECTOR)).map_err(ResetVectorError::Write)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fits_below_1_mib_and_ends_halted() {
        for acpi in [true, false] {
            let c = code(acpi);
            assert!(layout::RESET_VECTOR + c.len() as u64 <= layout::HIMEM_START, "{c:x?}");
            // The final jmp goes back to the hlt before it.
            let n = c.len();
            assert_eq!(&c[n - 4..], [0xfa, 0xf4, 0xeb, 0xfd]);
            assert_eq!(n as i64 + i64::from(c[n - 1] as i8), n as i64 - 3, "jmp target is the hlt");
        }
    }

    #[test]
    fn writes_the_reset_register_or_pulses_the_reset_line() {
        assert_eq!(code(true)[..6], [0xb0, 0x01, 0xba, 0x02, 0x06, 0xee]);
        assert_eq!(code(false)[..4], [0xb0, 0xfe, 0xe6, 0x64]);
    }
}
