//! libdevrig: a process supervisor for programs in C/C++, Python and Go.
//!
//! One [`Supervisor`] runs one service (`/bin/sh -c COMMAND` in its own
//! process group), captures its output line by line, restarts it according
//! to a [`RestartPolicy`], reports every state change as an [`Event`], and
//! stops it leaving nothing behind. The C API lives in [`ffi`]; the Python
//! binding uses this Rust API directly.
//!
//! Where things live: `policy` (the restart decision, pure), `logs` (line
//! splitting and grouping, pure), `events` (what is reported), `process`
//! (syscalls and /proc), `state` (PID file, records, reap_orphans),
//! `runtime` (the shared tokio runtime), `supervisor` (the handle and its
//! async driver), `ffi` (the C ABI).

pub mod error;
pub mod events;
pub mod ffi;
pub mod logs;
pub mod policy;
pub mod process;
mod runtime;
pub mod state;
pub mod supervisor;

pub use error::{Error, Result};
pub use events::{Event, EventKind, Level, LogLine, Outcome, OutcomeKind, Stream};
pub use policy::{RestartMode, RestartPolicy};
pub use process::{kill_tree, proc_start_time_ms, same_process};
pub use runtime::{block_async_signals, worker_threads, WORKER_THREADS};
pub use state::{pid_file_path, reap_orphans, remove_pid_file, write_pid_file};
pub use supervisor::{Config, EventHandler, LineHandler, LogGate, LogHandler, Supervisor};

/// The library's version (Cargo's).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
