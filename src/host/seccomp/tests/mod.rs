//! Each filter, installed in a forked child, lets the child's ordinary calls
//! through and kills it with SIGSYS on a forbidden one.
#![allow(clippy::unwrap_used, clippy::panic)]

use super::*;

/// Forks; the child installs `kind`'s filter, runs `act` (raw syscalls only:
/// the child of a multi-threaded process may not allocate) and exits 0.
/// Returns the child's wait status.
fn in_child(kind: ThreadKind, act: fn()) -> libc::c_int {
    in_child_with(kind, None, act)
}

fn in_child_with(kind: ThreadKind, write_dir: Option<RawFd>, act: fn()) -> libc::c_int {
    in_child_allowed(kind, Allowances { write_dir, notify: false }, act)
}

fn in_child_allowed(kind: ThreadKind, allow: Allowances, act: fn()) -> libc::c_int {
    // Compiled before fork: the child only makes system calls.
    let prog = program(kind, allow).unwrap();
    // SAFETY: the child calls only async-signal-safe functions (prctl,
    // seccomp, raw syscalls, _exit) before it exits.
    unsafe {
        let pid = libc::fork();
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            if seccompiler::apply_filter(&prog).is_err() {
                libc::_exit(99);
            }
            act();
            libc::_exit(0);
        }
        let mut status = 0;
        assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
        status
    }
}

fn killed_by_sigsys(status: libc::c_int) -> bool {
    libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGSYS
}

fn exited_0(status: libc::c_int) -> bool {
    libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
}

#[test]
fn both_filters_compile() {
    assert!(program(ThreadKind::Main, Allowances::default()).unwrap().len() > 10);
    assert!(program(ThreadKind::Vcpu, Allowances::default()).unwrap().len() > 10);
}

/// The metrics directory's fd, for the children below (they may not allocate).
static WRITE_DIR: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

#[test]
fn the_main_thread_may_create_and_rename_only_in_the_metrics_directory() {
    use std::os::fd::AsRawFd;
    let dir = std::env::temp_dir().join(format!("kennel-seccomp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let d = std::fs::File::open(&dir).unwrap();
    WRITE_DIR.store(d.as_raw_fd(), std::sync::atomic::Ordering::SeqCst);
    fn in_dir() {
        let fd = WRITE_DIR.load(std::sync::atomic::Ordering::SeqCst);
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC;
        // SAFETY: plain syscalls on NUL-terminated constants.
        unsafe {
            let f = libc::openat(fd, c".m.tmp".as_ptr(), flags, 0o644);
            if f < 0 || libc::renameat(fd, c".m.tmp".as_ptr(), fd, c"m.prom".as_ptr()) != 0 {
                libc::_exit(3);
            }
        }
    }
    assert!(exited_0(in_child_with(ThreadKind::Main, Some(d.as_raw_fd()), in_dir)));
    assert!(dir.join("m.prom").exists());
    fn elsewhere() {
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_CLOEXEC;
        // SAFETY: a plain syscall; it must never return.
        unsafe { libc::openat(libc::AT_FDCWD, c"/tmp/kennel-seccomp-elsewhere".as_ptr(), flags, 0o644) };
    }
    assert!(killed_by_sigsys(in_child_with(ThreadKind::Main, Some(d.as_raw_fd()), elsewhere)));
    fn rename_out() {
        let fd = WRITE_DIR.load(std::sync::atomic::Ordering::SeqCst);
        // SAFETY: a plain syscall; it must never return.
        unsafe { libc::renameat(fd, c"m.prom".as_ptr(), libc::AT_FDCWD, c"/tmp/kennel-stolen".as_ptr()) };
    }
    assert!(killed_by_sigsys(in_child_with(ThreadKind::Main, Some(d.as_raw_fd()), rename_out)));
    // Without --metrics there is no exception at all.
    assert!(killed_by_sigsys(in_child_with(ThreadKind::Main, None, in_dir)));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn ordinary_calls_pass_both_filters() {
    fn act() {
        // SAFETY: plain syscalls on constant arguments; fd 2 may be closed,
        // only the syscall being allowed matters.
        unsafe {
            libc::getpid();
            libc::write(2, b"".as_ptr().cast(), 0);
            let fd = libc::eventfd(0, 0);
            libc::close(fd);
        }
    }
    // The vCPU filter has no eventfd2: check it on the main filter only.
    assert!(exited_0(in_child(ThreadKind::Main, act)));
    fn vcpu_act() {
        // SAFETY: as above.
        unsafe {
            libc::getpid();
            libc::write(2, b"".as_ptr().cast(), 0);
            libc::sched_yield();
        }
    }
    assert!(exited_0(in_child(ThreadKind::Vcpu, vcpu_act)));
}

#[test]
fn vcpu_thread_cannot_open_a_socket() {
    fn act() {
        // SAFETY: a plain syscall; it must never return.
        unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
    }
    assert!(killed_by_sigsys(in_child(ThreadKind::Vcpu, act)));
}

#[test]
fn vcpu_thread_cannot_open_files_or_use_terminal_ioctls() {
    fn open() {
        // SAFETY: a plain syscall on a static NUL-terminated path.
        unsafe { libc::open(c"/etc/passwd".as_ptr(), libc::O_RDONLY) };
    }
    assert!(killed_by_sigsys(in_child(ThreadKind::Vcpu, open)));
    fn tiocsti() {
        let c = 0u8;
        // SAFETY: TIOCSTI on fd 0 with a valid byte pointer; must never run.
        unsafe { libc::ioctl(0, libc::TIOCSTI, &c) };
    }
    assert!(killed_by_sigsys(in_child(ThreadKind::Vcpu, tiocsti)));
}

#[test]
fn main_thread_cannot_exec_connect_or_create_files() {
    fn exec() {
        let argv = [c"/bin/true".as_ptr(), std::ptr::null()];
        // SAFETY: valid NUL-terminated argv and empty environment.
        unsafe { libc::execve(c"/bin/true".as_ptr(), argv.as_ptr(), [std::ptr::null()].as_ptr()) };
    }
    assert!(killed_by_sigsys(in_child(ThreadKind::Main, exec)));
    fn socket() {
        // SAFETY: a plain syscall; it must never return.
        unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0) };
    }
    assert!(killed_by_sigsys(in_child(ThreadKind::Main, socket)));
    fn create() {
        // SAFETY: a plain syscall on a static path; it must never return.
        unsafe {
            libc::open(c"/tmp/kennel-seccomp-must-not-exist".as_ptr(), libc::O_WRONLY | libc::O_CREAT, 0o600)
        };
    }
    assert!(killed_by_sigsys(in_child(ThreadKind::Main, create)));
    fn read_only_open() {
        // SAFETY: as above; read-only opens are allowed (the kernel image).
        unsafe { libc::close(libc::open(c"/proc/self/stat".as_ptr(), libc::O_RDONLY)) };
    }
    assert!(exited_0(in_child(ThreadKind::Main, read_only_open)));
}

#[test]
fn with_a_service_manager_the_main_thread_may_open_unix_datagram_sockets_only() {
    fn dgram() {
        // SAFETY: plain syscalls on constant arguments.
        unsafe {
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
            if fd < 0 {
                libc::_exit(3);
            }
            libc::close(fd);
        }
    }
    fn tcp() {
        // SAFETY: a plain syscall; it must never return.
        unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    }
    let notify = Allowances { write_dir: None, notify: true };
    assert!(exited_0(in_child_allowed(ThreadKind::Main, notify, dgram)));
    assert!(killed_by_sigsys(in_child_allowed(ThreadKind::Main, notify, tcp)));
    assert!(killed_by_sigsys(in_child_allowed(ThreadKind::Main, Allowances::default(), dgram)));
}
