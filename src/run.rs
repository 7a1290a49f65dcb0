//! `kennel run`: from parsed arguments to a running, supervised VM.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};

use crate::cli::RunArgs;
use kennel_devices::bus::lock;

use crate::exit_code;
use crate::host::kvm::{self, HostError};
use crate::host::rootdisk::{DiskMode, RootDisk};
use crate::host::seccomp::{self, Allowances, ThreadKind};
use crate::host::signals::StopSignals;
use crate::host::terminal::RawMode;
use crate::interfaces::metrics::{MetricsError, MetricsFile};
use crate::interfaces::qmp::QmpServer;
use crate::interfaces::systemd::Notifier;
use crate::machine::pvm;
use crate::machine::vcpu::{self, VcpuError};
use crate::machine::vm::{self, VmConfig};
use crate::supervision::controller::{Controller, ControllerConfig, ControllerError, ControllerHandle};
use crate::supervision::events::{EventHub, JsonLinesSink, LogSink};
use crate::supervision::faults::FaultPlan;
use crate::supervision::lifecycle;

/// Errors starting `kennel run`.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Host(#[from] HostError),
    #[error(transparent)]
    Vcpu(#[from] VcpuError),
    #[error(transparent)]
    Controller(#[from] ControllerError),
    #[error(transparent)]
    Signals(#[from] crate::host::signals::SignalError),
    #[error("cannot open the events file: {0}")]
    Events(#[from] crate::supervision::events::Error),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error("cannot serve QMP: {0}")]
    Qmp(#[from] crate::interfaces::qmp::ServerError),
    #[error(transparent)]
    Faults(#[from] crate::supervision::faults::FaultError),
    #[error(transparent)]
    RootDisk(#[from] crate::host::rootdisk::RootDiskError),
    #[error(transparent)]
    Vm(#[from] crate::machine::vm::VmError),
    #[error(transparent)]
    Seccomp(#[from] crate::host::seccomp::SeccompError),
    #[error("cannot start the event loop: {0:?}")]
    EventLoop(#[source] event_manager::Error),
    #[error("kernel image {0} does not exist")]
    KernelMissing(std::path::PathBuf),
    #[error("initrd {0} does not exist")]
    InitrdMissing(std::path::PathBuf),
}

impl RunError {
    /// Every error before the VM runs is the host's side.
    pub fn exit_code(&self) -> i32 {
        exit_code::HOST_ERROR
    }
}

pub fn run(args: RunArgs) -> Result<i32, RunError> {
    // Check everything the user gave before creating any file or socket, so
    // a mistake leaves nothing behind; and before touching KVM where we can,
    // so a typo is reported as a typo even on a host without KVM.
    if !args.kernel.exists() {
        return Err(RunError::KernelMissing(args.kernel));
    }
    if let Some(p) = &args.initrd {
        if !p.exists() {
            return Err(RunError::InitrdMissing(p.clone()));
        }
    }
    let faults = FaultPlan::parse_all(&args.fault, args.fault_seed)?;
    let rootfs = match &args.rootfs {
        Some(p) => Some(RootDisk::open(p, DiskMode::from_flags(args.rootfs_readonly, args.rootfs_snapshot))?),
        None => None,
    };
    kvm::check_memory(args.memory)?;
    let kvm = kvm::open_kvm()?;
    let pvm = pvm::host_is_pvm() && !args.no_pvm_quirks;
    if pvm {
        log::info!(
            "this host's KVM is PVM: guest kernel code is emulated (slow); masking CPUID and adding '{}' to the command line",
            pvm::CMDLINE_EXTRA
        );
    }
    if pvm && args.vcpus > 1 {
        log::warn!(
            "PVM hosts cannot start secondary vCPUs (the real-mode SIPI trampoline fails); \
             the guest will wait for {} CPUs that never come up: use --vcpus 1 here",
            args.vcpus - 1
        );
    }
    let vm = VmConfig {
        kernel: args.kernel,
        initrd: args.initrd,
        cmdline: args.cmdline,
        mem_bytes: args.memory << 20,
        vcpus: args.vcpus,
        pvm,
        acpi: !args.no_acpi,
        vcpu_seccomp: match args.no_seccomp {
            false => Some(seccomp::program(ThreadKind::Vcpu, Allowances::default())?),
            true => None,
        },
    };
    vm::preflight(&vm)?;
    vcpu::init_kick_signal()?;
    // Before any thread starts, so vCPU threads inherit the blocked mask.
    let signals = StopSignals::install()?;
    let mut hub = EventHub::new();
    hub.add_sink(Box::new(LogSink::new()));
    let cfg = ControllerConfig {
        vm,
        rootfs,
        faults,
        no_reboot: args.no_reboot,
        lifecycle: lifecycle::Config {
            watchdog_action: args.watchdog_action,
            boot_deadline: args.boot_deadline,
            deadline_action: args.boot_deadline_action,
        },
        start_paused: args.start_paused,
        shutdown_grace: args.shutdown_grace,
    };
    let controller = Arc::new(Mutex::new(Controller::new(kvm, cfg, hub, signals)?));
    let mut em: EventManager<Arc<Mutex<dyn MutEventSubscriber + Send>>> =
        EventManager::new().map_err(RunError::EventLoop)?;
    // The socket and the events file are made last. On any error from here
    // on, dropping the server removes the socket and `_events` removes an
    // events file this run created and never wrote to.
    if let Some(p) = &args.qmp {
        let server = QmpServer::bind(p, ControllerHandle(controller.clone()))?;
        lock(&controller).add_sink(Box::new(server.event_sink()));
        em.add_subscriber(Arc::new(Mutex::new(server)));
    }
    let _events = match &args.events {
        Some(p) => {
            let guard = NewFileGuard::before_creating(p);
            lock(&controller).add_sink(Box::new(JsonLinesSink::open(p)?));
            Some(guard)
        }
        None => None,
    };
    let metrics_dir = match &args.metrics {
        Some(p) => {
            let m = MetricsFile::create(p)?;
            let fd = m.dir_fd();
            lock(&controller).set_metrics(m);
            Some(fd)
        }
        None => None,
    };
    let notify = std::env::var_os("NOTIFY_SOCKET").is_some();
    em.add_subscriber(controller.clone());
    let _raw = RawMode::enter();
    // Everything that creates files or sockets has run; from here on the
    // main thread only needs its loop and what a VM rebuild takes.
    if args.no_seccomp {
        log::warn!("--no-seccomp: kennel's threads run without seccomp filters");
    } else {
        let allow = Allowances { write_dir: metrics_dir, notify };
        seccomp::install(ThreadKind::Main, &seccomp::program(ThreadKind::Main, allow)?)?;
    }
    lock(&controller).start()?;
    // Started now, so its thread inherits the main thread's filter.
    if let Some(mut n) = notify.then(Notifier::from_env).flatten() {
        // The QMP socket listens and the first VM is built (with
        // --start-paused: kennel waits for `cont`, ready to be told).
        n.ready();
        lock(&controller).set_notifier(n);
    }
    loop {
        let mut c = lock(&controller);
        if let Some(code) = c.exit_status() {
            c.notify_stopping();
            return Ok(code);
        }
        drop(c);
        em.run().map_err(RunError::EventLoop)?;
    }
}

/// Removes, when dropped, a file that did not exist when it was made and is
/// still empty: an events file created by a run that failed before its
/// first event. Never touches a file that was there before.
struct NewFileGuard {
    path: Option<PathBuf>,
}

impl NewFileGuard {
    fn before_creating(p: &Path) -> Self {
        Self { path: p.symlink_metadata().is_err().then(|| p.to_path_buf()) }
    }
}

impl Drop for NewFileGuard {
    fn drop(&mut self) {
        if let Some(p) = &self.path {
            if std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.len() == 0) {
                let _ = std::fs::remove_file(p);
            }
        }
    }
}
