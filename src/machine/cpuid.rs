//! The CPUID a guest sees: what KVM supports, with per-vCPU topology and
//! the masks a PVM host needs.

use kvm_bindings::{kvm_cpuid_entry2, CpuId};

// leaf 1 ECX
const ECX_CX16: u32 = 1 << 13;
const ECX_POPCNT: u32 = 1 << 23;
const ECX_TSC_DEADLINE: u32 = 1 << 24;
const ECX_XSAVE: u32 = 1 << 26;
const ECX_OSXSAVE: u32 = 1 << 27;
const ECX_HYPERVISOR: u32 = 1 << 31;
// leaf 7.0 EBX
const EBX_SMAP: u32 = 1 << 20;

#[derive(Clone, Copy, Debug, Default)]
pub struct CpuidOptions {
    /// Hide what a PVM host cannot emulate in guest kernel code.
    pub pvm: bool,
    /// KVM emulates the local APIC's TSC-deadline mode
    /// (`KVM_CAP_TSC_DEADLINE_TIMER`) but leaves the CPUID bit to the VMM.
    /// With it, Linux takes the APIC timer's rate from the TSC instead of
    /// calibrating it against the PIT: on a busy or nested host that
    /// calibration fails now and then ("APIC timer disabled due to
    /// verification failure"), and the guest limps on broadcast ticks.
    pub tsc_deadline: bool,
}

/// Adjusts `KVM_GET_SUPPORTED_CPUID` output for vCPU `id` of `count`.
pub fn adjust(entries: &mut [kvm_cpuid_entry2], id: u8, count: u8, opts: CpuidOptions) {
    for e in entries.iter_mut() {
        match e.function {
            1 => {
                // initial APIC id, logical processor count, CLFLUSH line size (8 * 8 bytes)
                e.ebx = (u32::from(id) << 24) | (u32::from(count) << 16) | (8 << 8);
                e.ecx |= ECX_HYPERVISOR;
                if opts.tsc_deadline {
                    e.ecx |= ECX_TSC_DEADLINE;
                }
                if opts.pvm {
                    e.ecx &= !(ECX_CX16 | ECX_POPCNT | ECX_XSAVE | ECX_OSXSAVE);
                }
            }
            7 if e.index == 0 && opts.pvm => e.ebx &= !EBX_SMAP,
            0xb => e.edx = u32::from(id),
            _ => {}
        }
    }
}

pub fn for_vcpu(supported: &CpuId, id: u8, count: u8, opts: CpuidOptions) -> CpuId {
    let mut c = supported.clone();
    adjust(c.as_mut_slice(), id, count, opts);
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries() -> Vec<kvm_cpuid_entry2> {
        vec![
            kvm_cpuid_entry2 {
                function: 1,
                ecx: ECX_CX16 | ECX_POPCNT | ECX_XSAVE | 1,
                ..Default::default()
            },
            kvm_cpuid_entry2 { function: 7, index: 0, ebx: EBX_SMAP | 1, ..Default::default() },
            kvm_cpuid_entry2 { function: 0xb, ..Default::default() },
        ]
    }

    #[test]
    fn sets_apic_id_and_hypervisor_bit() {
        let mut e = entries();
        adjust(&mut e, 3, 4, CpuidOptions::default());
        assert_eq!(e[0].ebx >> 24, 3);
        assert_eq!((e[0].ebx >> 16) & 0xff, 4);
        assert_ne!(e[0].ecx & ECX_HYPERVISOR, 0);
        assert_ne!(e[0].ecx & ECX_CX16, 0, "real KVM keeps CX16");
        assert_eq!(e[0].ecx & ECX_TSC_DEADLINE, 0, "not unless KVM emulates it");
        assert_eq!(e[2].edx, 3);
    }

    #[test]
    fn offers_the_tsc_deadline_timer_when_kvm_emulates_it() {
        let mut e = entries();
        adjust(&mut e, 0, 2, CpuidOptions { tsc_deadline: true, ..CpuidOptions::default() });
        assert_ne!(e[0].ecx & ECX_TSC_DEADLINE, 0);
    }

    #[test]
    fn pvm_masks_what_the_host_cannot_emulate() {
        let mut e = entries();
        adjust(&mut e, 0, 1, CpuidOptions { pvm: true, ..CpuidOptions::default() });
        assert_eq!(e[0].ecx & (ECX_CX16 | ECX_POPCNT | ECX_XSAVE), 0);
        assert_eq!(e[0].ecx & 1, 1, "unrelated bits kept");
        assert_eq!(e[1].ebx, 1);
    }
}
