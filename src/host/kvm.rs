//! Opening KVM and checking what this host offers, with errors a user can act on.

use kvm_ioctls::{Cap, Kvm};

/// Errors opening KVM.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("/dev/kvm does not exist: this host has no KVM (load kvm_intel/kvm_amd, or enable nested virtualization)")]
    NoKvm,
    #[error("no permission to open /dev/kvm: add your user to the 'kvm' group or run as root")]
    KvmPermission,
    #[error("cannot open /dev/kvm: {0}")]
    Open(#[source] kvm_ioctls::Error),
    #[error("KVM API version {0} is not the supported version 12")]
    ApiVersion(i32),
    #[error("this KVM lacks a capability kennel needs: {0}")]
    MissingCap(&'static str),
    #[error("--memory {want} MiB is more than this host has ({have} MiB, MemTotal in /proc/meminfo)")]
    MemoryTooBig { want: u64, have: u64 },
}

/// Refuses guest memory the host cannot back at all. Guest RAM is mapped
/// lazily, so a huge `--memory` would "work" until the guest touches it and
/// the OOM killer takes kennel (losing the final events); better to say so
/// up front. MemTotal, not MemAvailable: memory in use now may be freed.
pub fn check_memory(want_mib: u64) -> Result<(), HostError> {
    let Some(have_mib) = mem_total_mib() else {
        log::warn!("cannot read MemTotal from /proc/meminfo; not checking --memory against it");
        return Ok(());
    };
    if want_mib > have_mib {
        return Err(HostError::MemoryTooBig { want: want_mib, have: have_mib });
    }
    Ok(())
}

fn mem_total_mib() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib >> 10)
}

pub fn open_kvm() -> Result<Kvm, HostError> {
    let kvm = Kvm::new().map_err(|e| match e.errno() {
        libc::ENOENT => HostError::NoKvm,
        libc::EACCES | libc::EPERM => HostError::KvmPermission,
        _ => HostError::Open(e),
    })?;
    let v = kvm.get_api_version();
    if v != 12 {
        return Err(HostError::ApiVersion(v));
    }
    for (cap, name) in [
        (Cap::Irqchip, "KVM_CAP_IRQCHIP"),
        (Cap::UserMemory, "KVM_CAP_USER_MEMORY"),
        (Cap::Irqfd, "KVM_CAP_IRQFD"),
        (Cap::Pit2, "KVM_CAP_PIT2"),
        (Cap::ImmediateExit, "KVM_CAP_IMMEDIATE_EXIT"),
    ] {
        if !kvm.check_extension(cap) {
            return Err(HostError::MissingCap(name));
        }
    }
    Ok(kvm)
}
