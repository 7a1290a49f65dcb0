//! vCPU threads: run, turn exits into outcomes, park when paused, stop when
//! told.
//!
//! Stopping a vCPU that is inside KVM_RUN takes a signal. The handler sets
//! `immediate_exit` in that thread's `kvm_run`, so a signal that lands just
//! before KVM_RUN starts still makes it return at once (no lost kick).

use std::cell::Cell;
use std::ptr::null_mut;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use kvm_bindings::kvm_run;
use kvm_ioctls::VcpuFd;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::signal::{register_signal_handler, Killable, SIGRTMIN};

use crate::machine::exits::{self, Buses, Exit, Outcome};
use crate::machine::pvm;
use crate::machine::requests::{RequestSender, VmRequest};

/// Errors starting a vCPU thread, and what stops a running one.
#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    #[error("cannot install the vCPU kick signal handler: {0}")]
    Signal(#[source] vmm_sys_util::errno::Error),
    #[error("cannot start a vCPU thread: {0}")]
    Spawn(#[source] std::io::Error),
    // What stops a running vCPU, sent to the main loop.
    #[error("cannot confine the vCPU thread: {0}")]
    Seccomp(#[source] crate::host::seccomp::SeccompError),
    #[error("KVM_RUN failed: {0}")]
    Run(#[source] kvm_ioctls::Error),
    #[error("KVM reported an internal error (emulation failure)")]
    EmulationFailure,
    #[error(transparent)]
    Pvm(#[from] crate::machine::pvm::PvmError),
    #[error(transparent)]
    Exit(#[from] exits::ExitError),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VcpuState {
    Running,
    Paused,
    Stopping,
}

/// State every vCPU of one VM watches.
#[derive(Debug)]
pub struct VcpuControl {
    state: Mutex<VcpuState>,
    cv: Condvar,
    /// An NMI for the boot vCPU to inject before it next enters the guest.
    nmi: AtomicBool,
}

impl Default for VcpuControl {
    fn default() -> Self {
        Self { state: Mutex::new(VcpuState::Running), cv: Condvar::new(), nmi: AtomicBool::new(false) }
    }
}

impl VcpuControl {
    pub fn set(&self, s: VcpuState) {
        *kennel_devices::bus::lock(&self.state) = s;
        self.cv.notify_all();
    }

    pub fn request_nmi(&self) {
        self.nmi.store(true, Ordering::SeqCst);
    }

    /// Blocks while paused; returns false when the vCPU must stop.
    fn wait_runnable(&self) -> bool {
        let mut s = kennel_devices::bus::lock(&self.state);
        while *s == VcpuState::Paused {
            s = self.cv.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        *s == VcpuState::Running
    }
}

thread_local! {
    static KVM_RUN: Cell<*mut kvm_run> = const { Cell::new(null_mut()) };
}

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let run = KVM_RUN.with(|r| r.get());
    if !run.is_null() {
        // SAFETY: the pointer is this thread's own mapped kvm_run, set before
        // the first KVM_RUN and cleared before the VcpuFd is dropped.
        unsafe { std::ptr::addr_of_mut!((*run).immediate_exit).write_volatile(1) };
    }
}

fn kick_signal() -> libc::c_int {
    SIGRTMIN()
}

/// Installs the kick handler; harmless to call more than once.
pub fn init_kick_signal() -> Result<(), VcpuError> {
    register_signal_handler(kick_signal(), kick_handler).map_err(VcpuError::Signal)
}

pub struct VcpuThread {
    handle: JoinHandle<()>,
}

impl VcpuThread {
    pub fn kick(&self) {
        // The thread may already have ended; nothing to interrupt then.
        let _ = self.handle.kill(kick_signal());
    }

    pub fn join(self) {
        if self.handle.join().is_err() {
            log::error!("a vCPU thread panicked");
        }
    }
}

pub struct VcpuContext {
    pub id: u8,
    pub buses: Arc<Buses>,
    pub control: Arc<VcpuControl>,
    pub requests: RequestSender,
    pub mem: Arc<GuestMemoryMmap>,
    pub pvm: bool,
    pub generation: u64,
    /// Installed by the thread before its first KVM_RUN.
    pub seccomp: Option<crate::host::seccomp::Program>,
}

pub fn spawn(mut vcpu: VcpuFd, ctx: VcpuContext) -> Result<VcpuThread, VcpuError> {
    let handle = std::thread::Builder::new()
        .name(format!("kennel-vcpu{}", ctx.id))
        .spawn(move || {
            if let Some(p) = &ctx.seccomp {
                if let Err(e) = crate::host::seccomp::install(crate::host::seccomp::ThreadKind::Vcpu, p) {
                    // Never run a guest unconfined when confinement was asked for.
                    let error = VcpuError::Seccomp(e);
                    ctx.requests.send(VmRequest::Fatal { vcpu: ctx.id, error, generation: ctx.generation });
                    return;
                }
            }
            KVM_RUN.with(|r| r.set(vcpu.get_kvm_run() as *mut kvm_run));
            run_loop(&mut vcpu, &ctx);
            KVM_RUN.with(|r| r.set(null_mut()));
        })
        .map_err(VcpuError::Spawn)?;
    Ok(VcpuThread { handle })
}

fn run_loop(vcpu: &mut VcpuFd, ctx: &VcpuContext) {
    loop {
        if !ctx.control.wait_runnable() {
            return;
        }
        if ctx.id == 0 && ctx.control.nmi.swap(false, Ordering::SeqCst) {
            if let Err(e) = vcpu.nmi() {
                log::warn!("cannot inject an NMI: {e}");
            }
        }
        let fatal = |error: VcpuError| VmRequest::Fatal { vcpu: ctx.id, error, generation: ctx.generation };
        let outcome = match vcpu.run() {
            Ok(exit) => Ok(exits::handle(Exit::from_kvm(exit), &ctx.buses)),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                vcpu.set_kvm_immediate_exit(0);
                Ok(Outcome::Continue)
            }
            Err(e) => Err(VcpuError::Run(e)),
        };
        let request = match outcome {
            Err(e) => fatal(e),
            Ok(Outcome::Continue) => continue,
            Ok(Outcome::EmulationFailure) if ctx.pvm => match pvm::handle_emulation_failure(vcpu, &ctx.mem) {
                Ok(()) => continue,
                Err(e) => fatal(e.into()),
            },
            Ok(Outcome::EmulationFailure) => fatal(VcpuError::EmulationFailure),
            Ok(Outcome::Reset(source)) => {
                if source == exits::ResetSource::TripleFault {
                    log_triple_fault(vcpu, ctx.id);
                }
                VmRequest::GuestReset { source, generation: ctx.generation }
            }
            Ok(Outcome::PowerOff) => VmRequest::GuestPowerOff { generation: ctx.generation },
            Ok(Outcome::Fatal(e)) => fatal(e.into()),
        };
        ctx.requests.send(request);
        // The main loop decides what happens next; this vCPU waits for it.
        ctx.control.set_if_running(VcpuState::Paused);
    }
}

/// A triple fault resets the VM like any reset, but it usually means the
/// guest crashed before it could report anything: where it was is the one
/// clue an operator gets, so say it.
fn log_triple_fault(vcpu: &VcpuFd, id: u8) {
    match (vcpu.get_regs(), vcpu.get_sregs()) {
        // On AMD, KVM puts the vCPU through INIT before it reports the
        // shutdown (the VMCB is undefined after one): what is left is the
        // reset state, which would only mislead.
        (Ok(r), Ok(s)) if r.rip == 0xfff0 && s.cr0 == 0x10 => {
            log::info!("vCPU {id} triple-faulted (KVM reset its registers before reporting it; where it was is lost)")
        }
        (Ok(r), Ok(s)) => log::info!(
            "vCPU {id} triple-faulted at RIP {:#x} (RSP {:#x}, CR0 {:#x}, CR2 {:#x}, CR3 {:#x}, CR4 {:#x}, EFER {:#x})",
            r.rip,
            r.rsp,
            s.cr0,
            s.cr2,
            s.cr3,
            s.cr4,
            s.efer
        ),
        (Err(e), _) | (_, Err(e)) => log::info!("vCPU {id} triple-faulted (registers unreadable: {e})"),
    }
}

impl VcpuControl {
    /// Parks every vCPU unless a stop was already requested.
    fn set_if_running(&self, s: VcpuState) {
        let mut st = kennel_devices::bus::lock(&self.state);
        if *st == VcpuState::Running {
            *st = s;
        }
    }
}
