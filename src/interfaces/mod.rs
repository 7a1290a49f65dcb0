//! What operators and their tools talk to: the QMP socket, the metrics
//! file, the service manager (sd_notify), and the timeline drawn from an
//! events file. The command line is `crate::cli`.

pub mod metrics;
pub mod qmp;
pub mod systemd;
pub mod timeline;
