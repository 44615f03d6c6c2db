//! The C ABI (`include/devrig.h` is generated from this file by cbindgen).
//!
//! This layer only translates and validates: C strings become `&str` (NULL
//! and invalid UTF-8 are refused), C structs become core types, core errors
//! become `devrig_status` plus a thread-local message, and panics are caught
//! at every function. No logic lives here.
#![allow(non_camel_case_types)]
#![allow(clippy::missing_safety_doc)]

use std::cell::RefCell;
use std::ffi::{c_char, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use crate::error::Error;
use crate::events::{Event, EventKind, Level, LogLine, OutcomeKind, Stream};
use crate::policy::{RestartMode, RestartPolicy};
use crate::supervisor::{Config, Supervisor};
use crate::{process, runtime, state};

/// Status codes. The numbers are part of the ABI and are never reused.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum devrig_status {
    /// Success.
    DEVRIG_OK = 0,
    /// An argument was NULL, not valid UTF-8, or out of range; see devrig_last_error().
    DEVRIG_E_INVALID_ARGUMENT = 1,
    /// The service could not be spawned (first spawn of a run).
    DEVRIG_E_SPAWN = 2,
    /// The call is not allowed in the handle's current state (already started,
    /// not started, called from inside a callback where it would block,
    /// devrig_hold_logs outside the handle's log callback, or a handle used
    /// in a forked child).
    DEVRIG_E_STATE = 3,
    /// A file-system or system-call failure.
    DEVRIG_E_IO = 4,
    /// No such process, file or directory.
    DEVRIG_E_NOT_FOUND = 5,
    /// A bounded wait ran out.
    DEVRIG_E_TIMEOUT = 6,
    /// A bug in libdevrig: a Rust panic was caught at the boundary.
    DEVRIG_E_PANIC = 7,
}

use devrig_status::*;

/// When a service is restarted after it exits on its own.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum devrig_restart_mode {
    /// Restart after a non-zero exit or a death by signal.
    DEVRIG_RESTART_ON_FAILURE = 0,
    /// Restart after any exit.
    DEVRIG_RESTART_ALWAYS = 1,
    /// Never restart.
    DEVRIG_RESTART_NEVER = 2,
}

/// The restart policy; see devrig_default_policy() for the defaults and
/// README.md for the decision rules.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct devrig_restart_policy {
    /// [DEVRIG_RESTART_ON_FAILURE]
    pub mode: devrig_restart_mode,
    /// Restarts allowed before giving up; 0: never restart. [10]
    pub max_restarts: u32,
    /// Consecutive startup failures allowed before giving up. [3]
    pub startup_max_restarts: u32,
    /// A run shorter than this is a startup failure; RUNNING is reported
    /// when a child lives this long. [2000]
    pub startup_grace_ms: u64,
    /// First backoff delay. [500]
    pub initial_delay_ms: u64,
    /// Backoff cap; must be >= initial_delay_ms. [30000]
    pub max_delay_ms: u64,
    /// A run at least this long resets both restart counters. [60000]
    /// 0 forgives every run: max_restarts and startup_max_restarts then
    /// never end the run (only crash_loop_limit or a cancel does).
    pub reset_after_ms: u64,
    /// Give up after this many restartable exits inside the window; 0: off. [5]
    pub crash_loop_limit: u32,
    /// [30000]
    pub crash_loop_window_ms: u64,
}

/// Same layout as `devrig_restart_policy`, with the enum read as a plain
/// integer: C may store any value there, and an out-of-range value in a
/// Rust enum would be undefined behaviour.
#[repr(C)]
#[derive(Clone, Copy)]
struct RawPolicy {
    mode: u32,
    max_restarts: u32,
    startup_max_restarts: u32,
    startup_grace_ms: u64,
    initial_delay_ms: u64,
    max_delay_ms: u64,
    reset_after_ms: u64,
    crash_loop_limit: u32,
    crash_loop_window_ms: u64,
}

const _: () = {
    assert!(std::mem::size_of::<RawPolicy>() == std::mem::size_of::<devrig_restart_policy>());
    assert!(std::mem::align_of::<RawPolicy>() == std::mem::align_of::<devrig_restart_policy>());
    assert!(std::mem::size_of::<devrig_restart_mode>() == 4);
};

/// Which pipe a line came from.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum devrig_stream {
    DEVRIG_STDOUT = 1,
    DEVRIG_STDERR = 2,
}

/// The severity detected in a line.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum devrig_level {
    DEVRIG_LEVEL_UNKNOWN = 0,
    DEVRIG_LEVEL_TRACE = 1,
    DEVRIG_LEVEL_DEBUG = 2,
    DEVRIG_LEVEL_INFO = 3,
    DEVRIG_LEVEL_WARN = 4,
    DEVRIG_LEVEL_ERROR = 5,
}

/// One log entry (a line, a multiline group, or a piece of an overlong
/// line). Lent to the callback: every pointer is valid only during the call.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct devrig_log_line {
    /// The service name (NUL-terminated).
    pub service: *const c_char,
    /// The bytes as the child wrote them, without the newline; `len` bytes,
    /// followed by a NUL byte (the text itself may contain NUL bytes).
    pub text: *const c_char,
    pub len: usize,
    pub stream: devrig_stream,
    pub level: devrig_level,
    /// The pid of the service's child that wrote it.
    pub pid: u32,
    /// Wall-clock time the line was read, ms since the Unix epoch.
    pub timestamp_ms: i64,
}

/// Called for every log line, in order within each stream, on a library
/// thread, never concurrently for one handle.
///
/// The thread is one of libdevrig's few worker threads, shared by every
/// handle: while a callback runs, that worker serves no other service, so a
/// callback must not block for long (a few milliseconds at most). A
/// callback that cannot take more lines now (its consumer is full) applies
/// backpressure without blocking: it keeps the line, calls
/// devrig_hold_logs and returns; whoever drains its consumer calls
/// devrig_release_logs. The service's child then blocks on a full pipe,
/// and no worker waits.
pub type devrig_log_fn =
    Option<unsafe extern "C" fn(user_data: *mut c_void, line: *const devrig_log_line)>;

/// Called with all lines of one read at once (`count` >= 1), same rules as
/// devrig_log_fn (do not block: hold the logs instead). Cheaper than one
/// call per line for bindings whose calls are expensive to cross (Go).
pub type devrig_log_batch_fn = Option<
    unsafe extern "C" fn(user_data: *mut c_void, lines: *const devrig_log_line, count: usize),
>;

/// Kinds of state change. Numbers are never reused.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum devrig_event_kind {
    /// A child was spawned (pid).
    DEVRIG_EVENT_STARTED = 1,
    /// The child is still alive startup_grace_ms after STARTED (at once when
    /// startup_grace_ms is 0).
    DEVRIG_EVENT_RUNNING = 2,
    /// The child exited (exit_code, signal, runtime_ms); all its log lines
    /// were delivered before this event.
    DEVRIG_EVENT_EXITED = 3,
    /// A restart will follow after delay_ms; restart_count is its number.
    DEVRIG_EVENT_BACKOFF = 4,
    /// A spawn failed (message).
    DEVRIG_EVENT_SPAWN_FAILED = 5,
    /// A stop was requested.
    DEVRIG_EVENT_STOPPING = 6,
    /// Terminal: the run ended (cancelled or completed).
    DEVRIG_EVENT_STOPPED = 7,
    /// Terminal: the supervisor gave up; the message says why ("startup",
    /// "restart budget", "crash loop", the spawn error, or "run ended by a
    /// panic: ...", a bug in libdevrig). Every run ends with exactly one
    /// terminal event.
    DEVRIG_EVENT_FAILED = 8,
    /// Not terminal: something failed without stopping supervision, e.g.
    /// the state record could not be written (message).
    DEVRIG_EVENT_WARNING = 9,
}

/// One state change. Lent to the callback: valid only during the call.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct devrig_event {
    pub kind: devrig_event_kind,
    pub service: *const c_char,
    /// The child concerned, 0 when there is none.
    pub pid: u32,
    /// EXITED (and STOPPED/FAILED, for the last exit): exit code, or -1
    /// when killed by a signal.
    pub exit_code: i32,
    /// EXITED (and STOPPED/FAILED): terminating signal, 0 if none.
    pub signal: i32,
    /// Restarts performed so far; BACKOFF: the number of the coming restart.
    pub restart_count: u32,
    /// BACKOFF: the delay before the restart.
    pub delay_ms: u64,
    /// EXITED: how long the child lived.
    pub runtime_ms: u64,
    /// Never NULL; "" when there is nothing to add.
    pub message: *const c_char,
    /// Wall-clock ms since the Unix epoch.
    pub timestamp_ms: i64,
}

/// Called for every event, on a library thread, never concurrently for one
/// handle and never under an internal lock.
pub type devrig_event_fn =
    Option<unsafe extern "C" fn(user_data: *mut c_void, event: *const devrig_event)>;

/// How a run ended.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum devrig_outcome_kind {
    /// The run has not ended (or not started).
    DEVRIG_OUTCOME_NONE = 0,
    /// The service exited and the policy did not restart it.
    DEVRIG_OUTCOME_COMPLETED = 1,
    /// A stop request (devrig_cancel or devrig_free) ended the run.
    DEVRIG_OUTCOME_CANCELLED = 2,
    /// The supervisor gave up, or the first spawn failed.
    DEVRIG_OUTCOME_FAILED = 3,
}

/// The result of a run.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct devrig_outcome {
    pub kind: devrig_outcome_kind,
    /// The last exit code, -1 after a signal, 0 when no child exited.
    pub last_exit_code: i32,
    pub last_signal: i32,
    /// Restarts performed.
    pub restarts: u32,
    /// Never NULL; owned by the handle, valid until devrig_free.
    pub message: *const c_char,
}

/// An opaque supervisor handle.
pub struct devrig_supervisor {
    _private: [u8; 0],
}

/// What a `devrig_supervisor *` points at.
struct Handle {
    sup: Supervisor,
    outcome_message: OnceLock<CString>,
}

// ---------------------------------------------------------------------------
// Boundary helpers: errors, panics, pointers, strings.

thread_local! {
    static LAST_ERROR: RefCell<Option<CString>> = const { RefCell::new(None) };
}

fn set_last_error(msg: &str) {
    let c = CString::new(msg.replace('\0', "\\0")).unwrap_or_default();
    let _ = LAST_ERROR.try_with(|e| *e.borrow_mut() = Some(c));
}

fn status_of(e: &Error) -> devrig_status {
    match e {
        Error::InvalidArgument(_) => DEVRIG_E_INVALID_ARGUMENT,
        Error::Spawn(_) => DEVRIG_E_SPAWN,
        Error::State(_) => DEVRIG_E_STATE,
        Error::Io(_) => DEVRIG_E_IO,
        Error::NotFound(_) => DEVRIG_E_NOT_FOUND,
        Error::Timeout(_) => DEVRIG_E_TIMEOUT,
        Error::Panic(_) => DEVRIG_E_PANIC,
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    let msg = p
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    format!("libdevrig panicked: {msg}")
}

/// Runs `f`, turning its error or panic into a status and a message.
fn boundary(f: impl FnOnce() -> crate::Result<()>) -> devrig_status {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => DEVRIG_OK,
        Ok(Err(e)) => {
            set_last_error(e.message());
            status_of(&e)
        }
        Err(p) => {
            set_last_error(&panic_message(&*p));
            DEVRIG_E_PANIC
        }
    }
}

/// Like `boundary` for functions that return a value instead of a status.
fn boundary_value<T>(on_error: T, f: impl FnOnce() -> crate::Result<T>) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            set_last_error(e.message());
            on_error
        }
        Err(p) => {
            set_last_error(&panic_message(&*p));
            on_error
        }
    }
}

/// Borrows a C string as UTF-8.
///
/// # Safety
/// `p` must be NULL or point to a NUL-terminated string valid for `'a`.
unsafe fn str_arg<'a>(p: *const c_char, what: &str) -> crate::Result<&'a str> {
    if p.is_null() {
        return Err(Error::invalid(format!("{what} is NULL")));
    }
    // SAFETY: non-NULL and NUL-terminated by the caller's contract.
    let c = unsafe { CStr::from_ptr(p) };
    c.to_str().map_err(|_| {
        Error::invalid(format!(
            "{what} is not valid UTF-8: {:?}",
            String::from_utf8_lossy(c.to_bytes())
        ))
    })
}

/// Borrows the handle behind a `devrig_supervisor *`.
///
/// # Safety
/// `p` must be NULL or a pointer returned by devrig_new and not yet freed.
unsafe fn handle<'a>(p: *const devrig_supervisor) -> crate::Result<&'a Handle> {
    if p.is_null() {
        return Err(Error::invalid("supervisor handle is NULL"));
    }
    // SAFETY: devrig_new hands out `Box<Handle>` pointers cast to this type.
    Ok(unsafe { &*(p as *const Handle) })
}

fn mode_from(m: u32) -> crate::Result<RestartMode> {
    match m {
        0 => Ok(RestartMode::OnFailure),
        1 => Ok(RestartMode::Always),
        2 => Ok(RestartMode::Never),
        other => Err(Error::invalid(format!(
            "restart mode {other} is not one of DEVRIG_RESTART_ON_FAILURE (0), DEVRIG_RESTART_ALWAYS (1), DEVRIG_RESTART_NEVER (2)"
        ))),
    }
}

fn mode_to(m: RestartMode) -> devrig_restart_mode {
    match m {
        RestartMode::OnFailure => devrig_restart_mode::DEVRIG_RESTART_ON_FAILURE,
        RestartMode::Always => devrig_restart_mode::DEVRIG_RESTART_ALWAYS,
        RestartMode::Never => devrig_restart_mode::DEVRIG_RESTART_NEVER,
    }
}

fn policy_to_c(p: &RestartPolicy) -> devrig_restart_policy {
    devrig_restart_policy {
        mode: mode_to(p.mode),
        max_restarts: p.max_restarts,
        startup_max_restarts: p.startup_max_restarts,
        startup_grace_ms: p.startup_grace_ms,
        initial_delay_ms: p.initial_delay_ms,
        max_delay_ms: p.max_delay_ms,
        reset_after_ms: p.reset_after_ms,
        crash_loop_limit: p.crash_loop_limit,
        crash_loop_window_ms: p.crash_loop_window_ms,
    }
}

fn policy_from_c(r: &RawPolicy) -> crate::Result<RestartPolicy> {
    Ok(RestartPolicy {
        mode: mode_from(r.mode)?,
        max_restarts: r.max_restarts,
        startup_max_restarts: r.startup_max_restarts,
        startup_grace_ms: r.startup_grace_ms,
        initial_delay_ms: r.initial_delay_ms,
        max_delay_ms: r.max_delay_ms,
        reset_after_ms: r.reset_after_ms,
        crash_loop_limit: r.crash_loop_limit,
        crash_loop_window_ms: r.crash_loop_window_ms,
    })
}

fn stream_to_c(s: Stream) -> devrig_stream {
    match s {
        Stream::Stdout => devrig_stream::DEVRIG_STDOUT,
        Stream::Stderr => devrig_stream::DEVRIG_STDERR,
    }
}

fn level_to_c(l: Level) -> devrig_level {
    use devrig_level::*;
    match l {
        Level::Unknown => DEVRIG_LEVEL_UNKNOWN,
        Level::Trace => DEVRIG_LEVEL_TRACE,
        Level::Debug => DEVRIG_LEVEL_DEBUG,
        Level::Info => DEVRIG_LEVEL_INFO,
        Level::Warn => DEVRIG_LEVEL_WARN,
        Level::Error => DEVRIG_LEVEL_ERROR,
    }
}

fn kind_to_c(k: EventKind) -> devrig_event_kind {
    use devrig_event_kind::*;
    match k {
        EventKind::Started => DEVRIG_EVENT_STARTED,
        EventKind::Running => DEVRIG_EVENT_RUNNING,
        EventKind::Exited => DEVRIG_EVENT_EXITED,
        EventKind::Backoff => DEVRIG_EVENT_BACKOFF,
        EventKind::SpawnFailed => DEVRIG_EVENT_SPAWN_FAILED,
        EventKind::Stopping => DEVRIG_EVENT_STOPPING,
        EventKind::Stopped => DEVRIG_EVENT_STOPPED,
        EventKind::Failed => DEVRIG_EVENT_FAILED,
        EventKind::Warning => DEVRIG_EVENT_WARNING,
    }
}

fn outcome_kind_to_c(k: OutcomeKind) -> devrig_outcome_kind {
    use devrig_outcome_kind::*;
    match k {
        OutcomeKind::None => DEVRIG_OUTCOME_NONE,
        OutcomeKind::Completed => DEVRIG_OUTCOME_COMPLETED,
        OutcomeKind::Cancelled => DEVRIG_OUTCOME_CANCELLED,
        OutcomeKind::Failed => DEVRIG_OUTCOME_FAILED,
    }
}

/// The user data of a C callback, moved to the run's thread. The caller of
/// devrig_on_log/devrig_on_event promises it may be used from any thread.
struct UserData(*mut c_void);
// SAFETY: see above; libdevrig never dereferences it, it only passes it back.
unsafe impl Send for UserData {}

fn line_to_c(service: &CStr, l: &LogLine<'_>) -> devrig_log_line {
    devrig_log_line {
        service: service.as_ptr(),
        text: l.text_with_nul().as_ptr() as *const c_char,
        len: l.text().len(),
        stream: stream_to_c(l.stream),
        level: level_to_c(l.level),
        pid: l.pid,
        timestamp_ms: l.timestamp_ms,
    }
}

fn c_text(s: &str) -> CString {
    CString::new(s.replace('\0', "\\0")).unwrap_or_default()
}

// ---------------------------------------------------------------------------
// The API.

/// The message of this thread's last failed call, or "" if none failed.
/// Valid until the next failing libdevrig call on the same thread; never NULL.
/// Successful calls leave it unchanged.
#[no_mangle]
pub extern "C" fn devrig_last_error() -> *const c_char {
    let p = catch_unwind(|| LAST_ERROR.with(|e| e.borrow().as_ref().map(|c| c.as_ptr())));
    match p {
        Ok(Some(p)) => p,
        _ => c"".as_ptr(),
    }
}

/// The library version, e.g. "0.1.0" (static string). Equals
/// DEVRIG_VERSION_STRING of the header it was built with.
#[no_mangle]
pub extern "C" fn devrig_version() -> *const c_char {
    static V: &str = concat!(env!("CARGO_PKG_VERSION"), "\0");
    V.as_ptr() as *const c_char
}

/// The default restart policy (values in brackets in devrig_restart_policy).
#[no_mangle]
pub extern "C" fn devrig_default_policy() -> devrig_restart_policy {
    policy_to_c(&RestartPolicy::default())
}

/// Parses "on-failure", "always" or "never" into `*out` (written only on
/// success). Anything else, or NULL, is DEVRIG_E_INVALID_ARGUMENT.
#[no_mangle]
pub unsafe extern "C" fn devrig_restart_mode_parse(
    s: *const c_char,
    out: *mut devrig_restart_mode,
) -> devrig_status {
    boundary(|| {
        // SAFETY: per this function's contract `s` is NULL or a C string.
        let s = unsafe { str_arg(s, "restart mode") }?;
        if out.is_null() {
            return Err(Error::invalid("out is NULL"));
        }
        let m = RestartMode::parse(s)?;
        // SAFETY: non-NULL, and the caller provides space for one value.
        unsafe { out.write(mode_to(m)) };
        Ok(())
    })
}

/// Creates a handle for service `name` running `/bin/sh -c command`.
///
/// `name` must be 1-128 characters of A-Z a-z 0-9 . _ - @ + not starting with
/// '.', so it is safe as a file name; `command` must not be empty. Returns
/// NULL (and sets devrig_last_error) on bad input. The handle must
/// eventually be passed to devrig_free.
#[no_mangle]
pub unsafe extern "C" fn devrig_new(
    name: *const c_char,
    command: *const c_char,
) -> *mut devrig_supervisor {
    boundary_value(std::ptr::null_mut(), || {
        // SAFETY: per this function's contract both are NULL or C strings.
        let name = unsafe { str_arg(name, "name") }?;
        // SAFETY: as above.
        let command = unsafe { str_arg(command, "command") }?;
        let sup = Supervisor::new(Config::new(name, command)?)?;
        let h = Box::new(Handle {
            sup,
            outcome_message: OnceLock::new(),
        });
        Ok(Box::into_raw(h) as *mut devrig_supervisor)
    })
}

/// Sets the working directory of the service. Not checked here: a missing
/// directory makes the spawn fail. Before the run only (else DEVRIG_E_STATE).
#[no_mangle]
pub unsafe extern "C" fn devrig_set_working_dir(
    sup: *mut devrig_supervisor,
    dir: *const c_char,
) -> devrig_status {
    boundary(|| {
        // SAFETY: per this function's contract.
        let h = unsafe { handle(sup) }?;
        // SAFETY: as above.
        let dir = unsafe { str_arg(dir, "working directory") }?;
        h.sup.set_working_dir(dir)
    })
}

/// Adds `key=value` to the service's environment (on top of the inherited
/// one; a second call with the same key replaces the value). The key must be
/// non-empty without '='. Before the run only. Sizes are not checked here,
/// but the kernel refuses an environment string ("key=value") over 128 KiB
/// or arguments plus environment over its ARG_MAX: the spawn then fails
/// with "Argument list too long" (DEVRIG_E_SPAWN from devrig_run/start).
#[no_mangle]
pub unsafe extern "C" fn devrig_set_env(
    sup: *mut devrig_supervisor,
    key: *const c_char,
    value: *const c_char,
) -> devrig_status {
    boundary(|| {
        // SAFETY: per this function's contract.
        let h = unsafe { handle(sup) }?;
        // SAFETY: as above.
        let key = unsafe { str_arg(key, "environment key") }?;
        // SAFETY: as above.
        let value = unsafe { str_arg(value, "environment value") }?;
        h.sup.set_env(key, value)
    })
}

/// Sets the restart policy (copied). A policy that makes no sense
/// (max_delay_ms < initial_delay_ms, a mode out of range) is refused with
/// DEVRIG_E_INVALID_ARGUMENT and the handle keeps its previous policy.
/// Before the run only.
#[no_mangle]
pub unsafe extern "C" fn devrig_set_policy(
    sup: *mut devrig_supervisor,
    policy: *const devrig_restart_policy,
) -> devrig_status {
    boundary(|| {
        // SAFETY: per this function's contract.
        let h = unsafe { handle(sup) }?;
        if policy.is_null() {
            return Err(Error::invalid("policy is NULL"));
        }
        // SAFETY: non-NULL and points to a devrig_restart_policy, which has
        // the same layout as RawPolicy (checked at compile time).
        let raw = unsafe { std::ptr::read(policy as *const RawPolicy) };
        h.sup.set_policy(policy_from_c(&raw)?)
    })
}

/// Sets the state directory where the service's record is kept; creates it
/// (DEVRIG_E_IO naming it if that fails). Before the run only.
#[no_mangle]
pub unsafe extern "C" fn devrig_set_state_dir(
    sup: *mut devrig_supervisor,
    dir: *const c_char,
) -> devrig_status {
    boundary(|| {
        // SAFETY: per this function's contract.
        let h = unsafe { handle(sup) }?;
        // SAFETY: as above.
        let dir = unsafe { str_arg(dir, "state directory") }?;
        h.sup.set_state_dir(dir)
    })
}

/// Time between SIGTERM and SIGKILL when stopping. [5000] Before the run only.
#[no_mangle]
pub unsafe extern "C" fn devrig_set_stop_grace_ms(
    sup: *mut devrig_supervisor,
    ms: u64,
) -> devrig_status {
    boundary(|| {
        // SAFETY: per this function's contract.
        let h = unsafe { handle(sup) }?;
        h.sup.set_stop_grace(Duration::from_millis(ms))
    })
}

/// Multiline grouping of indented lines. [on] Before the run only.
#[no_mangle]
pub unsafe extern "C" fn devrig_set_multiline(
    sup: *mut devrig_supervisor,
    on: bool,
) -> devrig_status {
    boundary(|| {
        // SAFETY: per this function's contract.
        let h = unsafe { handle(sup) }?;
        h.sup.set_multiline(on)
    })
}

/// Upper bound of one delivered entry, 1 to 2^30. [65536] Before the run only.
#[no_mangle]
pub unsafe extern "C" fn devrig_set_max_line_bytes(
    sup: *mut devrig_supervisor,
    n: usize,
) -> devrig_status {
    boundary(|| {
        // SAFETY: per this function's contract.
        let h = unsafe { handle(sup) }?;
        h.sup.set_max_line_bytes(n)
    })
}

/// Sets (or, with NULL, clears) the log callback; replaces a batch callback
/// set with devrig_on_log_batch. `user_data` is passed back untouched and
/// must be usable from library threads. Before the run only.
#[no_mangle]
pub unsafe extern "C" fn devrig_on_log(
    sup: *mut devrig_supervisor,
    callback: devrig_log_fn,
    user_data: *mut c_void,
) -> devrig_status {
    boundary(|| {
        // SAFETY: per this function's contract.
        let h = unsafe { handle(sup) }?;
        let Some(cb) = callback else {
            return h.sup.on_log_lines(None);
        };
        let service = c_text(h.sup.name());
        let ud = UserData(user_data);
        // One line per call, so that a hold takes effect after the line
        // whose callback took it.
        h.sup.on_log_lines(Some(Box::new(move |l: &LogLine<'_>| {
            let ud = &ud;
            let c = line_to_c(&service, l);
            // SAFETY: the caller registered a valid function; `c` and what
            // it points to live until the call returns.
            unsafe { cb(ud.0, &c) };
        })))
    })
}

/// The C records of one batch, kept between batches to spare an allocation
/// per batch. Empty except during a call to the callback.
struct LineBuf(Vec<devrig_log_line>);

// SAFETY: the records point into the batch being delivered and are cleared
// before the closure returns, so no pointer outlives that call or is ever
// seen from another thread.
unsafe impl Send for LineBuf {}

/// Sets (or, with NULL, clears) a callback that receives the lines of one
/// read at once; replaces a callback set with devrig_on_log. Same rules as
/// devrig_on_log.
#[no_mangle]
pub unsafe extern "C" fn devrig_on_log_batch(
    sup: *mut devrig_supervisor,
    callback: devrig_log_batch_fn,
    user_data: *mut c_void,
) -> devrig_status {
    boundary(|| {
        // SAFETY: per this function's contract.
        let h = unsafe { handle(sup) }?;
        let Some(cb) = callback else {
            return h.sup.on_log(None);
        };
        let service = c_text(h.sup.name());
        let ud = UserData(user_data);
        let mut buf = LineBuf(Vec::new());
        h.sup.on_log(Some(Box::new(move |lines: &[LogLine<'_>]| {
            let (ud, buf) = (&ud, &mut buf);
            buf.0.extend(lines.iter().map(|l| line_to_c(&service, l)));
            // SAFETY: the caller registered a valid function; the array and
            // what it points to live until the call returns.
            unsafe { cb(ud.0, buf.0.as_ptr(), buf.0.len()) };
            buf.0.clear();
        })))
    })
}

/// Sets (or, with NULL, clears) the event callback. `user_data` is passed
/// back untouched and must be usable from library threads. Before the run
/// only.
#[no_mangle]
pub unsafe extern "C" fn devrig_on_event(
    sup: *mut devrig_supervisor,
    callback: devrig_event_fn,
    user_data: *mut c_void,
) -> devrig_status {
    boundary(|| {
        // SAFETY: per this function's contract.
        let h = unsafe { handle(sup) }?;
        let Some(cb) = callback else {
            return h.sup.on_event(None);
        };
        let service = c_text(h.sup.name());
        let ud = UserData(user_data);
        h.sup.on_event(Some(Box::new(move |e: &Event| {
            let ud = &ud;
            let message = c_text(&e.message);
            let c = devrig_event {
                kind: kind_to_c(e.kind),
                service: service.as_ptr(),
                pid: e.pid,
                exit_code: e.exit_code,
                signal: e.signal,
                restart_count: e.restart_count,
                delay_ms: e.delay_ms,
                runtime_ms: e.runtime_ms,
                message: message.as_ptr(),
                timestamp_ms: e.timestamp_ms,
            };
            // SAFETY: the caller registered a valid function; `c` and the
            // strings it points to live until the call returns.
            unsafe { cb(ud.0, &c) };
        })))
    })
}

/// Holds the logs of the handle's run: log backpressure that blocks no
/// thread. Call it from inside this handle's log callback (devrig_on_log or
/// devrig_on_log_batch) when the lines cannot be taken now; keep what you
/// were given (it is lent: copy it) and return. Once the callback returns,
/// the run stops reading the service's pipes and delivering lines (a
/// partial line waiting for its 250 ms flush included) until
/// devrig_release_logs: the child blocks on a full pipe. With devrig_on_log
/// no further line of the current read is delivered either; they follow the
/// release, in order.
///
/// Everything else goes on while the logs are held: the child's exit is
/// noticed, a stop request sends SIGTERM and, after the stop grace,
/// SIGKILL, and the RUNNING timer fires. All lines a child wrote come
/// before its EXITED event, so after a child exits (or is stopped) the run
/// waits for the release before it reads the rest of its output and
/// reports EXITED; the run cannot end while its logs are held.
/// devrig_cancel does not release a hold; devrig_free does (and a free
/// from a callback, which detaches the callbacks, makes the hold moot).
///
/// A second hold before the release is the same hold: one release ends it.
/// DEVRIG_E_STATE when not called from inside this handle's own log
/// callback (another thread, an event callback, another handle's log
/// callback), once devrig_free has begun, or in a forked child.
#[no_mangle]
pub unsafe extern "C" fn devrig_hold_logs(sup: *mut devrig_supervisor) -> devrig_status {
    boundary(|| {
        // SAFETY: per this function's contract.
        let h = unsafe { handle(sup) }?;
        h.sup.hold_logs()
    })
}

/// Releases the logs held with devrig_hold_logs: the run resumes reading
/// the service's output. Callable from any thread (not from a signal
/// handler), before, during or after the run, and also before the callback
/// that took the hold has returned (the hold then never takes effect). When
/// the logs are not held it does nothing and returns DEVRIG_OK; in a forked
/// child, where the handle is inert, it returns DEVRIG_E_STATE. It must not
/// be called once devrig_free has been called on the handle (which
/// releases the hold itself).
#[no_mangle]
pub unsafe extern "C" fn devrig_release_logs(sup: *mut devrig_supervisor) -> devrig_status {
    boundary(|| {
        // SAFETY: per this function's contract.
        let h = unsafe { handle(sup) }?;
        h.sup.release_logs()
    })
}

/// Supervises the service until the run ends; blocks the calling thread.
/// DEVRIG_OK when the run ended (see devrig_outcome_get for how),
/// DEVRIG_E_SPAWN if the very first spawn failed, DEVRIG_E_STATE if the
/// handle was already started or if called from a libdevrig callback.
#[no_mangle]
pub unsafe extern "C" fn devrig_run(sup: *mut devrig_supervisor) -> devrig_status {
    boundary(|| {
        // SAFETY: per this function's contract.
        let h = unsafe { handle(sup) }?;
        h.sup.run()
    })
}

/// Starts the run in the background and returns once the first spawn has
/// been attempted: DEVRIG_E_SPAWN if it failed (the run has then ended).
/// A second devrig_run/devrig_start is DEVRIG_E_STATE. It may be called
/// from a libdevrig callback too; a failed first spawn then ends the run on
/// that thread, so its SPAWN_FAILED and FAILED callbacks run (nested) before
/// the return, as the run's end does.
#[no_mangle]
pub unsafe extern "C" fn devrig_start(sup: *mut devrig_supervisor) -> devrig_status {
    boundary(|| {
        // SAFETY: per this function's contract.
        let h = unsafe { handle(sup) }?;
        h.sup.start()
    })
}

/// Waits for a started run to end: `timeout_ms` -1 waits forever, 0 polls.
/// Returns the run's status (DEVRIG_OK or DEVRIG_E_SPAWN), DEVRIG_E_TIMEOUT,
/// or DEVRIG_E_STATE if the handle was never started or the call comes from
/// a libdevrig callback. Any number of threads may wait at once.
#[no_mangle]
pub unsafe extern "C" fn devrig_wait(
    sup: *mut devrig_supervisor,
    timeout_ms: i64,
) -> devrig_status {
    boundary(|| {
        // SAFETY: per this function's contract.
        let h = unsafe { handle(sup) }?;
        let timeout = match timeout_ms {
            -1 => None,
            t if t < -1 => {
                return Err(Error::invalid(format!(
                    "timeout_ms {t} is invalid (-1 waits forever, 0 or more is a bound)"
                )))
            }
            t => Some(Duration::from_millis(t as u64)),
        };
        h.sup.wait(timeout)
    })
}

/// Requests a stop: SIGTERM to the service's process group and escaped
/// descendants, SIGKILL after the stop grace, then the run ends (outcome
/// CANCELLED). During backoff the run ends at once; before the run, the run
/// ends as soon as it starts, without spawning.
///
/// Thread-safe, idempotent, callable before, during or after the run and
/// from inside a callback, and async-signal-safe (for a valid handle in the
/// process that created it; a handle copied into a forked child returns
/// DEVRIG_E_STATE and does nothing).
#[no_mangle]
pub unsafe extern "C" fn devrig_cancel(sup: *mut devrig_supervisor) -> devrig_status {
    // No allocation on the success path: this runs in signal handlers.
    match catch_unwind(AssertUnwindSafe(|| {
        if sup.is_null() {
            return Err(DEVRIG_E_INVALID_ARGUMENT);
        }
        // SAFETY: non-NULL handle from devrig_new, per the contract.
        let h = unsafe { &*(sup as *const Handle) };
        h.sup.cancel().map_err(|_| DEVRIG_E_STATE)
    })) {
        Ok(Ok(())) => DEVRIG_OK,
        Ok(Err(DEVRIG_E_INVALID_ARGUMENT)) => {
            set_last_error("supervisor handle is NULL");
            DEVRIG_E_INVALID_ARGUMENT
        }
        Ok(Err(s)) => {
            set_last_error(
                "this supervisor handle belongs to the parent process (fork); it is inert here",
            );
            s
        }
        Err(p) => {
            set_last_error(&panic_message(&*p));
            DEVRIG_E_PANIC
        }
    }
}

/// Frees a handle. A running handle is stopped first (as devrig_cancel) and
/// this call waits for the run to end, with every child reaped. From inside
/// a callback (any libdevrig thread) it does not wait: it stops the run,
/// no further callback of this handle is called, and the run ends in the
/// background. Held logs are released (nobody could release them later)
/// and cannot be held again: the log callbacks made while this call waits
/// get DEVRIG_E_STATE from devrig_hold_logs. In a forked child it only
/// releases memory. NULL is ignored. The handle must not be used after
/// this call.
#[no_mangle]
pub unsafe extern "C" fn devrig_free(sup: *mut devrig_supervisor) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        if sup.is_null() {
            return;
        }
        // SAFETY: a pointer from devrig_new (Box<Handle>), freed only here.
        let h = unsafe { Box::from_raw(sup as *mut Handle) };
        if !h.sup.is_forked_copy() && h.sup.is_started() && !h.sup.is_done() {
            h.sup.disable_log_holds();
            let _ = h.sup.cancel();
            if !runtime::on_library_thread() {
                let _ = h.sup.wait(None);
            }
        }
        drop(h);
    }));
}

/// Fills `*out` with the outcome: kind DEVRIG_OUTCOME_NONE until the run has
/// ended, which it has when its terminal event (STOPPED or FAILED) is
/// emitted: that event's callback, and any thread it wakes, already finds
/// the outcome. `out->message` is owned by the handle and valid until
/// devrig_free.
#[no_mangle]
pub unsafe extern "C" fn devrig_outcome_get(
    sup: *const devrig_supervisor,
    out: *mut devrig_outcome,
) -> devrig_status {
    boundary(|| {
        // SAFETY: per this function's contract.
        let h = unsafe { handle(sup) }?;
        if out.is_null() {
            return Err(Error::invalid("out is NULL"));
        }
        let o = h.sup.outcome();
        let message = if o.kind == OutcomeKind::None {
            c"".as_ptr()
        } else {
            h.outcome_message
                .get_or_init(|| c_text(&o.message))
                .as_ptr()
        };
        // SAFETY: non-NULL; the caller provides space for one struct.
        unsafe {
            out.write(devrig_outcome {
                kind: outcome_kind_to_c(o.kind),
                last_exit_code: o.last_exit_code,
                last_signal: o.last_signal,
                restarts: o.restarts,
                message,
            })
        };
        Ok(())
    })
}

/// Terminates `pid` and all its descendants: collects the tree first, sends
/// SIGTERM to each, waits up to `grace_ms`, SIGKILLs the survivors, and
/// returns as soon as all are gone. A process that no longer exists is not
/// an error. `pid` 0 or above INT32_MAX is DEVRIG_E_INVALID_ARGUMENT (it
/// would signal a process group). Blocks; safe from any thread.
#[no_mangle]
pub extern "C" fn devrig_kill_tree(pid: u32, grace_ms: u64) -> devrig_status {
    boundary(|| process::kill_tree(pid, Duration::from_millis(grace_ms)))
}

/// Writes the creation time of `pid` (ms since the Unix epoch) to `*out`;
/// DEVRIG_E_NOT_FOUND if there is no such process. The time is derived from
/// /proc/PID/stat and the boot time, which is read once per process. Like
/// ps, psutil and gopsutil (which devrig used), it takes the boot time in
/// whole seconds from /proc/stat, so it matches what they report and can be
/// up to a second before the true creation time; it is stable, which is
/// what devrig_same_process needs.
#[no_mangle]
pub unsafe extern "C" fn devrig_proc_start_time_ms(pid: u32, out: *mut i64) -> devrig_status {
    boundary(|| {
        if out.is_null() {
            return Err(Error::invalid("out is NULL"));
        }
        match process::proc_start_time_ms(pid)? {
            Some(ms) => {
                // SAFETY: non-NULL; the caller provides space for one value.
                unsafe { out.write(ms) };
                Ok(())
            }
            None => Err(Error::NotFound(format!("no process with pid {pid}"))),
        }
    })
}

/// True if `pid` is alive (not a zombie) and started at `want_start_ms`;
/// `want_start_ms` 0 means unknown: liveness alone decides. Invalid pids are
/// false.
#[no_mangle]
pub extern "C" fn devrig_same_process(pid: u32, want_start_ms: i64) -> bool {
    catch_unwind(|| process::same_process(pid, want_start_ms)).unwrap_or(false)
}

/// Writes `state_dir/devrig.pid` into `buf` like snprintf: at most `cap`
/// bytes including the NUL, and returns the full length (without NUL), so a
/// return value >= cap means truncation. `buf` may be NULL when `cap` is 0.
/// Returns 0 (and sets devrig_last_error) on bad input. As in every
/// state-directory function, an empty `state_dir` is bad input (it would
/// mean the current directory).
#[no_mangle]
pub unsafe extern "C" fn devrig_pid_file_path(
    state_dir: *const c_char,
    buf: *mut c_char,
    cap: usize,
) -> usize {
    boundary_value(0, || {
        // SAFETY: per this function's contract.
        let dir = unsafe { str_arg(state_dir, "state directory") }?;
        if buf.is_null() && cap != 0 {
            return Err(Error::invalid("buf is NULL but cap is not 0"));
        }
        state::check_state_dir(Path::new(dir))?;
        let path = state::pid_file_path(Path::new(dir));
        let bytes = path.to_string_lossy().into_owned().into_bytes();
        if cap > 0 {
            let n = bytes.len().min(cap - 1);
            // SAFETY: `buf` has room for `cap` bytes and n + 1 <= cap.
            unsafe {
                std::ptr::copy_nonoverlapping(bytes.as_ptr(), buf as *mut u8, n);
                *buf.add(n) = 0;
            }
        }
        Ok(bytes.len())
    })
}

/// Creates `state_dir` if needed and writes the calling process's pid to
/// `state_dir/devrig.pid` (atomically): the decimal pid without a newline,
/// as devrig wrote it. DEVRIG_E_IO if the directory cannot be created.
#[no_mangle]
pub unsafe extern "C" fn devrig_write_pid_file(state_dir: *const c_char) -> devrig_status {
    boundary(|| {
        // SAFETY: per this function's contract.
        let dir = unsafe { str_arg(state_dir, "state directory") }?;
        state::write_pid_file(Path::new(dir))
    })
}

/// Removes `state_dir/devrig.pid`; succeeds if it is absent.
#[no_mangle]
pub unsafe extern "C" fn devrig_remove_pid_file(state_dir: *const c_char) -> devrig_status {
    boundary(|| {
        // SAFETY: per this function's contract.
        let dir = unsafe { str_arg(state_dir, "state directory") }?;
        state::remove_pid_file(Path::new(dir))
    })
}

/// After a crash of a previous host: for every service recorded in
/// `state_dir` whose process is still the same process (pid and start time
/// in clock ticks, same boot), kills its whole tree (as devrig_kill_tree)
/// and every process carrying its spawn tag, and removes the record.
/// Writes the number of services reaped to `*reaped` (which may be NULL).
/// A recorded pid now used by another process is never touched. Call it
/// before starting supervisors on that directory. A missing `state_dir`
/// (or a path that is not a directory) is DEVRIG_E_NOT_FOUND.
#[no_mangle]
pub unsafe extern "C" fn devrig_reap_orphans(
    state_dir: *const c_char,
    grace_ms: u64,
    reaped: *mut u32,
) -> devrig_status {
    boundary(|| {
        // SAFETY: per this function's contract.
        let dir = unsafe { str_arg(state_dir, "state directory") }?;
        let n = state::reap_orphans(Path::new(dir), Duration::from_millis(grace_ms))?;
        if !reaped.is_null() {
            // SAFETY: non-NULL; the caller provides space for one value.
            unsafe { reaped.write(n) };
        }
        Ok(())
    })
}
