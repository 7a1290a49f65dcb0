//! The root disk image: opened once for the life of the process and
//! locked, so no two VMs write the same image. Every VM built after a reset
//! gets a duplicate of the same open file (and so the same lock).

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Errors opening the root disk.
#[derive(Debug, thiserror::Error)]
pub enum RootDiskError {
    #[error("rootfs {0} does not exist")]
    Missing(PathBuf),
    #[error("rootfs {0} is not writable; pass --rootfs-readonly to attach it read-only")]
    NotWritable(PathBuf),
    #[error("cannot open rootfs {0}: {1}")]
    Open(PathBuf, #[source] std::io::Error),
    #[error("rootfs {0} is not a regular file")]
    NotAFile(PathBuf),
    #[error("rootfs {0} is in use by another process (it holds a lock on the image)")]
    Locked(PathBuf),
    #[error("cannot lock rootfs {0}: {1}")]
    Lock(PathBuf, #[source] std::io::Error),
    #[error("cannot duplicate the rootfs file handle: {0}")]
    Dup(#[source] std::io::Error),
}

#[derive(Debug)]
pub struct RootDisk {
    file: File,
    pub path: PathBuf,
    pub readonly: bool,
}

impl RootDisk {
    /// Opens and locks the image: exclusively when writable, shared when
    /// read-only (several read-only users are fine, a writer is not).
    pub fn open(path: &Path, readonly: bool) -> Result<Self, RootDiskError> {
        let p = || path.to_path_buf();
        let file = OpenOptions::new().read(true).write(!readonly).open(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => RootDiskError::Missing(p()),
            std::io::ErrorKind::PermissionDenied => RootDiskError::NotWritable(p()),
            _ if e.raw_os_error() == Some(libc::EROFS) => RootDiskError::NotWritable(p()),
            _ => RootDiskError::Open(p(), e),
        })?;
        let meta = file.metadata().map_err(|e| RootDiskError::Open(p(), e))?;
        if !meta.is_file() {
            return Err(RootDiskError::NotAFile(p()));
        }
        // root opens a mode-0444 file for writing without complaint; the
        // mode still says the owner wants it left alone.
        if !readonly && meta.permissions().readonly() {
            return Err(RootDiskError::NotWritable(p()));
        }
        let op = if readonly { libc::LOCK_SH } else { libc::LOCK_EX };
        // SAFETY: flock on an fd we own; the result is checked.
        if unsafe { libc::flock(file.as_raw_fd(), op | libc::LOCK_NB) } != 0 {
            let e = std::io::Error::last_os_error();
            return Err(if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                RootDiskError::Locked(p())
            } else {
                RootDiskError::Lock(p(), e)
            });
        }
        Ok(Self { file, path: p(), readonly })
    }

    /// A handle for the next VM's disk device; shares the lock.
    pub fn handle(&self) -> Result<File, RootDiskError> {
        self.file.try_clone().map_err(RootDiskError::Dup)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(name: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("kennel-rootdisk-{}-{name}", std::process::id()));
        std::fs::write(&p, vec![0u8; 4096]).unwrap();
        p
    }

    #[test]
    fn a_writable_image_is_locked_against_a_second_user() {
        let p = image("rw");
        let a = RootDisk::open(&p, false).unwrap();
        assert!(matches!(RootDisk::open(&p, false), Err(RootDiskError::Locked(_))));
        assert!(matches!(RootDisk::open(&p, true), Err(RootDiskError::Locked(_))));
        // A VM's handle shares the open file, so it keeps the lock.
        let h = a.handle().unwrap();
        drop(a);
        assert!(matches!(RootDisk::open(&p, false), Err(RootDiskError::Locked(_))));
        drop(h);
        RootDisk::open(&p, false).unwrap();
    }

    #[test]
    fn read_only_users_share() {
        let p = image("ro");
        let _a = RootDisk::open(&p, true).unwrap();
        let _b = RootDisk::open(&p, true).unwrap();
        assert!(matches!(RootDisk::open(&p, false), Err(RootDiskError::Locked(_))));
    }

    #[test]
    fn missing_and_directories_are_named() {
        let e = RootDisk::open(Path::new("/nonexistent/root.img"), false).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/root.img does not exist"), "{e}");
        let d = RootDisk::open(&std::env::temp_dir(), true).unwrap_err();
        assert!(matches!(d, RootDiskError::NotAFile(_)), "{d}");
    }
}
