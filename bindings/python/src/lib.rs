//! `devrig._devrig`: the native half of the Python binding.
//!
//! It wraps the Rust core (`devrig`) directly. The public package
//! (`python/devrig/__init__.py`) re-exports these names, adds the asyncio
//! helper and the enums (plain `enum.IntEnum`s, defined in Python and cached
//! here so that building a `LogLine` never calls into Python code).
//!
//! Threads: callbacks run on the core's library threads. They attach to the
//! interpreter with `Python::try_attach`, once per batch of lines, through
//! the exit gate (`attach_library`: none may be inside Python when the
//! interpreter finalizes, which would abort the process). An exception
//! raised by a callback is stored, the service is cancelled, and the
//! exception is raised again on the caller's thread by `run()` / `wait()` /
//! `close()`. Those few threads serve every supervisor of the process: the
//! binding's own code never waits on them (the ``queue_logs=True`` queue
//! holds the run's logs when full, see `LogQueue`). The binding adds one
//! thread of its own, started at the first stop of a ``queue_logs=True``
//! supervisor (`watchdog`).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

use pyo3::create_exception;
use pyo3::exceptions::{
    PyFileNotFoundError, PyOSError, PyRuntimeError, PyTimeoutError, PyTypeError, PyValueError,
};
use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use pyo3::PyTraverseError;

create_exception!(
    devrig,
    SpawnError,
    PyOSError,
    "The service could not be spawned (the first spawn of a run failed)."
);
create_exception!(
    devrig,
    StateError,
    PyRuntimeError,
    "The call is not allowed in the supervisor's current state (already started, \
     not started, called from a callback, or used in a forked child)."
);

/// How long one GIL-free wait lasts before signals are checked.
const WAIT_SLICE: Duration = Duration::from_millis(50);
/// Capacity of the log queue of ``queue_logs=True``, in batches (reads).
const LOG_QUEUE_BATCHES: usize = 16;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

thread_local! {
    /// Set on the core's threads the first time they call one of our
    /// callbacks: the only way Python code runs on them.
    static LIBRARY_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn mark_library_thread() {
    LIBRARY_THREAD.with(|f| f.set(true));
}

// ------------------------------------------------------------- exit gate
//
// Before Python 3.14, a thread that holds a Python thread state when
// `Py_FinalizeEx` starts is ended with `pthread_exit()` the next time it
// wants the GIL (CPython's `take_gil`, as for daemon threads). On a library
// thread that is inside a callback, that forced unwind has to cross the
// core's Rust frames: it does not get through (glibc's `__pthread_unwind`
// calls abort(): SIGABRT, no message), and would be undefined behaviour if
// it did.
// `Python::try_attach` cannot prevent it: the thread attached before
// finalization started. So library threads enter Python only through
// `attach_library`, and the gate is closed by an atexit handler (which
// runs before finalization starts): from then on no library thread enters,
// and the handler waits for those inside to leave.

/// No library thread may enter Python any more.
static EXIT_GATE_CLOSED: AtomicBool = AtomicBool::new(false);
/// Library threads between `attach_library`'s check and their return.
static LIBRARY_THREADS_INSIDE: AtomicUsize = AtomicUsize::new(0);
/// How long the atexit handler waits for callbacks still running (they
/// must not block; one that does only delays the exit this long).
const EXIT_GATE_PATIENCE: Duration = Duration::from_secs(2);

/// `Python::try_attach` for the core's library threads, unless the exit
/// gate is closed. None: the interpreter is exiting.
fn attach_library<R>(f: impl for<'py> FnOnce(Python<'py>) -> R) -> Option<R> {
    struct Inside;
    impl Drop for Inside {
        fn drop(&mut self) {
            // Saturating: a fork() from a callback resets the count in the
            // child while this thread is inside.
            let _ = LIBRARY_THREADS_INSIDE
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        }
    }
    // Counted before the check (SeqCst on both sides): either the closer
    // sees this thread inside, or this thread sees the gate closed.
    LIBRARY_THREADS_INSIDE.fetch_add(1, Ordering::SeqCst);
    let _inside = Inside;
    if exit_gate_closed() {
        return None;
    }
    Python::try_attach(f)
}

fn exit_gate_closed() -> bool {
    EXIT_GATE_CLOSED.load(Ordering::SeqCst)
}

/// Registered with `atexit` by the package (run after `_stop_all`): closes
/// the exit gate, then waits (without the GIL) for the library threads
/// inside Python to leave, so that none holds a thread state when the
/// interpreter finalizes.
#[pyfunction]
fn _close_exit_gate(py: Python<'_>) {
    EXIT_GATE_CLOSED.store(true, Ordering::SeqCst);
    py.detach(|| {
        let deadline = Instant::now() + EXIT_GATE_PATIENCE;
        while LIBRARY_THREADS_INSIDE.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    });
}

/// In a child made by fork() only the forking thread exists: nobody else
/// is inside.
extern "C" fn exit_gate_after_fork_child() {
    LIBRARY_THREADS_INSIDE.store(0, Ordering::SeqCst);
}

/// True inside a callback (on a library thread), where blocking on a run
/// would deadlock.
fn on_library_thread() -> bool {
    LIBRARY_THREAD.with(|f| f.get())
}

/// Maps a core error onto the Python exception hierarchy.
fn to_py(e: devrig::Error) -> PyErr {
    os_err(e, None)
}

/// ENOENT and ENOTDIR, the same on every Unix.
const ENOENT: i32 = 2;
const ENOTDIR: i32 = 20;

/// The errno at the end of a core message about a failed system call: the
/// core words those "context: description (os error N)".
fn os_errno(msg: &str) -> Option<i32> {
    let rest = &msg[msg.rfind("(os error ")? + "(os error ".len()..];
    let end = rest.find(|c: char| !c.is_ascii_digit())?;
    // Only the core's own suffix counts: it ends the message (closing
    // parentheses aside), so a path that contains "(os error 13)" is not
    // taken for an errno.
    if !rest[end..].starts_with(')') || rest[end..].bytes().any(|b| b != b')') {
        return None;
    }
    rest[..end].parse().ok()
}

/// As `to_py`, and an `OSError` (or `SpawnError`) carries ``errno`` when
/// the core's message has one (``OSError(errno, message, filename)``, which
/// also picks the subclass: ``FileNotFoundError``, ``NotADirectoryError``,
/// ``PermissionError`` ...) and ``filename``: the path argument concerned,
/// as the caller passed it.
fn os_err(e: devrig::Error, filename: Option<Py<PyAny>>) -> PyErr {
    use devrig::Error as E;
    match e {
        E::InvalidArgument(m) => PyValueError::new_err(m),
        E::Spawn(m) => match os_errno(&m) {
            Some(n) => SpawnError::new_err((n, m, filename)),
            None => SpawnError::new_err(m),
        },
        E::State(m) => StateError::new_err(m),
        E::Io(m) => match os_errno(&m) {
            Some(n) => PyOSError::new_err((n, m, filename)),
            None => PyOSError::new_err(m),
        },
        E::NotFound(m) => {
            let n = os_errno(&m).unwrap_or(ENOENT);
            PyFileNotFoundError::new_err((n, m, filename))
        }
        E::Timeout(m) => PyTimeoutError::new_err(m),
        E::Panic(m) => PyRuntimeError::new_err(format!("internal error (panic): {m}")),
    }
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}

// ---------------------------------------------------------------- enums

/// The members of the Python enums, indexed by value.
struct Enums {
    mode: Vec<Py<PyAny>>,
    stream: Vec<Py<PyAny>>,
    level: Vec<Py<PyAny>>,
    event: Vec<Py<PyAny>>,
    outcome: Vec<Py<PyAny>>,
}

static ENUMS: PyOnceLock<Enums> = PyOnceLock::new();

fn enums(py: Python<'_>) -> PyResult<&Enums> {
    ENUMS.get_or_try_init(py, || {
        let m = py.import("devrig._enums")?;
        let members = |cls: &str, n: u32| -> PyResult<Vec<Py<PyAny>>> {
            let cls = m.getattr(cls)?;
            (0..n)
                .map(|i| match cls.call1((i,)) {
                    Ok(v) => Ok(v.unbind()),
                    // Values with no member (e.g. Stream 0) map to the int.
                    Err(_) => Ok(i.into_pyobject(py)?.into_any().unbind()),
                })
                .collect()
        };
        Ok(Enums {
            mode: members("RestartMode", 3)?,
            stream: members("Stream", 3)?,
            level: members("Level", 6)?,
            event: members("EventKind", 10)?,
            outcome: members("OutcomeKind", 4)?,
        })
    })
}

fn member(py: Python<'_>, table: &[Py<PyAny>], v: u32) -> Py<PyAny> {
    match table.get(v as usize) {
        Some(m) => m.clone_ref(py),
        None => v.into_pyobject(py).unwrap().into_any().unbind(),
    }
}

fn mode_value(m: devrig::RestartMode) -> u32 {
    match m {
        devrig::RestartMode::OnFailure => 0,
        devrig::RestartMode::Always => 1,
        devrig::RestartMode::Never => 2,
    }
}

/// Accepts a `RestartMode`, its int value, or the config spelling
/// ("on-failure", "always", "never"; "on_failure" and any case too).
/// `name` is the argument (``mode``) or config key (``policy``).
fn parse_mode(name: &str, obj: &Bound<'_, PyAny>) -> PyResult<devrig::RestartMode> {
    if let Ok(s) = obj.cast::<PyString>() {
        let s = utf8(name, s)?;
        let norm = s.trim().to_ascii_lowercase().replace('_', "-");
        return devrig::RestartMode::parse(&norm).map_err(|_| {
            PyValueError::new_err(format!(
                "{name}: restart mode {} is not one of 'on-failure', 'always', 'never'",
                repr_str(&s)
            ))
        });
    }
    if obj.is_instance_of::<PyInt>() && !obj.is_instance_of::<PyBool>() {
        return match obj.extract::<i64>() {
            Ok(0) => Ok(devrig::RestartMode::OnFailure),
            Ok(1) => Ok(devrig::RestartMode::Always),
            Ok(2) => Ok(devrig::RestartMode::Never),
            _ => Err(PyValueError::new_err(format!(
                "{name}: restart mode {} is not a RestartMode value (0, 1 or 2)",
                obj.repr().map(|r| r.to_string()).unwrap_or_default()
            ))),
        };
    }
    Err(PyTypeError::new_err(format!(
        "{name} must be a devrig.RestartMode or a str, got {} {}",
        type_name(obj),
        obj.repr().map(|r| r.to_string()).unwrap_or_default()
    )))
}

// ------------------------------------------------------- argument helpers

/// An int argument in `0..=max`: TypeError for non-ints (bool included),
/// ValueError naming the argument when out of range.
fn int_arg(name: &str, obj: &Bound<'_, PyAny>, max: u64) -> PyResult<u64> {
    if !obj.is_instance_of::<PyInt>() || obj.is_instance_of::<PyBool>() {
        return Err(PyTypeError::new_err(format!(
            "{name} must be an int, got {} {}",
            type_name(obj),
            obj.repr().map(|r| r.to_string()).unwrap_or_default()
        )));
    }
    match obj.extract::<u64>() {
        Ok(v) if v <= max => Ok(v),
        _ => Err(PyValueError::new_err(format!(
            "{name} {} is out of range (0..={max})",
            obj.repr().map(|r| r.to_string()).unwrap_or_default()
        ))),
    }
}

/// A duration in seconds (int, float or datetime.timedelta): finite, >= 0.
fn secs_arg(name: &str, obj: &Bound<'_, PyAny>) -> PyResult<Duration> {
    let secs: f64 = if obj.is_instance_of::<PyFloat>()
        || (obj.is_instance_of::<PyInt>() && !obj.is_instance_of::<PyBool>())
    {
        obj.extract()?
    } else if obj.hasattr("total_seconds")? {
        obj.call_method0("total_seconds")?.extract()?
    } else {
        return Err(PyTypeError::new_err(format!(
            "{name} must be a number of seconds (int or float), got {} {}",
            type_name(obj),
            obj.repr().map(|r| r.to_string()).unwrap_or_default()
        )));
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(PyValueError::new_err(format!(
            "{name} must be a finite number of seconds >= 0, got {secs}"
        )));
    }
    Duration::try_from_secs_f64(secs)
        .map_err(|_| PyValueError::new_err(format!("{name} {secs} is too large")))
}

fn secs_to_ms(name: &str, obj: &Bound<'_, PyAny>) -> PyResult<u64> {
    let d = secs_arg(name, obj)?;
    // Round to the nearest millisecond.
    let ms = d.as_micros().saturating_add(500) / 1000;
    u64::try_from(ms).map_err(|_| PyValueError::new_err(format!("{name} is too large")))
}

fn opt_secs(name: &str, obj: Option<&Bound<'_, PyAny>>, default_ms: u64) -> PyResult<u64> {
    match obj {
        None => Ok(default_ms),
        Some(o) if o.is_none() => Ok(default_ms),
        Some(o) => secs_to_ms(name, o),
    }
}

fn opt_int(name: &str, obj: Option<&Bound<'_, PyAny>>, default: u64, max: u64) -> PyResult<u64> {
    match obj {
        None => Ok(default),
        Some(o) if o.is_none() => Ok(default),
        Some(o) => int_arg(name, o, max),
    }
}

/// A path argument: str, bytes or os.PathLike.
fn path_arg(name: &str, obj: &Bound<'_, PyAny>) -> PyResult<PathBuf> {
    let fs = obj.py().import("os")?.call_method1("fspath", (obj,));
    let fs = match fs {
        Ok(v) => v,
        Err(_) => {
            return Err(PyTypeError::new_err(format!(
                "{name} must be a str or os.PathLike, got {} {}",
                type_name(obj),
                obj.repr().map(|r| r.to_string()).unwrap_or_default()
            )))
        }
    };
    let p: PathBuf = if let Ok(b) = fs.cast::<PyBytes>() {
        use std::os::unix::ffi::OsStrExt;
        PathBuf::from(std::ffi::OsStr::from_bytes(b.as_bytes()))
    } else {
        fs.extract()?
    };
    if p.as_os_str().is_empty() {
        return Err(PyValueError::new_err(format!("{name} '' is empty")));
    }
    if std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str()).contains(&0) {
        return Err(PyValueError::new_err(format!(
            "{name} {p:?} contains a NUL byte"
        )));
    }
    Ok(p)
}

fn pid_arg(obj: &Bound<'_, PyAny>) -> PyResult<u32> {
    if !obj.is_instance_of::<PyInt>() || obj.is_instance_of::<PyBool>() {
        return Err(PyTypeError::new_err(format!(
            "pid must be an int, got {} {}",
            type_name(obj),
            obj.repr().map(|r| r.to_string()).unwrap_or_default()
        )));
    }
    match obj.extract::<i64>() {
        Ok(v) if v >= 1 && v <= i32::MAX as i64 => Ok(v as u32),
        _ => Err(PyValueError::new_err(format!(
            "pid {} is not a valid process id (must be 1..={})",
            obj.repr().map(|r| r.to_string()).unwrap_or_default(),
            i32::MAX
        ))),
    }
}

/// The text of a str argument: a ValueError naming the argument when it
/// cannot be UTF-8 (a lone surrogate, e.g. from surrogateescape).
fn utf8(name: &str, s: &Bound<'_, PyString>) -> PyResult<String> {
    match s.to_cow() {
        Ok(c) => Ok(c.into_owned()),
        Err(_) => Err(PyValueError::new_err(format!(
            "{name} is not valid UTF-8 text (it contains a lone surrogate): {}",
            s.repr().map(|r| r.to_string()).unwrap_or_default()
        ))),
    }
}

/// A keyword argument as given, None included (PyO3 turns an explicit
/// None into the default of an `Option`), for `bool_arg` to check.
enum GivenArg {
    Missing,
    Given(Py<PyAny>),
}

impl<'a, 'py> FromPyObject<'a, 'py> for GivenArg {
    type Error = PyErr;
    fn extract(obj: pyo3::Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        Ok(GivenArg::Given(obj.to_owned().unbind()))
    }
}

/// A bool argument: True or False, nothing else (a TypeError naming it).
fn bool_arg(py: Python<'_>, name: &str, arg: &GivenArg, default: bool) -> PyResult<bool> {
    match arg {
        GivenArg::Missing => Ok(default),
        GivenArg::Given(o) => match o.bind(py).cast::<PyBool>() {
            Ok(b) => Ok(b.is_true()),
            Err(_) => Err(PyTypeError::new_err(format!(
                "{name} must be a bool (True or False), got {} {}",
                type_name(o.bind(py)),
                o.bind(py).repr().map(|r| r.to_string()).unwrap_or_default()
            ))),
        },
    }
}

fn str_arg(name: &str, obj: &Bound<'_, PyAny>) -> PyResult<String> {
    match obj.cast::<PyString>() {
        Ok(s) => utf8(name, s),
        Err(_) => Err(PyTypeError::new_err(format!(
            "{name} must be a str, got {} {}",
            type_name(obj),
            obj.repr().map(|r| r.to_string()).unwrap_or_default()
        ))),
    }
}

fn repr_str(s: &str) -> String {
    // Python-like quoting for reprs.
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\'' => out.push_str("\\'"),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

// ---------------------------------------------------------- RestartPolicy

/// When and how often a service is restarted. Durations are in seconds.
///
/// ``RestartPolicy(mode=RestartMode.ON_FAILURE, max_restarts=10,
/// startup_max_restarts=3, startup_grace=2.0, initial_delay=0.5,
/// max_delay=30.0, reset_after=60.0, crash_loop_limit=5,
/// crash_loop_window=30.0)``. Values are checked when the policy is made
/// (``max_delay < initial_delay`` is a ``ValueError``) and never adjusted.
#[pyclass(frozen, eq, hash, module = "devrig", name = "RestartPolicy")]
#[derive(Clone, PartialEq, Eq, Hash)]
struct RestartPolicy {
    inner: devrig::RestartPolicy,
}

const U32: u64 = u32::MAX as u64;
/// The largest duration in ms: the C API's uint64_t, and what the
/// constructor's seconds reach (so that from_config takes any to_config).
const MS_MAX: u64 = u64::MAX;

impl RestartPolicy {
    fn checked(inner: devrig::RestartPolicy) -> PyResult<Self> {
        // Name the values in seconds as Python callers give them, and in
        // milliseconds as the config keys spell them.
        if inner.max_delay_ms < inner.initial_delay_ms {
            return Err(PyValueError::new_err(format!(
                "max_delay={} s is smaller than initial_delay={} s (max_delay_ms {} < initial_delay_ms {})",
                inner.max_delay_ms as f64 / 1000.0,
                inner.initial_delay_ms as f64 / 1000.0,
                inner.max_delay_ms,
                inner.initial_delay_ms
            )));
        }
        inner.validate().map_err(to_py)?;
        Ok(RestartPolicy { inner })
    }
}

#[pymethods]
impl RestartPolicy {
    #[new]
    // None (or leaving an argument out) means its default; the text
    // signature shows the defaults themselves (inspect.signature, help).
    #[pyo3(signature = (mode=None, max_restarts=None, startup_max_restarts=None,
        startup_grace=None, initial_delay=None, max_delay=None, reset_after=None,
        crash_loop_limit=None, crash_loop_window=None),
        text_signature = "(mode=RestartMode.ON_FAILURE, max_restarts=10, \
            startup_max_restarts=3, startup_grace=2.0, initial_delay=0.5, max_delay=30.0, \
            reset_after=60.0, crash_loop_limit=5, crash_loop_window=30.0)")]
    #[allow(clippy::too_many_arguments)]
    fn new(
        mode: Option<&Bound<'_, PyAny>>,
        max_restarts: Option<&Bound<'_, PyAny>>,
        startup_max_restarts: Option<&Bound<'_, PyAny>>,
        startup_grace: Option<&Bound<'_, PyAny>>,
        initial_delay: Option<&Bound<'_, PyAny>>,
        max_delay: Option<&Bound<'_, PyAny>>,
        reset_after: Option<&Bound<'_, PyAny>>,
        crash_loop_limit: Option<&Bound<'_, PyAny>>,
        crash_loop_window: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let d = devrig::RestartPolicy::default();
        let mode = match mode {
            Some(m) if !m.is_none() => parse_mode("mode", m)?,
            _ => d.mode,
        };
        Self::checked(devrig::RestartPolicy {
            mode,
            max_restarts: opt_int("max_restarts", max_restarts, d.max_restarts as u64, U32)? as u32,
            startup_max_restarts: opt_int(
                "startup_max_restarts",
                startup_max_restarts,
                d.startup_max_restarts as u64,
                U32,
            )? as u32,
            startup_grace_ms: opt_secs("startup_grace", startup_grace, d.startup_grace_ms)?,
            initial_delay_ms: opt_secs("initial_delay", initial_delay, d.initial_delay_ms)?,
            max_delay_ms: opt_secs("max_delay", max_delay, d.max_delay_ms)?,
            reset_after_ms: opt_secs("reset_after", reset_after, d.reset_after_ms)?,
            crash_loop_limit: opt_int(
                "crash_loop_limit",
                crash_loop_limit,
                d.crash_loop_limit as u64,
                U32,
            )? as u32,
            crash_loop_window_ms: opt_secs(
                "crash_loop_window",
                crash_loop_window,
                d.crash_loop_window_ms,
            )?,
        })
    }

    /// Builds a policy from a devrig config mapping: keys ``policy``
    /// ("on-failure" | "always" | "never"), ``max_restarts``,
    /// ``startup_max_restarts``, ``startup_grace_ms``, ``initial_delay_ms``,
    /// ``max_delay_ms``, ``reset_after_ms``, ``crash_loop_limit``,
    /// ``crash_loop_window_ms``. Missing keys (or None) take the defaults;
    /// unknown keys are a ValueError that names them.
    #[classmethod]
    fn from_config(
        _cls: &Bound<'_, pyo3::types::PyType>,
        config: &Bound<'_, PyAny>,
    ) -> PyResult<Self> {
        let py = config.py();
        let items = match config.call_method0("items") {
            Ok(i) => i,
            Err(_) => {
                return Err(PyTypeError::new_err(format!(
                    "config must be a mapping (e.g. a dict), got {}",
                    type_name(config)
                )))
            }
        };
        const KNOWN: [&str; 9] = [
            "policy",
            "max_restarts",
            "startup_max_restarts",
            "startup_grace_ms",
            "initial_delay_ms",
            "max_delay_ms",
            "reset_after_ms",
            "crash_loop_limit",
            "crash_loop_window_ms",
        ];
        let mut p = devrig::RestartPolicy::default();
        let mut unknown: Vec<String> = Vec::new();
        for item in items.try_iter()? {
            let item = item?;
            let (k, v): (Bound<'_, PyAny>, Bound<'_, PyAny>) = item.extract()?;
            let key = match k.cast::<PyString>().ok().and_then(|s| s.to_cow().ok()) {
                Some(s) => s.into_owned(),
                None => {
                    unknown.push(k.repr()?.to_string());
                    continue;
                }
            };
            if !KNOWN.contains(&key.as_str()) {
                unknown.push(repr_str(&key));
                continue;
            }
            if v.is_none() {
                continue;
            }
            let ms = |name: &str| -> PyResult<u64> {
                // Milliseconds: an int (a float with no fraction is accepted).
                if v.is_instance_of::<PyFloat>() {
                    let f: f64 = v.extract()?;
                    // 2^64: the first float above MS_MAX.
                    if f.is_finite() && f >= 0.0 && f.fract() == 0.0 && f < 18446744073709551616.0 {
                        return Ok(f as u64);
                    }
                    return Err(PyValueError::new_err(format!(
                        "{name} must be a whole number of milliseconds >= 0, got {f}"
                    )));
                }
                int_arg(name, &v, MS_MAX)
            };
            match key.as_str() {
                "policy" => p.mode = parse_mode(&key, &v)?,
                "max_restarts" => p.max_restarts = int_arg(&key, &v, U32)? as u32,
                "startup_max_restarts" => p.startup_max_restarts = int_arg(&key, &v, U32)? as u32,
                "startup_grace_ms" => p.startup_grace_ms = ms(&key)?,
                "initial_delay_ms" => p.initial_delay_ms = ms(&key)?,
                "max_delay_ms" => p.max_delay_ms = ms(&key)?,
                "reset_after_ms" => p.reset_after_ms = ms(&key)?,
                "crash_loop_limit" => p.crash_loop_limit = int_arg(&key, &v, U32)? as u32,
                "crash_loop_window_ms" => p.crash_loop_window_ms = ms(&key)?,
                _ => unreachable!(),
            }
        }
        if !unknown.is_empty() {
            return Err(PyValueError::new_err(format!(
                "unknown restart config key(s): {} (known: {})",
                unknown.join(", "),
                KNOWN.join(", ")
            )));
        }
        let _ = py;
        Self::checked(p)
    }

    /// The config mapping that ``from_config`` accepts, for this policy.
    fn to_config<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let p = &self.inner;
        let d = PyDict::new(py);
        d.set_item("policy", p.mode.as_str())?;
        d.set_item("max_restarts", p.max_restarts)?;
        d.set_item("startup_max_restarts", p.startup_max_restarts)?;
        d.set_item("startup_grace_ms", p.startup_grace_ms)?;
        d.set_item("initial_delay_ms", p.initial_delay_ms)?;
        d.set_item("max_delay_ms", p.max_delay_ms)?;
        d.set_item("reset_after_ms", p.reset_after_ms)?;
        d.set_item("crash_loop_limit", p.crash_loop_limit)?;
        d.set_item("crash_loop_window_ms", p.crash_loop_window_ms)?;
        Ok(d)
    }

    /// A copy with the given fields changed (same keywords as the constructor).
    #[pyo3(signature = (**changes))]
    fn replace(&self, changes: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        let mut p = self.inner;
        if let Some(ch) = changes {
            for (k, v) in ch.iter() {
                let key = utf8("RestartPolicy field", k.cast::<PyString>()?)?;
                match key.as_str() {
                    "mode" => p.mode = parse_mode(&key, &v)?,
                    "max_restarts" => p.max_restarts = int_arg(&key, &v, U32)? as u32,
                    "startup_max_restarts" => {
                        p.startup_max_restarts = int_arg(&key, &v, U32)? as u32
                    }
                    "startup_grace" => p.startup_grace_ms = secs_to_ms(&key, &v)?,
                    "initial_delay" => p.initial_delay_ms = secs_to_ms(&key, &v)?,
                    "max_delay" => p.max_delay_ms = secs_to_ms(&key, &v)?,
                    "reset_after" => p.reset_after_ms = secs_to_ms(&key, &v)?,
                    "crash_loop_limit" => p.crash_loop_limit = int_arg(&key, &v, U32)? as u32,
                    "crash_loop_window" => p.crash_loop_window_ms = secs_to_ms(&key, &v)?,
                    other => {
                        return Err(PyTypeError::new_err(format!(
                            "RestartPolicy has no field {}",
                            repr_str(other)
                        )))
                    }
                }
            }
        }
        Self::checked(p)
    }

    /// The restart mode (a ``devrig.RestartMode``).
    #[getter]
    fn mode(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(member(py, &enums(py)?.mode, mode_value(self.inner.mode)))
    }
    /// Restarts allowed before giving up (0: never restart).
    #[getter]
    fn max_restarts(&self) -> u32 {
        self.inner.max_restarts
    }
    /// Consecutive startup failures allowed before giving up.
    #[getter]
    fn startup_max_restarts(&self) -> u32 {
        self.inner.startup_max_restarts
    }
    /// Seconds: a run shorter than this is a startup failure.
    #[getter]
    fn startup_grace(&self) -> f64 {
        self.inner.startup_grace_ms as f64 / 1000.0
    }
    /// Seconds: the first backoff delay (before jitter).
    #[getter]
    fn initial_delay(&self) -> f64 {
        self.inner.initial_delay_ms as f64 / 1000.0
    }
    /// Seconds: the largest backoff delay.
    #[getter]
    fn max_delay(&self) -> f64 {
        self.inner.max_delay_ms as f64 / 1000.0
    }
    /// Seconds: a run at least this long resets the restart counters.
    #[getter]
    fn reset_after(&self) -> f64 {
        self.inner.reset_after_ms as f64 / 1000.0
    }
    /// Restartable exits inside the window that make the supervisor give up (0: off).
    #[getter]
    fn crash_loop_limit(&self) -> u32 {
        self.inner.crash_loop_limit
    }
    /// Seconds: the crash-loop window.
    #[getter]
    fn crash_loop_window(&self) -> f64 {
        self.inner.crash_loop_window_ms as f64 / 1000.0
    }
    #[getter]
    fn startup_grace_ms(&self) -> u64 {
        self.inner.startup_grace_ms
    }
    #[getter]
    fn initial_delay_ms(&self) -> u64 {
        self.inner.initial_delay_ms
    }
    #[getter]
    fn max_delay_ms(&self) -> u64 {
        self.inner.max_delay_ms
    }
    #[getter]
    fn reset_after_ms(&self) -> u64 {
        self.inner.reset_after_ms
    }
    #[getter]
    fn crash_loop_window_ms(&self) -> u64 {
        self.inner.crash_loop_window_ms
    }

    fn __repr__(&self) -> String {
        let p = &self.inner;
        let mode = match p.mode {
            devrig::RestartMode::OnFailure => "ON_FAILURE",
            devrig::RestartMode::Always => "ALWAYS",
            devrig::RestartMode::Never => "NEVER",
        };
        format!(
            "RestartPolicy(mode=RestartMode.{mode}, max_restarts={}, startup_max_restarts={}, \
             startup_grace={}, initial_delay={}, max_delay={}, reset_after={}, \
             crash_loop_limit={}, crash_loop_window={})",
            p.max_restarts,
            p.startup_max_restarts,
            secs_repr(p.startup_grace_ms),
            secs_repr(p.initial_delay_ms),
            secs_repr(p.max_delay_ms),
            secs_repr(p.reset_after_ms),
            p.crash_loop_limit,
            secs_repr(p.crash_loop_window_ms),
        )
    }

    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyTuple>> {
        let py = slf.py();
        let p = slf.get();
        let args = (
            p.mode(py)?,
            p.inner.max_restarts,
            p.inner.startup_max_restarts,
            p.startup_grace(),
            p.initial_delay(),
            p.max_delay(),
            p.reset_after(),
            p.inner.crash_loop_limit,
            p.crash_loop_window(),
        );
        (slf.get_type(), args).into_pyobject(py)
    }
}

fn secs_repr(ms: u64) -> String {
    let s = ms as f64 / 1000.0;
    if s.fract() == 0.0 {
        format!("{s:.1}")
    } else {
        format!("{s}")
    }
}

// ------------------------------------------------------ LogLine and Event

/// Where one line sits in its batch's buffer, and what it carries.
struct LineMeta {
    start: usize,
    end: usize,
    stream: u32,
    level: u32,
    pid: u32,
    timestamp_ms: i64,
}

/// The lines of one read, copied once into one buffer. Shared (by `Arc`)
/// by the `LogBatch` and every `LogLine` made from it, so that making a
/// line costs no allocation and no decoding until its text is read.
struct BatchData {
    service: Arc<str>,
    buf: Vec<u8>,
    lines: Vec<LineMeta>,
}

impl BatchData {
    fn new(service: Arc<str>, lines: &[devrig::LogLine<'_>]) -> BatchData {
        let mut buf = Vec::with_capacity(lines.len() * 16);
        let mut metas = Vec::with_capacity(lines.len());
        for l in lines {
            let start = buf.len();
            buf.extend_from_slice(l.text());
            metas.push(LineMeta {
                start,
                end: buf.len(),
                stream: l.stream as u32,
                level: l.level as u32,
                pid: l.pid,
                timestamp_ms: l.timestamp_ms,
            });
        }
        BatchData {
            service,
            buf,
            lines: metas,
        }
    }

    fn bytes(&self, i: usize) -> &[u8] {
        let m = &self.lines[i];
        &self.buf[m.start..m.end]
    }

    fn text<'py>(&self, py: Python<'py>, i: usize) -> Bound<'py, PyString> {
        let raw = self.bytes(i);
        // One pass: CPython validates and decodes, replacing invalid bytes
        // with U+FFFD (as String::from_utf8_lossy would).
        // SAFETY: `raw` is a valid slice for the duration of the call; the
        // error handler name is a NUL-terminated static string.
        let obj = unsafe {
            pyo3::ffi::PyUnicode_DecodeUTF8(
                raw.as_ptr() as *const std::os::raw::c_char,
                raw.len() as pyo3::ffi::Py_ssize_t,
                c"replace".as_ptr(),
            )
        };
        // SAFETY: a new reference or NULL (memory error); NULL falls back to
        // the lossy conversion in Rust.
        match unsafe { Bound::from_owned_ptr_or_opt(py, obj) } {
            Some(o) => unsafe { o.cast_into_unchecked() },
            None => {
                let _ = PyErr::take(py);
                PyString::new(py, &String::from_utf8_lossy(raw))
            }
        }
    }

    fn line<'py>(self: &Arc<Self>, py: Python<'py>, i: usize) -> PyResult<Bound<'py, LogLine>> {
        Bound::new(
            py,
            LogLine {
                batch: self.clone(),
                idx: i,
            },
        )
    }
}

/// One log line (or multiline entry) of a supervised service. Immutable.
///
/// ``text`` is the line decoded as UTF-8 (invalid bytes replaced by U+FFFD),
/// ``data`` the bytes exactly as the child wrote them (without the newline).
#[pyclass(frozen, freelist = 1024, module = "devrig", name = "LogLine")]
struct LogLine {
    batch: Arc<BatchData>,
    idx: usize,
}

impl LogLine {
    fn meta(&self) -> &LineMeta {
        &self.batch.lines[self.idx]
    }
}

#[pymethods]
impl LogLine {
    /// The service name.
    #[getter]
    fn service<'py>(&self, py: Python<'py>) -> Bound<'py, PyString> {
        PyString::new(py, &self.batch.service)
    }
    /// The line as str (UTF-8, invalid bytes replaced by U+FFFD).
    #[getter]
    fn text<'py>(&self, py: Python<'py>) -> Bound<'py, PyString> {
        self.batch.text(py, self.idx)
    }
    /// The raw bytes of the line, as the child wrote them.
    #[getter]
    fn data<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, self.batch.bytes(self.idx))
    }
    /// The length of the line in bytes, as the child wrote it (the C
    /// field ``len``): ``len(line.data)``, not ``len(line.text)``.
    #[getter]
    fn len(&self) -> usize {
        let m = self.meta();
        m.end - m.start
    }
    /// ``devrig.Stream.STDOUT`` or ``devrig.Stream.STDERR``.
    #[getter]
    fn stream(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(member(py, &enums(py)?.stream, self.meta().stream))
    }
    /// The detected ``devrig.Level``.
    #[getter]
    fn level(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(member(py, &enums(py)?.level, self.meta().level))
    }
    /// The pid of the child that wrote the line.
    #[getter]
    fn pid(&self) -> u32 {
        self.meta().pid
    }
    /// Wall-clock time the line was read, ms since the Unix epoch.
    #[getter]
    fn timestamp_ms(&self) -> i64 {
        self.meta().timestamp_ms
    }
    fn __str__<'py>(&self, py: Python<'py>) -> Bound<'py, PyString> {
        self.batch.text(py, self.idx)
    }
    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let e = enums(py)?;
        let m = self.meta();
        Ok(format!(
            "LogLine(service={}, stream={}, level={}, pid={}, timestamp_ms={}, text={})",
            repr_str(&self.batch.service),
            member(py, &e.stream, m.stream).bind(py).str()?,
            member(py, &e.level, m.level).bind(py).str()?,
            m.pid,
            m.timestamp_ms,
            self.batch.text(py, self.idx).repr()?,
        ))
    }
}

/// The lines of one read, as received by ``on_log_batch``: a read-only
/// sequence of ``LogLine`` (``len``, indexing, slicing, iteration), plus
/// bulk accessors that skip the per-line objects: ``texts()`` and
/// ``data()``. Valid after the callback returns (it owns a copy).
#[pyclass(frozen, sequence, module = "devrig", name = "LogBatch")]
struct LogBatch {
    data: Arc<BatchData>,
}

#[pymethods]
impl LogBatch {
    /// The service name.
    #[getter]
    fn service<'py>(&self, py: Python<'py>) -> Bound<'py, PyString> {
        PyString::new(py, &self.data.service)
    }
    fn __len__(&self) -> usize {
        self.data.lines.len()
    }
    fn __getitem__<'py>(&self, py: Python<'py>, index: &Bound<'py, PyAny>) -> PyResult<Py<PyAny>> {
        let n = self.data.lines.len() as isize;
        if let Ok(slice) = index.cast::<pyo3::types::PySlice>() {
            let ind = slice.indices(n)?;
            let list = PyList::empty(py);
            let mut i = ind.start;
            for _ in 0..ind.slicelength {
                list.append(self.data.line(py, i as usize)?)?;
                i += ind.step;
            }
            return Ok(list.into_any().unbind());
        }
        let i: isize = index.extract()?;
        let j = if i < 0 { i + n } else { i };
        if j < 0 || j >= n {
            return Err(pyo3::exceptions::PyIndexError::new_err(format!(
                "LogBatch index {i} out of range (len {n})"
            )));
        }
        Ok(self.data.line(py, j as usize)?.into_any().unbind())
    }
    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.lines(py)?.into_any().try_iter().map(|i| i.into_any())
    }
    /// All lines as a list of ``LogLine``.
    fn lines<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let items = (0..self.data.lines.len())
            .map(|i| self.data.line(py, i))
            .collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, items)
    }
    /// The text of every line (a list of str): the fastest way to consume
    /// a chatty service.
    fn texts<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(
            py,
            (0..self.data.lines.len()).map(|i| self.data.text(py, i)),
        )
    }
    /// The raw bytes of every line (a list of bytes).
    fn data<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(
            py,
            (0..self.data.lines.len()).map(|i| PyBytes::new(py, self.data.bytes(i))),
        )
    }
    fn __repr__(&self) -> String {
        format!("<LogBatch of {} lines>", self.data.lines.len())
    }
}

/// A state change of a supervised service (the fields of ``devrig_event``).
#[pyclass(frozen, module = "devrig", name = "Event")]
struct Event {
    inner: devrig::Event,
}

#[pymethods]
impl Event {
    /// The ``devrig.EventKind``.
    #[getter]
    fn kind(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(member(py, &enums(py)?.event, self.inner.kind as u32))
    }
    #[getter]
    fn service(&self) -> &str {
        &self.inner.service
    }
    /// The child concerned, 0 when there is none (e.g. BACKOFF).
    #[getter]
    fn pid(&self) -> u32 {
        self.inner.pid
    }
    /// EXITED/STOPPED/FAILED: the last exit code, -1 after a signal.
    #[getter]
    fn exit_code(&self) -> i32 {
        self.inner.exit_code
    }
    /// EXITED/STOPPED/FAILED: the terminating signal, 0 if none.
    #[getter]
    fn signal(&self) -> i32 {
        self.inner.signal
    }
    /// Restarts performed so far (BACKOFF: the number of the coming restart).
    #[getter]
    fn restart_count(&self) -> u32 {
        self.inner.restart_count
    }
    /// BACKOFF: the delay before the restart, in ms.
    #[getter]
    fn delay_ms(&self) -> u64 {
        self.inner.delay_ms
    }
    /// EXITED: how long the child ran, in ms.
    #[getter]
    fn runtime_ms(&self) -> u64 {
        self.inner.runtime_ms
    }
    /// Human-readable detail ("" when there is nothing to add).
    #[getter]
    fn message(&self) -> &str {
        &self.inner.message
    }
    /// Wall-clock time of the event, ms since the Unix epoch.
    #[getter]
    fn timestamp_ms(&self) -> i64 {
        self.inner.timestamp_ms
    }
    /// True for STOPPED and FAILED: the last event of a run.
    #[getter]
    fn is_terminal(&self) -> bool {
        self.inner.kind.is_terminal()
    }
    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let e = &self.inner;
        let mut s = format!(
            "Event({}, service={}",
            self.kind(py)?.bind(py).str()?,
            repr_str(&e.service)
        );
        if e.pid != 0 {
            s.push_str(&format!(", pid={}", e.pid));
        }
        use devrig::EventKind as K;
        if matches!(e.kind, K::Exited | K::Stopped | K::Failed) {
            s.push_str(&format!(", exit_code={}, signal={}", e.exit_code, e.signal));
        }
        if e.kind == K::Exited {
            s.push_str(&format!(", runtime_ms={}", e.runtime_ms));
        }
        if e.kind == K::Backoff {
            s.push_str(&format!(", delay_ms={}", e.delay_ms));
        }
        s.push_str(&format!(", restart_count={}", e.restart_count));
        if !e.message.is_empty() {
            s.push_str(&format!(", message={}", repr_str(&e.message)));
        }
        s.push(')');
        Ok(s)
    }
}

/// How a run ended. ``kind`` is ``OutcomeKind.NONE`` until it has ended.
#[pyclass(frozen, module = "devrig", name = "Outcome")]
struct Outcome {
    inner: devrig::Outcome,
}

#[pymethods]
impl Outcome {
    /// ``devrig.OutcomeKind``: NONE, COMPLETED, CANCELLED or FAILED.
    #[getter]
    fn kind(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(member(py, &enums(py)?.outcome, self.inner.kind as u32))
    }
    /// The last exit code, -1 after a signal, 0 when the child never ran.
    #[getter]
    fn last_exit_code(&self) -> i32 {
        self.inner.last_exit_code
    }
    /// The last terminating signal, 0 if none.
    #[getter]
    fn last_signal(&self) -> i32 {
        self.inner.last_signal
    }
    /// Restarts performed.
    #[getter]
    fn restarts(&self) -> u32 {
        self.inner.restarts
    }
    /// Why the run ended, in words.
    #[getter]
    fn message(&self) -> &str {
        &self.inner.message
    }
    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let o = &self.inner;
        Ok(format!(
            "Outcome({}, last_exit_code={}, last_signal={}, restarts={}, message={})",
            self.kind(py)?.bind(py).str()?,
            o.last_exit_code,
            o.last_signal,
            o.restarts,
            repr_str(&o.message)
        ))
    }
}

// ------------------------------------------------------------- Supervisor

/// Batches waiting for `Supervisor.log_batches()` (``queue_logs=True``).
///
/// Filled in the run's log handler, on one of the core's few worker
/// threads, which serve every service of the process: so a push never
/// waits (one that waited for a reader who had stopped reading took a
/// worker from every other service, and a few such queues stalled them
/// all). Backpressure goes through the core's log gate instead: the push
/// that fills the queue (`cap` batches) holds the run's logs, so the core
/// reads no more of the child's pipes (the child blocks on a full pipe) and
/// delivers nothing, and no thread waits; the consumer releases them when
/// it takes a batch and the queue is below `cap` again. So the queue never
/// holds more than `cap` batches. Hold and release happen under the
/// queue's lock, together with `held`, so that a release never gets lost or
/// comes before its hold.
///
/// The bound holds during a stop too, when a child may keep writing (it
/// ignores SIGTERM, or logs while it shuts down). Since a run cannot end
/// while its logs are held, a hold cannot last for good then: it lasts
/// until `stop_grace` after the stop request, and after that only while
/// the consumer keeps taking batches (one at least every `STOP_PATIENCE`).
/// When that patience runs out with the logs held, the queue starts
/// dropping and releases them; no Python code need run for that: the
/// `watchdog` thread does it. From then on every batch is dropped (sticky)
/// and its lines counted, so what the consumer reads is every line up to
/// some point, in order: the newest lines go, never older ones, and there
/// is no gap.
struct LogQueue {
    state: Mutex<QueueState>,
    not_empty: Condvar,
    cap: usize,
    stop_grace: Duration,
}

/// After a stop's grace period: how long the logs stay held for a full
/// queue, counted from the last batch the consumer took.
const STOP_PATIENCE: Duration = Duration::from_millis(250);

struct QueueState {
    batches: VecDeque<Arc<BatchData>>,
    /// The run has ended (or its supervisor is gone): nothing more will be
    /// pushed.
    closed: bool,
    /// The run's log gate. Taken away when the Python `Supervisor` goes:
    /// it keeps the core's handle alive, which keeps the log handler, which
    /// keeps this queue (a cycle for a supervisor never started).
    gate: Option<devrig::LogGate>,
    /// The run's logs are held by this queue (a push held them, neither
    /// the consumer nor the watchdog has released them yet).
    held: bool,
    /// A stop was requested: when its grace period ends.
    stop_deadline: Option<Instant>,
    /// No watchdog could be started for the stop (no thread): then a full
    /// queue is not held during the stop, it drops at once.
    unwatched: bool,
    /// When the consumer last took a batch.
    last_take: Option<Instant>,
    /// Set when a batch was first dropped: every later one is dropped too,
    /// so the lines read have no gap.
    dropping: bool,
    /// Lines dropped because the queue stayed full during a stop.
    dropped_lines: u64,
    /// For the tests: the most batches ever queued at once, and how many
    /// holds were taken.
    high_water: usize,
    holds: u64,
}

impl QueueState {
    /// During a stop: when a hold of a full queue must end (None without a
    /// stop).
    fn patience_end(&self) -> Option<Instant> {
        let deadline = self.stop_deadline?;
        Some(match self.last_take {
            Some(t) => deadline.max(t + STOP_PATIENCE),
            None => deadline,
        })
    }

    fn release(&mut self) {
        if self.held {
            if let Some(g) = &self.gate {
                let _ = g.release();
            }
            self.held = false;
        }
    }

    /// From now on every batch is dropped; the logs are released, so that
    /// the run goes on (and can end).
    fn start_dropping(&mut self) {
        self.dropping = true;
        self.release();
    }
}

/// What the watchdog learns from a queue it watches.
enum Watch {
    /// Nothing more to watch: the run ended, or the queue drops already.
    Done,
    /// Not held: nothing is due (a new hold kicks the watchdog).
    Idle,
    /// Held: look again then.
    At(Instant),
}

impl LogQueue {
    fn new(cap: usize, stop_grace: Duration, gate: devrig::LogGate) -> LogQueue {
        LogQueue {
            state: Mutex::new(QueueState {
                batches: VecDeque::new(),
                closed: false,
                gate: Some(gate),
                held: false,
                stop_deadline: None,
                unwatched: false,
                last_take: None,
                dropping: false,
                dropped_lines: 0,
                high_water: 0,
                holds: 0,
            }),
            not_empty: Condvar::new(),
            cap,
            stop_grace,
        }
    }

    /// Called in the run's log handler (the only place a hold may be
    /// taken). Never waits.
    fn push(&self, b: Arc<BatchData>) {
        let mut st = lock(&self.state);
        if st.dropping || st.batches.len() >= self.cap {
            // A full queue that is not held: the supervisor is gone
            // (closed), or holds were refused. Nobody waits for these.
            st.dropped_lines += b.lines.len() as u64;
            st.dropping = true;
            return;
        }
        st.batches.push_back(b);
        st.high_water = st.high_water.max(st.batches.len());
        self.not_empty.notify_all();
        if st.batches.len() < self.cap || st.closed {
            return;
        }
        // Full: no more until the consumer has taken one.
        if let Some(end) = st.patience_end() {
            if st.unwatched || Instant::now() >= end {
                // A stop whose patience has run out already.
                st.dropping = true;
                return;
            }
        }
        let held = st.gate.as_ref().is_some_and(|g| g.hold().is_ok());
        if !held {
            // Refused: the handle is being freed. Never queue without bound.
            st.dropping = true;
            return;
        }
        st.held = true;
        st.holds += 1;
        let stopping = st.stop_deadline.is_some();
        drop(st);
        if stopping {
            watchdog::kick();
        }
    }

    fn set_stopping(self: &Arc<Self>) {
        let mut st = lock(&self.state);
        // The first request counts: the run's SIGKILL is due stop_grace
        // after it, never later.
        if st.stop_deadline.is_some() || st.closed {
            return;
        }
        let deadline = Instant::now().checked_add(self.stop_grace);
        st.stop_deadline = Some(deadline.unwrap_or_else(far_future));
        drop(st);
        if !watchdog::watch(self) {
            let mut st = lock(&self.state);
            st.unwatched = true;
            if st.held {
                st.start_dropping();
            }
        }
    }

    /// For the watchdog: ends a hold whose stop patience has run out.
    fn watch(&self, now: Instant) -> Watch {
        let mut st = lock(&self.state);
        if st.closed || st.dropping {
            return Watch::Done;
        }
        let Some(end) = st.patience_end() else {
            return Watch::Done;
        };
        if !st.held {
            return Watch::Idle;
        }
        if now < end {
            return Watch::At(end);
        }
        st.start_dropping();
        Watch::Done
    }

    /// The run has ended: the consumer takes what is left, then stops.
    fn close(&self) {
        let mut st = lock(&self.state);
        st.closed = true;
        self.not_empty.notify_all();
    }

    /// The Python `Supervisor` is gone (nobody can read any more): its
    /// core handle must not stay alive through the gate, and a hold must
    /// not keep the run from ending.
    fn detach(&self) {
        let mut st = lock(&self.state);
        st.closed = true;
        st.held = false;
        st.gate = None;
        self.not_empty.notify_all();
    }

    fn dropped_lines(&self) -> u64 {
        lock(&self.state).dropped_lines
    }

    /// Waits up to `slice` for a batch: `Ok(Some)`, `Ok(None)` (nothing
    /// yet), or `Err(())` once closed and drained. Releases the logs held
    /// by a full queue once it is below its bound.
    fn pop(&self, slice: Duration) -> Result<Option<Arc<BatchData>>, ()> {
        let mut st = lock(&self.state);
        if st.batches.is_empty() && !st.closed {
            st = self
                .not_empty
                .wait_timeout(st, slice)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        match st.batches.pop_front() {
            Some(b) => {
                st.last_take = Some(Instant::now());
                if st.batches.len() < self.cap {
                    st.release();
                }
                Ok(Some(b))
            }
            None if st.closed => Err(()),
            None => Ok(None),
        }
    }
}

/// The one thread that ends the stop patience of held log queues
/// (``queue_logs=True``) when no Python code runs to do it: shared by every
/// supervisor of the process, started at the first stop of such a
/// supervisor, then kept (asleep while nothing is due). A forked child
/// starts its own.
mod watchdog {
    use super::{lock, LogQueue, Watch};
    use std::sync::{Arc, Condvar, Mutex, Weak};
    use std::time::Instant;

    struct Watchdog {
        pid: u32,
        state: Mutex<State>,
        wake: Condvar,
    }

    struct State {
        /// Queues of runs being stopped, until their run has ended.
        queues: Vec<Weak<LogQueue>>,
        /// Something changed since the thread last looked.
        kicked: bool,
    }

    static WATCHDOG: Mutex<Option<Arc<Watchdog>>> = Mutex::new(None);

    /// This process's watchdog, started if need be; None if no thread
    /// could be started.
    fn get(start: bool) -> Option<Arc<Watchdog>> {
        let me = std::process::id();
        let mut g = lock(&WATCHDOG);
        if let Some(w) = g.as_ref().filter(|w| w.pid == me) {
            return Some(w.clone());
        }
        if !start {
            return None;
        }
        let w = Arc::new(Watchdog {
            pid: me,
            state: Mutex::new(State {
                queues: Vec::new(),
                kicked: false,
            }),
            wake: Condvar::new(),
        });
        let w2 = w.clone();
        std::thread::Builder::new()
            .name("devrig-py-stop".into())
            .spawn(move || {
                // As the core's threads: signals go to the host's threads.
                devrig::block_async_signals();
                w2.run()
            })
            .ok()?;
        *g = Some(w.clone());
        Some(w)
    }

    /// Watches `q` until its run has ended. False if no watchdog thread
    /// could be started.
    pub(super) fn watch(q: &Arc<LogQueue>) -> bool {
        let Some(w) = get(true) else {
            return false;
        };
        let mut st = lock(&w.state);
        st.queues.push(Arc::downgrade(q));
        st.kicked = true;
        w.wake.notify_one();
        true
    }

    /// A watched queue took a hold: its patience may run out.
    pub(super) fn kick() {
        if let Some(w) = get(false) {
            lock(&w.state).kicked = true;
            w.wake.notify_one();
        }
    }

    impl Watchdog {
        fn run(&self) {
            loop {
                let queues: Vec<Arc<LogQueue>> = {
                    let mut st = lock(&self.state);
                    st.kicked = false;
                    st.queues.retain(|q| q.strong_count() > 0);
                    st.queues.iter().filter_map(|q| q.upgrade()).collect()
                };
                // Without the watchdog's lock: a push holds its queue's lock
                // when it kicks.
                let now = Instant::now();
                let mut next: Option<Instant> = None;
                let mut done = Vec::new();
                for q in &queues {
                    match q.watch(now) {
                        Watch::Done => done.push(Arc::as_ptr(q)),
                        Watch::Idle => {}
                        Watch::At(t) => next = Some(next.map_or(t, |n| n.min(t))),
                    }
                }
                drop(queues);
                let mut st = lock(&self.state);
                st.queues.retain(|q| !done.contains(&q.as_ptr()));
                if st.kicked {
                    continue;
                }
                match next {
                    None => drop(self.wake.wait(st).unwrap_or_else(|e| e.into_inner())),
                    Some(t) => {
                        let wait = t.saturating_duration_since(Instant::now());
                        drop(
                            self.wake
                                .wait_timeout(st, wait)
                                .unwrap_or_else(|e| e.into_inner()),
                        );
                    }
                }
            }
        }
    }
}

/// An instant no deadline reaches (for a stop_grace too large to add).
fn far_future() -> Instant {
    let now = Instant::now();
    now.checked_add(Duration::from_secs(u32::MAX as u64))
        .unwrap_or(now)
}

/// Iterator over the ``LogBatch``es of a supervisor made with
/// ``queue_logs=True``; ends when the run has ended and every batch has
/// been taken. Waits with the GIL released.
#[pyclass(frozen, module = "devrig", name = "LogBatchIterator")]
struct LogBatchIterator {
    queue: Arc<LogQueue>,
    /// Keeps the supervisor alive while its lines are being read.
    _owner: Py<Supervisor>,
}

#[pymethods]
impl LogBatchIterator {
    fn __iter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }
    fn __next__(&self, py: Python<'_>) -> PyResult<Option<LogBatch>> {
        loop {
            let q = self.queue.clone();
            match py.detach(move || q.pop(WAIT_SLICE)) {
                Ok(Some(data)) => return Ok(Some(LogBatch { data })),
                Err(()) => return Ok(None),
                Ok(None) => py.check_signals()?,
            }
        }
    }
}

/// State shared between the Python object and the callbacks it installed.
struct Shared {
    service: Arc<str>,
    on_log: Mutex<Option<Py<PyAny>>>,
    /// on_log receives a list of lines per batch instead of one line.
    batch: bool,
    on_event: Mutex<Option<Py<PyAny>>>,
    /// The first exception raised by a callback, raised again by wait().
    error: Mutex<Option<PyErr>>,
    core: OnceLock<Weak<devrig::Supervisor>>,
    /// With queue_logs=True: where lines go instead of a callback.
    queue: Option<Arc<LogQueue>>,
    /// Who is told when the run ends (``run_async``).
    run_end: Mutex<RunEnd>,
}

#[derive(Default)]
struct RunEnd {
    /// The terminal event has been emitted.
    ended: bool,
    /// Called (with no argument) on the library thread that emits the
    /// terminal event, after ``on_event`` has seen it.
    waiters: Vec<Py<PyAny>>,
}

impl Shared {
    fn callback_failed(&self, err: PyErr, slot: &Mutex<Option<Py<PyAny>>>) {
        // The callback that raised is not called again.
        let old = lock(slot).take();
        drop(old);
        {
            let mut e = lock(&self.error);
            if e.is_none() {
                *e = Some(err);
            }
        }
        if let Some(core) = self.core.get().and_then(|w| w.upgrade()) {
            let _ = core.cancel();
        }
        self.stopping();
    }

    /// A stop was requested: the log queue must not hold the run's logs
    /// past the stop's patience.
    fn stopping(&self) {
        if let Some(q) = &self.queue {
            q.set_stopping();
        }
    }

    fn take_error(&self) -> Option<PyErr> {
        lock(&self.error).take()
    }

    /// The terminal event has been emitted: calls the waiters of
    /// ``_on_run_end``.
    fn run_ended(&self) {
        let waiters = {
            let mut r = lock(&self.run_end);
            r.ended = true;
            std::mem::take(&mut r.waiters)
        };
        if waiters.is_empty() {
            return;
        }
        // None: the interpreter is exiting; nobody is left to tell.
        let _ = attach_library(|py| {
            for w in waiters {
                if let Err(e) = w.bind(py).call0() {
                    e.write_unraisable(py, Some(w.bind(py)));
                }
            }
        });
    }

    fn deliver_lines(&self, py: Python<'_>, lines: &[devrig::LogLine<'_>]) {
        let Some(cb) = lock(&self.on_log).as_ref().map(|c| c.clone_ref(py)) else {
            return;
        };
        let cb = cb.bind(py);
        let data = Arc::new(BatchData::new(self.service.clone(), lines));
        let result: PyResult<()> = (|| {
            if self.batch {
                cb.call1((LogBatch { data },))?;
            } else {
                for i in 0..data.lines.len() {
                    if exit_gate_closed() {
                        break; // the atexit handler waits for us
                    }
                    cb.call1((data.line(py, i)?,))?;
                }
            }
            Ok(())
        })();
        if let Err(e) = result {
            self.callback_failed(e, &self.on_log);
        }
    }

    fn deliver_event(&self, py: Python<'_>, ev: &devrig::Event) {
        let cb = lock(&self.on_event).as_ref().map(|c| c.clone_ref(py));
        if let Some(cb) = cb {
            let r = Bound::new(py, Event { inner: ev.clone() })
                .and_then(|obj| cb.bind(py).call1((obj,)).map(drop));
            if let Err(e) = r {
                self.callback_failed(e, &self.on_event);
            }
        }
        if ev.kind.is_terminal() {
            self.drop_callbacks();
        }
    }

    /// Nothing follows a terminal event: break reference cycles through the
    /// callbacks now (a bound method of an object that holds this
    /// supervisor, say).
    fn drop_callbacks(&self) {
        let a = lock(&self.on_log).take();
        let b = lock(&self.on_event).take();
        drop((a, b));
    }
}

/// Supervises one service: ``/bin/sh -c COMMAND`` in its own process group,
/// its output captured line by line, restarted by ``policy``, stopped
/// gracefully (SIGTERM, then SIGKILL after ``stop_grace`` seconds).
///
/// A supervisor runs once: ``run()`` (blocking), or ``start()`` then
/// ``wait()``; ``cancel()`` requests a stop from anywhere. Use it as a
/// context manager (or call ``close()``) so that the service is stopped and
/// reaped when you are done.
#[pyclass(frozen, subclass, module = "devrig._devrig", name = "Supervisor")]
struct Supervisor {
    core: Arc<devrig::Supervisor>,
    shared: Arc<Shared>,
    name: String,
    /// The working directory, to name it in a SpawnError.
    cwd: Option<PathBuf>,
    creator_pid: u32,
    /// Started by `__enter__`: the next explicit start() is accepted once.
    implicit_start: AtomicBool,
}

impl Supervisor {
    fn check_fork(&self) -> PyResult<()> {
        let me = std::process::id();
        if me != self.creator_pid {
            return Err(StateError::new_err(format!(
                "Supervisor {} was created in process {} and cannot be used in forked child \
                 process {me}; create a new Supervisor in the child",
                repr_str(&self.name),
                self.creator_pid
            )));
        }
        Ok(())
    }

    fn start_impl(&self, py: Python<'_>) -> PyResult<()> {
        self.check_fork()?;
        if self.implicit_start.swap(false, Ordering::SeqCst) {
            return Ok(());
        }
        let core = self.core.clone();
        py.detach(move || core.start())
            .map_err(|e| self.spawn_err(py, e))
    }

    /// A spawn failure carries the working directory as ``filename`` when
    /// that is what failed (it is not a usable directory).
    fn spawn_err(&self, py: Python<'_>, e: devrig::Error) -> PyErr {
        let cwd = match (&e, &self.cwd) {
            (devrig::Error::Spawn(_), Some(d)) if !d.is_dir() => d
                .as_os_str()
                .into_pyobject(py)
                .ok()
                .map(|o| o.into_any().unbind()),
            _ => None,
        };
        os_err(e, cwd)
    }

    /// Waits for the end of the run in GIL-free slices, checking signals in
    /// between. On a signal exception: stop, reap, re-raise.
    fn wait_impl(&self, py: Python<'_>, timeout: Option<Duration>) -> PyResult<()> {
        self.check_fork()?;
        let deadline = timeout.map(|t| Instant::now().checked_add(t));
        let result = loop {
            let slice = match deadline {
                Some(Some(d)) => d.saturating_duration_since(Instant::now()).min(WAIT_SLICE),
                _ => WAIT_SLICE,
            };
            let core = self.core.clone();
            match py.detach(move || core.wait(Some(slice))) {
                Err(devrig::Error::Timeout(_)) => {}
                r => break r,
            }
            if let Err(sig) = py.check_signals() {
                self.stop_and_reap(py);
                return Err(sig);
            }
            if let Some(Some(d)) = deadline {
                if Instant::now() >= d {
                    return Err(PyTimeoutError::new_err(format!(
                        "supervisor {} still running after {:.3} s",
                        repr_str(&self.name),
                        timeout.unwrap_or_default().as_secs_f64()
                    )));
                }
            }
        };
        if let Some(e) = self.shared.take_error() {
            return Err(e);
        }
        result.map_err(|e| self.spawn_err(py, e))
    }

    fn stop_and_reap(&self, py: Python<'_>) {
        let _ = self.core.cancel();
        self.shared.stopping();
        if self.core.is_started() {
            let core = self.core.clone();
            let _ = py.detach(move || core.wait(None));
        }
    }

    fn close_impl(&self, py: Python<'_>, raise_callback_error: bool) -> PyResult<()> {
        self.check_fork()?;
        self.implicit_start.store(false, Ordering::SeqCst);
        self.stop_and_reap(py);
        match self.shared.take_error() {
            Some(e) if raise_callback_error => Err(e),
            _ => Ok(()),
        }
    }
}

fn check_callable(name: &str, obj: Option<Bound<'_, PyAny>>) -> PyResult<Option<Py<PyAny>>> {
    match obj {
        None => Ok(None),
        Some(o) if o.is_none() => Ok(None),
        Some(o) if o.is_callable() => Ok(Some(o.unbind())),
        Some(o) => Err(PyTypeError::new_err(format!(
            "{name} must be callable or None, got {} {}",
            type_name(&o),
            o.repr().map(|r| r.to_string()).unwrap_or_default()
        ))),
    }
}

#[pymethods]
impl Supervisor {
    #[new]
    #[pyo3(signature = (name, command, cwd=None, env=None, policy=None, state_dir=None,
        stop_grace=None, on_log=None, on_event=None, *, multiline=GivenArg::Missing,
        max_line_bytes=None, on_log_batch=None, queue_logs=GivenArg::Missing))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        name: &Bound<'_, PyAny>,
        command: &Bound<'_, PyAny>,
        cwd: Option<&Bound<'_, PyAny>>,
        env: Option<&Bound<'_, PyAny>>,
        policy: Option<&Bound<'_, PyAny>>,
        state_dir: Option<&Bound<'_, PyAny>>,
        stop_grace: Option<&Bound<'_, PyAny>>,
        on_log: Option<Bound<'_, PyAny>>,
        on_event: Option<Bound<'_, PyAny>>,
        multiline: GivenArg,
        max_line_bytes: Option<&Bound<'_, PyAny>>,
        on_log_batch: Option<Bound<'_, PyAny>>,
        queue_logs: GivenArg,
    ) -> PyResult<Self> {
        let multiline = bool_arg(py, "multiline", &multiline, true)?;
        let queue_logs = bool_arg(py, "queue_logs", &queue_logs, false)?;
        let name = str_arg("name", name)?;
        let command = str_arg("command", command)?;
        let mut cfg = devrig::Config::new(&name, &command).map_err(to_py)?;
        if let Some(c) = cwd.filter(|c| !c.is_none()) {
            cfg.working_dir = Some(path_arg("cwd", c)?);
        }
        if let Some(e) = env.filter(|e| !e.is_none()) {
            let items = e.call_method0("items").map_err(|_| {
                PyTypeError::new_err(format!(
                    "env must be a mapping of str to str, got {}",
                    type_name(e)
                ))
            })?;
            for item in items.try_iter()? {
                let (k, v): (Bound<'_, PyAny>, Bound<'_, PyAny>) = item?.extract()?;
                let key = str_arg("env key", &k)?;
                let value = match v.cast::<PyString>() {
                    Ok(s) => utf8(&format!("env value of {}", repr_str(&key)), s)?,
                    Err(_) => {
                        return Err(PyTypeError::new_err(format!(
                            "env value of {} must be a str, got {} {}",
                            repr_str(&key),
                            type_name(&v),
                            v.repr()?
                        )))
                    }
                };
                devrig::supervisor::check_env(&key, &value).map_err(to_py)?;
                let k = std::ffi::OsString::from(key);
                match cfg.env.iter_mut().find(|(ek, _)| *ek == k) {
                    Some(slot) => slot.1 = value.into(),
                    None => cfg.env.push((k, value.into())),
                }
            }
        }
        if let Some(p) = policy.filter(|p| !p.is_none()) {
            if let Ok(p) = p.cast::<RestartPolicy>() {
                cfg.policy = p.get().inner;
            } else if p.is_instance_of::<PyDict>() {
                let cls = py.get_type::<RestartPolicy>();
                cfg.policy = RestartPolicy::from_config(&cls, p)?.inner;
            } else {
                return Err(PyTypeError::new_err(format!(
                    "policy must be a devrig.RestartPolicy (or a config dict), got {}",
                    type_name(p)
                )));
            }
        }
        if let Some(d) = state_dir.filter(|d| !d.is_none()) {
            cfg.state_dir = Some(path_arg("state_dir", d)?);
        }
        if let Some(g) = stop_grace.filter(|g| !g.is_none()) {
            cfg.stop_grace = secs_arg("stop_grace", g)?;
        }
        cfg.multiline = multiline;
        if let Some(n) = max_line_bytes.filter(|n| !n.is_none()) {
            let n = int_arg(
                "max_line_bytes",
                n,
                devrig::supervisor::MAX_LINE_BYTES_LIMIT as u64,
            )?;
            if n == 0 {
                return Err(PyValueError::new_err(format!(
                    "max_line_bytes 0 is out of range (1..={})",
                    devrig::supervisor::MAX_LINE_BYTES_LIMIT
                )));
            }
            cfg.max_line_bytes = n as usize;
        }
        let on_log = check_callable("on_log", on_log)?;
        let on_log_batch = check_callable("on_log_batch", on_log_batch)?;
        let on_event = check_callable("on_event", on_event)?;
        if on_log.is_some() && on_log_batch.is_some() {
            return Err(PyValueError::new_err(
                "pass on_log (one line per call) or on_log_batch (a list per call), not both",
            ));
        }
        if queue_logs && (on_log.is_some() || on_log_batch.is_some()) {
            return Err(PyValueError::new_err(
                "queue_logs=True delivers lines through log_batches(); do not also pass on_log or on_log_batch",
            ));
        }
        let batch = on_log_batch.is_some();
        let has_log = on_log.is_some() || batch;
        let has_event = on_event.is_some();

        let stop_grace = cfg.stop_grace;
        let cwd = cfg.working_dir.clone();
        let core = Arc::new(devrig::Supervisor::new(cfg).map_err(|e| {
            // An unusable state directory is the failure with a path here.
            os_err(
                e,
                state_dir
                    .filter(|d| !d.is_none())
                    .map(|d| d.clone().unbind()),
            )
        })?);
        let shared = Arc::new(Shared {
            service: Arc::from(name.as_str()),
            on_log: Mutex::new(on_log.or(on_log_batch)),
            batch,
            on_event: Mutex::new(on_event),
            error: Mutex::new(None),
            core: OnceLock::new(),
            queue: queue_logs.then(|| {
                Arc::new(LogQueue::new(
                    LOG_QUEUE_BATCHES,
                    stop_grace,
                    core.log_gate(),
                ))
            }),
            run_end: Mutex::new(RunEnd::default()),
        });
        let _ = shared.core.set(Arc::downgrade(&core));
        enums(py)?;
        if has_log {
            let sh = shared.clone();
            core.on_log(Some(Box::new(move |lines: &[devrig::LogLine<'_>]| {
                mark_library_thread();
                // None: the interpreter is exiting; drop the lines.
                let _ = attach_library(|py| sh.deliver_lines(py, lines));
            })))
            .map_err(to_py)?;
        }
        if let Some(q) = shared.queue.clone() {
            // No GIL on this path: the core's thread copies and queues, and
            // never waits (a full queue holds the run's logs instead).
            let service = shared.service.clone();
            core.on_log(Some(Box::new(move |lines: &[devrig::LogLine<'_>]| {
                q.push(Arc::new(BatchData::new(service.clone(), lines)));
            })))
            .map_err(to_py)?;
        }
        // Always installed: run_async learns of the end of the run here.
        let sh = shared.clone();
        core.on_event(Some(Box::new(move |ev: &devrig::Event| {
            mark_library_thread();
            if ev.kind == devrig::EventKind::Stopping {
                sh.stopping();
            }
            // Without on_event no event needs the GIL. Taking it anyway made
            // the core's threads queue for it, up to the interpreter's switch
            // interval (5 ms) each time, while the host ran Python code.
            if has_event {
                let _ = attach_library(|py| sh.deliver_event(py, ev));
            } else if ev.kind.is_terminal() {
                // Unattached, pyo3 queues the decref for the next thread that
                // attaches: the host's wait() does as it returns.
                sh.drop_callbacks();
            }
            if ev.kind.is_terminal() {
                if let Some(q) = &sh.queue {
                    q.close();
                }
                sh.run_ended();
            }
        })))
        .map_err(to_py)?;
        Ok(Supervisor {
            core,
            shared,
            name,
            cwd,
            creator_pid: std::process::id(),
            implicit_start: AtomicBool::new(false),
        })
    }

    /// The service name.
    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    /// Runs the service until the run ends: blocks with the GIL released.
    ///
    /// Ctrl-C (or any exception raised by a signal handler) stops the
    /// service, waits until it is reaped, then raises. Raises SpawnError if
    /// the first spawn failed, StateError if already started, and re-raises
    /// an exception raised by a callback (after the service has stopped).
    fn run(&self, py: Python<'_>) -> PyResult<()> {
        self.check_fork()?;
        if on_library_thread() {
            // Checked before the start: the run would never be waited for.
            return Err(StateError::new_err(format!(
                "run of supervisor {} from a library thread (inside a callback) would \
                 deadlock; it was not started (use start() there)",
                repr_str(&self.name)
            )));
        }
        self.start_impl(py)?;
        self.wait_impl(py, None)
    }

    /// Starts the run in the background; returns once the first spawn has
    /// been attempted (SpawnError if it failed). A second call is a
    /// StateError.
    fn start(&self, py: Python<'_>) -> PyResult<()> {
        self.start_impl(py)
    }

    /// Waits for the run to end (``timeout`` in seconds, None: forever).
    /// Raises TimeoutError if it is still running after ``timeout``,
    /// StateError if the run was never started, and the exception of a
    /// callback, if one raised. Ctrl-C stops the service, then raises.
    #[pyo3(signature = (timeout=None))]
    fn wait(&self, py: Python<'_>, timeout: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let t = match timeout {
            Some(t) if !t.is_none() => Some(secs_arg("timeout", t)?),
            _ => None,
        };
        self.wait_impl(py, t)
    }

    /// Requests a stop (SIGTERM, SIGKILL after stop_grace). Thread-safe and
    /// idempotent; allowed before, during and after the run and from inside
    /// a callback. Does not wait: call ``wait()`` (or use ``close()``).
    fn cancel(&self) -> PyResult<()> {
        self.check_fork()?;
        self.core.cancel().map_err(to_py)?;
        self.shared.stopping();
        Ok(())
    }

    /// With ``queue_logs=True``: an iterator over the ``LogBatch``es of the
    /// run, in order; it ends once the run has ended and every batch has
    /// been taken. Waits with the GIL released (Ctrl-C raises). The fastest
    /// way to consume a chatty service: the core's threads never wait for
    /// the GIL, so reading and splitting run in parallel with your loop.
    ///
    /// The queue holds 16 batches (reads of the pipe): when it is full the
    /// library stops reading the child's output until your loop takes a
    /// batch, so the child waits on its pipe (backpressure), memory stays
    /// bounded, and no library thread waits. During a stop the bound holds
    /// too, and the stop still ends in time: a full queue waits for your
    /// loop until ``stop_grace`` has passed since the stop request, then
    /// only while your loop keeps taking batches (one at least every
    /// 0.25 s). After that the rest of the output is dropped: you get every
    /// line up to that point, in order, and ``dropped_lines`` counts the
    /// rest.
    fn log_batches(slf: Bound<'_, Self>) -> PyResult<LogBatchIterator> {
        let me = slf.get();
        me.check_fork()?;
        match &me.shared.queue {
            Some(q) => Ok(LogBatchIterator {
                queue: q.clone(),
                _owner: slf.clone().unbind(),
            }),
            None => Err(StateError::new_err(format!(
                "supervisor {} was not created with queue_logs=True",
                repr_str(&me.name)
            ))),
        }
    }

    /// Stops the service (if running) and waits until it has been reaped.
    /// Idempotent. Raises the exception of a callback, if one raised and it
    /// has not been raised yet.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        self.close_impl(py, true)
    }

    /// The outcome of the run: kind NONE until its terminal event (STOPPED
    /// or FAILED) is emitted. It is set before that event, so the event's
    /// callback already reads it; ``done`` turns True a moment later, once
    /// the callback has returned.
    #[getter]
    fn outcome(&self) -> PyResult<Outcome> {
        self.check_fork()?;
        Ok(Outcome {
            inner: self.core.outcome(),
        })
    }

    /// True once ``start()`` (or ``run()``) has been called.
    #[getter]
    fn started(&self) -> PyResult<bool> {
        self.check_fork()?;
        Ok(self.core.is_started())
    }

    /// True once the run has ended: after its terminal event's callback
    /// has returned (``outcome`` is set before that event).
    #[getter]
    fn done(&self) -> PyResult<bool> {
        self.check_fork()?;
        Ok(self.core.is_done())
    }

    /// With ``queue_logs=True``: how many lines were dropped because the
    /// queue stayed full during a stop (0 otherwise, and always 0 while
    /// your loop keeps up). Once one line was dropped, every later one is:
    /// what you read has no gap. See ``log_batches()``.
    #[getter]
    fn dropped_lines(&self) -> PyResult<u64> {
        self.check_fork()?;
        Ok(self.shared.queue.as_ref().map_or(0, |q| q.dropped_lines()))
    }

    /// For the tests, with ``queue_logs=True`` (None otherwise): the
    /// queue's state as a dict: ``queued`` (batches now), ``high_water``
    /// (the most ever queued at once), ``held`` (the run's logs are held
    /// now), ``holds`` (holds taken so far), ``dropping``.
    fn _log_queue_stats<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        self.check_fork()?;
        let Some(q) = &self.shared.queue else {
            return Ok(None);
        };
        let (queued, high_water, held, holds, dropping) = {
            let st = lock(&q.state);
            (
                st.batches.len(),
                st.high_water,
                st.held,
                st.holds,
                st.dropping,
            )
        };
        let d = PyDict::new(py);
        d.set_item("queued", queued)?;
        d.set_item("high_water", high_water)?;
        d.set_item("held", held)?;
        d.set_item("holds", holds)?;
        d.set_item("dropping", dropping)?;
        Ok(Some(d))
    }

    fn __enter__(slf: Bound<'_, Self>) -> PyResult<Bound<'_, Self>> {
        let me = slf.get();
        me.check_fork()?;
        if !me.core.is_started() {
            me.start_impl(slf.py())?;
            me.implicit_start.store(true, Ordering::SeqCst);
        }
        Ok(slf)
    }

    #[pyo3(signature = (exc_type=None, _exc=None, _tb=None))]
    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: Option<&Bound<'_, PyAny>>,
        _exc: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let in_flight = exc_type.is_some_and(|t| !t.is_none());
        self.close_impl(py, !in_flight)?;
        Ok(false)
    }

    /// Calls ``callback()`` (on a library thread, GIL held) once the run
    /// has emitted its terminal event, after ``on_event`` has seen it.
    /// Returns False, and keeps nothing, if the run has ended already (or
    /// was never started: then it never will end). Used by ``run_async``.
    fn _on_run_end(&self, callback: Bound<'_, PyAny>) -> PyResult<bool> {
        self.check_fork()?;
        let mut r = lock(&self.shared.run_end);
        if r.ended || !self.core.is_started() || self.core.is_done() {
            return Ok(false);
        }
        r.waiters.push(callback.unbind());
        Ok(true)
    }

    /// Waits (GIL released, no signal checks) until the run has ended;
    /// raises nothing about the run itself. ``run_async`` calls it once the
    /// terminal event has been emitted, when the run's thread is only
    /// finishing (microseconds).
    fn _wait_done(&self, py: Python<'_>) -> PyResult<()> {
        self.check_fork()?;
        if self.core.is_started() {
            let core = self.core.clone();
            py.detach(move || {
                let _ = core.wait(None);
            });
        }
        Ok(())
    }

    /// True in a process made by fork() from the one that created this handle.
    fn _is_forked_copy(&self) -> bool {
        std::process::id() != self.creator_pid
    }

    fn __repr__(&self) -> String {
        let state = if self._is_forked_copy() {
            // Its state is the parent's at the fork, and says nothing here.
            "forked copy, unusable".to_string()
        } else if !self.core.is_started() {
            "not started".to_string()
        } else if !self.core.is_done() {
            "running".to_string()
        } else {
            format!("done: {}", self.core.outcome().kind.as_str())
        };
        format!("<devrig.Supervisor {} ({state})>", repr_str(&self.name))
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Ok(g) = self.shared.on_log.try_lock() {
            visit.call(g.as_ref())?;
        }
        if let Ok(g) = self.shared.on_event.try_lock() {
            visit.call(g.as_ref())?;
        }
        if let Ok(g) = self.shared.run_end.try_lock() {
            for w in &g.waiters {
                visit.call(w)?;
            }
        }
        Ok(())
    }

    fn __clear__(&self) {
        let a = lock(&self.shared.on_log).take();
        let b = lock(&self.shared.on_event).take();
        let c = std::mem::take(&mut lock(&self.shared.run_end).waiters);
        drop((a, b, c));
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        // The core's Drop requests a stop and detaches the callbacks (and
        // does nothing in a forked child). Drop our Arc last.
        self.core.detach_callbacks();
        if !self._is_forked_copy() {
            if let Some(q) = &self.shared.queue {
                // Nobody can read any more: a hold must not keep the run
                // from ending (detaching makes it moot already; this says
                // so for good), and the gate must not keep the core alive.
                self.core.disable_log_holds();
                q.detach();
            }
        }
    }
}

// -------------------------------------------------------------- utilities

/// Terminates ``pid`` and all its descendants: SIGTERM, then SIGKILL to
/// survivors after ``grace`` seconds. Returns early once all are gone. A pid
/// that does not exist is not an error.
#[pyfunction]
#[pyo3(signature = (pid, grace=None), text_signature = "(pid, grace=5.0)")]
fn kill_tree(
    py: Python<'_>,
    pid: &Bound<'_, PyAny>,
    grace: Option<&Bound<'_, PyAny>>,
) -> PyResult<()> {
    let pid = pid_arg(pid)?;
    let grace = match grace {
        Some(g) if !g.is_none() => secs_arg("grace", g)?,
        _ => Duration::from_secs(5),
    };
    py.detach(move || devrig::kill_tree(pid, grace))
        .map_err(to_py)
}

/// The creation time of ``pid`` in ms since the Unix epoch, or None if
/// there is no such process.
#[pyfunction]
fn proc_start_time_ms(pid: &Bound<'_, PyAny>) -> PyResult<Option<i64>> {
    let pid = pid_arg(pid)?;
    devrig::proc_start_time_ms(pid).map_err(to_py)
}

/// True if ``pid`` is alive and started at ``start_ms`` (0: unknown, then
/// liveness alone decides). False for pids that cannot name a process.
#[pyfunction]
fn same_process(pid: &Bound<'_, PyAny>, start_ms: &Bound<'_, PyAny>) -> PyResult<bool> {
    if !pid.is_instance_of::<PyInt>() || pid.is_instance_of::<PyBool>() {
        return Err(PyTypeError::new_err(format!(
            "pid must be an int, got {}",
            type_name(pid)
        )));
    }
    if !start_ms.is_instance_of::<PyInt>() || start_ms.is_instance_of::<PyBool>() {
        return Err(PyTypeError::new_err(format!(
            "start_ms must be an int, got {}",
            type_name(start_ms)
        )));
    }
    let Ok(pid) = pid.extract::<i64>() else {
        return Ok(false);
    };
    let Ok(start_ms) = start_ms.extract::<i64>() else {
        return Ok(false);
    };
    if pid < 1 || pid > i32::MAX as i64 {
        return Ok(false);
    }
    Ok(devrig::same_process(pid as u32, start_ms))
}

/// ``state_dir/devrig.pid`` (as str).
#[pyfunction]
fn _pid_file_path(state_dir: &Bound<'_, PyAny>) -> PyResult<PathBuf> {
    Ok(devrig::pid_file_path(&path_arg("state_dir", state_dir)?))
}

/// Creates ``state_dir`` if needed and writes this process's pid to
/// ``state_dir/devrig.pid`` (atomically).
#[pyfunction]
fn write_pid_file(state_dir: &Bound<'_, PyAny>) -> PyResult<()> {
    devrig::write_pid_file(&path_arg("state_dir", state_dir)?)
        .map_err(|e| os_err(e, Some(state_dir.clone().unbind())))
}

/// Removes ``state_dir/devrig.pid``; succeeds if it is already absent.
#[pyfunction]
fn remove_pid_file(state_dir: &Bound<'_, PyAny>) -> PyResult<()> {
    devrig::remove_pid_file(&path_arg("state_dir", state_dir)?)
        .map_err(|e| os_err(e, Some(state_dir.clone().unbind())))
}

/// After a crash: kills the process tree of every service recorded in
/// ``state_dir`` that is still the same process (pid + start time), and
/// returns how many were reaped. FileNotFoundError if ``state_dir`` does not
/// exist, NotADirectoryError if it is not a directory.
#[pyfunction]
#[pyo3(signature = (state_dir, grace=None), text_signature = "(state_dir, grace=5.0)")]
fn reap_orphans(
    py: Python<'_>,
    state_dir: &Bound<'_, PyAny>,
    grace: Option<&Bound<'_, PyAny>>,
) -> PyResult<u32> {
    let dir = path_arg("state_dir", state_dir)?;
    let grace = match grace {
        Some(g) if !g.is_none() => secs_arg("grace", g)?,
        _ => Duration::from_secs(5),
    };
    let filename = || Some(state_dir.clone().unbind());
    // The core says "does not exist" for anything but a directory: tell a
    // file (or a failing stat) apart here.
    match std::fs::metadata(&dir) {
        Ok(m) if !m.is_dir() => {
            return Err(PyOSError::new_err((
                ENOTDIR,
                format!("state directory {dir:?} is not a directory"),
                filename(),
            )))
        }
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(os_err(
                devrig::Error::Io(format!("cannot read state directory {dir:?}: {e}")),
                filename(),
            ))
        }
        _ => {}
    }
    py.detach(move || devrig::reap_orphans(&dir, grace))
        .map_err(|e| os_err(e, filename()))
}

#[pymodule]
fn _devrig(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("CORE_VERSION", devrig::VERSION)?;
    m.add("SpawnError", py.get_type::<SpawnError>())?;
    m.add("StateError", py.get_type::<StateError>())?;
    m.add_class::<RestartPolicy>()?;
    m.add_class::<LogLine>()?;
    m.add_class::<LogBatch>()?;
    m.add_class::<LogBatchIterator>()?;
    m.add_class::<Event>()?;
    m.add_class::<Outcome>()?;
    m.add_class::<Supervisor>()?;
    m.add_function(wrap_pyfunction!(kill_tree, m)?)?;
    m.add_function(wrap_pyfunction!(proc_start_time_ms, m)?)?;
    m.add_function(wrap_pyfunction!(same_process, m)?)?;
    m.add_function(wrap_pyfunction!(_pid_file_path, m)?)?;
    m.add_function(wrap_pyfunction!(write_pid_file, m)?)?;
    m.add_function(wrap_pyfunction!(remove_pid_file, m)?)?;
    m.add_function(wrap_pyfunction!(reap_orphans, m)?)?;
    m.add_function(wrap_pyfunction!(_close_exit_gate, m)?)?;
    static AT_FORK: std::sync::Once = std::sync::Once::new();
    AT_FORK.call_once(|| unsafe {
        // SAFETY: the handler only stores to an atomic.
        libc::pthread_atfork(None, None, Some(exit_gate_after_fork_child));
    });
    Ok(())
}
