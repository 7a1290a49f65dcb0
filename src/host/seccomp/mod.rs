//! Seccomp filters, one per kind of thread (README "Threat model").
//!
//! kennel has two kinds of thread: the **main** thread (setup, then the
//! event loop: QMP, timers, signals, and rebuilding the VM on every reset)
//! and one **vCPU** thread per vCPU (KVM_RUN, device emulation, disk I/O).
//!
//! - The main filter goes on after everything that creates files or sockets
//!   has run (events file, QMP socket, rootfs lock), just before the first VM
//!   is built. It still allows what a reset needs: KVM ioctls, mmap, eventfd,
//!   opening the kernel and initrd **read-only**, thread creation.
//! - vCPU threads are started by the main thread, so they inherit its filter,
//!   and each adds the tighter vCPU filter as its first act. Filters stack
//!   (the kernel applies every one, the strictest answer wins), which is why
//!   the main list must include everything a vCPU thread does, plus `prctl`
//!   and `seccomp` to install the vCPU filter.
//!
//! Anything else kills the whole process (SECCOMP_RET_KILL_PROCESS, status
//! "killed by SIGSYS"): a refused call means kennel is compromised or has a
//! bug, and carrying on half-working is worse than stopping. The kernel's
//! audit log (`dmesg`, `type=1326 ... syscall=N`) names the call.
//!
//! `ioctl` is allowed by request number class: vCPU threads only KVM's
//! (type 0xAE); the main thread KVM's plus the few terminal and socket ones
//! it uses. In particular nobody can `TIOCSTI` into the host terminal.

use std::collections::BTreeMap;
use std::os::fd::RawFd;
use std::sync::Arc;

use seccompiler::{
    BackendError, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// Errors building or installing a filter.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("cannot build the {0} seccomp filter: {1}")]
    Build(&'static str, #[source] BackendError),
    #[error("cannot install the {0} seccomp filter: {1}")]
    Install(&'static str, #[source] seccompiler::Error),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThreadKind {
    Main,
    Vcpu,
}

impl ThreadKind {
    fn name(self) -> &'static str {
        match self {
            ThreadKind::Main => "main-thread",
            ThreadKind::Vcpu => "vCPU",
        }
    }
}

/// A compiled filter, shared by every thread of its kind.
pub type Program = Arc<BpfProgram>;

/// Both kinds: memory, locks, plain fd I/O, the disk (vCPU threads run
/// virtio-blk requests), time, signals (the vCPU kick; abort on panic),
/// thread exit.
const COMMON: &[libc::c_long] = &[
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_writev,
    libc::SYS_readv,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_preadv,
    libc::SYS_pwritev,
    libc::SYS_lseek,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_fstat,
    libc::SYS_newfstatat,
    libc::SYS_statx,
    libc::SYS_close,
    libc::SYS_futex,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_madvise,
    libc::SYS_mprotect,
    libc::SYS_brk,
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_sched_yield,
    libc::SYS_sched_getaffinity,
    libc::SYS_getrandom,
    libc::SYS_rt_sigreturn,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigaction,
    libc::SYS_sigaltstack,
    libc::SYS_restart_syscall,
    libc::SYS_getpid,
    libc::SYS_gettid,
    libc::SYS_tgkill,
    libc::SYS_rseq,
    libc::SYS_set_robust_list,
    libc::SYS_exit,
    libc::SYS_exit_group,
];

/// Only the main thread: the event loop, QMP clients, timers, the VM rebuild
/// on reset (eventfds, thread creation), removing the socket at exit.
const MAIN_ONLY: &[libc::c_long] = &[
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_ctl,
    libc::SYS_eventfd2,
    libc::SYS_timerfd_create,
    libc::SYS_timerfd_settime,
    libc::SYS_timerfd_gettime,
    libc::SYS_accept4,
    libc::SYS_recvfrom,
    libc::SYS_recvmsg,
    libc::SYS_sendto,
    libc::SYS_sendmsg,
    libc::SYS_shutdown,
    libc::SYS_fcntl,
    libc::SYS_dup,
    libc::SYS_poll,
    libc::SYS_ppoll,
    libc::SYS_unlink,
    libc::SYS_clone,
    libc::SYS_clone3,
    libc::SYS_seccomp,
];

/// ioctl request type byte of KVM's requests (`_IO(KVMIO, ...)`).
const KVMIO: u64 = 0xAE;
/// Terminal and socket ioctls of the main thread: raw mode and its restore
/// (TCGETS, TCSETS, TCSETSW, TCSETSF), `set_nonblocking` (FIONBIO), isatty
/// and window size (TIOCGWINSZ).
const MAIN_IOCTLS: &[u64] = &[0x5401, 0x5402, 0x5403, 0x5404, 0x5421, 0x5413];

fn cond(arg: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, BackendError> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value)
}

fn one(c: SeccompCondition) -> Result<SeccompRule, BackendError> {
    SeccompRule::new(vec![c])
}

/// What the main thread may do beyond its fixed list, depending on options.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Allowances {
    /// A directory fd the main thread may create files and rename in
    /// (`--metrics`).
    pub write_dir: Option<RawFd>,
    /// Talk to the service manager (`NOTIFY_SOCKET` set): an AF_UNIX
    /// datagram socket per notification, connected to it.
    pub notify: bool,
}

fn rules(kind: ThreadKind, allow: Allowances) -> Result<BTreeMap<i64, Vec<SeccompRule>>, BackendError> {
    let mut m: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    let extra = if kind == ThreadKind::Main { MAIN_ONLY } else { &[] };
    for &nr in COMMON.iter().chain(extra) {
        // An empty rule list allows the call whatever its arguments.
        m.insert(nr, Vec::new());
    }
    let mut ioctl = vec![one(cond(1, SeccompCmpOp::MaskedEq(0xff00), KVMIO << 8)?)?];
    if kind == ThreadKind::Main {
        for &req in MAIN_IOCTLS {
            ioctl.push(one(cond(1, SeccompCmpOp::Eq, req)?)?);
        }
        // Only read-only opens: the kernel and initrd are read again on
        // every reset; nothing may be created or written.
        let write_flags = (libc::O_WRONLY | libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC) as u64;
        let mut openat = vec![one(cond(2, SeccompCmpOp::MaskedEq(write_flags), 0)?)?];
        // The one exception: the metrics file's directory, where its
        // temporary is created and renamed over it on every write.
        if let Some(fd) = allow.write_dir {
            let fd = fd as u64;
            openat.push(one(cond(0, SeccompCmpOp::Eq, fd)?)?);
            let both =
                || SeccompRule::new(vec![cond(0, SeccompCmpOp::Eq, fd)?, cond(2, SeccompCmpOp::Eq, fd)?]);
            m.insert(libc::SYS_renameat, vec![both()?]);
            m.insert(libc::SYS_renameat2, vec![both()?]);
        }
        m.insert(libc::SYS_openat, openat);
        if allow.notify {
            let unix_dgram = SeccompRule::new(vec![
                cond(0, SeccompCmpOp::Eq, libc::AF_UNIX as u64)?,
                cond(1, SeccompCmpOp::Eq, (libc::SOCK_DGRAM | libc::SOCK_CLOEXEC) as u64)?,
            ])?;
            m.insert(libc::SYS_socket, vec![unix_dgram]);
            m.insert(libc::SYS_connect, Vec::new());
        }
        // Naming a new thread, and installing the vCPU filter in it.
        m.insert(
            libc::SYS_prctl,
            vec![
                one(cond(0, SeccompCmpOp::Eq, libc::PR_SET_NAME as u64)?)?,
                one(cond(0, SeccompCmpOp::Eq, libc::PR_SET_NO_NEW_PRIVS as u64)?)?,
            ],
        );
    }
    if kind == ThreadKind::Vcpu {
        // Rust's std checks an fd is still open when an OwnedFd is dropped
        // in builds with debug assertions: a vCPU thread closing its vCPU fd
        // asks fcntl(F_GETFD). Nothing else; F_SETFL and friends stay out.
        m.insert(libc::SYS_fcntl, vec![one(cond(1, SeccompCmpOp::Eq, libc::F_GETFD as u64)?)?]);
    }
    m.insert(libc::SYS_ioctl, ioctl);
    Ok(m)
}

/// Compiles the filter for one kind of thread (`allow` matters only to the
/// main thread's).
pub fn program(kind: ThreadKind, allow: Allowances) -> Result<Program, SeccompError> {
    let build = |e| SeccompError::Build(kind.name(), e);
    let filter = SeccompFilter::new(
        rules(kind, allow).map_err(build)?,
        SeccompAction::KillProcess,
        SeccompAction::Allow,
        TargetArch::x86_64,
    )
    .map_err(build)?;
    let bpf: BpfProgram = filter.try_into().map_err(build)?;
    Ok(Arc::new(bpf))
}

/// Installs `prog` on the calling thread (and the threads it starts later).
pub fn install(kind: ThreadKind, prog: &Program) -> Result<(), SeccompError> {
    seccompiler::apply_filter(prog).map_err(|e| SeccompError::Install(kind.name(), e))
}

#[cfg(test)]
mod tests;
