//! End-to-end tests of the Rust API: real children, real signals.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use devrig::{Config, Event, EventKind, OutcomeKind, RestartMode, RestartPolicy, Supervisor};

#[derive(Default)]
struct Seen {
    events: Vec<Event>,
    lines: Vec<(devrig::Stream, String, u32)>,
}

fn sup(name: &str, cmd: &str, policy: RestartPolicy) -> (Supervisor, Arc<Mutex<Seen>>) {
    let mut cfg = Config::new(name, cmd).unwrap();
    cfg.policy = policy;
    cfg.stop_grace = Duration::from_millis(2000);
    let s = Supervisor::new(cfg).unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let s1 = seen.clone();
    s.on_event(Some(Box::new(move |e: &Event| {
        s1.lock().unwrap().events.push(e.clone())
    })))
    .unwrap();
    let s2 = seen.clone();
    s.on_log(Some(Box::new(move |lines: &[devrig::LogLine<'_>]| {
        let mut g = s2.lock().unwrap();
        for l in lines {
            g.lines.push((
                l.stream,
                String::from_utf8_lossy(l.text()).into_owned(),
                l.pid,
            ));
        }
    })))
    .unwrap();
    (s, seen)
}

fn kinds(seen: &Arc<Mutex<Seen>>) -> Vec<EventKind> {
    seen.lock().unwrap().events.iter().map(|e| e.kind).collect()
}

fn fast(mode: RestartMode) -> RestartPolicy {
    RestartPolicy {
        mode,
        startup_grace_ms: 0,
        initial_delay_ms: 10,
        max_delay_ms: 20,
        crash_loop_limit: 0,
        ..RestartPolicy::default()
    }
}

#[test]
fn completes_with_logs_before_exited() {
    use EventKind::*;
    let (s, seen) = sup(
        "ok",
        "echo hello; echo oops >&2; exit 0",
        fast(RestartMode::OnFailure),
    );
    s.run().unwrap();
    assert_eq!(kinds(&seen), [Started, Running, Exited, Stopped]);
    let g = seen.lock().unwrap();
    let mut texts: Vec<_> = g.lines.iter().map(|l| l.1.clone()).collect();
    texts.sort();
    assert_eq!(texts, ["hello", "oops"]);
    assert_eq!(s.outcome().kind, OutcomeKind::Completed);
}

#[test]
fn restart_budget_exhausted() {
    use EventKind::*;
    let p = RestartPolicy {
        max_restarts: 2,
        ..fast(RestartMode::OnFailure)
    };
    let (s, seen) = sup("fail", "exit 3", p);
    s.run().unwrap();
    assert_eq!(
        kinds(&seen),
        [
            Started, Running, Exited, Backoff, Started, Running, Exited, Backoff, Started, Running,
            Exited, Failed
        ]
    );
    let o = s.outcome();
    assert_eq!(o.kind, OutcomeKind::Failed);
    assert_eq!(o.restarts, 2);
    assert_eq!(o.last_exit_code, 3);
    assert!(o.message.contains("restart budget"), "{}", o.message);
}

#[test]
fn cancel_stops_quickly() {
    use EventKind::*;
    let (s, seen) = sup("sleepy", "sleep 30", fast(RestartMode::Always));
    s.start().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    s.cancel().unwrap();
    s.wait(None).unwrap();
    assert!(
        t.elapsed() < Duration::from_millis(1000),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(kinds(&seen), [Started, Running, Stopping, Exited, Stopped]);
    assert_eq!(s.outcome().kind, OutcomeKind::Cancelled);
}

#[test]
fn first_spawn_failure_is_an_error() {
    let (s, seen) = sup("nodir", "true", fast(RestartMode::Always));
    s.set_working_dir("/nonexistent/dir").unwrap();
    let err = s.run().unwrap_err();
    assert!(matches!(err, devrig::Error::Spawn(_)), "{err:?}");
    assert_eq!(kinds(&seen), [EventKind::SpawnFailed, EventKind::Failed]);
}

fn wait_for_line(seen: &Arc<Mutex<Seen>>, prefix: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(l) = seen
            .lock()
            .unwrap()
            .lines
            .iter()
            .find(|l| l.1.starts_with(prefix))
        {
            return l.1[prefix.len()..].to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no line starting with {prefix:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            let state = s.rsplit(')').next().unwrap().trim_start().chars().next();
            !matches!(state, Some('Z') | Some('X'))
        }
        Err(_) => false,
    }
}

#[test]
fn escaped_grandchild_is_stopped_with_the_service() {
    let cmd = "setsid sh -c 'echo gc=$$; exec sleep 60' & sleep 60";
    let (s, seen) = sup("escape", cmd, fast(RestartMode::Always));
    s.start().unwrap();
    let gc: u32 = wait_for_line(&seen, "gc=").parse().unwrap();
    assert!(alive(gc));
    s.cancel().unwrap();
    s.wait(Some(Duration::from_secs(10))).unwrap();
    assert!(!alive(gc), "escaped grandchild {gc} survived the stop");
}

#[test]
fn leftovers_are_stopped_before_the_restart() {
    use EventKind::*;
    let p = RestartPolicy {
        max_restarts: 1,
        ..fast(RestartMode::OnFailure)
    };
    let (s, seen) = sup("leftover", "sleep 60 & echo bg=$!; exit 1", p);
    let bg_alive_at_restart = Arc::new(Mutex::new(Vec::new()));
    let (b, seen2) = (bg_alive_at_restart.clone(), seen.clone());
    // Observe liveness of the first run's background job at the second STARTED.
    s.on_event(Some(Box::new(move |e: &Event| {
        let mut g = seen2.lock().unwrap();
        if e.kind == Started {
            if let Some(l) = g.lines.iter().find(|l| l.1.starts_with("bg=")) {
                let pid: u32 = l.1[3..].parse().unwrap();
                b.lock().unwrap().push(alive(pid));
            }
        }
        g.events.push(e.clone());
    })))
    .unwrap();
    s.run().unwrap();
    assert_eq!(*bg_alive_at_restart.lock().unwrap(), [false]);
    assert_eq!(
        kinds(&seen),
        [Started, Running, Exited, Backoff, Started, Running, Exited, Failed]
    );
}

#[test]
fn child_ignoring_sigterm_is_killed_after_the_grace() {
    use EventKind::*;
    let mut cfg = Config::new("stubborn", "trap '' TERM; echo ready; sleep 60").unwrap();
    cfg.stop_grace = Duration::from_millis(300);
    let s = Supervisor::new(cfg).unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let (s1, s2) = (seen.clone(), seen.clone());
    s.on_event(Some(Box::new(move |e: &Event| {
        s1.lock().unwrap().events.push(e.clone())
    })))
    .unwrap();
    s.on_log(Some(Box::new(move |ls: &[devrig::LogLine<'_>]| {
        for l in ls {
            s2.lock().unwrap().lines.push((
                l.stream,
                String::from_utf8_lossy(l.text()).into_owned(),
                l.pid,
            ));
        }
    })))
    .unwrap();
    s.start().unwrap();
    wait_for_line(&seen, "ready");
    let t = Instant::now();
    s.cancel().unwrap();
    s.wait(None).unwrap();
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(5),
        "{took:?}"
    );
    let ev = seen
        .lock()
        .unwrap()
        .events
        .iter()
        .find(|e| e.kind == Exited)
        .cloned()
        .unwrap();
    assert_eq!((ev.exit_code, ev.signal), (-1, 9));
    assert_eq!(kinds(&seen), [Started, Stopping, Exited, Stopped]);
}

#[test]
fn maximal_policy_values_work_and_cancel_during_backoff_is_immediate() {
    use EventKind::*;
    let p = RestartPolicy {
        mode: RestartMode::Always,
        max_restarts: u32::MAX,
        startup_max_restarts: u32::MAX,
        startup_grace_ms: u64::MAX,
        initial_delay_ms: u64::MAX,
        max_delay_ms: u64::MAX,
        reset_after_ms: u64::MAX,
        crash_loop_limit: u32::MAX,
        crash_loop_window_ms: u64::MAX,
    };
    let (s, seen) = sup("maximal", "exit 0", p);
    let backoff = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
    let (b, seen2) = (backoff.clone(), seen.clone());
    s.on_event(Some(Box::new(move |e: &Event| {
        seen2.lock().unwrap().events.push(e.clone());
        if e.kind == Backoff {
            *b.0.lock().unwrap() = true;
            b.1.notify_all();
        }
    })))
    .unwrap();
    s.start().unwrap();
    let mut g = backoff.0.lock().unwrap();
    while !*g {
        g = backoff
            .1
            .wait_timeout(g, Duration::from_secs(10))
            .unwrap()
            .0;
    }
    drop(g);
    let t = Instant::now();
    s.cancel().unwrap();
    s.wait(Some(Duration::from_secs(5))).unwrap();
    assert!(t.elapsed() < Duration::from_secs(1));
    assert_eq!(kinds(&seen), [Started, Exited, Backoff, Stopping, Stopped]);
    let o = s.outcome();
    assert_eq!((o.kind, o.restarts), (OutcomeKind::Cancelled, 0));
}

/// A service whose stdout floods (`yes`; the handler is slower than it, so
/// the pipe never runs dry) while `then` writes to stderr, not started yet;
/// its stderr lines, with when each was delivered; its count of stdout lines.
fn flood_with_stderr(
    name: &str,
    then: &str,
) -> (
    Supervisor,
    std::sync::mpsc::Receiver<(String, Instant)>,
    Arc<std::sync::atomic::AtomicU64>,
) {
    use std::sync::atomic::{AtomicU64, Ordering};
    let mut cfg = Config::new(name, &format!("yes 0123456789abcdef & {then}; wait")).unwrap();
    cfg.policy = fast(RestartMode::Never);
    let s = Supervisor::new(cfg).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let tx = Mutex::new(tx);
    let flooded = Arc::new(AtomicU64::new(0));
    let f = flooded.clone();
    s.on_log(Some(Box::new(move |lines: &[devrig::LogLine<'_>]| {
        for l in lines {
            if l.stream == devrig::Stream::Stderr {
                let text = String::from_utf8_lossy(l.text()).into_owned();
                tx.lock().unwrap().send((text, Instant::now())).unwrap();
            } else {
                f.fetch_add(1, Ordering::Relaxed);
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    })))
    .unwrap();
    (s, rx, flooded)
}

#[test]
fn a_flooding_stdout_starves_neither_stderr_nor_a_stop() {
    use std::sync::atomic::Ordering;
    // stdout is readable without a pause from the start; the stderr line
    // comes once the flood is under way, and the stop lands in the middle
    // of it.
    let (s, rx, flooded) = flood_with_stderr("flood", "sleep 0.2; echo on-stderr >&2");
    s.start().unwrap();
    let (line, _) = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the stderr line never came while stdout flooded");
    assert_eq!(line, "on-stderr");
    let before = flooded.load(Ordering::Relaxed);
    assert!(before > 0, "stdout was not flowing");
    s.cancel().unwrap();
    s.wait(Some(Duration::from_secs(20))).unwrap();
    assert!(s.is_done(), "the stop was starved by the flood");
    assert_eq!(s.outcome().kind, OutcomeKind::Cancelled);
    assert!(flooded.load(Ordering::Relaxed) > before);
}

#[test]
fn a_partial_line_is_flushed_on_time_while_the_other_stream_floods() {
    use std::sync::atomic::Ordering;
    // stdout never runs dry, so the idle timer of stderr's partial line is
    // never armed: it must still be seen to be due at one of the many turns
    // that find stdout ready.
    let (s, rx, flooded) =
        flood_with_stderr("partial-under-flood", "sleep 0.2; printf partial >&2");
    let t0 = Instant::now();
    s.start().unwrap();
    let (line, at) = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the partial stderr line was never flushed while stdout flooded");
    assert_eq!(line, "partial");
    // 0.2 s before the printf, 0.25 s of idle time: generous bounds.
    assert!(at - t0 >= Duration::from_millis(400), "{:?}", at - t0);
    assert!(at - t0 < Duration::from_secs(10), "{:?}", at - t0);
    let before = flooded.load(Ordering::Relaxed);
    assert!(before > 0, "stdout was not flowing");
    s.cancel().unwrap();
    s.wait(Some(Duration::from_secs(20))).unwrap();
    assert!(
        flooded.load(Ordering::Relaxed) > before,
        "the flood stopped"
    );
}

#[test]
fn a_reader_held_up_past_the_idle_flush_does_not_cut_a_line_whose_rest_is_waiting() {
    // "hel" is read and held as a partial line; the stderr line's handler
    // then holds the reader for 600 ms, longer than the 250 ms idle flush,
    // while "lo" arrives. The held part must be joined with it, not cut.
    let mut cfg = Config::new(
        "held",
        "printf hel; sleep 0.1; echo block >&2; sleep 0.1; echo lo",
    )
    .unwrap();
    cfg.policy = fast(RestartMode::Never);
    let s = Supervisor::new(cfg).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    s.on_log(Some(Box::new(move |lines: &[devrig::LogLine<'_>]| {
        for l in lines {
            let text = String::from_utf8_lossy(l.text()).into_owned();
            let block = text == "block";
            s2.lock().unwrap().push(text);
            if block {
                std::thread::sleep(Duration::from_millis(600));
            }
        }
    })))
    .unwrap();
    s.run().unwrap();
    // The two streams are not ordered against each other.
    let mut seen = seen.lock().unwrap().clone();
    seen.sort();
    assert_eq!(seen, ["block", "hello"]);
}

#[test]
fn a_stranger_that_keeps_a_pipe_open_and_writing_does_not_hold_up_the_run() {
    use std::sync::atomic::{AtomicU64, Ordering};
    // The writer leaves the session, drops the environment (so no sweep can
    // tell it descends from the service) and writes to the service's stdout
    // for good, faster than it is read. The run must still end, after the
    // bounded drain.
    let dir = std::env::temp_dir().join(format!("devrig-stranger-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pidfile = dir.join("pid");
    let cmd = format!(
        "setsid env -i /bin/sh -c 'echo $$ > {}; exec yes held' & sleep 0.3; exit 3",
        pidfile.display()
    );
    let mut cfg = Config::new("stranger", &cmd).unwrap();
    cfg.policy = fast(RestartMode::Never);
    let s = Supervisor::new(cfg).unwrap();
    let lines = Arc::new(AtomicU64::new(0));
    let l = lines.clone();
    s.on_log(Some(Box::new(move |batch: &[devrig::LogLine<'_>]| {
        l.fetch_add(batch.len() as u64, Ordering::Relaxed);
        // Slower than `yes`: the pipe is never empty.
        std::thread::sleep(Duration::from_millis(1));
    })))
    .unwrap();
    let t = Instant::now();
    s.start().unwrap();
    let r = s.wait(Some(Duration::from_secs(30)));
    let took = t.elapsed();
    let stranger: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SAFETY-free cleanup: the stranger is ours to kill.
    let _ = std::process::Command::new("kill")
        .args(["-9", &stranger.to_string()])
        .status();
    std::fs::remove_dir_all(&dir).unwrap();
    r.unwrap();
    assert!(
        s.is_done(),
        "the run waited on the stranger's pipe for {took:?}"
    );
    assert_eq!(s.outcome().last_exit_code, 3);
    assert!(lines.load(Ordering::Relaxed) > 0);
}
