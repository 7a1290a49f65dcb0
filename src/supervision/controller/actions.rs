//! What the controller does to the VM: power on, reset, power off, pause,
//! resume, NMI; each reported to the lifecycle as it happens.

use kennel_devices::bus::lock;
use kennel_devices::clock::Clock;

use super::{Controller, ControllerError};
use crate::exit_code;
use std::sync::Arc;

use crate::host::terminal::ConsoleOut;
use crate::machine::boot::cmdline::{self, CmdlineInput};
use crate::machine::exits::ResetSource;
use crate::machine::platform::{DiskParams, PlatformParams};
use crate::machine::vm::{StoppedVm, Vm};
use crate::supervision::events::EventName;
use crate::supervision::faults::disk_hook::CycleDiskFaults;
use crate::supervision::faults::{BootFault, HangFault};
use crate::supervision::lifecycle::{Action, Cause, Input, PowerOff, RunState};

pub(super) fn reset_source_name(s: ResetSource) -> &'static str {
    match s {
        ResetSource::TripleFault => "triple fault",
        ResetSource::SystemEvent => "KVM reset event",
        ResetSource::Keyboard => "keyboard controller reset line",
        ResetSource::Acpi => "ACPI reset register",
    }
}

impl Controller {
    pub(super) fn perform(&mut self, a: Action) {
        match a {
            Action::ResetVm { cause } => self.reset(cause),
            Action::Poweroff { cause } => self.poweroff(cause),
            Action::PowerButton { cause } => self.power_button(cause),
            Action::Pause { cause } => self.pause(cause),
            Action::InjectNmi => {
                if let Some(vm) = &self.vm {
                    vm.inject_nmi();
                }
            }
        }
    }

    /// Builds the VM for boot cycle `cycle`; the watchdog's timeout flag is
    /// what survives a reset. Applies the cycle's faults.
    fn build(&mut self, cycle: u64, esb_timeout_flag: bool) -> Result<(), ControllerError> {
        self.generation += 1;
        let mut vm_cfg = self.cfg.vm.clone();
        let base = match self.cfg.faults.cmdline_for(cycle).map(str::to_string) {
            Some(c) => {
                if let Some(d) = self.cfg.faults.boot_event_data(cycle, BootFault::Cmdline) {
                    self.emit(EventName::FaultInjected, d);
                }
                c
            }
            None => vm_cfg.cmdline.clone(),
        };
        vm_cfg.cmdline = cmdline::effective(&CmdlineInput {
            base: &base,
            rootfs: self.cfg.rootfs.as_ref().map(|r| r.readonly),
            pvm: vm_cfg.pvm,
        });
        let disk = match &self.cfg.rootfs {
            Some(r) => match r.handle() {
                Ok(file) => Some(DiskParams {
                    file,
                    readonly: r.readonly,
                    overlay: r.overlay.clone(),
                    faults: Arc::new(CycleDiskFaults {
                        state: self.cfg.faults.block_faults(cycle),
                        requests: self.sender.clone(),
                        generation: self.generation,
                    }),
                }),
                Err(e) => return Err(ControllerError::Disk(e)),
            },
            None => None,
        };
        let pp = PlatformParams {
            console: Box::new(ConsoleOut),
            clock: self.clock.clone(),
            requests: self.sender.clone(),
            esb_timeout_flag,
            generation: self.generation,
            disk,
            acpi: vm_cfg.acpi,
        };
        // A press was for the VM that is going away.
        self.cancel_powerdown();
        let now = self.clock.now();
        self.hang = HangFault::for_cycle(&self.cfg.faults, cycle, now);
        super::arm(&mut self.hang_timer, self.hang.due(), now);
        let vm = Vm::build(&self.kvm, &vm_cfg, pp)?;
        if self.lifecycle.run_state() == RunState::Paused {
            vm.pause();
        }
        self.vm = Some(vm);
        Ok(())
    }

    /// Builds and starts the first VM. An error here is the host's (a bad
    /// image, no memory): nothing has booted, so no event is emitted.
    pub(super) fn power_on(&mut self) -> Result<(), ControllerError> {
        if self.started {
            return Ok(());
        }
        self.started = true;
        self.build(1, false)?;
        self.input(Input::Boot { cause: Cause::PowerOn });
        Ok(())
    }

    /// Stops the VM; returns the watchdog's timeout flag.
    fn stop_vm(&mut self) -> bool {
        match self.vm.take() {
            Some(vm) => {
                let (flag, feeds) = {
                    let esb = lock(&vm.platform.esb);
                    (esb.timeout_flag(), esb.counters().feeds)
                };
                self.feeds_before += feeds;
                self.retire(vm.stop());
                flag
            }
            None => false,
        }
    }

    /// Drops a stopped VM on a helper thread, so tearing down the old VM
    /// overlaps with building the next. At most one is in flight: a guest
    /// resetting in a tight loop cannot pile up old VMs' memory.
    fn retire(&mut self, vm: StoppedVm) {
        self.join_retired();
        match std::thread::Builder::new().name("kennel-vm-drop".into()).spawn(move || drop(vm)) {
            Ok(h) => self.retiring = Some(h),
            // Without a thread, drop it here; the spawn error dropped the closure and the VM with it.
            Err(e) => log::warn!("cannot start a thread to drop the old VM ({e}); dropped in place"),
        }
    }

    /// Waits for the previous VM's teardown.
    pub(super) fn join_retired(&mut self) {
        if let Some(h) = self.retiring.take() {
            let _ = h.join();
        }
    }

    pub(super) fn reset(&mut self, cause: Cause) {
        if self.exit.is_some() {
            return;
        }
        let flag = self.stop_vm();
        if self.cfg.no_reboot {
            log::info!("reset ({cause}) with --no-reboot: exiting");
            self.input(Input::Shutdown { cause, by: PowerOff::Vmm });
            self.exit = Some(exit_code::CLEAN);
            return;
        }
        // RESET ends this cycle and BOOT starts the next; then the new VM.
        self.input(Input::Reset { cause });
        if let Err(e) = self.build(self.lifecycle.cycle(), flag) {
            log::error!("cannot rebuild the VM after a reset: {e}");
            self.fail(exit_code::HOST_ERROR);
        }
    }

    /// Powers the VM off now.
    pub(super) fn poweroff(&mut self, cause: Cause) {
        self.powered_off(cause, PowerOff::Vmm);
    }

    /// The VM is off (or is to be, now): stop it, report who did it.
    pub(super) fn powered_off(&mut self, cause: Cause, by: PowerOff) {
        if self.exit.is_some() {
            return;
        }
        self.stop_vm();
        self.cancel_powerdown();
        self.input(Input::Shutdown { cause, by });
        self.exit = Some(match cause {
            Cause::Watchdog | Cause::BootDeadline => exit_code::WATCHDOG_POWEROFF,
            _ => exit_code::CLEAN,
        });
    }

    /// The VM cannot go on: stop it, say so, exit with `code`.
    pub(super) fn fail(&mut self, code: i32) {
        if self.exit.is_some() {
            return;
        }
        self.stop_vm();
        self.input(Input::Shutdown { cause: Cause::Error, by: PowerOff::Vmm });
        self.exit = Some(code);
    }

    /// A `boot:hang` fault: the vCPUs stop as a hung guest's would, while
    /// the watchdog's clock runs on (this is not a pause).
    pub(super) fn hang_now(&mut self) {
        let cycle = self.lifecycle.cycle();
        if !self.hang.strike() {
            return;
        }
        if let Some(vm) = &self.vm {
            vm.pause();
            if let Some(d) = self.cfg.faults.boot_event_data(cycle, BootFault::Hang) {
                self.emit(EventName::FaultInjected, d);
            }
        }
    }

    pub(super) fn pause(&mut self, cause: Cause) {
        if self.lifecycle.run_state() != RunState::Running {
            return;
        }
        if let Some(vm) = &self.vm {
            vm.pause();
        }
        self.clock.pause();
        self.input(Input::Pause { cause });
    }

    pub(super) fn resume(&mut self, cause: Cause) {
        if self.lifecycle.run_state() != RunState::Paused {
            return;
        }
        self.clock.resume();
        self.input(Input::Resume { cause });
        if let (Some(vm), false) = (&self.vm, self.hang.struck()) {
            vm.resume();
        }
    }
}
