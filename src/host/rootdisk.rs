//! The root disk image: opened once for the life of the process and
//! locked, so no two VMs write the same image. Every VM built after a reset
//! gets a duplicate of the same open file (and so the same lock), and a
//! snapshot's overlay (so the guest's writes outlive its resets).

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use kennel_devices::virtio_blk::Overlay;

/// Most a snapshot keeps of the guest's writes. A test or fault scenario
/// writes logs and state, tens of MiB; past this the guest gets I/O errors
/// instead of kennel growing without bound.
pub const SNAPSHOT_MAX_BYTES: u64 = 1 << 30;

/// How the image is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskMode {
    ReadWrite,
    /// The guest sees a read-only disk.
    ReadOnly,
    /// The guest writes; kennel keeps the writes in memory.
    Snapshot,
}

impl DiskMode {
    /// From `--rootfs-readonly` and `--rootfs-snapshot` (clap refuses both).
    pub fn from_flags(readonly: bool, snapshot: bool) -> Self {
        match (readonly, snapshot) {
            (_, true) => Self::Snapshot,
            (true, false) => Self::ReadOnly,
            (false, false) => Self::ReadWrite,
        }
    }
}

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
    /// What the guest is told: the disk refuses writes.
    pub readonly: bool,
    /// A snapshot's writes, shared by every VM built.
    pub overlay: Option<Arc<Mutex<Overlay>>>,
}

impl RootDisk {
    /// Opens and locks the image: exclusively when writable, shared when
    /// read-only or a snapshot (several readers are fine, a writer is not).
    pub fn open(path: &Path, mode: DiskMode) -> Result<Self, RootDiskError> {
        let p = || path.to_path_buf();
        let readonly = mode != DiskMode::ReadWrite;
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
        let overlay =
            (mode == DiskMode::Snapshot).then(|| Arc::new(Mutex::new(Overlay::new(SNAPSHOT_MAX_BYTES))));
        Ok(Self { file, path: p(), readonly: mode == DiskMode::ReadOnly, overlay })
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
        let a = RootDisk::open(&p, DiskMode::ReadWrite).unwrap();
        assert!(matches!(RootDisk::open(&p, DiskMode::ReadWrite), Err(RootDiskError::Locked(_))));
        assert!(matches!(RootDisk::open(&p, DiskMode::ReadOnly), Err(RootDiskError::Locked(_))));
        // A VM's handle shares the open file, so it keeps the lock.
        let h = a.handle().unwrap();
        drop(a);
        assert!(matches!(RootDisk::open(&p, DiskMode::ReadWrite), Err(RootDiskError::Locked(_))));
        drop(h);
        RootDisk::open(&p, DiskMode::ReadWrite).unwrap();
    }

    #[test]
    fn read_only_users_share() {
        let p = image("ro");
        let _a = RootDisk::open(&p, DiskMode::ReadOnly).unwrap();
        let _b = RootDisk::open(&p, DiskMode::ReadOnly).unwrap();
        assert!(matches!(RootDisk::open(&p, DiskMode::ReadWrite), Err(RootDiskError::Locked(_))));
    }

    #[test]
    fn a_snapshot_reads_a_read_only_image_and_shares_it_with_readers() {
        let p = image("snap");
        let mut perms = std::fs::metadata(&p).unwrap().permissions();
        perms.set_readonly(true);
        std::fs::set_permissions(&p, perms).unwrap();
        let a = RootDisk::open(&p, DiskMode::Snapshot).unwrap();
        assert!(!a.readonly, "the guest of a snapshot may write");
        assert!(a.overlay.is_some());
        let _b = RootDisk::open(&p, DiskMode::ReadOnly).unwrap();
        let _c = RootDisk::open(&p, DiskMode::Snapshot).unwrap();
        assert!(matches!(RootDisk::open(&p, DiskMode::ReadWrite), Err(RootDiskError::NotWritable(_))));
        assert!(RootDisk::open(&p, DiskMode::ReadOnly).unwrap().overlay.is_none());
    }

    #[test]
    fn missing_and_directories_are_named() {
        let e = RootDisk::open(Path::new("/nonexistent/root.img"), DiskMode::ReadWrite).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/root.img does not exist"), "{e}");
        let d = RootDisk::open(&std::env::temp_dir(), DiskMode::ReadOnly).unwrap_err();
        assert!(matches!(d, RootDiskError::NotAFile(_)), "{d}");
    }
}
