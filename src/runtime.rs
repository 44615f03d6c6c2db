//! The one internal tokio runtime shared by every handle, and the
//! async-signal-safe wake-up path used by `cancel`.
//!
//! The runtime has a fixed number of worker threads whatever the number of
//! handles. Its threads block every asynchronous signal (SIGPIPE included),
//! so signals meant for the host are delivered to the host's threads and a
//! write to a closed pipe never kills it. No tokio feature that installs a
//! signal handler is enabled.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::unix::AsyncFd;
use tokio::sync::Notify;

/// The most worker threads the shared runtime uses.
pub const WORKER_THREADS: usize = 4;

/// Worker threads of the shared runtime: one per CPU, at least 2 (so that
/// a callback that blocks for a while does not stall every service) and at
/// most `WORKER_THREADS` (supervising is mostly waiting; more threads only
/// cost memory and, in hosts like Go, count against their own thread
/// budget).
pub fn worker_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(WORKER_THREADS, |n| n.get())
        .clamp(2, WORKER_THREADS)
}

/// A stop request that can be raised from anywhere, a signal handler
/// included, and awaited by the run it belongs to.
#[derive(Debug, Default)]
pub(crate) struct CancelToken {
    requested: AtomicBool,
    notify: Notify,
    /// The process group of the run's current child, 0 when there is none.
    /// `request` sends it SIGTERM at once (kill is async-signal-safe), so
    /// the child starts dying while the run task is still being woken.
    live_group: AtomicI32,
    /// Requests inside their kill(); the driver waits for none before it
    /// reaps the child, after which the group id may be reused.
    signalling: AtomicU32,
    /// Set while `clear_live_group` sleeps on `signalling`: the request
    /// then wakes it when it leaves.
    waiter: AtomicBool,
    /// Set once the dispatcher has passed the request on: the flag stays
    /// set, so the run never needs it again, and 500 stops landing together
    /// would otherwise have each wake-up notify every run stopped so far.
    dispatched: AtomicBool,
}

impl CancelToken {
    pub fn is_requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }

    /// Async-signal-safe: atomics, kill(2) and write(2).
    pub fn request(&self) {
        self.requested.store(true, Ordering::SeqCst);
        self.signalling.fetch_add(1, Ordering::SeqCst);
        let group = self.live_group.load(Ordering::SeqCst);
        if group > 1 {
            // SAFETY: plain integers; group > 1, so never kill(0) or kill(-1).
            // The group is reserved: its leader is not reaped before
            // `clear_live_group` has seen this request leave.
            unsafe { libc::kill(-group, libc::SIGTERM) };
        }
        self.signalling.fetch_sub(1, Ordering::SeqCst);
        if self.waiter.load(Ordering::SeqCst) {
            futex_wake(&self.signalling);
        }
        let rt = CURRENT.load(Ordering::Acquire);
        if !rt.is_null() {
            // SAFETY: runtimes are leaked, never freed, so a non-null pointer
            // stays valid for the life of the process.
            let rt = unsafe { &*rt };
            // After fork() the eventfd is shared with the parent: leave it be.
            // SAFETY: getpid is async-signal-safe and has no arguments.
            if rt.pid == unsafe { libc::getpid() } as u32 {
                rt.wake();
            }
        }
    }

    /// Names the process group that a stop request signals directly.
    pub fn set_live_group(&self, pgid: i32) {
        self.live_group.store(pgid, Ordering::SeqCst);
    }

    /// To be called before the child is reaped: no request signals its
    /// group once this returns (SeqCst on both sides: either the request
    /// saw 0, or this sees the request and waits for it to finish).
    ///
    /// The request is usually a few instructions from done, but its thread
    /// can be preempted right after its kill(): by the very child it woke,
    /// which exits on that CPU. Spinning then burnt the other CPU for the
    /// whole exit (on 2 CPUs, 4% of all CPU time while stopping 500
    /// services), so after a short spin this sleeps until the request
    /// leaves.
    pub fn clear_live_group(&self) {
        self.live_group.store(0, Ordering::SeqCst);
        let mut spins = 0;
        loop {
            let n = self.signalling.load(Ordering::SeqCst);
            if n == 0 {
                break;
            }
            if spins < 100 {
                spins += 1;
                std::hint::spin_loop();
                continue;
            }
            // SeqCst: either the request's load of `waiter` sees this
            // store and wakes us, or its decrement came first and the
            // futex, which compares `signalling` with `n`, does not sleep.
            self.waiter.store(true, Ordering::SeqCst);
            futex_wait(&self.signalling, n);
        }
        self.waiter.store(false, Ordering::SeqCst);
    }

    /// Resolves once a stop was requested.
    pub async fn requested(&self) {
        loop {
            let notified = self.notify.notified();
            if self.is_requested() {
                return;
            }
            notified.await;
        }
    }
}

/// Sleeps while `word` holds `expected` (at most 10 ms: the wake-up is the
/// real exit, the timeout only a guard).
fn futex_wait(word: &AtomicU32, expected: u32) {
    let timeout = libc::timespec {
        tv_sec: 0,
        tv_nsec: 10_000_000,
    };
    // SAFETY: `word` is a live, aligned u32 for the whole call and the
    // timeout a valid timespec; FUTEX_WAIT only reads them. It returns at
    // once (EAGAIN) if the value changed, and EINTR or a timeout are
    // handled by the caller's loop.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            &timeout as *const libc::timespec,
        )
    };
}

/// Wakes every thread in `futex_wait` on `word`. Async-signal-safe: one
/// system call.
fn futex_wake(word: &AtomicU32) {
    // SAFETY: FUTEX_WAKE uses the address only as a key.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            i32::MAX,
        )
    };
}

pub(crate) struct Runtime {
    pub rt: tokio::runtime::Runtime,
    pid: u32,
    /// Written by `CancelToken::request`; the dispatcher task wakes the runs
    /// whose token is set. An eventfd write is async-signal-safe, a
    /// `Notify` is not.
    wake_fd: OwnedFd,
    runs: Mutex<HashMap<u64, Arc<CancelToken>>>,
    next_id: AtomicU64,
}

static CURRENT: AtomicPtr<Runtime> = AtomicPtr::new(std::ptr::null_mut());

/// The runtime of this process. After a `fork()` the child gets a fresh one:
/// the parent's threads do not exist there, and the parent's runtime is
/// left untouched (never dropped, so no epoll registration of the parent is
/// removed from the child).
pub(crate) fn get() -> &'static Runtime {
    let me = std::process::id();
    loop {
        let cur = CURRENT.load(Ordering::Acquire);
        if !cur.is_null() {
            // SAFETY: see `CancelToken::request`: runtimes are never freed.
            let r = unsafe { &*cur };
            if r.pid == me {
                return r;
            }
        }
        let fresh = Box::into_raw(Box::new(Runtime::build()));
        match CURRENT.compare_exchange(cur, fresh, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => {
                // SAFETY: just published; never freed.
                let r = unsafe { &*fresh };
                r.start_dispatcher();
                return r;
            }
            Err(_) => {
                // Another thread won; ours never ran anything.
                // SAFETY: `fresh` came from Box::into_raw and was not shared.
                let lost = unsafe { Box::from_raw(fresh) };
                lost.rt_shutdown();
            }
        }
    }
}

/// Registers a descriptor with the runtime's reactor for readability.
/// On failure the descriptor is handed back with the error.
pub(crate) fn watch_readable(
    fd: OwnedFd,
) -> std::result::Result<AsyncFd<OwnedFd>, (std::io::Error, OwnedFd)> {
    // SAFETY: an OwnedFd stays open, and its as_raw_fd() returns the same
    // descriptor, for as long as it is owned, which is the AsyncFd's life.
    unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }.map_err(|e| {
        let (fd, err) = e.into_parts();
        (err, fd)
    })
}

/// True on the runtime's own threads (where callbacks run).
pub(crate) fn on_library_thread() -> bool {
    LIBRARY_THREAD.with(|f| f.get())
}

thread_local! {
    static LIBRARY_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Blocks, on the calling thread, every signal but the synchronous faults,
/// as libdevrig's own threads do: so that a thread a binding adds (the
/// Python binding's stop watchdog) takes none of the host's signals.
pub fn block_async_signals() {
    // SAFETY: sigset manipulation on a local set, then pthread_sigmask on
    // the calling (library) thread only.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        // Synchronous faults must stay deliverable.
        for sig in [
            libc::SIGSEGV,
            libc::SIGBUS,
            libc::SIGFPE,
            libc::SIGILL,
            libc::SIGTRAP,
            libc::SIGSYS,
        ] {
            libc::sigdelset(&mut set, sig);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

impl Runtime {
    fn build() -> Runtime {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(worker_threads())
            .max_blocking_threads(1)
            .thread_name("devrig")
            .enable_io()
            .enable_time()
            .on_thread_start(|| {
                block_async_signals();
                LIBRARY_THREAD.with(|f| f.set(true));
            })
            .build()
            .expect("libdevrig: cannot start its runtime");
        // SAFETY: eventfd takes integers and returns a new descriptor.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        assert!(fd >= 0, "libdevrig: eventfd failed");
        Runtime {
            rt,
            pid: std::process::id(),
            // SAFETY: a fresh descriptor owned by nobody else.
            wake_fd: unsafe { OwnedFd::from_raw_fd(fd) },
            runs: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
        }
    }

    fn rt_shutdown(self) {
        self.rt.shutdown_background();
    }

    fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a local to our eventfd; write(2) is
        // async-signal-safe. A full counter (EAGAIN) still leaves it readable.
        unsafe {
            libc::write(
                self.wake_fd.as_raw_fd(),
                &one as *const u64 as *const libc::c_void,
                8,
            );
        }
    }

    fn start_dispatcher(&'static self) {
        self.rt.spawn(async move {
            let fd = match self
                .wake_fd
                .try_clone()
                .and_then(|fd| watch_readable(fd).map_err(|(e, _)| e))
            {
                Ok(fd) => fd,
                Err(e) => panic!("libdevrig: cannot watch its wake-up eventfd: {e}"),
            };
            loop {
                let Ok(mut guard) = fd.readable().await else {
                    return;
                };
                let mut buf = [0u8; 8];
                // SAFETY: reads at most 8 bytes into a local buffer.
                unsafe {
                    libc::read(
                        fd.get_ref().as_raw_fd(),
                        buf.as_mut_ptr() as *mut libc::c_void,
                        8,
                    );
                }
                guard.clear_ready();
                let tokens: Vec<Arc<CancelToken>> = {
                    let runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
                    runs.values()
                        .filter(|t| t.is_requested() && !t.dispatched.swap(true, Ordering::SeqCst))
                        .cloned()
                        .collect()
                };
                for t in tokens {
                    t.notify.notify_waiters();
                    t.notify.notify_one();
                }
            }
        });
    }

    /// Makes `token` reachable by the dispatcher for the duration of a run.
    pub fn register(&self, token: Arc<CancelToken>) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.runs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, token);
        id
    }

    pub fn unregister(&self, id: u64) {
        self.runs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }
}
