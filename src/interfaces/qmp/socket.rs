//! The listening socket: owner-only from its first instant, never over
//! someone else's file or a live socket, removed when we are done with it.
//! A socket file nobody listens on is what a kennel that was killed (OOM,
//! `kill -9`, a crash) leaves behind; it is replaced, so a supervisor's
//! restart is never blocked by it.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use super::ServerError;

const MODE: u32 = 0o600;
const BACKLOG: i32 = 16;

/// A bound, listening, non-blocking socket and the file it made.
#[derive(Debug)]
pub(crate) struct BoundSocket {
    pub listener: UnixListener,
    path: PathBuf,
    /// (device, inode) of the socket file we created, so that on drop we
    /// remove only that file, not whatever may have replaced it since.
    id: (u64, u64),
}

fn os_err<'a>(path: &'a Path, what: &'static str) -> impl FnOnce(io::Error) -> ServerError + 'a {
    move |source| ServerError::Io { path: path.display().to_string(), what, source }
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

impl BoundSocket {
    pub fn bind(path: &Path) -> Result<Self, ServerError> {
        let shown = || path.display().to_string();
        if let Ok(meta) = path.symlink_metadata() {
            remove_leftover(path, &meta)?;
        }
        let bytes = path.as_os_str().as_bytes();
        // SAFETY: sockaddr_un is plain old data; all-zeroes is a valid value.
        let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        // Leave room for the terminating NUL the zeroed array provides.
        if bytes.is_empty() || bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
            return Err(ServerError::BadPath(shown()));
        }
        for (dst, src) in addr.sun_path.iter_mut().zip(bytes) {
            *dst = *src as libc::c_char;
        }
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;

        // SAFETY: a plain syscall with constant arguments.
        let fd = check(unsafe {
            libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK, 0)
        })
        .map_err(os_err(path, "create socket for"))?;
        // SAFETY: `fd` was just returned by socket() and nothing else owns it.
        let sock = unsafe { OwnedFd::from_raw_fd(fd) };
        // Linux gives the socket file the mode of the socket's inode (minus
        // the umask) at bind time, so setting it here means the file is
        // owner-only from the moment it appears; no process-wide umask dance,
        // which would race with other threads creating files.
        // SAFETY: fchmod on an fd we own.
        check(unsafe { libc::fchmod(sock.as_raw_fd(), MODE as libc::mode_t) })
            .map_err(os_err(path, "set mode of socket for"))?;
        // SAFETY: `addr` is a valid sockaddr_un and `len` is within it.
        let bound = check(unsafe {
            libc::bind(sock.as_raw_fd(), (&raw const addr).cast::<libc::sockaddr>(), len as libc::socklen_t)
        });
        match bound {
            Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) => return Err(ServerError::Exists(shown())),
            other => other.map_err(os_err(path, "bind"))?,
        };
        let listener = UnixListener::from(sock);
        let meta = path.symlink_metadata().map_err(os_err(path, "stat"))?;
        let made = Self { listener, path: path.to_path_buf(), id: (meta.dev(), meta.ino()) };
        // Belt and braces for kernels that ignore the socket inode's mode:
        // nobody can connect before listen(), so fixing it now is still safe.
        if meta.mode() & 0o777 != MODE {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(MODE))
                .map_err(os_err(path, "chmod"))?;
        }
        // SAFETY: listen on a bound socket we own.
        // On failure, dropping `made` removes the file we made.
        check(unsafe { libc::listen(made.listener.as_raw_fd(), BACKLOG) })
            .map_err(os_err(path, "listen on"))?;
        Ok(made)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Removes `path` if it is a socket nobody listens on (connecting is
/// refused): a leftover of a kennel that did not exit cleanly. Anything else
/// is refused and left alone: a regular file, a directory, a link, a socket
/// something answers on, or one we cannot probe.
fn remove_leftover(path: &Path, meta: &std::fs::Metadata) -> Result<(), ServerError> {
    use std::os::unix::fs::FileTypeExt;
    let shown = || path.display().to_string();
    if !meta.file_type().is_socket() {
        return Err(ServerError::Exists(shown()));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => return Err(ServerError::InUse(shown())),
        Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {}
        Err(_) => return Err(ServerError::Exists(shown())),
    }
    // Remove only the file we probed: if it was replaced meanwhile, bind()
    // below fails on the new one instead.
    let same = path.symlink_metadata().is_ok_and(|m| (m.dev(), m.ino()) == (meta.dev(), meta.ino()));
    if same {
        std::fs::remove_file(path).map_err(os_err(path, "remove the stale"))?;
        log::warn!(
            "QMP socket {} was left by a process that is gone (nobody listens on it); replaced it",
            shown()
        );
    }
    Ok(())
}

impl Drop for BoundSocket {
    fn drop(&mut self) {
        let ours = self.path.symlink_metadata().is_ok_and(|m| (m.dev(), m.ino()) == self.id);
        if ours {
            if let Err(e) = std::fs::remove_file(&self.path) {
                log::warn!("cannot remove QMP socket {}: {e}", self.path.display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixStream;

    use vmm_sys_util::tempdir::TempDir;

    use super::*;

    fn dir() -> TempDir {
        TempDir::new_with_prefix("/tmp/kennel-qmp").expect("tempdir")
    }

    #[test]
    fn socket_is_owner_only_and_accepts() {
        let d = dir();
        let path = d.as_path().join("qmp.sock");
        let s = BoundSocket::bind(&path).expect("bind");
        let meta = path.symlink_metadata().expect("stat");
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert!(std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()));
        let _c = UnixStream::connect(&path).expect("connect");
        s.listener.accept().expect("accept");
    }

    #[test]
    fn existing_path_is_refused_and_left_alone() {
        let d = dir();
        let path = d.as_path().join("precious");
        std::fs::write(&path, "data").expect("write");
        let err = BoundSocket::bind(&path).expect_err("must refuse");
        assert!(matches!(err, ServerError::Exists(_)));
        assert!(err.to_string().contains(&path.display().to_string()), "{err}");
        assert_eq!(std::fs::read_to_string(&path).expect("still there"), "data");
    }

    #[test]
    fn a_socket_nobody_listens_on_is_replaced() {
        let d = dir();
        let path = d.as_path().join("qmp.sock");
        // What a killed kennel leaves: the file of a listener that is gone.
        drop(UnixListener::bind(&path).expect("bind"));
        assert!(path.symlink_metadata().is_ok(), "left behind");
        let s = BoundSocket::bind(&path).expect("replaces the leftover");
        let _c = UnixStream::connect(&path).expect("connect");
        s.listener.accept().expect("accept");
    }

    #[test]
    fn a_live_socket_is_refused_and_left_alone() {
        let d = dir();
        let path = d.as_path().join("qmp.sock");
        let other = UnixListener::bind(&path).expect("another process listens");
        let err = BoundSocket::bind(&path).expect_err("must refuse");
        assert!(matches!(err, ServerError::InUse(_)), "{err}");
        assert!(err.to_string().contains(&path.display().to_string()), "{err}");
        let _c = UnixStream::connect(&path).expect("still theirs");
        other.accept().expect("and it still answers");
    }

    #[test]
    fn removed_on_drop_but_not_if_replaced() {
        let d = dir();
        let path = d.as_path().join("qmp.sock");
        drop(BoundSocket::bind(&path).expect("bind"));
        assert!(path.symlink_metadata().is_err(), "removed on drop");

        let s = BoundSocket::bind(&path).expect("bind again");
        std::fs::remove_file(&path).expect("someone removes it");
        std::fs::write(&path, "theirs").expect("and puts a file there");
        drop(s);
        assert_eq!(std::fs::read_to_string(&path).expect("left alone"), "theirs");
    }

    #[test]
    fn too_long_path_is_an_error_naming_it() {
        let d = dir();
        let path = d.as_path().join("x".repeat(200));
        let err = BoundSocket::bind(&path).expect_err("too long");
        assert!(matches!(err, ServerError::BadPath(_)));
        assert!(err.to_string().contains("xxxx"));
    }
}
