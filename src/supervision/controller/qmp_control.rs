//! QMP commands, executed on the main thread against the controller.

use std::sync::{Arc, Mutex};

use kennel_devices::bus::lock;
use serde_json::{json, Value};

use super::Controller;
use crate::interfaces::qmp::{query_status_reply, QmpCommand, QmpError, VmControl};
use crate::supervision::lifecycle::Cause;

/// What the QMP server holds: the controller, locked per command. The
/// server calls it with none of its own locks held, and the controller's
/// QMP event sink needs only the clients' lock, so events emitted while a
/// command runs cannot deadlock.
pub struct ControllerHandle(pub Arc<Mutex<Controller>>);

impl VmControl for ControllerHandle {
    fn execute(&mut self, cmd: QmpCommand) -> Result<Value, QmpError> {
        lock(&self.0).execute(cmd)
    }
}

impl Controller {
    pub fn execute(&mut self, cmd: QmpCommand) -> Result<Value, QmpError> {
        match cmd {
            QmpCommand::QueryStatus if !self.started => {
                Ok(json!({ "running": false, "status": "prelaunch", "singlestep": false }))
            }
            QmpCommand::QueryStatus => Ok(query_status_reply(self.lifecycle.run_state())),
            QmpCommand::QueryWatchdog => Ok(self.query_watchdog()),
            QmpCommand::WatchdogSetAction { action } => {
                self.lifecycle.set_watchdog_action(action);
                Ok(json!({}))
            }
            QmpCommand::SystemReset if !self.started => Err(QmpError::generic("the VM has not been started")),
            QmpCommand::SystemReset => {
                self.reset(Cause::Qmp);
                Ok(json!({}))
            }
            QmpCommand::SystemPowerdown => match self.press(Cause::Qmp) {
                Ok(()) => Ok(json!({})),
                Err(e) => Err(QmpError::generic(e.to_string())),
            },
            QmpCommand::Stop => {
                self.pause(Cause::Qmp);
                Ok(json!({}))
            }
            QmpCommand::Cont if !self.started => match self.power_on() {
                Ok(()) => Ok(json!({})),
                Err(e) => {
                    log::error!("{e}");
                    self.fail(crate::exit_code::HOST_ERROR);
                    Err(QmpError::generic(format!("cannot start the VM: {e}")))
                }
            },
            QmpCommand::Cont => {
                self.resume(Cause::Qmp);
                Ok(json!({}))
            }
            QmpCommand::Quit => {
                self.poweroff(Cause::Qmp);
                Ok(json!({}))
            }
        }
    }

    /// The lifecycle's view plus what the device itself holds.
    fn query_watchdog(&mut self) -> Value {
        let mut v = self.lifecycle.status().to_json();
        if let (Some(vm), Value::Object(map)) = (&self.vm, &mut v) {
            let s = lock(&vm.platform.esb).status();
            // The lifecycle hears only the first feed of each arming; the
            // device (rebuilt every cycle) counts them all.
            map.insert("feeds".into(), json!(s.counters.feeds));
            map.insert(
                "device".into(),
                json!({
                    "enabled": s.enabled,
                    "locked": s.locked,
                    "free_running": s.free_running,
                    "output_enabled": s.output_enabled,
                    "preload1": s.preload1,
                    "preload2": s.preload2,
                    "stage1_ms": s.stage1.as_millis() as u64,
                    "stage2_ms": s.stage2.as_millis() as u64,
                    "timeout_flag": s.timeout_flag,
                    "feeds": s.counters.feeds,
                    "refused_writes": s.counters.refused_writes,
                }),
            );
        }
        v
    }
}
