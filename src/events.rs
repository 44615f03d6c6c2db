//! What a supervisor reports: log lines, state-change events and the
//! outcome of a run. Plain data shared by the driver and every binding.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// Which pipe a line came from. The numbers are those of the C API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Stream {
    Stdout = 1,
    Stderr = 2,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// The severity detected in a line. The numbers are those of the C API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum Level {
    Unknown = 0,
    Trace = 1,
    Debug = 2,
    Info = 3,
    Warn = 4,
    Error = 5,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Unknown => "unknown",
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

/// One delivered log entry. Borrowed: valid only during the callback.
#[derive(Clone, Copy, Debug)]
pub struct LogLine<'a> {
    pub service: &'a str,
    /// The bytes as the child wrote them, followed in memory by a NUL byte.
    text_with_nul: &'a [u8],
    pub stream: Stream,
    pub level: Level,
    pub pid: u32,
    pub timestamp_ms: i64,
}

impl<'a> LogLine<'a> {
    /// `text_with_nul` must end with a NUL byte.
    pub(crate) fn new(
        service: &'a str,
        text_with_nul: &'a [u8],
        stream: Stream,
        level: Level,
        pid: u32,
        timestamp_ms: i64,
    ) -> Self {
        assert_eq!(text_with_nul.last(), Some(&0));
        LogLine {
            service,
            text_with_nul,
            stream,
            level,
            pid,
            timestamp_ms,
        }
    }

    /// The line's bytes, without the terminator.
    pub fn text(&self) -> &'a [u8] {
        &self.text_with_nul[..self.text_with_nul.len() - 1]
    }

    /// The line's bytes followed by a NUL byte (for the C API).
    pub fn text_with_nul(&self) -> &'a [u8] {
        self.text_with_nul
    }
}

/// The kinds of state change. The numbers are those of the C API and are
/// never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum EventKind {
    Started = 1,
    Running = 2,
    Exited = 3,
    Backoff = 4,
    SpawnFailed = 5,
    Stopping = 6,
    Stopped = 7,
    Failed = 8,
    /// Something went wrong that did not stop supervision (for example the
    /// state record could not be written). Never terminal.
    Warning = 9,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Started => "started",
            EventKind::Running => "running",
            EventKind::Exited => "exited",
            EventKind::Backoff => "backoff",
            EventKind::SpawnFailed => "spawn_failed",
            EventKind::Stopping => "stopping",
            EventKind::Stopped => "stopped",
            EventKind::Failed => "failed",
            EventKind::Warning => "warning",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, EventKind::Stopped | EventKind::Failed)
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One state change of a supervised service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub service: String,
    /// The child concerned (0 when there is none, e.g. during backoff).
    pub pid: u32,
    /// EXITED, STOPPED, FAILED: the last exit code, or -1 after a signal.
    pub exit_code: i32,
    /// EXITED, STOPPED, FAILED: the last terminating signal, 0 if none.
    pub signal: i32,
    /// Restarts performed so far; for BACKOFF, the number of the restart
    /// being waited for.
    pub restart_count: u32,
    /// BACKOFF: the delay before the restart.
    pub delay_ms: u64,
    /// EXITED: how long the child lived.
    pub runtime_ms: u64,
    /// Human-readable detail; empty when there is nothing to add.
    pub message: String,
    pub timestamp_ms: i64,
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[repr(u32)]
pub enum OutcomeKind {
    /// The run has not ended yet.
    #[default]
    None = 0,
    /// The service exited and the policy did not restart it.
    Completed = 1,
    /// A stop request ended the run.
    Cancelled = 2,
    /// The supervisor gave up (or the first spawn failed).
    Failed = 3,
}

impl OutcomeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeKind::None => "none",
            OutcomeKind::Completed => "completed",
            OutcomeKind::Cancelled => "cancelled",
            OutcomeKind::Failed => "failed",
        }
    }
}

/// The result of a finished run.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Outcome {
    pub kind: OutcomeKind,
    /// The last exit code, -1 after a signal, 0 when the child never ran.
    pub last_exit_code: i32,
    pub last_signal: i32,
    /// Restarts performed.
    pub restarts: u32,
    pub message: String,
}

/// Wall-clock milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    }
}
