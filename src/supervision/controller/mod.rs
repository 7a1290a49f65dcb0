//! The main loop: owns the VM and the lifecycle, rebuilds the VM on reset,
//! runs the watchdog and boot-deadline timers, and turns requests from
//! vCPUs, devices, signals and QMP into lifecycle inputs and actions.
//!
//! Every lifecycle event goes through one path: something happens →
//! `Lifecycle::handle` → events to the hub (file, log, QMP) → actions
//! performed here and reported back as inputs. FAULT_INJECTED, which the
//! lifecycle has no part in, goes to the hub directly (`Controller::emit`).

mod actions;
mod power;
mod qmp_control;
mod reporting;
mod timers;

use std::io::Read;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use event_manager::{EventOps, Events, MutEventSubscriber};
use kennel_devices::bus::lock;
use kennel_devices::clock::{Clock, PausableClock};
use kvm_ioctls::Kvm;
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::timerfd::TimerFd;

use timers::arm;

pub use qmp_control::ControllerHandle;

use crate::exit_code;
use crate::host::rootdisk::RootDisk;
use crate::host::signals::StopSignals;
use crate::machine::requests::{RequestQueue, RequestSender, VmRequest};
use crate::machine::vm::{Vm, VmConfig};
use crate::supervision::events::{Event, EventHub, EventName, EventSink};
use crate::supervision::faults::{FaultPlan, HangFault};
use crate::supervision::lifecycle::{self, Cause, Input, Lifecycle};

/// Errors setting up the main loop.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("cannot create a main-loop timer or eventfd: {0}")]
    Timer(#[source] std::io::Error),
    #[error(transparent)]
    Build(#[from] crate::machine::vm::VmError),
    #[error(transparent)]
    Disk(#[from] crate::host::rootdisk::RootDiskError),
}

pub struct ControllerConfig {
    /// The VM as configured; `vm.cmdline` is the user's command line, from
    /// which each cycle's is made (see `cmdline::effective`).
    pub vm: VmConfig,
    pub rootfs: Option<RootDisk>,
    pub faults: FaultPlan,
    pub no_reboot: bool,
    pub lifecycle: lifecycle::Config,
    /// Build nothing until a QMP `cont` (as QEMU's -S), so a monitor can
    /// connect before the first BOOT.
    pub start_paused: bool,
    /// `--shutdown-grace`: how long a guest has to power off after the
    /// watchdog's `shutdown` action pressed its power button.
    pub shutdown_grace: Duration,
}

pub struct Controller {
    kvm: Kvm,
    cfg: ControllerConfig,
    vm: Option<Vm>,
    /// The previous VM being torn down on a helper thread.
    retiring: Option<std::thread::JoinHandle<()>>,
    /// VM builds so far; facts from an older VM still in the queue are dropped.
    generation: u64,
    clock: Arc<PausableClock>,
    sender: RequestSender,
    queue: RequestQueue,
    wd_timer: TimerFd,
    deadline_timer: TimerFd,
    /// Fires when this cycle's `boot:hang` fault is due.
    hang_timer: TimerFd,
    hang: HangFault,
    signals: StopSignals,
    lifecycle: Lifecycle,
    hub: EventHub,
    /// The lifecycle's clock must not run backwards; facts carry their own
    /// (earlier) time.
    last_now: Duration,
    started: bool,
    exit: Option<i32>,
    stdin_open: bool,
    /// `--metrics`, and its failed writes so far.
    metrics: Option<crate::interfaces::metrics::MetricsFile>,
    metrics_failures: u64,
    /// Feeds counted by the devices of VMs already torn down.
    feeds_before: u64,
    /// The service manager, when kennel runs under one (sd_notify).
    notifier: Option<crate::interfaces::systemd::Notifier>,
    /// Rewrites the metrics file and feeds the service manager's watchdog.
    housekeeping: TimerFd,
    /// The power button was pressed for this VM, and why: the guest's
    /// power-off is then reported with that cause.
    powerdown: Option<Cause>,
    /// When (pausable clock) a guest that has not powered off after the
    /// watchdog pressed its button is powered off by force.
    grace_deadline: Option<Duration>,
    grace_timer: TimerFd,
}

const TOKEN_REQUESTS: u32 = 1;
const TOKEN_WD_TIMER: u32 = 2;
const TOKEN_DEADLINE: u32 = 3;
const TOKEN_STDIN: u32 = 4;
const TOKEN_SIGNAL: u32 = 5;
const TOKEN_HANG: u32 = 6;
const TOKEN_HOUSEKEEPING: u32 = 7;
const TOKEN_GRACE: u32 = 8;

fn timer() -> Result<TimerFd, ControllerError> {
    timers::new().map_err(ControllerError::Timer)
}

impl Controller {
    pub fn new(
        kvm: Kvm,
        cfg: ControllerConfig,
        hub: EventHub,
        signals: StopSignals,
    ) -> Result<Self, ControllerError> {
        let (sender, queue) = crate::machine::requests::channel_pair().map_err(ControllerError::Timer)?;
        Ok(Controller {
            kvm,
            lifecycle: Lifecycle::new(cfg.lifecycle),
            cfg,
            vm: None,
            retiring: None,
            generation: 0,
            clock: Arc::new(PausableClock::new()),
            sender,
            queue,
            wd_timer: timer()?,
            deadline_timer: timer()?,
            hang_timer: timer()?,
            hang: HangFault::default(),
            signals,
            hub,
            last_now: Duration::ZERO,
            started: false,
            exit: None,
            stdin_open: true,
            metrics: None,
            metrics_failures: 0,
            feeds_before: 0,
            notifier: None,
            housekeeping: timer()?,
            powerdown: None,
            grace_deadline: None,
            grace_timer: timer()?,
        })
    }

    pub fn add_sink(&mut self, sink: Box<dyn EventSink>) {
        self.hub.add_sink(sink);
    }

    /// Powers the VM on, unless it is to wait for `cont`.
    pub fn start(&mut self) -> Result<(), ControllerError> {
        if self.cfg.start_paused {
            return Ok(());
        }
        self.power_on()
    }

    /// `Some(status)` once the VMM should exit (and the last VM is gone).
    pub fn exit_status(&mut self) -> Option<i32> {
        if self.exit.is_some() {
            self.join_retired();
        }
        self.exit
    }

    /// Feeds one input to the lifecycle at the current time.
    fn input(&mut self, i: Input) {
        let now = self.clock.now();
        self.input_at(now, i);
    }

    fn input_at(&mut self, at: Duration, i: Input) {
        let now = at.max(self.last_now);
        self.last_now = now;
        let out = self.lifecycle.handle(now, SystemTime::now(), i);
        self.hub.emit_all(&out.events);
        self.report(&out.events);
        if out.first_feed() && self.hang.first_feed(now) {
            arm(&mut self.hang_timer, self.hang.due(), self.clock.now());
        }
        for a in out.actions {
            self.perform(a);
        }
        self.arm_deadline_timer();
    }

    fn handle_request(&mut self, r: VmRequest) {
        if r.generation() != self.generation {
            log::debug!("dropping a request from a VM that no longer exists: {r:?}");
            return;
        }
        match r {
            VmRequest::GuestReset { source, .. } => {
                log::info!("the guest reset itself ({})", actions::reset_source_name(source));
                self.reset(Cause::Guest);
            }
            VmRequest::GuestPowerOff { .. } => self.guest_powered_off(),
            VmRequest::Fatal { vcpu, error, .. } => {
                log::error!("vCPU {vcpu}: {error}");
                self.fail(exit_code::VM_FAILED);
            }
            VmRequest::FaultInjected { data, .. } => self.emit(EventName::FaultInjected, data),
            VmRequest::Watchdog { fact, at, .. } => self.input_at(at, Input::Watchdog(fact)),
        }
    }

    /// Emits an event the lifecycle has no part in (faults).
    fn emit(&mut self, name: EventName, data: serde_json::Value) {
        let serde_json::Value::Object(map) = data else { return };
        let event = Event::new(name, map, SystemTime::now());
        self.hub.emit(&event);
        self.report(std::slice::from_ref(&event));
    }

    /// Brings the watchdog up to date and arms the timer for its next expiry.
    fn service_watchdog(&mut self) {
        let next = match &self.vm {
            Some(vm) => {
                let mut esb = lock(&vm.platform.esb);
                esb.poll();
                esb.next_deadline()
            }
            None => None,
        };
        arm(&mut self.wd_timer, next, self.clock.now());
    }

    fn arm_deadline_timer(&mut self) {
        let next = self.lifecycle.next_deadline();
        arm(&mut self.deadline_timer, next, self.clock.now());
    }

    fn drain_requests(&mut self) {
        for r in self.queue.drain() {
            if self.exit.is_some() {
                break;
            }
            self.handle_request(r);
        }
    }

    fn forward_stdin(&mut self, ops: &mut EventOps) {
        let mut buf = [0u8; 64];
        match std::io::stdin().read(&mut buf) {
            Ok(0) | Err(_) => {
                self.stdin_open = false;
                let _ = ops.remove(Events::empty_raw(std::io::stdin().as_raw_fd()));
            }
            Ok(n) => {
                if let Some(vm) = &self.vm {
                    // Bytes the UART FIFO cannot take are dropped, as a real
                    // UART overruns.
                    lock(&vm.platform.serial).enqueue_input(&buf[..n]);
                }
            }
        }
    }
}

impl MutEventSubscriber for Controller {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        match events.data() {
            TOKEN_REQUESTS => self.drain_requests(),
            // The watchdog's timer only wakes the loop: service_watchdog
            // below polls the device whether or not it fired.
            TOKEN_WD_TIMER => {
                timers::fired(&mut self.wd_timer);
            }
            // A timer's arm matches only if it really fired (see timers).
            TOKEN_DEADLINE if timers::fired(&mut self.deadline_timer) => self.input(Input::Tick),
            TOKEN_STDIN => self.forward_stdin(ops),
            TOKEN_HANG if timers::fired(&mut self.hang_timer) => self.hang_now(),
            TOKEN_HOUSEKEEPING if timers::fired(&mut self.housekeeping) => self.housekeeping(),
            TOKEN_GRACE if timers::fired(&mut self.grace_timer) => self.grace_timer_fired(),
            TOKEN_SIGNAL => {
                if let Some(sig) = self.signals.read() {
                    log::info!("signal {sig}: stopping the VM");
                    self.poweroff(Cause::Signal);
                }
            }
            _ => {}
        }
        if self.exit.is_none() {
            self.drain_requests();
            self.service_watchdog();
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        let reg = [
            (self.queue.wake.as_raw_fd(), TOKEN_REQUESTS),
            (self.wd_timer.as_raw_fd(), TOKEN_WD_TIMER),
            (self.deadline_timer.as_raw_fd(), TOKEN_DEADLINE),
            (self.signals.as_raw_fd(), TOKEN_SIGNAL),
            (self.hang_timer.as_raw_fd(), TOKEN_HANG),
            (self.housekeeping.as_raw_fd(), TOKEN_HOUSEKEEPING),
            (self.grace_timer.as_raw_fd(), TOKEN_GRACE),
        ];
        for (fd, token) in reg {
            if let Err(e) = ops.add(Events::with_data_raw(fd, token, EventSet::IN)) {
                log::error!("cannot watch a main-loop fd: {e:?}");
                self.exit = Some(exit_code::HOST_ERROR);
            }
        }
        let stdin = std::io::stdin().as_raw_fd();
        if self.stdin_open && ops.add(Events::with_data_raw(stdin, TOKEN_STDIN, EventSet::IN)).is_err() {
            // /dev/null and regular files cannot be polled; the guest just
            // gets no input.
            self.stdin_open = false;
        }
        self.arm_deadline_timer();
        self.arm_housekeeping();
    }
}
