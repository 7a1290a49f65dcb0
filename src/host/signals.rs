//! SIGTERM, SIGINT and SIGHUP arrive on a signalfd in the main loop, so a
//! stop request is handled like any other event: the VM is stopped, the
//! final SHUTDOWN event is written, the terminal restored and the QMP
//! socket removed.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Errors setting up signal handling.
#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    #[error("cannot set up termination signal handling: {0}")]
    Setup(#[source] std::io::Error),
}

const SIGNALS: [libc::c_int; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];

pub struct StopSignals {
    fd: OwnedFd,
}

impl StopSignals {
    /// Blocks the signals in this thread (threads started later inherit the
    /// mask, so only the signalfd sees them) and opens the signalfd.
    pub fn install() -> Result<Self, SignalError> {
        // SAFETY: sigset manipulation on a zeroed, owned sigset_t, then
        // pthread_sigmask and signalfd with valid pointers; results checked.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for s in SIGNALS {
                libc::sigaddset(&mut set, s);
            }
            let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            if rc != 0 {
                return Err(SignalError::Setup(std::io::Error::from_raw_os_error(rc)));
            }
            let fd = libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC);
            if fd < 0 {
                return Err(SignalError::Setup(std::io::Error::last_os_error()));
            }
            Ok(Self { fd: OwnedFd::from_raw_fd(fd) })
        }
    }

    /// The signal that arrived, if any.
    pub fn read(&self) -> Option<libc::c_int> {
        // SAFETY: reading one signalfd_siginfo into a zeroed struct of the
        // right size from our own fd.
        unsafe {
            let mut info: libc::signalfd_siginfo = std::mem::zeroed();
            let n = libc::read(
                self.fd.as_raw_fd(),
                std::ptr::addr_of_mut!(info).cast(),
                std::mem::size_of::<libc::signalfd_siginfo>(),
            );
            (n == std::mem::size_of::<libc::signalfd_siginfo>() as isize)
                .then_some(info.ssi_signo as libc::c_int)
        }
    }
}

impl AsRawFd for StopSignals {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
