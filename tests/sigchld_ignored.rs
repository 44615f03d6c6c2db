//! A host that ignores SIGCHLD has the kernel reap its children the moment
//! they exit. libdevrig cannot learn their exit status then, but it must
//! still supervise them: a child that exits before libdevrig has opened its
//! pidfd (an `exit 3` often does) is a run whose status is unknown, not a
//! failed spawn.
//!
//! No test harness: the disposition is process-wide, and no other test may
//! run under it.

use std::sync::{Arc, Mutex};

use devrig::{Config, Event, EventKind, OutcomeKind, RestartMode, RestartPolicy, Supervisor};

const RESTARTS: u32 = 40;

fn main() {
    // SAFETY: sets one signal's disposition before any thread exists.
    unsafe {
        assert_ne!(libc::signal(libc::SIGCHLD, libc::SIG_IGN), libc::SIG_ERR);
    }
    let mut cfg = Config::new("ignchld", "exit 3").unwrap();
    cfg.policy = RestartPolicy {
        mode: RestartMode::Always,
        max_restarts: RESTARTS,
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
        s1.lock().unwrap().push((e.kind, e.message.clone()));
    })))
    .unwrap();
    // The budget runs out: the run fails, but only for that reason.
    let _ = s.run();
    let seen = seen.lock().unwrap().clone();
    let count = |k: EventKind| seen.iter().filter(|e| e.0 == k).count();
    assert_eq!(count(EventKind::SpawnFailed), 0, "{seen:?}");
    assert_eq!(count(EventKind::Started), RESTARTS as usize + 1, "{seen:?}");
    assert_eq!(count(EventKind::Exited), RESTARTS as usize + 1, "{seen:?}");
    for (kind, message) in &seen {
        if *kind == EventKind::Exited {
            assert!(message.contains("exit status unknown"), "{message}");
        }
    }
    assert_eq!(seen.last().unwrap().0, EventKind::Failed, "{seen:?}");
    let o = s.outcome();
    assert_eq!(o.kind, OutcomeKind::Failed);
    assert_eq!(o.restarts, RESTARTS);
    println!(
        "sigchld_ignored: {} spawns, every exit reported (status unknown), no failed spawn",
        RESTARTS + 1
    );
}
