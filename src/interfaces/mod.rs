//! What operators and their tools talk to: the QMP socket and the timeline
//! drawn from an events file. The command line is `crate::cli`.

pub mod qmp;
pub mod timeline;
