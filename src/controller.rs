//! The main loop: owns the VM, rebuilds it on reset, runs the watchdog's
//! timer and turns requests from vCPUs and devices into actions.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use event_manager::{EventOps, Events, MutEventSubscriber};
use kennel_devices::bus::lock;
use kennel_devices::clock::{Clock, PausableClock};
use kennel_devices::i6300esb::WatchdogFact;
use kvm_ioctls::Kvm;
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::timerfd::TimerFd;

use crate::exit_code;
use crate::exits::ResetSource;
use crate::platform::PlatformParams;
use crate::requests::{RequestQueue, RequestSender, VmRequest};
use crate::terminal::ConsoleOut;
use crate::vm::{Vm, VmConfig, VmError};

/// Errors of the main loop itself.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("cannot create a timer: {0}")]
    Timer(std::io::Error),
    #[error(transparent)]
    Vm(#[from] VmError),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResetCause {
    Watchdog,
    Guest,
}

pub struct ControllerConfig {
    pub vm: VmConfig,
    pub no_reboot: bool,
}

pub struct Controller {
    kvm: Kvm,
    cfg: ControllerConfig,
    vm: Option<Vm>,
    generation: u64,
    clock: Arc<PausableClock>,
    sender: RequestSender,
    queue: RequestQueue,
    wd_timer: TimerFd,
    exit: Option<i32>,
    stdin_open: bool,
}

// Tokens telling the fds apart in `process`.
const TOKEN_REQUESTS: u32 = 1;
const TOKEN_WD_TIMER: u32 = 2;
const TOKEN_STDIN: u32 = 3;

impl Controller {
    pub fn new(kvm: Kvm, cfg: ControllerConfig) -> Result<Self, ControllerError> {
        let (sender, queue) = crate::requests::channel_pair().map_err(ControllerError::Timer)?;
        let wd_timer = TimerFd::new().map_err(|e| ControllerError::Timer(e.into()))?;
        let mut c = Controller {
            kvm,
            cfg,
            vm: None,
            generation: 0,
            clock: Arc::new(PausableClock::new()),
            sender,
            queue,
            wd_timer,
            exit: None,
            stdin_open: true,
        };
        c.boot(false)?;
        Ok(c)
    }

    /// `Some(status)` once the VMM should exit.
    pub fn exit_status(&self) -> Option<i32> {
        self.exit
    }

    fn boot(&mut self, timeout_flag: bool) -> Result<(), VmError> {
        self.generation += 1;
        let pp = PlatformParams {
            console: Box::new(ConsoleOut),
            clock: self.clock.clone(),
            requests: self.sender.clone(),
            esb_timeout_flag: timeout_flag,
            generation: self.generation,
        };
        self.vm = Some(Vm::build(&self.kvm, &self.cfg.vm, pp)?);
        log::info!("boot cycle {} started", self.generation);
        Ok(())
    }

    fn reset(&mut self, cause: ResetCause) {
        let timeout_flag = match self.vm.take() {
            Some(vm) => {
                let flag = lock(&vm.platform.esb).timeout_flag();
                vm.stop();
                flag
            }
            None => false,
        };
        if self.cfg.no_reboot {
            log::info!("guest reset ({cause:?}) with --no-reboot: exiting");
            self.exit = Some(exit_code::CLEAN);
            return;
        }
        log::info!("resetting the VM ({cause:?})");
        if let Err(e) = self.boot(timeout_flag) {
            log::error!("cannot rebuild the VM after a reset: {e}");
            self.exit = Some(exit_code::HOST_ERROR);
        }
    }

    fn handle_request(&mut self, r: VmRequest) {
        match r {
            VmRequest::GuestReset(src) => {
                log::info!("guest reset ({})", reset_source_name(src));
                self.reset(ResetCause::Guest);
            }
            VmRequest::GuestPowerOff => {
                self.stop_vm();
                self.exit = Some(exit_code::CLEAN);
            }
            VmRequest::Fatal { vcpu, message } => {
                log::error!("vCPU {vcpu}: {message}");
                self.stop_vm();
                self.exit = Some(exit_code::VM_FAILED);
            }
            VmRequest::Watchdog { generation, .. } if generation != self.generation => {}
            VmRequest::Watchdog { fact, at, .. } => self.watchdog_fact(fact, at),
        }
    }

    fn watchdog_fact(&mut self, fact: WatchdogFact, at: Duration) {
        log::info!("watchdog: {fact:?} at {at:?}");
        if matches!(fact, WatchdogFact::Expired) {
            self.reset(ResetCause::Watchdog);
        }
    }

    fn stop_vm(&mut self) {
        if let Some(vm) = self.vm.take() {
            vm.stop();
        }
    }

    /// Brings the watchdog up to date and arms the timer for its next expiry.
    fn service_watchdog(&mut self) {
        let Some(vm) = &self.vm else { return };
        let next = {
            let mut esb = lock(&vm.platform.esb);
            esb.poll();
            esb.next_deadline()
        };
        let delay = match next {
            // timerfd treats zero as "disarm"; a deadline already passed
            // must still fire.
            Some(t) => t.saturating_sub(self.clock.now()).max(Duration::from_micros(1)),
            None => Duration::ZERO,
        };
        if let Err(e) = self.wd_timer.reset(delay, None) {
            log::error!("cannot arm the watchdog timer: {e}");
        }
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

fn reset_source_name(s: ResetSource) -> &'static str {
    match s {
        ResetSource::TripleFault => "triple fault",
        ResetSource::SystemEvent => "KVM reset event",
        ResetSource::Keyboard => "keyboard controller reset line",
    }
}

impl MutEventSubscriber for Controller {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        match events.data() {
            TOKEN_REQUESTS => self.drain_requests(),
            TOKEN_WD_TIMER => {
                let _ = self.wd_timer.wait();
            }
            TOKEN_STDIN => self.forward_stdin(ops),
            _ => {}
        }
        if self.exit.is_none() {
            self.drain_requests();
            self.service_watchdog();
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        let reg =
            [(self.queue.wake.as_raw_fd(), TOKEN_REQUESTS), (self.wd_timer.as_raw_fd(), TOKEN_WD_TIMER)];
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
    }
}
