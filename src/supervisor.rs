//! The supervisor handle and the async driver that carries out the restart
//! decisions of `policy` for one service.
//!
//! One run is one tokio task. It owns the callbacks, so they are never
//! called concurrently for one handle and never under an internal lock. A
//! slow callback delays its own task, and through the pipe its own child,
//! but it also keeps one of the few shared workers from every other run:
//! a log callback that cannot keep up holds the logs instead (`LogGate`),
//! which stops the reading without blocking a thread.

use std::ffi::OsString;
use std::future::Future;
use std::os::fd::{AsRawFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;
use tokio::sync::Notify;
use tokio::time::sleep_until;

use crate::error::{Error, Result};
use crate::events::{now_ms, Event, EventKind, LogLine, Outcome, OutcomeKind, Stream};
use crate::logs::{Batch, LineAssembler, DEFAULT_MAX_LINE_BYTES, IDLE_FLUSH};
use crate::policy::{decide, Decision, ExitStatus, Jitter, RestartPolicy, RestartState, RunEnd};
use crate::process::{self, Target, WaitStatus};
use crate::runtime::{self, CancelToken};
use crate::state::{self, Phase, Record, StateWriter};

/// Receives finished log lines, in batches (all lines of one read, in
/// order). The lines are only borrowed for the call.
pub type LogHandler = Box<dyn FnMut(&[LogLine<'_>]) + Send>;
/// Receives finished log lines one at a time (the C API's `devrig_on_log`).
/// A hold taken in it stops the delivery after that line; with a
/// `LogHandler`, after the batch.
pub type LineHandler = Box<dyn FnMut(&LogLine<'_>) + Send>;
/// Receives every state change.
pub type EventHandler = Box<dyn FnMut(&Event) + Send>;

/// Default time between SIGTERM and SIGKILL.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_millis(5000);
/// After the main process exits, how long to wait for its pipes to close
/// before dealing with whatever still holds them.
pub const DRAIN_TIMEOUT: Duration = Duration::from_millis(500);
/// Largest accepted `max_line_bytes`.
pub const MAX_LINE_BYTES_LIMIT: usize = 1 << 30;
const READ_CHUNK: usize = 64 * 1024;

thread_local! {
    /// The `Inner` (its address) whose log callback this thread is running,
    /// 0 outside one: `hold_logs` is allowed only there.
    static DELIVERING: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };

    /// The read buffer of every run this thread drives. A read's bytes are
    /// split into the batch before the next read begins, so one buffer per
    /// thread is enough; one per run kept 64 KiB for each service that ever
    /// wrote a line, and allocating it cost a stopping service's first drain
    /// a page-fault storm.
    static READ_BUF: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// This thread's read buffer, lent out until `return_read_buf` (a new one
/// if it is out already).
fn lend_read_buf() -> Vec<u8> {
    let mut buf = READ_BUF.take();
    if buf.is_empty() {
        buf.resize(READ_CHUNK, 0);
    }
    buf
}

fn return_read_buf(buf: Vec<u8>) {
    READ_BUF.set(buf);
}

/// What to supervise and how.
#[derive(Clone, Debug)]
pub struct Config {
    pub name: String,
    pub command: String,
    pub working_dir: Option<PathBuf>,
    /// Added to (or replacing in) the inherited environment.
    pub env: Vec<(OsString, OsString)>,
    pub policy: RestartPolicy,
    pub state_dir: Option<PathBuf>,
    pub stop_grace: Duration,
    pub multiline: bool,
    pub max_line_bytes: usize,
}

impl Config {
    /// Checks the name (a safe file-name component) and the command
    /// (non-empty, no NUL byte); everything else takes its default.
    pub fn new(name: &str, command: &str) -> Result<Config> {
        state::check_service_name(name)?;
        if command.trim().is_empty() {
            return Err(Error::invalid(format!(
                "command {command:?} of service {name:?} is empty"
            )));
        }
        if command.contains('\0') {
            return Err(Error::invalid(format!(
                "command {command:?} of service {name:?} contains a NUL byte"
            )));
        }
        Ok(Config {
            name: name.to_string(),
            command: command.to_string(),
            working_dir: None,
            env: Vec::new(),
            policy: RestartPolicy::default(),
            state_dir: None,
            stop_grace: DEFAULT_STOP_GRACE,
            multiline: true,
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
        })
    }
}

/// Refuses environment keys and values that cannot be passed to a child.
pub fn check_env(key: &str, value: &str) -> Result<()> {
    if key.is_empty() || key.contains('=') || key.contains('\0') {
        return Err(Error::invalid(format!(
            "environment key {key:?} must be non-empty and contain no '=' or NUL"
        )));
    }
    if value.contains('\0') {
        return Err(Error::invalid(format!(
            "environment value of {key:?} contains a NUL byte"
        )));
    }
    Ok(())
}

/// Refuses a `max_line_bytes` outside `1..=MAX_LINE_BYTES_LIMIT`.
pub fn check_max_line_bytes(n: usize) -> Result<()> {
    if n == 0 || n > MAX_LINE_BYTES_LIMIT {
        return Err(Error::invalid(format!(
            "max_line_bytes {n} is out of range (1..={MAX_LINE_BYTES_LIMIT})"
        )));
    }
    Ok(())
}

enum Status {
    /// Configurable; not started.
    Idle,
    /// Started, first spawn not attempted yet.
    Starting,
    Running,
    Done(Result<()>),
}

/// Where log lines go.
enum LogSink {
    Batch(LogHandler),
    Line(LineHandler),
}

struct Setup {
    config: Config,
    on_log: Option<LogSink>,
    on_event: Option<EventHandler>,
}

/// Log backpressure without blocking a worker: a log callback that cannot
/// take more holds the run's logs, and whoever drains what it kept
/// releases them, from any thread. While held, the run reads nothing of
/// the child's pipes and delivers no line (the child blocks on a full
/// pipe); everything else goes on.
#[derive(Default)]
struct Hold {
    held: AtomicBool,
    /// Set when the handle is being freed: holds are refused from then on,
    /// and a current one no longer counts (nobody could release it).
    disabled: AtomicBool,
    /// Woken (with a permit kept, so no release is missed) by a release,
    /// `disable_log_holds` and `detach_callbacks`.
    released: std::sync::OnceLock<Box<Notify>>,
}

impl Hold {
    /// Made on demand (a wait, a release, a free): boxed and lazily, as
    /// most services never hold, and inline it made every service's state
    /// 40 bytes bigger.
    fn released(&self) -> &Notify {
        self.released.get_or_init(|| Box::new(Notify::new()))
    }

    /// Wakes the run if it waits for a release (through `released`, whose
    /// OnceLock makes the waiter's and the waker's Notify the same one).
    fn wake(&self) {
        self.released().notify_one();
    }
}

struct Inner {
    name: String,
    creator_pid: u32,
    cancel: Arc<CancelToken>,
    /// Taken by `start`; `None` afterwards.
    setup: Mutex<Option<Setup>>,
    status: Mutex<Status>,
    changed: Condvar,
    outcome: OnceLock<Outcome>,
    /// Set when the owner is gone: callbacks are no longer called.
    detached: AtomicBool,
    hold: Hold,
}

/// Marks this thread as running `inner`'s log callback until dropped.
struct Delivering {
    prev: usize,
}

impl Delivering {
    fn enter(inner: &Inner) -> Delivering {
        let prev = DELIVERING.with(|d| d.replace(inner as *const Inner as usize));
        Delivering { prev }
    }
}

impl Drop for Delivering {
    fn drop(&mut self) {
        DELIVERING.with(|d| d.set(self.prev));
    }
}

impl Inner {
    /// True while the run must neither read the pipes nor deliver lines.
    fn logs_held(&self) -> bool {
        self.hold.held.load(Ordering::SeqCst)
            && !self.hold.disabled.load(Ordering::SeqCst)
            && !self.detached.load(Ordering::SeqCst)
    }

    /// Resolves once the logs are not held. The future is made before the
    /// check: a release in between leaves a permit that wakes it.
    async fn logs_released(&self) {
        loop {
            let released = self.hold.released().notified();
            if !self.logs_held() {
                return;
            }
            released.await;
        }
    }

    fn hold_logs(&self) -> Result<()> {
        self.check_not_forked()?;
        if DELIVERING.with(|d| d.get()) != self as *const Inner as usize {
            return Err(Error::state(format!(
                "the logs of supervisor {:?} can only be held from inside its own log callback",
                self.name
            )));
        }
        if self.hold.disabled.load(Ordering::SeqCst) {
            return Err(Error::state(format!(
                "supervisor {:?} is being freed: its logs can no longer be held",
                self.name
            )));
        }
        self.hold.held.store(true, Ordering::SeqCst);
        Ok(())
    }

    fn release_logs(&self) -> Result<()> {
        self.check_not_forked()?;
        if self.hold.held.swap(false, Ordering::SeqCst) {
            self.hold.wake();
        }
        Ok(())
    }

    fn check_not_forked(&self) -> Result<()> {
        if std::process::id() != self.creator_pid {
            return Err(Error::state(format!(
                "supervisor {:?} was created in process {} and cannot be used in forked child {}",
                self.name,
                self.creator_pid,
                std::process::id()
            )));
        }
        Ok(())
    }

    fn start(self: Arc<Inner>) -> Result<()> {
        self.check_not_forked()?;
        let setup = lock(&self.setup).take().ok_or_else(|| {
            Error::state(format!(
                "supervisor {:?} has already been started (a handle runs once)",
                self.name
            ))
        })?;
        *lock(&self.status) = Status::Starting;
        let rt = runtime::get();
        let inner = self.clone();
        let reg = rt.register(inner.cancel.clone());
        let mut run = Box::new(Run::new(setup, inner.clone()));
        // The first spawn happens here, on the caller's thread, which waits
        // for its result anyway: handing it to a worker and back cost two
        // thread switches per start, and several host threads can now start
        // services side by side. Its events are held for the run to emit.
        let from_library = runtime::on_library_thread();
        if !inner.cancel.is_requested() {
            run.held_events = Some(Vec::new());
            let mut first = run.spawn_child();
            first.held_events = run.held_events.take().unwrap_or_default();
            run.first_spawn = Some(Box::new(first));
        }
        let spawned = matches!(&run.first_spawn, Some(s) if s.child.is_ok());
        if from_library && !spawned {
            if let Some(first) = run.first_spawn.take() {
                // A failed first spawn ends the run here and now: a
                // callback must not wait for the run's task, which, spawned
                // from this worker, would sit in its LIFO slot (not
                // stealable) until the callback returned. The run's events
                // are delivered on this thread, which is a library thread.
                let (result, outcome) =
                    catch_unwind(AssertUnwindSafe(|| run.end_with_first_spawn_error(*first)))
                        .unwrap_or_else(|payload| run.ended_by_panic(payload));
                drop(run);
                rt.unregister(reg);
                let _ = inner.outcome.set(outcome);
                *lock(&inner.status) = Status::Done(result.clone());
                inner.changed.notify_all();
                return result;
            }
        }
        // One task per run, which also publishes the outcome: a panic inside
        // the driver (a bug, or a callback's panic payload that panics when
        // dropped) ends the run, with its terminal event, instead of leaving
        // its waiters blocked.
        rt.rt.spawn(async move {
            let ended = {
                let mut driving = std::pin::pin!(run.run());
                std::future::poll_fn(|cx| {
                    match catch_unwind(AssertUnwindSafe(|| driving.as_mut().poll(cx))) {
                        Ok(std::task::Poll::Ready(done)) => std::task::Poll::Ready(Ok(done)),
                        Ok(std::task::Poll::Pending) => std::task::Poll::Pending,
                        Err(payload) => std::task::Poll::Ready(Err(payload)),
                    }
                })
                .await
                // The driver's future is dropped here. After a panic the
                // current child's ChildIo is gone already (dropped while the
                // panic unwound, or here): its Drop has killed what the
                // service left before FAILED is emitted below.
            };
            let (result, outcome) = ended.unwrap_or_else(|payload| run.ended_by_panic(payload));
            // Its handlers go before the waiters are released.
            drop(run);
            runtime::get().unregister(reg);
            // Set already by `Run::end`, unless the run panicked.
            let _ = inner.outcome.set(outcome);
            *lock(&inner.status) = Status::Done(result);
            inner.changed.notify_all();
        });
        if from_library {
            // Blocking a worker on another task could starve the runtime.
            return Ok(());
        }
        let mut st = lock(&self.status);
        if spawned {
            // Unless the run has ended already (a child that exited at once).
            if matches!(*st, Status::Starting) {
                *st = Status::Running;
                self.changed.notify_all();
            }
            return Ok(());
        }
        while matches!(*st, Status::Starting) {
            st = self.changed.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        match &*st {
            // The failed spawn, or a panic while the run ended after it.
            Status::Done(Err(e)) => Err(e.clone()),
            _ => Ok(()),
        }
    }

    fn wait(&self, timeout: Option<Duration>) -> Result<()> {
        self.check_not_forked()?;
        if runtime::on_library_thread() {
            return Err(Error::state(format!(
                "wait on supervisor {:?} from a library thread (inside a callback) would deadlock",
                self.name
            )));
        }
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let mut st = lock(&self.status);
        loop {
            match &*st {
                Status::Idle => {
                    return Err(Error::state(format!(
                        "supervisor {:?} has not been started",
                        self.name
                    )))
                }
                Status::Done(r) => return r.clone(),
                Status::Starting | Status::Running => {}
            }
            st = match deadline {
                None => self.changed.wait(st).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return Err(Error::Timeout(format!(
                            "supervisor {:?} still running after {} ms",
                            self.name,
                            timeout.unwrap_or_default().as_millis()
                        )));
                    }
                    self.changed
                        .wait_timeout(st, d - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }
}

/// Supervises one service, once. Dropping a running supervisor requests a
/// stop and detaches the callbacks; the run finishes (and reaps) in the
/// background. Call `cancel` and `wait` to stop it synchronously.
pub struct Supervisor {
    inner: Arc<Inner>,
}

/// How a child ended, in words. Signal 0 stands for a status that was lost:
/// someone else reaped the child (a host that sets SIGCHLD to SIG_IGN makes
/// the kernel do it).
fn exit_text(status: ExitStatus) -> String {
    match status {
        ExitStatus::Signal(0) => {
            "exit status unknown (the child was reaped outside libdevrig: does the host \
             ignore SIGCHLD?)"
                .to_string()
        }
        ExitStatus::Signal(s) => format!("killed by signal {s}"),
        st => format!("exited with code {}", st.code()),
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Supervisor {
    pub fn new(config: Config) -> Result<Supervisor> {
        // Revalidate: the fields are public.
        let checked = Config::new(&config.name, &config.command)?;
        drop(checked);
        config.policy.validate()?;
        for (k, v) in &config.env {
            check_env(&k.to_string_lossy(), &v.to_string_lossy())?;
        }
        check_max_line_bytes(config.max_line_bytes)?;
        if let Some(dir) = &config.state_dir {
            StateWriter::new(dir, &config.name)?;
        }
        Ok(Supervisor {
            inner: Arc::new(Inner {
                name: config.name.clone(),
                creator_pid: std::process::id(),
                cancel: Arc::new(CancelToken::default()),
                setup: Mutex::new(Some(Setup {
                    config,
                    on_log: None,
                    on_event: None,
                })),
                status: Mutex::new(Status::Idle),
                changed: Condvar::new(),
                outcome: OnceLock::new(),
                detached: AtomicBool::new(false),
                hold: Hold::default(),
            }),
        })
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    fn check_not_forked(&self) -> Result<()> {
        self.inner.check_not_forked()
    }

    /// Runs `f` on the configuration if the run has not started.
    pub fn configure<T>(&self, f: impl FnOnce(&mut Config) -> Result<T>) -> Result<T> {
        self.check_not_forked()?;
        let mut setup = lock(&self.inner.setup);
        match setup.as_mut() {
            Some(s) => f(&mut s.config),
            None => Err(self.already_started()),
        }
    }

    fn already_started(&self) -> Error {
        Error::state(format!(
            "supervisor {:?} has already been started; settings are fixed",
            self.inner.name
        ))
    }

    pub fn set_working_dir(&self, dir: impl Into<PathBuf>) -> Result<()> {
        let dir = dir.into();
        if dir.as_os_str().is_empty() {
            return Err(Error::invalid("working directory \"\" is empty"));
        }
        self.configure(|c| {
            c.working_dir = Some(dir);
            Ok(())
        })
    }

    pub fn set_env(&self, key: &str, value: &str) -> Result<()> {
        check_env(key, value)?;
        self.configure(|c| {
            let (k, v) = (OsString::from(key), OsString::from(value));
            match c.env.iter_mut().find(|(ek, _)| *ek == k) {
                Some(slot) => slot.1 = v,
                None => c.env.push((k, v)),
            }
            Ok(())
        })
    }

    pub fn set_policy(&self, policy: RestartPolicy) -> Result<()> {
        policy.validate()?;
        self.configure(|c| {
            c.policy = policy;
            Ok(())
        })
    }

    /// Sets the state directory, creating it (and its `services/`) now so
    /// that an unusable directory is reported here rather than mid-run.
    pub fn set_state_dir(&self, dir: impl Into<PathBuf>) -> Result<()> {
        let dir = dir.into();
        crate::state::check_state_dir(&dir)?;
        self.configure(|c| {
            StateWriter::new(&dir, &c.name)?;
            c.state_dir = Some(dir);
            Ok(())
        })
    }

    pub fn set_stop_grace(&self, grace: Duration) -> Result<()> {
        self.configure(|c| {
            c.stop_grace = grace;
            Ok(())
        })
    }

    pub fn set_multiline(&self, on: bool) -> Result<()> {
        self.configure(|c| {
            c.multiline = on;
            Ok(())
        })
    }

    pub fn set_max_line_bytes(&self, n: usize) -> Result<()> {
        check_max_line_bytes(n)?;
        self.configure(|c| {
            c.max_line_bytes = n;
            Ok(())
        })
    }

    /// Sets (or clears) the log handler, which receives the lines of one
    /// read at once; replaces one set with `on_log_lines`.
    pub fn on_log(&self, handler: Option<LogHandler>) -> Result<()> {
        self.set_log_sink(handler.map(LogSink::Batch))
    }

    /// Sets (or clears) a log handler that receives one line per call;
    /// replaces one set with `on_log`.
    pub fn on_log_lines(&self, handler: Option<LineHandler>) -> Result<()> {
        self.set_log_sink(handler.map(LogSink::Line))
    }

    fn set_log_sink(&self, sink: Option<LogSink>) -> Result<()> {
        self.check_not_forked()?;
        match lock(&self.inner.setup).as_mut() {
            Some(s) => {
                s.on_log = sink;
                Ok(())
            }
            None => Err(self.already_started()),
        }
    }

    /// A handle on this supervisor's log backpressure, for the log handler
    /// to keep (see `LogGate`).
    pub fn log_gate(&self) -> LogGate {
        LogGate {
            inner: self.inner.clone(),
        }
    }

    /// `LogGate::hold`.
    pub fn hold_logs(&self) -> Result<()> {
        self.inner.hold_logs()
    }

    /// `LogGate::release`.
    pub fn release_logs(&self) -> Result<()> {
        self.inner.release_logs()
    }

    /// Releases a hold for good: from now on `hold_logs` is refused. For an
    /// owner that goes away and so could not release a hold (the C API's
    /// devrig_free).
    pub fn disable_log_holds(&self) {
        self.inner.hold.disabled.store(true, Ordering::SeqCst);
        self.inner.hold.wake();
    }

    pub fn on_event(&self, handler: Option<EventHandler>) -> Result<()> {
        self.check_not_forked()?;
        match lock(&self.inner.setup).as_mut() {
            Some(s) => {
                s.on_event = handler;
                Ok(())
            }
            None => Err(self.already_started()),
        }
    }

    /// Starts the run in the background. Returns once the first spawn has
    /// been attempted: `Err(Error::Spawn)` if it failed. A second call is
    /// `Error::State`.
    pub fn start(&self) -> Result<()> {
        // Everything after the spawn of the run uses this reference, not
        // `self`: a callback may devrig_free the handle (and so `self`)
        // before this call returns.
        Inner::start(self.inner.clone())
    }

    /// Waits for the run to end: `Ok` or the run's error (`Error::Spawn` if
    /// the first spawn failed); `Error::Timeout` if `timeout` passed first.
    pub fn wait(&self, timeout: Option<Duration>) -> Result<()> {
        // As in `start`: the handle may be freed while this thread waits.
        self.inner.clone().wait(timeout)
    }

    /// Runs until the run ends; see `start` and `wait`.
    pub fn run(&self) -> Result<()> {
        if runtime::on_library_thread() {
            return Err(Error::state(format!(
                "run of supervisor {:?} from a library thread (inside a callback) would deadlock",
                self.inner.name
            )));
        }
        let inner = self.inner.clone();
        Inner::start(inner.clone())?;
        inner.wait(None)
    }

    /// Requests a stop. Thread-safe, idempotent, allowed before, during and
    /// after the run, and async-signal-safe (an atomic store and a write).
    pub fn cancel(&self) -> Result<()> {
        // SAFETY: getpid is async-signal-safe and has no arguments.
        if unsafe { libc::getpid() } as u32 != self.inner.creator_pid {
            return Err(Error::State(String::new()));
        }
        self.inner.cancel.request();
        Ok(())
    }

    /// True once the run has ended (a never-started handle is not done).
    pub fn is_done(&self) -> bool {
        matches!(*lock(&self.inner.status), Status::Done(_))
    }

    pub fn is_started(&self) -> bool {
        !matches!(*lock(&self.inner.status), Status::Idle)
    }

    /// The outcome; kind `None` until the run has ended (it is set before
    /// the terminal event is emitted).
    pub fn outcome(&self) -> Outcome {
        self.inner.outcome.get().cloned().unwrap_or_default()
    }

    /// The outcome's message, borrowed for as long as the handle lives.
    pub fn outcome_message(&self) -> Option<&str> {
        self.inner.outcome.get().map(|o| o.message.as_str())
    }

    /// Stops calling this handle's callbacks from now on (a callback that is
    /// running finishes). Used when the owner of the callbacks goes away.
    pub fn detach_callbacks(&self) {
        self.inner.detached.store(true, Ordering::SeqCst);
        // A hold no longer counts: wake a run waiting for its release.
        self.inner.hold.wake();
    }

    /// True when called in a process other than the one that created the
    /// handle (after fork).
    pub fn is_forked_copy(&self) -> bool {
        std::process::id() != self.inner.creator_pid
    }
}

/// Log backpressure for a run, usable from inside its log handler: the
/// handler calls `hold` when it cannot take more lines, hands what it has to
/// someone else (a thread, a goroutine), and returns at once; whoever drains
/// that calls `release`. A worker thread is never blocked meanwhile.
///
/// Once the handler returns with the logs held, the run stops reading the
/// child's pipes and delivering lines, partial lines included, until the
/// release: the child blocks on a full pipe. Everything else goes on: exit
/// detection, stop requests, the stop grace and SIGKILL, the RUNNING timer.
/// All lines a child wrote come before its EXITED, so the run waits for the
/// release before it drains the pipes of an exited child and before
/// EXITED. A stop does not release a hold: the service is stopped on time,
/// but the run ends only once the logs are released.
#[derive(Clone)]
pub struct LogGate {
    inner: Arc<Inner>,
}

impl LogGate {
    /// Holds the logs. Allowed only inside this supervisor's own log
    /// handler (`Error::State` anywhere else, and once
    /// `disable_log_holds` was called). A second hold is the same hold: one
    /// release ends it.
    pub fn hold(&self) -> Result<()> {
        self.inner.hold_logs()
    }

    /// Releases the logs; the run resumes reading. From any thread, at any
    /// time, also before the handler that held them has returned; harmless
    /// when they are not held.
    pub fn release(&self) -> Result<()> {
        self.inner.release_logs()
    }
}

impl std::fmt::Debug for LogGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogGate")
            .field("name", &self.inner.name)
            .finish()
    }
}

/// The message of a panic payload. A payload of another type is leaked,
/// not dropped: its Drop may panic again.
fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    let msg = p
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned());
    match msg {
        Some(m) => m,
        None => {
            std::mem::forget(p);
            "unknown panic".to_string()
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        if self.is_forked_copy() {
            return;
        }
        self.detach_callbacks();
        if self.is_started() && !self.is_done() {
            self.inner.cancel.request();
        }
    }
}

/// The state of one run, owned by its task.
struct Run {
    cfg: Config,
    on_log: Option<LogSink>,
    on_event: Option<EventHandler>,
    inner: Arc<Inner>,
    /// The state record and where it goes; None without a state directory
    /// (then a run keeps no record at all).
    state: Option<Box<StateKeeping>>,
    restart: RestartState,
    restarts_performed: u32,
    jitter: Jitter,
    epoch: Instant,
    last: Option<ExitStatus>,
    batch: Batch,
    /// Entries of `batch` already delivered: a hold taken in a line
    /// handler leaves the rest for after the release.
    delivered: usize,
    callback_panic: Option<String>,
    state_error_reported: bool,
    /// STOPPING was emitted for the current child.
    stopping_emitted: bool,
    /// The terminal event has been emitted (or is being).
    ended: bool,
    /// The first spawn, when `start` did it on the caller's thread.
    first_spawn: Option<Box<Spawned>>,
    /// Set while `start` spawns on the caller's thread: events are kept
    /// here (a state record that could not be written) and emitted by the
    /// run, because callbacks run on library threads only.
    held_events: Option<Vec<Event>>,
}

/// A run's state record and the writer that keeps it on disk.
struct StateKeeping {
    writer: StateWriter,
    record: Record,
}

/// One spawn attempt: the child's tag, when it was made, what came of it,
/// and the events held meanwhile.
struct Spawned {
    tag: String,
    at: Instant,
    child: std::io::Result<process::Child>,
    held_events: Vec<Event>,
}

/// The child being supervised and its pipes.
struct ChildIo {
    pid: i32,
    mark: process::SpawnMark,
    tag: String,
    pidfd: AsyncFd<OwnedFd>,
    exit: Option<WaitStatus>,
    streams: [StreamIo; 2],
    /// Set once the main process has been reaped.
    reaped: bool,
    /// Stop requests signal this child's group directly while it is live.
    cancel: Arc<CancelToken>,
    /// Which stream `next_wake` looks at first.
    turn: u8,
}

impl Drop for ChildIo {
    /// Only reached with `reaped` false when the driver unwinds from a
    /// panic: leave nothing behind, as a stop would, only faster (SIGKILL
    /// at once) and blocking (this is a bug's path, not a hot one).
    fn drop(&mut self) {
        if self.reaped {
            return;
        }
        process::signal_service(self.pidfd.get_ref(), self.pid, libc::SIGKILL);
        self.cancel.clear_live_group();
        let mut p = libc::pollfd {
            fd: self.pidfd.get_ref().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd. SIGKILL is not ignorable: short wait.
        unsafe { libc::poll(&mut p, 1, 5000) };
        // Before the reap: the unreaped main process keeps its pid, and so
        // its group's id, from being reused while the group is searched.
        // This runs while the driver's panic unwinds (the ChildIo is a
        // local of `supervise`). A panic of the sweep itself is caught here
        // (since Rust 1.71 a panic caught inside a Drop during unwinding
        // does not abort): the group was SIGKILLed above, so little is lost
        // without it.
        if let Err(p) = catch_unwind(AssertUnwindSafe(|| {
            let (pid, tag) = (self.pid, self.tag.as_bytes());
            let mut left = process::find_leftovers(pid, tag, Some(&mut self.mark));
            left.retain(|t| t.pid != pid);
            if !left.is_empty() {
                let mut watch = process::Watch::new(&left, Vec::new());
                watch.signal_all(libc::SIGKILL);
                watch.wait_blocking(Instant::now() + Duration::from_secs(2));
            }
        })) {
            let _ = panic_text(p);
        }
        let _ = process::reap(self.pidfd.get_ref(), self.pid);
    }
}

struct StreamIo {
    fd: AsyncFd<OwnedFd>,
    stream: Stream,
    eof: bool,
    asm: LineAssembler,
    last_data: Instant,
}

impl ChildIo {
    fn both_eof(&self) -> bool {
        self.streams.iter().all(|s| s.eof)
    }

    fn idle_deadline(&self) -> Option<Instant> {
        self.streams
            .iter()
            .filter(|s| !s.eof && s.asm.holds_data())
            .map(|s| s.last_data + IDLE_FLUSH)
            .min()
    }
}

enum Wake {
    Data(usize),
    Idle,
    Cancel,
    Exited,
    RunningDue,
    Deadline,
    /// The logs, held when the wait began, were released.
    Released,
}

struct ChildEnd {
    status: ExitStatus,
    runtime_ms: u64,
    cancelled: bool,
}

/// Sends `sig` to the service (its main process and group) and to every
/// leftover found outside it.
fn signal_all(io: &ChildIo, targets: &[Target], sig: i32) {
    process::signal_service(io.pidfd.get_ref(), io.pid, sig);
    for t in targets {
        t.signal(sig);
    }
}

fn far() -> tokio::time::Instant {
    tokio::time::Instant::from_std(process::far_future())
}

fn tokio_instant(t: Option<Instant>) -> tokio::time::Instant {
    t.map(tokio::time::Instant::from_std).unwrap_or_else(far)
}

fn ms_since(t: Instant) -> u64 {
    t.elapsed().as_millis().min(u64::MAX as u128) as u64
}

impl Run {
    fn new(setup: Setup, inner: Arc<Inner>) -> Run {
        let seed = (now_ms() as u64)
            ^ ((std::process::id() as u64) << 32)
            ^ (Arc::as_ptr(&inner) as usize as u64);
        // Never dropped silently: a failing write is reported as a warning.
        let state = setup.config.state_dir.as_ref().map(|d| {
            Box::new(StateKeeping {
                writer: StateWriter::at(d, &setup.config.name),
                record: Record {
                    service: setup.config.name.clone(),
                    boot_id: process::boot_id().to_string(),
                    host_pid: std::process::id(),
                    ..Record::default()
                },
            })
        });
        Run {
            batch: Batch::new(),
            delivered: 0,
            cfg: setup.config,
            on_log: setup.on_log,
            on_event: setup.on_event,
            inner,
            state,
            restart: RestartState::new(),
            restarts_performed: 0,
            jitter: Jitter::new(seed),
            epoch: Instant::now(),
            last: None,
            callback_panic: None,
            state_error_reported: false,
            stopping_emitted: false,
            ended: false,
            first_spawn: None,
            held_events: None,
        }
    }

    fn cancel_requested(&self) -> bool {
        self.inner.cancel.is_requested()
    }

    fn set_status_running(&self) {
        let mut st = lock(&self.inner.status);
        if matches!(*st, Status::Starting) {
            *st = Status::Running;
            self.inner.changed.notify_all();
        }
    }

    fn event(&self, kind: EventKind) -> Event {
        // Exit details belong to EXITED and, as a summary, the terminal events.
        let last = match kind {
            EventKind::Exited | EventKind::Stopped | EventKind::Failed => self.last,
            _ => None,
        };
        Event {
            kind,
            service: self.cfg.name.clone(),
            pid: 0,
            exit_code: last.map_or(0, |l| l.code()),
            signal: last.map_or(0, |l| l.signal()),
            restart_count: self.restarts_performed,
            delay_ms: 0,
            runtime_ms: 0,
            message: String::new(),
            timestamp_ms: now_ms(),
        }
    }

    fn emit(&mut self, ev: Event) {
        if let Some(held) = self.held_events.as_mut() {
            held.push(ev);
            return;
        }
        if self.inner.detached.load(Ordering::SeqCst) {
            return;
        }
        if let Some(h) = self.on_event.as_mut() {
            if let Err(p) = catch_unwind(AssertUnwindSafe(|| h(&ev))) {
                self.callback_panicked("event", p);
            }
        }
    }

    fn callback_panicked(&mut self, which: &str, p: Box<dyn std::any::Any + Send>) {
        let msg = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        if self.callback_panic.is_none() {
            self.callback_panic = Some(format!("{which} callback panicked: {msg}"));
        }
        self.inner.cancel.request();
    }

    /// The state record, when there is a state directory.
    fn record(&mut self) -> Option<&mut Record> {
        self.state.as_mut().map(|s| &mut s.record)
    }

    fn write_state(&mut self, phase: Phase) {
        let last = self.last;
        let Some(st) = self.state.as_mut() else {
            return;
        };
        let r = &mut st.record;
        r.phase = phase.as_str().to_string();
        r.updated_ms = now_ms();
        if let Some(l) = last {
            r.last_exit_code = l.code();
            r.last_signal = l.signal();
        }
        let (written, pid) = (st.writer.write(&st.record), st.record.pid);
        match written {
            Ok(()) => self.state_error_reported = false,
            Err(e) if !self.state_error_reported => {
                self.state_error_reported = true;
                let mut ev = self.event(EventKind::Warning);
                ev.pid = pid;
                ev.message = format!("state record not written: {e}");
                self.emit(ev);
            }
            Err(_) => {}
        }
    }

    /// By reference: the task that drives it keeps the run, to end it after
    /// a panic (and an `async fn` would keep a by-value Box twice).
    async fn run(&mut self) -> (Result<()>, Outcome) {
        let mut first = true;
        let mut last_spawn_error: Option<String>;
        loop {
            let spawned = match self.first_spawn.take() {
                Some(done) => *done,
                None => {
                    if self.cancel_requested() {
                        self.set_status_running();
                        self.emit(self.event(EventKind::Stopping));
                        return self.finish_cancelled();
                    }
                    self.spawn_child()
                }
            };
            if first && spawned.child.is_err() {
                return self.end_with_first_spawn_error(spawned);
            }
            let Spawned {
                tag,
                at,
                child,
                held_events,
            } = spawned;
            for ev in held_events {
                self.emit(ev);
            }
            let end = match child {
                Err(e) => {
                    let msg = self.spawn_error(&e);
                    let mut ev = self.event(EventKind::SpawnFailed);
                    ev.message = msg.clone();
                    self.emit(ev);
                    last_spawn_error = Some(msg);
                    RunEnd {
                        status: ExitStatus::SpawnFailed,
                        runtime_ms: 0,
                        now_ms: ms_since(self.epoch),
                    }
                }
                Ok(child) => {
                    first = false;
                    last_spawn_error = None;
                    self.set_status_running();
                    let end = self.supervise(child, tag, at).await;
                    if end.cancelled {
                        return self.finish_cancelled();
                    }
                    RunEnd {
                        status: end.status,
                        runtime_ms: end.runtime_ms,
                        now_ms: ms_since(self.epoch),
                    }
                }
            };
            if self.cancel_requested() {
                self.emit(self.event(EventKind::Stopping));
                return self.finish_cancelled();
            }
            let jitter = &mut self.jitter;
            let decision = decide(&self.cfg.policy, &mut self.restart, end, |lo, hi| {
                jitter.between(lo, hi)
            });
            match decision {
                Decision::Complete => {
                    let msg = match self.last {
                        Some(st) => format!("completed: {}", exit_text(st)),
                        None => "completed".to_string(),
                    };
                    if let Some(r) = self.record() {
                        r.pid = 0;
                    }
                    self.write_state(Phase::Stopped);
                    return (
                        Ok(()),
                        self.end(EventKind::Stopped, OutcomeKind::Completed, msg),
                    );
                }
                Decision::GiveUp(why) => {
                    let mut msg = why.to_string();
                    if let Some(e) = &last_spawn_error {
                        msg = format!("{msg}; last spawn error: {e}");
                    }
                    if let Some(r) = self.record() {
                        r.pid = 0;
                    }
                    self.write_state(Phase::Failed);
                    return (
                        Ok(()),
                        self.end(EventKind::Failed, OutcomeKind::Failed, msg),
                    );
                }
                Decision::Restart { delay_ms, .. } => {
                    let mut ev = self.event(EventKind::Backoff);
                    ev.delay_ms = delay_ms;
                    ev.restart_count = self.restarts_performed.saturating_add(1);
                    ev.message = format!("restarting in {delay_ms} ms");
                    self.emit(ev);
                    self.write_state(Phase::Backoff);
                    let until = Instant::now().checked_add(Duration::from_millis(delay_ms));
                    let cancel = self.inner.cancel.clone();
                    // No timer for a zero delay: tokio rounds deadlines up to
                    // its next millisecond tick, which capped restart churn.
                    if delay_ms == 0 {
                        if cancel.is_requested() {
                            self.emit(self.event(EventKind::Stopping));
                            return self.finish_cancelled();
                        }
                    } else {
                        tokio::select! {
                            _ = sleep_until(tokio_instant(until)) => {}
                            _ = cancel.requested() => {
                                self.emit(self.event(EventKind::Stopping));
                                return self.finish_cancelled();
                            }
                        }
                    }
                    self.restart.note_restart();
                    self.restarts_performed = self.restarts_performed.saturating_add(1);
                }
            }
        }
    }

    /// Spawns the next child. Plain synchronous code, so that `start` can
    /// make the first spawn on the caller's thread.
    fn spawn_child(&mut self) -> Spawned {
        let tag = process::new_tag_name();
        if let Some(r) = self.record() {
            // Record the new tag before spawning: a host killed between
            // the spawn and the child's first record still leaves
            // reap_orphans the tag to find the child and its descendants.
            r.pid = 0;
            r.tag = tag.clone();
            self.write_state(Phase::Starting);
        }
        let at = Instant::now();
        let child = process::spawn(&process::SpawnSpec {
            command: &self.cfg.command,
            working_dir: self.cfg.working_dir.as_deref(),
            env: &self.cfg.env,
            tag: &format!("{tag}=1"),
        });
        Spawned {
            tag,
            at,
            child,
            held_events: Vec::new(),
        }
    }

    fn spawn_error(&self, e: &std::io::Error) -> String {
        let name = &self.cfg.name;
        if let Some(dir) = &self.cfg.working_dir {
            if !dir.is_dir() {
                return format!(
                    "cannot spawn service {name:?}: working directory {dir:?} is not an accessible directory ({e})"
                );
            }
        }
        format!(
            "cannot spawn service {name:?} (/bin/sh -c {:?}): {e}",
            self.cfg.command
        )
    }

    fn outcome(&self, kind: OutcomeKind, message: String) -> Outcome {
        let last = self.last;
        Outcome {
            kind,
            last_exit_code: last.map(|l| l.code()).unwrap_or(0),
            last_signal: last.map(|l| l.signal()).unwrap_or(0),
            restarts: self.restarts_performed,
            message,
        }
    }

    /// The first spawn failed: the run reports it and ends (Spawn error,
    /// outcome failed). Synchronous, so that `start` can do it in place.
    fn end_with_first_spawn_error(&mut self, spawned: Spawned) -> (Result<()>, Outcome) {
        for ev in spawned.held_events {
            self.emit(ev);
        }
        let msg = match &spawned.child {
            Err(e) => self.spawn_error(e),
            Ok(_) => String::from("the first spawn failed"),
        };
        let mut ev = self.event(EventKind::SpawnFailed);
        ev.message = msg.clone();
        self.emit(ev);
        self.write_state(Phase::Failed);
        let outcome = self.end(EventKind::Failed, OutcomeKind::Failed, msg.clone());
        (Err(Error::Spawn(msg)), outcome)
    }

    fn finish_cancelled(&mut self) -> (Result<()>, Outcome) {
        let msg = match &self.callback_panic {
            Some(p) => format!("stopped: {p}"),
            None => "stopped on request".to_string(),
        };
        if let Some(r) = self.record() {
            r.pid = 0;
        }
        self.write_state(Phase::Stopped);
        (
            Ok(()),
            self.end(EventKind::Stopped, OutcomeKind::Cancelled, msg),
        )
    }

    /// Ends the run: publishes the outcome, then emits the terminal event.
    /// In that order, so that the terminal event's callback, and whoever it
    /// wakes, finds the outcome already set (the run is done, and waiters
    /// are released, only after the callback has returned).
    fn end(&mut self, terminal: EventKind, kind: OutcomeKind, message: String) -> Outcome {
        let outcome = self.outcome(kind, message.clone());
        let _ = self.inner.outcome.set(outcome.clone());
        let mut ev = self.event(terminal);
        ev.message = message;
        self.ended = true;
        self.emit(ev);
        outcome
    }

    /// What a run whose driver panicked with `payload` returns, once it has
    /// ended it (`end_after_panic`).
    fn ended_by_panic(&mut self, payload: Box<dyn std::any::Any + Send>) -> (Result<()>, Outcome) {
        let msg = format!("run ended by a panic: {}", panic_text(payload));
        let outcome = catch_unwind(AssertUnwindSafe(|| self.end_after_panic(msg.clone())))
            .unwrap_or_else(|again| {
                let _ = panic_text(again);
                Outcome {
                    kind: OutcomeKind::Failed,
                    message: msg.clone(),
                    ..Outcome::default()
                }
            });
        (Err(Error::Panic(msg)), outcome)
    }

    /// Ends a run whose driver panicked (its child is gone with the
    /// driver's future): FAILED, unless the panic came after the terminal
    /// event was emitted, so that every run ends with exactly one.
    fn end_after_panic(&mut self, message: String) -> Outcome {
        if self.ended {
            return self
                .inner
                .outcome
                .get()
                .cloned()
                .unwrap_or_else(|| self.outcome(OutcomeKind::Failed, message));
        }
        self.held_events = None;
        // The panic may have come from the state record's writer: its
        // failing again must not cost the run its terminal event.
        if let Err(p) = catch_unwind(AssertUnwindSafe(|| {
            if let Some(r) = self.record() {
                r.pid = 0;
            }
            self.write_state(Phase::Failed);
        })) {
            let _ = panic_text(p);
        }
        self.end(EventKind::Failed, OutcomeKind::Failed, message)
    }

    /// Watches one child from spawn to reaped, leaving nothing behind.
    async fn supervise(
        &mut self,
        child: process::Child,
        tag: String,
        spawned_at: Instant,
    ) -> ChildEnd {
        let pid = child.pid;
        self.stopping_emitted = false;
        let mut io = match Self::child_io(child, tag, &self.cfg, self.inner.cancel.clone()) {
            Ok(io) => io,
            Err((e, pid, pidfd)) => {
                // Cannot watch it (descriptor limits): do not leave it behind.
                process::kill_group(pid, libc::SIGKILL);
                // Rare (descriptor exhaustion): a short blocking wait is fine.
                let mut p = libc::pollfd {
                    fd: pidfd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                unsafe { libc::poll(&mut p, 1, 5000) };
                let _ = process::reap(&pidfd, pid);
                let mut ev = self.event(EventKind::Warning);
                ev.message = format!("cannot watch child {pid}: {e}");
                self.emit(ev);
                return ChildEnd {
                    status: ExitStatus::SpawnFailed,
                    runtime_ms: 0,
                    cancelled: false,
                };
            }
        };
        io.cancel.set_live_group(pid);
        if let Some(st) = self.state.as_mut() {
            let ticks = io.mark.start_ticks();
            let r = &mut st.record;
            r.pid = pid as u32;
            r.start_ticks = ticks;
            r.start_ms = process::ticks_to_ms(ticks).unwrap_or(0);
            r.tag = io.tag.clone();
        }
        // The record first: a host that dies right after STARTED still left
        // the pid for reap_orphans.
        self.write_state(Phase::Starting);
        let mut ev = self.event(EventKind::Started);
        ev.pid = pid as u32;
        self.emit(ev);

        let grace = Duration::from_millis(self.cfg.policy.startup_grace_ms);
        let mut running_at = spawned_at.checked_add(grace);
        if grace.is_zero() {
            running_at = None;
            self.emit_running(pid);
        }

        // Phase 1: the child lives until it exits or a stop is requested.
        let mut cancelled = false;
        while io.exit.is_none() {
            self.resume_delivery();
            let held = self.inner.logs_held();
            match Self::next_wake(&self.inner, &mut io, true, held, running_at, None).await {
                Wake::Data(i) => self.read_live(&mut io, i).await,
                Wake::Released => self.deliver(),
                Wake::Idle => self.flush_idle(&mut io),
                Wake::RunningDue => {
                    running_at = None;
                    self.emit_running(pid);
                }
                Wake::Exited => self.peek_exit(&mut io),
                Wake::Cancel => {
                    cancelled = true;
                    break;
                }
                Wake::Deadline => {}
            }
        }
        let mut exited_at = Instant::now();
        // Set when the last sweep, made after the main process exited, found
        // nothing: the final sweep below is then not needed.
        let all_clear;

        if cancelled {
            self.emit_stopping(pid);
            process::signal_service(io.pidfd.get_ref(), pid, libc::SIGTERM);
            let deadline = Instant::now().checked_add(self.cfg.stop_grace);
            // Wait for the main process before sweeping for escaped
            // descendants: most services exit at once, and the sweep's CPU
            // time would otherwise be taken from the dying child.
            let main_gone = self
                .wait_gone(&mut io, &mut Vec::new(), deadline, &mut cancelled)
                .await;
            let mut targets = self.leftovers(&mut io);
            // Nothing of the service alive once its main process is gone: no
            // process can appear later (every new one needs a live parent).
            all_clear = main_gone && targets.is_empty();
            if main_gone {
                for t in &targets {
                    if process::read_stat(t.pid).map(|s| s.pgrp) != Some(pid) {
                        t.signal(libc::SIGTERM);
                    }
                }
                if !self
                    .wait_gone(&mut io, &mut targets, deadline, &mut cancelled)
                    .await
                {
                    signal_all(&io, &targets, libc::SIGKILL);
                }
            } else {
                // The grace ran out with the main process alive.
                signal_all(&io, &targets, libc::SIGKILL);
                // SIGKILL cannot be ignored: wait for the main process for good.
                self.wait_gone(&mut io, &mut Vec::new(), None, &mut cancelled)
                    .await;
            }
            exited_at = Instant::now();
        } else {
            // The main process exited on its own: give its pipes a moment.
            // A stop request ends the moment: leftovers are stopped at once
            // (the logs may be held for long), and what they wrote is read
            // below.
            Box::pin(self.drain(&mut io, Some(&mut cancelled))).await;
            let mut targets = self.leftovers(&mut io);
            all_clear = targets.is_empty();
            if !targets.is_empty() {
                signal_all(&io, &targets, libc::SIGTERM);
                let deadline = Instant::now().checked_add(self.cfg.stop_grace);
                if !self
                    .wait_gone(&mut io, &mut targets, deadline, &mut cancelled)
                    .await
                {
                    signal_all(&io, &targets, libc::SIGKILL);
                }
            }
        }

        // Whatever appeared meanwhile (forked during the grace) gets SIGKILL.
        for _ in 0..if all_clear { 0 } else { 16 } {
            let mut targets = self.leftovers(&mut io);
            if targets.is_empty() {
                break;
            }
            signal_all(&io, &targets, libc::SIGKILL);
            let until = Instant::now() + Duration::from_secs(5);
            self.wait_gone(&mut io, &mut targets, Some(until), &mut cancelled)
                .await;
        }

        // Everything is gone: the pipes close unless a stranger holds them.
        Box::pin(self.drain(&mut io, None)).await;
        Box::pin(self.deliver_the_rest(&mut io)).await;

        if self.cancel_requested() && !self.stopping_emitted {
            // A stop that raced with a natural exit is still reported.
            self.emit_stopping(pid);
        }
        io.cancel.clear_live_group();
        let reaped = process::reap(io.pidfd.get_ref(), pid);
        io.reaped = true;
        let status = match reaped {
            Ok(Some(ws)) => ws,
            _ => io.exit.unwrap_or(WaitStatus::Signaled(0)),
        };
        let status = match status {
            WaitStatus::Exited(c) => ExitStatus::Code(c),
            WaitStatus::Signaled(s) => ExitStatus::Signal(s),
        };
        self.last = Some(status);
        let runtime_ms = exited_at.saturating_duration_since(spawned_at).as_millis() as u64;
        let mut ev = self.event(EventKind::Exited);
        ev.pid = pid as u32;
        ev.runtime_ms = runtime_ms;
        ev.message = exit_text(status);
        self.emit(ev);
        self.write_state(Phase::Exited);
        ChildEnd {
            status,
            runtime_ms,
            cancelled: cancelled || self.cancel_requested(),
        }
    }

    #[allow(clippy::type_complexity)]
    fn child_io(
        child: process::Child,
        tag: String,
        cfg: &Config,
        cancel: Arc<CancelToken>,
    ) -> std::result::Result<ChildIo, (std::io::Error, i32, OwnedFd)> {
        let process::Child {
            pid,
            pidfd,
            stdout,
            stderr,
            mark,
        } = child;
        let now = Instant::now();
        let out = match runtime::watch_readable(stdout) {
            Ok(fd) => fd,
            Err((e, _)) => return Err((e, pid, pidfd)),
        };
        let err = match runtime::watch_readable(stderr) {
            Ok(fd) => fd,
            Err((e, _)) => return Err((e, pid, pidfd)),
        };
        let pidfd_async = match runtime::watch_readable(pidfd) {
            Ok(fd) => fd,
            Err((e, pidfd)) => return Err((e, pid, pidfd)),
        };
        let mk = |fd, stream| StreamIo {
            fd,
            stream,
            eof: false,
            asm: LineAssembler::new(cfg.multiline, cfg.max_line_bytes),
            last_data: now,
        };
        Ok(ChildIo {
            pid,
            mark,
            tag,
            pidfd: pidfd_async,
            exit: None,
            streams: [mk(out, Stream::Stdout), mk(err, Stream::Stderr)],
            reaped: false,
            cancel,
            turn: 0,
        })
    }

    fn emit_running(&mut self, pid: i32) {
        self.write_state(Phase::Running);
        let mut ev = self.event(EventKind::Running);
        ev.pid = pid as u32;
        self.emit(ev);
    }

    fn emit_stopping(&mut self, pid: i32) {
        self.stopping_emitted = true;
        let mut ev = self.event(EventKind::Stopping);
        ev.pid = pid as u32;
        ev.message = format!(
            "stopping: SIGTERM, SIGKILL after {} ms",
            self.cfg.stop_grace.as_millis()
        );
        self.emit(ev);
        self.write_state(Phase::Stopping);
    }

    /// What the child left behind, besides the main process.
    fn leftovers(&self, io: &mut ChildIo) -> Vec<Target> {
        let mut v = process::find_leftovers(io.pid, io.tag.as_bytes(), Some(&mut io.mark));
        v.retain(|t| t.pid != io.pid);
        v
    }

    fn peek_exit(&mut self, io: &mut ChildIo) {
        match process::peek_exit(io.pidfd.get_ref(), io.pid) {
            Ok(Some(st)) => io.exit = Some(st),
            Ok(None) => {}
            // Someone else reaped our child (a host calling waitpid(-1)):
            // the status is lost, but the child is gone.
            Err(_) => {
                io.exit = Some(WaitStatus::Signaled(0));
                io.mark.pid_lost = true;
            }
        }
    }

    /// Boxed: it runs only while stopping, and inline it would make every
    /// idle service's state as big as a stopping one's.
    fn wait_gone<'a>(
        &'a mut self,
        io: &'a mut ChildIo,
        targets: &'a mut Vec<Target>,
        deadline: Option<Instant>,
        cancelled: &'a mut bool,
    ) -> std::pin::Pin<Box<dyn Future<Output = bool> + Send + 'a>> {
        Box::pin(self.wait_gone_inner(io, targets, deadline, cancelled))
    }

    /// Waits until the main process has exited and every target is gone,
    /// or `deadline` passes (returns false). Keeps reading the pipes.
    async fn wait_gone_inner(
        &mut self,
        io: &mut ChildIo,
        targets: &mut Vec<Target>,
        deadline: Option<Instant>,
        cancelled: &mut bool,
    ) -> bool {
        let mut step = Duration::from_millis(1);
        loop {
            targets.retain(|t| !t.is_gone());
            if io.exit.is_none() {
                self.peek_exit(io);
            }
            if io.exit.is_some() && targets.is_empty() {
                return true;
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return false;
            }
            // Only the main process has a pidfd; others are polled, with a
            // short period that grows to 20 ms.
            let tick = if targets.is_empty() {
                deadline
            } else {
                let t = now + step;
                step = (step * 2).min(Duration::from_millis(20));
                Some(deadline.map_or(t, |d| d.min(t)))
            };
            self.resume_delivery();
            let held = self.inner.logs_held();
            match Self::next_wake(&self.inner, io, !*cancelled, held, None, tick).await {
                Wake::Data(i) => self.read_live(io, i).await,
                Wake::Released => self.deliver(),
                Wake::Idle => self.flush_idle(io),
                Wake::Exited => self.peek_exit(io),
                Wake::Cancel => {
                    // A stop request while cleaning up after a natural exit.
                    *cancelled = true;
                    self.emit_stopping(io.pid);
                }
                Wake::Deadline | Wake::RunningDue => {}
            }
        }
    }

    /// Waits for the next thing to do. Hand-written rather than a
    /// `select!`: that would keep one readiness future per descriptor and
    /// one timer per deadline in every run's state (900 bytes per service),
    /// where polling the descriptors in place needs none and one timer
    /// serves the earliest deadline. A stop request and due timers come
    /// first, then the child's exit, then the streams, starting with a
    /// different one each time so that a chatty stdout cannot starve stderr.
    ///
    /// With the logs `held` (as the caller saw them: they can only be
    /// released meanwhile, since a hold is taken inside `deliver`), the
    /// streams and the idle timer are left alone and the release is
    /// awaited instead.
    async fn next_wake(
        inner: &Inner,
        io: &mut ChildIo,
        watch_cancel: bool,
        held: bool,
        running_at: Option<Instant>,
        deadline: Option<Instant>,
    ) -> Wake {
        let idle_at = if held { None } else { io.idle_deadline() };
        let timer_at = [running_at, idle_at, deadline].into_iter().flatten().min();
        let mut sleep = std::pin::pin!(sleep_until(tokio_instant(timer_at)));
        let mut requested = std::pin::pin!(inner.cancel.requested());
        // Boxed: held logs are rare, and inline the future would grow the
        // state of every idle service.
        let mut released = held.then(|| Box::pin(inner.logs_released()));
        io.turn ^= 1;
        let io = &*io;
        std::future::poll_fn(|cx| {
            use std::task::Poll;
            if watch_cancel && requested.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Wake::Cancel);
            }
            if let Some(r) = released.as_mut() {
                if r.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Wake::Released);
                }
            }
            // A timer that is due comes before the streams. One that is not
            // is armed only when nothing else is ready: armed at every turn
            // (a partial line is held after almost every read of a flood),
            // it woke the other worker, parked on the reactor, at every read
            // to move its timeout (a third of a log flood's context
            // switches).
            if timer_at.is_some_and(|t| Instant::now() >= t) {
                return Poll::Ready(Self::timer_wake(io, running_at, idle_at, timer_at));
            }
            // The exit before the streams: a pipe that never runs dry (a
            // stranger that inherited it and writes for good) must not hide
            // it. Its lines are not overtaken: they are read before EXITED.
            if io.exit.is_none() && io.pidfd.poll_read_ready(cx).is_ready() {
                return Poll::Ready(Wake::Exited);
            }
            for k in 0..if held { 0 } else { 2 } {
                let i = (io.turn as usize + k) % 2;
                let s = &io.streams[i];
                // Ready with an error counts too: the read reports it.
                if !s.eof && s.fd.poll_read_ready(cx).is_ready() {
                    return Poll::Ready(Wake::Data(i));
                }
            }
            if timer_at.is_some() && sleep.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Self::timer_wake(io, running_at, idle_at, timer_at));
            }
            Poll::Pending
        })
        .await
    }

    /// What a due timer means: the timer was set for the earliest of the
    /// three deadlines.
    fn timer_wake(
        io: &ChildIo,
        running_at: Option<Instant>,
        idle_at: Option<Instant>,
        timer_at: Option<Instant>,
    ) -> Wake {
        if running_at == timer_at {
            return Wake::RunningDue;
        }
        if idle_at != timer_at {
            return Wake::Deadline;
        }
        // The idle timer and the rest of a line can become known in the
        // same turn of the reactor (a reader held up longer than the idle
        // time): read the stream that is due before cutting its line. The
        // kernel is asked, not the reactor, which may not have seen the
        // data yet.
        for (i, s) in io.streams.iter().enumerate() {
            let due = !s.eof && s.asm.holds_data() && Some(s.last_data + IDLE_FLUSH) == idle_at;
            if due && process::bytes_pending(s.fd.get_ref()) {
                return Wake::Data(i);
            }
        }
        Wake::Idle
    }

    /// Reads one chunk from stream `i`, splits it and delivers the lines.
    async fn read(&mut self, io: &mut ChildIo, i: usize) {
        let s = &mut io.streams[i];
        let Ok(mut guard) = s.fd.readable().await else {
            s.eof = true;
            return;
        };
        let mut buf = lend_read_buf();
        let res = guard.try_io(|fd| process::read_fd(fd.get_ref(), &mut buf));
        drop(guard);
        if let Ok(res) = res {
            self.took(io, i, res, &buf);
        }
        return_read_buf(buf);
    }

    /// Reads stream `i` while the main process has not been seen to exit.
    async fn read_live(&mut self, io: &mut ChildIo, i: usize) {
        self.read(io, i).await;
        if io.streams[i].eof && io.exit.is_none() {
            // A pipe closed under a live child: almost always the child
            // exiting, which closes its descriptors one by one before it
            // becomes waitable. Each close would wake this thread and, on
            // the child's own CPU, preempt it: one yield lets it finish
            // first (a restart cycle 5% shorter, here).
            std::thread::yield_now();
        }
    }

    /// Reads what the pipes hold right now, asking the kernel instead of
    /// waiting for the reactor: once everything of the service is gone its
    /// pipes are at EOF or hold the last output, and a wait would cost a
    /// timer (whose arming wakes the thread that runs the reactor) and a
    /// round trip through the reactor. A bounded number of reads: a
    /// stranger that holds a pipe and keeps writing is left to the wait.
    /// Nothing is read while the logs are held.
    fn drain_now(&mut self, io: &mut ChildIo) {
        let mut buf = lend_read_buf();
        'streams: for i in 0..2 {
            for _ in 0..16 {
                if self.inner.logs_held() {
                    break 'streams;
                }
                if io.streams[i].eof {
                    break;
                }
                let res = process::read_fd(io.streams[i].fd.get_ref(), &mut buf);
                if !self.took(io, i, res, &buf) {
                    break;
                }
            }
        }
        return_read_buf(buf);
    }

    /// Hands the result of one read of stream `i` on; false when the pipe
    /// had nothing (would block).
    fn took(
        &mut self,
        io: &mut ChildIo,
        i: usize,
        res: std::io::Result<usize>,
        buf: &[u8],
    ) -> bool {
        let s = &mut io.streams[i];
        match res {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => true,
            Ok(0) | Err(_) => {
                s.eof = true;
                self.flush_stream(io, i);
                self.deliver();
                true
            }
            Ok(n) => {
                s.last_data = Instant::now();
                let ts = now_ms();
                let (stream, pid) = (s.stream, io.pid as u32);
                s.asm.push(&buf[..n], &mut self.batch.sink(stream, pid, ts));
                self.deliver();
                true
            }
        }
    }

    fn flush_stream(&mut self, io: &mut ChildIo, i: usize) {
        let s = &mut io.streams[i];
        let ts = now_ms();
        let (stream, pid) = (s.stream, io.pid as u32);
        s.asm.flush(&mut self.batch.sink(stream, pid, ts));
    }

    fn flush_idle(&mut self, io: &mut ChildIo) {
        let now = Instant::now();
        for i in 0..2 {
            let s = &io.streams[i];
            if s.asm.holds_data() && now >= s.last_data + IDLE_FLUSH {
                self.flush_stream(io, i);
            }
        }
        self.deliver();
    }

    /// Reads the pipes of an exited child until both are at EOF or, when a
    /// stranger holds them, for `DRAIN_TIMEOUT`. Time with the logs held
    /// does not count: a hold never cuts the drain short, which would lose
    /// the lines still in the pipes. With `cancelled`, a stop request is
    /// reported and ends the drain.
    async fn drain(&mut self, io: &mut ChildIo, mut cancelled: Option<&mut bool>) {
        self.drain_now(io);
        let mut drain_until = Instant::now() + DRAIN_TIMEOUT;
        while !io.both_eof() {
            self.resume_delivery();
            let held_since = self.inner.logs_held().then(Instant::now);
            let (held, deadline) = match held_since {
                Some(_) => (true, None),
                None => (false, Some(drain_until)),
            };
            let watch_cancel = cancelled.is_some();
            match Self::next_wake(&self.inner, io, watch_cancel, held, None, deadline).await {
                Wake::Data(i) => self.read(io, i).await,
                Wake::Idle => self.flush_idle(io),
                Wake::Released => {
                    drain_until += held_since.map_or(Duration::ZERO, |t| t.elapsed());
                    self.deliver();
                }
                Wake::Cancel => {
                    if let Some(c) = cancelled.as_deref_mut() {
                        *c = true;
                    }
                    self.emit_stopping(io.pid);
                    return;
                }
                Wake::Deadline => return,
                Wake::Exited | Wake::RunningDue => {}
            }
        }
    }

    /// Delivers what is left once the child and everything it left are
    /// gone: the held partial lines, after waiting out any hold, and before
    /// EXITED, waiting for the release of a hold taken on the last lines.
    async fn deliver_the_rest(&mut self, io: &mut ChildIo) {
        loop {
            if self.inner.logs_held() {
                self.inner.logs_released().await;
                continue;
            }
            if self.batch.is_empty() {
                if !io.streams.iter().any(|s| s.asm.holds_data()) {
                    return;
                }
                for i in 0..2 {
                    self.flush_stream(io, i);
                }
            }
            self.deliver();
        }
    }

    /// Delivers what a hold kept, if the hold has ended: called before each
    /// wait, since a release that lands between `deliver`'s check and the
    /// wait's (a few instructions, on another thread) does not wake a wait
    /// that was not watching for it, and the kept lines would wait for the
    /// child's next write.
    fn resume_delivery(&mut self) {
        if !self.batch.is_empty() && !self.inner.logs_held() {
            self.deliver();
        }
    }

    /// Hands the batch to the log callback. While the logs are held it is
    /// kept; a hold taken in a line handler keeps the lines after it.
    fn deliver(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        if self.inner.detached.load(Ordering::SeqCst) {
            self.batch.clear();
            self.delivered = 0;
            return;
        }
        if self.inner.logs_held() {
            return;
        }
        let (inner, batch, from) = (&self.inner, &self.batch, self.delivered);
        let name = self.cfg.name.as_str();
        let line = |e: &crate::logs::EntryMeta| {
            LogLine::new(
                name,
                batch.text_with_nul(e),
                e.stream,
                e.level,
                e.pid,
                e.timestamp_ms,
            )
        };
        let mut upto = batch.len();
        let res = match self.on_log.as_mut() {
            None => Ok(()),
            Some(LogSink::Batch(h)) => {
                let lines: Vec<LogLine<'_>> = batch.entries()[from..].iter().map(line).collect();
                let _in_callback = Delivering::enter(inner);
                catch_unwind(AssertUnwindSafe(|| h(&lines)))
            }
            Some(LogSink::Line(h)) => {
                let _in_callback = Delivering::enter(inner);
                let upto = &mut upto;
                catch_unwind(AssertUnwindSafe(|| {
                    for (i, e) in batch.entries().iter().enumerate().skip(from) {
                        h(&line(e));
                        if inner.logs_held() {
                            *upto = i + 1;
                            return;
                        }
                    }
                }))
            }
        };
        if let Err(p) = res {
            self.batch.clear();
            self.delivered = 0;
            self.callback_panicked("log", p);
            return;
        }
        if upto < self.batch.len() {
            self.delivered = upto;
        } else {
            self.batch.clear();
            self.delivered = 0;
        }
    }
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("name", &self.inner.name)
            .finish()
    }
}
