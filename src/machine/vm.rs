//! One VM, built from its configuration and torn down whole.
//!
//! A reset drops the `Vm` and builds a new one from the same configuration
//! (fresh memory, vCPUs and devices), the way cloud-hypervisor reboots. Only
//! what real hardware keeps over a reset (the watchdog's timeout flag) is
//! passed in from the previous VM.

use std::path::PathBuf;
use std::sync::Arc;

use kvm_bindings::{kvm_msr_entry, kvm_pit_config, kvm_userspace_memory_region, Msrs, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Cap, Kvm, VcpuFd, VmFd};
use linux_loader::loader::{load_cmdline, Cmdline};
use vm_memory::{Address, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use crate::machine::boot::loader::{self, EntryProtocol, LoadedKernel};
use crate::machine::boot::{acpi, mptable, params, regs, reset_vector};
use crate::machine::cpuid::{self, CpuidOptions};
use crate::machine::disk_thread::{DiskThread, DiskThreadError};
use crate::machine::layout;
use crate::machine::platform::{self, Platform, PlatformParams};
use crate::machine::vcpu::{self, VcpuContext, VcpuControl, VcpuState, VcpuThread};

/// Errors building or running a VM.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("cannot create the VM: {0}")]
    CreateVm(#[source] kvm_ioctls::Error),
    #[error("cannot set up the VM ({what}): {err}")]
    Setup {
        what: &'static str,
        #[source]
        err: kvm_ioctls::Error,
    },
    #[error("cannot allocate {mib} MiB of guest memory: {source}")]
    Memory {
        mib: u64,
        #[source]
        source: vm_memory::mmap::FromRangesError,
    },
    #[error(transparent)]
    Loader(#[from] loader::LoaderError),
    #[error(transparent)]
    Params(#[from] params::ParamsError),
    #[error(transparent)]
    MpTable(#[from] mptable::MpTableError),
    #[error(transparent)]
    Acpi(#[from] acpi::AcpiError),
    #[error(transparent)]
    ResetVector(#[from] reset_vector::ResetVectorError),
    #[error(transparent)]
    Regs(#[from] regs::RegsError),
    #[error(transparent)]
    Platform(#[from] platform::PlatformError),
    #[error(transparent)]
    Vcpu(#[from] vcpu::VcpuError),
    #[error(transparent)]
    DiskThread(#[from] DiskThreadError),
    #[error("the kernel command line is invalid: {0}")]
    Cmdline(#[source] linux_loader::cmdline::Error),
    #[error("cannot write the kernel command line into guest memory: {0}")]
    WriteCmdline(#[source] linux_loader::loader::Error),
}

fn setup(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmError {
    move |err| VmError::Setup { what, err }
}

/// Everything needed to build the VM again after a reset.
#[derive(Clone, Debug)]
pub struct VmConfig {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    /// The kernel command line. In the controller's copy, the user's; the
    /// controller makes each cycle's full line (faults, root, PVM additions)
    /// in the copy it builds from.
    pub cmdline: String,
    pub mem_bytes: u64,
    pub vcpus: u8,
    pub pvm: bool,
    /// ACPI tables and registers (off with --no-acpi).
    pub acpi: bool,
    /// The filter each vCPU thread installs first; None with --no-seccomp.
    pub vcpu_seccomp: Option<crate::host::seccomp::Program>,
}

pub struct Vm {
    // Field order is drop order: the vCPU threads and then the disk thread
    // are joined in `stop`, then devices, then the vCPU-less VM and its
    // memory go.
    threads: Vec<VcpuThread>,
    disk: Option<DiskThread>,
    control: Arc<VcpuControl>,
    pub platform: Platform,
    pub fd: Arc<VmFd>,
    pub mem: Arc<GuestMemoryMmap>,
    pub entry: LoadedKernel,
}

const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
const MSR_IA32_TSC: u32 = 0x10;
const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 4;
const APIC_MODE_EXTINT: u32 = 7;

/// Loads the kernel and initrd into a throwaway guest memory of the
/// configured size, so a bad image or an initrd that does not fit is reported
/// before kennel creates any file or socket. The mapping is lazy: only the
/// pages the images land in are touched, and they are freed at once.
pub fn preflight(cfg: &VmConfig) -> Result<(), VmError> {
    let mem = guest_memory(cfg.mem_bytes)?;
    let kernel = loader::load_kernel(&mem, &cfg.kernel)?;
    if let Some(p) = &cfg.initrd {
        loader::load_initrd(&mem, cfg.mem_bytes, kernel.kernel_end, p)?;
    }
    Ok(())
}

impl Vm {
    pub fn build(kvm: &Kvm, cfg: &VmConfig, pp: PlatformParams) -> Result<Self, VmError> {
        let fd = Arc::new(kvm.create_vm().map_err(VmError::CreateVm)?);
        fd.set_tss_address(layout::KVM_TSS_ADDR as usize).map_err(setup("TSS address"))?;
        fd.create_irq_chip().map_err(setup("in-kernel irqchip"))?;
        let pit = kvm_pit_config { flags: KVM_PIT_SPEAKER_DUMMY, ..Default::default() };
        fd.create_pit2(pit).map_err(setup("in-kernel PIT"))?;

        let mem = Arc::new(guest_memory(cfg.mem_bytes)?);
        register_memory(&fd, &mem)?;

        let kernel = loader::load_kernel(&mem, &cfg.kernel)?;
        let initrd = match &cfg.initrd {
            Some(p) => Some(loader::load_initrd(&mem, cfg.mem_bytes, kernel.kernel_end, p)?),
            None => None,
        };
        let mut cmdline = Cmdline::new(layout::CMDLINE_MAX).map_err(VmError::Cmdline)?;
        cmdline.insert_str(&cfg.cmdline).map_err(VmError::Cmdline)?;
        load_cmdline(&*mem, GuestAddress(layout::CMDLINE_ADDR), &cmdline).map_err(VmError::WriteCmdline)?;
        match kernel.protocol {
            EntryProtocol::Linux64 => {
                let zp = params::build_zero_page(&params::ZeroPageInput {
                    mem_bytes: cfg.mem_bytes,
                    cmdline_len: cfg.cmdline.len() + 1,
                    setup_header: kernel.setup_header,
                    initrd: initrd.as_ref(),
                    rsdp: cfg.acpi.then_some(layout::RSDP_ADDR),
                })?;
                params::write_zero_page(&mem, &zp)?;
            }
            EntryProtocol::Pvh => params::write_pvh_info(
                &mem,
                cfg.mem_bytes,
                initrd.as_ref(),
                cfg.acpi.then_some(layout::RSDP_ADDR),
            )?,
        }
        regs::write_tables(&mem, kernel.protocol)?;
        reset_vector::write(&mem, cfg.acpi)?;

        let platform = platform::build(&fd, &mem, pp)?;
        // The MP table is always there, for kernels without ACPI or booted
        // with acpi=off; a kernel that finds the RSDP uses the ACPI tables.
        mptable::write(&mem, cfg.vcpus, &platform.intx)?;
        if cfg.acpi {
            acpi::write(&mem, &acpi::AcpiInput { cpus: cfg.vcpus, pci: &platform.intx })?;
        }

        let supported =
            kvm.get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES).map_err(setup("supported CPUID"))?;
        let opts = CpuidOptions { pvm: cfg.pvm, tsc_deadline: kvm.check_extension(Cap::TscDeadlineTimer) };
        let control = Arc::new(VcpuControl::default());
        let mut vcpus = Vec::with_capacity(cfg.vcpus.into());
        for id in 0..cfg.vcpus {
            let v = fd.create_vcpu(id.into()).map_err(setup("vCPU"))?;
            let c = cpuid::for_vcpu(&supported, id, cfg.vcpus, opts);
            v.set_cpuid2(&c).map_err(setup("vCPU CPUID"))?;
            configure_vcpu(&v, id == 0, &kernel)?;
            vcpus.push(v);
        }
        sync_tscs(&vcpus)?;
        let disk = match &platform.blk {
            Some(blk) => DiskThread::start(&fd, blk.clone(), cfg.vcpu_seccomp.clone())?,
            None => None,
        };
        let mut vm = Vm { threads: Vec::new(), disk, control, platform, mem, fd, entry: kernel };
        for (id, v) in vcpus.into_iter().enumerate() {
            let ctx = VcpuContext {
                id: id as u8,
                buses: vm.platform.buses.clone(),
                control: vm.control.clone(),
                requests: vm.platform.requests.clone(),
                mem: vm.mem.clone(),
                pvm: cfg.pvm,
                generation: vm.platform.generation,
                seccomp: cfg.vcpu_seccomp.clone(),
            };
            vm.threads.push(vcpu::spawn(v, ctx)?);
        }
        Ok(vm)
    }

    pub fn pause(&self) {
        self.control.set(VcpuState::Paused);
        self.kick_all();
    }

    /// Delivers an NMI to the boot vCPU.
    pub fn inject_nmi(&self) {
        self.control.request_nmi();
        if let Some(t) = self.threads.first() {
            t.kick();
        }
    }

    pub fn resume(&self) {
        self.control.set(VcpuState::Running);
    }

    fn kick_all(&self) {
        for t in &self.threads {
            t.kick();
        }
    }

    /// Stops and joins every vCPU. What is left (VM fd, memory, devices)
    /// can be dropped wherever suits the caller.
    pub fn stop(mut self) -> StoppedVm {
        self.join_vcpus();
        // No request of this VM's may reach the disk after its reset.
        if let Some(d) = &mut self.disk {
            d.stop();
        }
        StoppedVm { _vm: self }
    }

    fn join_vcpus(&mut self) {
        if self.threads.is_empty() {
            return;
        }
        self.control.set(VcpuState::Stopping);
        self.kick_all();
        for t in self.threads.drain(..) {
            t.join();
        }
    }
}

/// A VM whose vCPUs have all ended. Dropping it closes the VM fd and frees
/// guest memory: on some hosts that takes milliseconds (7-18 ms measured on
/// PVM), so the controller drops it off the reset path.
pub struct StoppedVm {
    _vm: Vm,
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.join_vcpus();
    }
}

fn guest_memory(bytes: u64) -> Result<GuestMemoryMmap, VmError> {
    let ranges: Vec<(GuestAddress, usize)> =
        layout::ram_regions(bytes).into_iter().map(|(s, l)| (GuestAddress(s), l as usize)).collect();
    GuestMemoryMmap::from_ranges(&ranges).map_err(|source| VmError::Memory { mib: bytes >> 20, source })
}

fn register_memory(fd: &VmFd, mem: &GuestMemoryMmap) -> Result<(), VmError> {
    for (slot, region) in mem.iter().enumerate() {
        let r = kvm_userspace_memory_region {
            slot: slot as u32,
            flags: 0,
            guest_phys_addr: region.start_addr().raw_value(),
            memory_size: region.len(),
            userspace_addr: region.as_ptr() as u64,
        };
        // SAFETY: the region is a live mapping owned by `mem`, which the Vm
        // keeps alive for as long as the VmFd exists.
        unsafe { fd.set_user_memory_region(r) }.map_err(setup("guest memory slot"))?;
    }
    Ok(())
}

fn configure_vcpu(v: &VcpuFd, bsp: bool, kernel: &LoadedKernel) -> Result<(), VmError> {
    let msrs = msr_list(&[
        kvm_msr_entry { index: MSR_IA32_MISC_ENABLE, data: 1, ..Default::default() },
        // MTRRs on, default type write-back.
        kvm_msr_entry { index: MSR_MTRR_DEF_TYPE, data: (1 << 11) | 6, ..Default::default() },
    ])?;
    v.set_msrs(&msrs).map_err(setup("vCPU MSRs"))?;
    v.set_fpu(&regs::boot_fpu()).map_err(setup("vCPU FPU"))?;
    let mut lapic = v.get_lapic().map_err(setup("local APIC"))?;
    set_lvt(&mut lapic.regs, APIC_LVT0, APIC_MODE_EXTINT);
    set_lvt(&mut lapic.regs, APIC_LVT1, APIC_MODE_NMI);
    v.set_lapic(&lapic).map_err(setup("local APIC"))?;
    if bsp {
        let mut s = v.get_sregs().map_err(setup("vCPU special registers"))?;
        regs::setup_sregs(&mut s, kernel.protocol);
        v.set_sregs(&s).map_err(setup("vCPU special registers"))?;
        v.set_regs(&regs::boot_regs(kernel.protocol, kernel.entry)).map_err(setup("vCPU registers"))?;
    }
    Ok(())
}

/// Writes 0 to every vCPU's TSC, back to back, once all exist. KVM takes
/// writes that close together as one synchronised TSC (as on a real machine
/// at power-on); without them each vCPU keeps the offset it got when it was
/// created, and where the host's own TSC is unstable (a nested host) those
/// drift apart enough that Linux sees "TSCs unsynchronized" and marks the
/// TSC unstable. Every VMM does this at reset (QEMU, Firecracker,
/// cloud-hypervisor).
fn sync_tscs(vcpus: &[VcpuFd]) -> Result<(), VmError> {
    let zero = msr_list(&[kvm_msr_entry { index: MSR_IA32_TSC, data: 0, ..Default::default() }])?;
    for v in vcpus {
        v.set_msrs(&zero).map_err(setup("vCPU TSC"))?;
    }
    Ok(())
}

/// A handful of MSRs for KVM_SET_MSRS (fails only past KVM's list size).
fn msr_list(entries: &[kvm_msr_entry]) -> Result<Msrs, VmError> {
    Msrs::from_entries(entries)
        .map_err(|_| VmError::Setup { what: "MSR list", err: kvm_ioctls::Error::new(libc::EINVAL) })
}

fn set_lvt(regs: &mut [libc::c_char; 1024], offset: usize, mode: u32) {
    let mut b = [0u8; 4];
    for (i, x) in b.iter_mut().enumerate() {
        *x = regs[offset + i] as u8;
    }
    let v = (u32::from_le_bytes(b) & !0x700) | (mode << 8);
    for (i, x) in v.to_le_bytes().iter().enumerate() {
        regs[offset + i] = *x as libc::c_char;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lvt_delivery_mode_is_replaced_and_other_bits_kept() {
        let mut r = [0 as libc::c_char; 1024];
        r[APIC_LVT0 + 2] = 1; // mask bit 16
        r[APIC_LVT0 + 1] = 0x05; // old delivery mode bits
        set_lvt(&mut r, APIC_LVT0, APIC_MODE_EXTINT);
        assert_eq!(r[APIC_LVT0 + 1] as u8, 0x07);
        assert_eq!(r[APIC_LVT0 + 2], 1);
    }

    #[test]
    fn guest_memory_matches_the_layout() {
        let m = guest_memory(64 << 20).unwrap();
        assert_eq!(m.num_regions(), 1);
        assert_eq!(m.last_addr(), GuestAddress((64 << 20) - 1));
    }
}
