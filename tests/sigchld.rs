//! libdevrig's threads keep SIGCHLD blocked, including the ones that spawn
//! restarts. The kernel hands a process-directed SIGCHLD to any thread that
//! does not block it: a library thread that left it open would take, and
//! discard, the SIGCHLD of the host's own children. A host that blocks
//! SIGCHLD on its threads and reads it through a signalfd (the sd-event
//! pattern) must get every one of them, before and after restarts ran.
//!
//! No test harness: the mask must be set before any thread exists.

use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::sync::{Arc, Mutex};

use devrig::{Config, Event, EventKind, RestartMode, RestartPolicy, Supervisor};

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

/// Runs a service that restarts three times; returns, for each restart's
/// STARTED event, whether the thread it was reported on (the one that
/// spawned that child) blocked SIGCHLD.
fn restart_three_times() -> Vec<bool> {
    let mut cfg = Config::new("sigchld", "exit 3").unwrap();
    cfg.policy = RestartPolicy {
        mode: RestartMode::Always,
        max_restarts: 3,
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
            s1.lock().unwrap().push(sigchld_blocked_here());
        }
    })))
    .unwrap();
    s.run().unwrap();
    let v = seen.lock().unwrap().clone();
    assert_eq!(v.len(), 3, "{v:?}");
    v
}

/// The pids of the SIGCHLDs pending on `sfd` (non-blocking), draining it.
fn drain(sfd: &OwnedFd) -> Vec<u32> {
    use std::os::fd::AsRawFd;
    let mut pids = Vec::new();
    loop {
        // SAFETY: reads one signalfd_siginfo into a zeroed local.
        let (n, info) = unsafe {
            let mut info: libc::signalfd_siginfo = std::mem::zeroed();
            let n = libc::read(
                sfd.as_raw_fd(),
                &mut info as *mut _ as *mut libc::c_void,
                std::mem::size_of::<libc::signalfd_siginfo>(),
            );
            (n, info)
        };
        if n <= 0 {
            return pids;
        }
        pids.push(info.ssi_pid);
    }
}

fn main() {
    // SAFETY: a local one-signal set; the mask of this, the only, thread;
    // signalfd returns a new descriptor, owned below.
    let sfd = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        assert_eq!(
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()),
            0
        );
        let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK);
        assert!(fd >= 0);
        OwnedFd::from_raw_fd(fd)
    };

    for blocked in restart_three_times() {
        assert!(
            blocked,
            "a library thread spawned a restart with SIGCHLD open"
        );
    }
    // The SIGCHLDs of the service's children were the host's to see too:
    // all sent by now (a child's is sent before it can be reaped).
    drain(&sfd);

    // Every host child's SIGCHLD reaches the signalfd: it is sent before
    // the child can be waited for, and no thread but the host's could take
    // it. (A library thread with SIGCHLD open took all of them when the
    // host was busy, as here: it reads only after the wait.)
    for _ in 0..50 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let st = child.wait().unwrap();
        assert_eq!((st.code(), st.signal()), (Some(0), None));
        let got = drain(&sfd);
        assert!(
            got.contains(&pid),
            "the SIGCHLD of host child {pid} never reached the host's signalfd ({got:?})"
        );
    }
    println!("sigchld: library threads block SIGCHLD; the host's signalfd got all 50");
}
