//! Where the SIGCHLD of a service's exit goes. A child spawned on one of
//! libdevrig's threads (every restart) sends it to that thread. With the
//! host's disposition at its default, that thread leaves it unblocked so
//! that the kernel drops it, rather than waking a host thread to discard
//! it; with a host handler installed, the handler keeps running on the
//! host's own threads only.
//!
//! A test binary of its own: it changes the process-wide disposition.

use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use devrig::{Config, Event, EventKind, RestartMode, RestartPolicy, Supervisor};

fn gettid() -> i32 {
    // SAFETY: gettid has no arguments.
    unsafe { libc::gettid() }
}

/// Whether the calling thread blocks SIGCHLD (/proc/thread-self/status).
fn sigchld_blocked_here() -> bool {
    let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("SigBlk:"))
        .unwrap()
        .trim();
    let mask = u64::from_str_radix(hex, 16).unwrap();
    mask & (1 << (libc::SIGCHLD - 1)) != 0
}

/// Runs a service that restarts twice and returns, for each restart's
/// STARTED event, the thread it was reported on (the one that spawned the
/// child) and whether that thread blocked SIGCHLD then.
fn restart_twice() -> Vec<(i32, bool)> {
    let mut cfg = Config::new("sigchld", "exit 3").unwrap();
    cfg.policy = RestartPolicy {
        mode: RestartMode::Always,
        max_restarts: 2,
        startup_grace_ms: 0,
        initial_delay_ms: 1,
        max_delay_ms: 1,
        crash_loop_limit: 0,
        ..RestartPolicy::default()
    };
    let s = Supervisor::new(cfg).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s1 = seen.clone();
    s.on_event(Some(Box::new(move |e: &Event| {
        if e.kind == EventKind::Started && e.restart_count > 0 {
            s1.lock().unwrap().push((gettid(), sigchld_blocked_here()));
        }
    })))
    .unwrap();
    s.run().unwrap();
    let v = seen.lock().unwrap().clone();
    assert_eq!(v.len(), 2, "{v:?}");
    v
}

static HANDLED: AtomicUsize = AtomicUsize::new(0);
static HANDLED_ON: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_sigchld(_: libc::c_int) {
    HANDLED.fetch_add(1, Ordering::SeqCst);
    HANDLED_ON.store(gettid(), Ordering::SeqCst);
}

#[test]
fn sigchld_of_a_restart_reaches_a_host_thread_only_when_the_host_handles_it() {
    // Default disposition: the spawning library thread lets the kernel drop it.
    for (tid, blocked) in restart_twice() {
        assert!(!blocked, "library thread {tid} blocks SIGCHLD");
        assert_ne!(tid, gettid());
    }

    // A host handler: blocked on library threads, delivered to the host's.
    // SAFETY: installs a handler that only touches atomics and calls gettid,
    // both async-signal-safe.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigchld as extern "C" fn(libc::c_int) as libc::sighandler_t;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        assert_eq!(libc::sigaction(libc::SIGCHLD, &sa, std::ptr::null_mut()), 0);
    }
    let library_threads: Vec<i32> = restart_twice()
        .into_iter()
        .map(|(tid, blocked)| {
            assert!(
                blocked,
                "library thread {tid} leaves SIGCHLD to its handler"
            );
            tid
        })
        .collect();
    // The last child's signal can still be on its way when run returns.
    let deadline = Instant::now() + Duration::from_secs(5);
    while HANDLED.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(
        HANDLED.load(Ordering::SeqCst) >= 1,
        "the host's handler never ran"
    );
    let on = HANDLED_ON.load(Ordering::SeqCst);
    assert!(
        !library_threads.contains(&on),
        "handler ran on library thread {on}"
    );

    // Back to the default: unblocked again at the next spawn.
    // SAFETY: restores the default disposition.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_DFL) };
    for (tid, blocked) in restart_twice() {
        assert!(!blocked, "library thread {tid} still blocks SIGCHLD");
    }
}
