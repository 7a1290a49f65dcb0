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
    Open(kvm_ioctls::Error),
    #[error("KVM API version {0} is not the supported version 12")]
    ApiVersion(i32),
    #[error("this KVM lacks a capability kennel needs: {0}")]
    MissingCap(&'static str),
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
