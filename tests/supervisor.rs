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
    // One write, so one read: the line "block" and the partial line "hel",
    // held. The line's handler holds the reader up: it lets the child write
    // "lo", waits until it has, then stays 300 ms more, so that the held
    // part's 250 ms idle flush is due when the reader comes back with "lo"
    // waiting in the pipe. The held part must be joined with it, not cut.
    // No sleep in the child orders anything, and no grouping keeps "block"
    // back until the idle flush (multiline is off).
    let dir = std::env::temp_dir().join(format!("devrig-held-up-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (go, wrote) = (dir.join("go"), dir.join("wrote"));
    let cmd = format!(
        "printf 'block\\nhel'; while [ ! -e {} ]; do sleep 0.01; done; echo lo; : > {}",
        go.display(),
        wrote.display()
    );
    let mut cfg = Config::new("held", &cmd).unwrap();
    cfg.policy = fast(RestartMode::Never);
    cfg.multiline = false;
    let s = Supervisor::new(cfg).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let rest_written = Arc::new(Mutex::new(None));
    let (s2, r2) = (seen.clone(), rest_written.clone());
    s.on_log(Some(Box::new(move |lines: &[devrig::LogLine<'_>]| {
        for l in lines {
            let text = String::from_utf8_lossy(l.text()).into_owned();
            let block = text == "block";
            s2.lock().unwrap().push(text);
            if block {
                std::fs::write(&go, b"").unwrap();
                let deadline = Instant::now() + Duration::from_secs(10);
                while !wrote.exists() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(5));
                }
                *r2.lock().unwrap() = Some(wrote.exists());
                std::thread::sleep(Duration::from_millis(300));
            }
        }
    })))
    .unwrap();
    s.run().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(
        *rest_written.lock().unwrap(),
        Some(true),
        "the child did not write the rest while the reader was held up"
    );
    assert_eq!(*seen.lock().unwrap(), ["block", "hello"]);
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

// ---------------------------------------------------------------------------
// Log backpressure without blocking a worker: hold_logs / release_logs.

/// What a run reported, lines and events in the order they came.
#[derive(Clone, Debug, PartialEq)]
enum Item {
    Line(String),
    Ev(EventKind),
}

type Items = Arc<Mutex<Vec<Item>>>;

fn lines_of(items: &Items) -> Vec<String> {
    items
        .lock()
        .unwrap()
        .iter()
        .filter_map(|i| match i {
            Item::Line(l) => Some(l.clone()),
            Item::Ev(_) => None,
        })
        .collect()
}

fn has_event(items: &Items, kind: EventKind) -> bool {
    items.lock().unwrap().contains(&Item::Ev(kind))
}

/// A supervisor whose events are recorded in `items`, with a 300 ms stop
/// grace and no multiline grouping (which would keep each line until the
/// next one is seen).
fn held_sup(name: &str, cmd: &str) -> (Supervisor, Items) {
    let mut cfg = Config::new(name, cmd).unwrap();
    cfg.policy = fast(RestartMode::Never);
    cfg.stop_grace = Duration::from_millis(300);
    cfg.multiline = false;
    let s = Supervisor::new(cfg).unwrap();
    let items: Items = Arc::new(Mutex::new(Vec::new()));
    let i = items.clone();
    s.on_event(Some(Box::new(move |e: &Event| {
        i.lock().unwrap().push(Item::Ev(e.kind))
    })))
    .unwrap();
    (s, items)
}

/// Polls `cond` every 5 ms until it holds; panics after `limit`.
fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The bytes the process has written so far (/proc/PID/io), if readable.
fn written(pid: u32) -> Option<u64> {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix("wchar:"))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn held_logs_stop_the_reader_and_the_child_yet_a_stop_comes_on_time() {
    use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
    use EventKind::*;
    // `yes` ignoring SIGTERM floods stdout; the handler holds the logs
    // once lines flow and never releases them itself.
    let (s, items) = held_sup("held-flood", "trap '' TERM; exec yes 0123456789");
    let gate = s.log_gate();
    let count = Arc::new(AtomicU64::new(0));
    let pid = Arc::new(AtomicU32::new(0));
    let (c, p) = (count.clone(), pid.clone());
    let (tx, held_rx) = std::sync::mpsc::channel();
    let mut holding = false;
    s.on_log(Some(Box::new(move |lines: &[devrig::LogLine<'_>]| {
        assert!(lines.iter().all(|l| l.text() == b"0123456789"));
        p.store(lines[0].pid, Ordering::SeqCst);
        if c.fetch_add(lines.len() as u64, Ordering::SeqCst) > 10_000 && !holding {
            gate.hold().unwrap();
            holding = true;
            tx.send(()).unwrap();
        }
    })))
    .unwrap();
    s.start().unwrap();
    held_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("no hold");
    let pid = pid.load(Ordering::SeqCst);
    let at_hold = count.load(Ordering::SeqCst);
    // Nothing is delivered while held, and the child stops writing: its
    // pipe is full and nobody reads it.
    std::thread::sleep(Duration::from_millis(300));
    let w1 = written(pid);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        count.load(Ordering::SeqCst),
        at_hold,
        "lines came while held"
    );
    if let (Some(a), Some(b)) = (w1, written(pid)) {
        assert_eq!(a, b, "the child kept writing while its logs were held");
    }
    assert!(alive(pid));
    // A stop is not held up: SIGTERM is ignored, SIGKILL comes after the
    // 300 ms grace.
    let t = Instant::now();
    s.cancel().unwrap();
    wait_until(Duration::from_secs(5), "SIGKILL after the grace", || {
        !alive(pid)
    });
    let took = t.elapsed();
    assert!(took < Duration::from_secs(3), "stopped after {took:?}");
    // The run ends only once the logs are released: its EXITED follows
    // the child's last lines, still in the pipe.
    assert!(matches!(
        s.wait(Some(Duration::from_millis(200))),
        Err(devrig::Error::Timeout(_))
    ));
    assert!(!has_event(&items, Exited));
    assert_eq!(count.load(Ordering::SeqCst), at_hold);
    s.release_logs().unwrap();
    s.wait(Some(Duration::from_secs(20))).unwrap();
    assert!(
        count.load(Ordering::SeqCst) > at_hold,
        "the pipe's lines were not read after the release"
    );
    let kinds: Vec<_> = items.lock().unwrap().clone();
    assert_eq!(
        kinds,
        [Started, Running, Stopping, Exited, Stopped].map(Item::Ev)
    );
    assert_eq!(s.outcome().last_signal, 9);
}

#[test]
fn held_and_released_logs_lose_nothing_and_keep_their_order() {
    use EventKind::*;
    // Every batch is held. Some holds are released by another thread after
    // a while, some twice held, some released before the handler returns.
    const N: usize = 200_000;
    let (s, items) = held_sup("held-seq", &format!("seq 1 {N}; printf tail; exit 3"));
    let i2 = items.clone();
    s.on_event(Some(Box::new(move |e: &Event| {
        i2.lock().unwrap().push(Item::Ev(e.kind))
    })))
    .unwrap();
    let gate = s.log_gate();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let releaser = {
        let gate = s.log_gate();
        std::thread::spawn(move || {
            let mut n = 0u32;
            while rx.recv().is_ok() {
                n += 1;
                if n % 4 == 0 {
                    std::thread::sleep(Duration::from_millis(2));
                }
                gate.release().unwrap();
            }
        })
    };
    let i3 = items.clone();
    let mut calls = 0u64;
    s.on_log(Some(Box::new(move |lines: &[devrig::LogLine<'_>]| {
        let mut g = i3.lock().unwrap();
        g.extend(
            lines
                .iter()
                .map(|l| Item::Line(String::from_utf8_lossy(l.text()).into_owned())),
        );
        drop(g);
        calls += 1;
        gate.hold().unwrap();
        match calls % 3 {
            0 => gate.release().unwrap(), // before the handler returns
            1 => {
                gate.hold().unwrap(); // the same hold
                tx.send(()).unwrap();
            }
            _ => tx.send(()).unwrap(),
        }
    })))
    .unwrap();
    s.run().unwrap();
    drop(s);
    releaser.join().unwrap();
    let all = items.lock().unwrap().clone();
    let exited = all.iter().position(|i| *i == Item::Ev(Exited)).unwrap();
    let mut want: Vec<String> = (1..=N).map(|n| n.to_string()).collect();
    want.push("tail".into());
    assert_eq!(lines_of(&items), want);
    assert!(
        all[exited + 1..].iter().all(|i| matches!(i, Item::Ev(_))),
        "a line came after EXITED"
    );
}

/// Starts `s` with a line handler that records the lines in `items` and
/// holds the logs at the line "first"; returns the pid that wrote it, once
/// it has. A line handler, because a batch handler's hold takes effect
/// after its batch: a slow reader can get "first" and what follows it in
/// one read, whatever the child sleeps between them.
fn start_held_at_first(s: &Supervisor, items: &Items) -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    let gate = s.log_gate();
    let pid = Arc::new(AtomicU32::new(0));
    let (p, i2) = (pid.clone(), items.clone());
    s.on_log_lines(Some(Box::new(move |l: &devrig::LogLine<'_>| {
        let text = String::from_utf8_lossy(l.text()).into_owned();
        if text == "first" {
            p.store(l.pid, Ordering::SeqCst);
            gate.hold().unwrap();
        }
        i2.lock().unwrap().push(Item::Line(text));
    })))
    .unwrap();
    s.start().unwrap();
    wait_until(Duration::from_secs(10), "first line", || {
        pid.load(Ordering::SeqCst) != 0
    });
    pid.load(Ordering::SeqCst)
}

#[test]
fn a_child_that_exits_while_held_has_every_line_before_its_exited() {
    use EventKind::*;
    // 5000 lines fit in the pipe: the child writes them all and exits
    // while the first line's hold lasts.
    let (s, items) = held_sup(
        "held-exit",
        "echo first; sleep 0.1; seq 1 5000; printf tail; exit 3",
    );
    let pid = start_held_at_first(&s, &items);
    wait_until(Duration::from_secs(10), "the child's exit", || !alive(pid));
    // Exited, but its lines are in the pipe: no EXITED until the release.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(lines_of(&items), ["first"]);
    assert!(!has_event(&items, Exited));
    s.release_logs().unwrap();
    s.wait(Some(Duration::from_secs(20))).unwrap();
    let mut want = vec!["first".to_string()];
    want.extend((1..=5000).map(|n| n.to_string()));
    want.push("tail".into());
    assert_eq!(lines_of(&items), want);
    let all = items.lock().unwrap().clone();
    assert_eq!(all.last(), Some(&Item::Ev(Stopped)));
    assert_eq!(all[all.len() - 2], Item::Ev(Exited));
    assert_eq!(s.outcome().last_exit_code, 3);
}

#[test]
fn held_logs_hold_back_the_idle_flush_of_a_partial_line() {
    // Without the hold, "partial" would come 250 ms after it was written.
    let (s, items) = held_sup("held-partial", "echo a; printf partial; sleep 30");
    let gate = s.log_gate();
    let i2 = items.clone();
    s.on_log(Some(Box::new(move |lines: &[devrig::LogLine<'_>]| {
        for l in lines {
            let text = String::from_utf8_lossy(l.text()).into_owned();
            if text == "a" {
                gate.hold().unwrap();
            }
            i2.lock().unwrap().push(Item::Line(text));
        }
    })))
    .unwrap();
    s.start().unwrap();
    wait_until(Duration::from_secs(10), "line a", || {
        !lines_of(&items).is_empty()
    });
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(lines_of(&items), ["a"]);
    s.release_logs().unwrap();
    wait_until(Duration::from_secs(5), "the partial line", || {
        lines_of(&items).len() == 2
    });
    assert_eq!(lines_of(&items), ["a", "partial"]);
    s.cancel().unwrap();
    s.wait(Some(Duration::from_secs(10))).unwrap();
}

#[test]
fn a_hold_in_a_line_handler_stops_after_that_line() {
    use EventKind::*;
    let (s, items) = held_sup("held-line", "printf '1\\n2\\n3\\n4\\n5\\n'");
    let gate = s.log_gate();
    let i2 = items.clone();
    s.on_log_lines(Some(Box::new(move |l: &devrig::LogLine<'_>| {
        let text = String::from_utf8_lossy(l.text()).into_owned();
        if text == "2" {
            gate.hold().unwrap();
        }
        i2.lock().unwrap().push(Item::Line(text));
    })))
    .unwrap();
    s.start().unwrap();
    wait_until(Duration::from_secs(10), "line 2", || {
        lines_of(&items).len() >= 2
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(lines_of(&items), ["1", "2"]);
    assert!(!has_event(&items, Exited));
    s.release_logs().unwrap();
    s.wait(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(lines_of(&items), ["1", "2", "3", "4", "5"]);
    let all = items.lock().unwrap().clone();
    assert_eq!(&all[all.len() - 2..], [Item::Ev(Exited), Item::Ev(Stopped)]);
}

#[test]
fn holding_outside_the_own_log_handler_is_a_state_error() {
    let (s, items) = held_sup("hold-where", "echo x; sleep 30");
    let (other, _) = held_sup("hold-other", "echo y; sleep 30");
    let results = Arc::new(Mutex::new(Vec::new()));
    // From the event handler of the same supervisor.
    let (gate, r1, i1) = (s.log_gate(), results.clone(), items.clone());
    s.on_event(Some(Box::new(move |e: &Event| {
        i1.lock().unwrap().push(Item::Ev(e.kind));
        if e.kind == EventKind::Started {
            r1.lock().unwrap().push(("event", gate.hold().is_ok()));
        }
    })))
    .unwrap();
    // From another supervisor's log handler.
    let (gate, r2) = (s.log_gate(), results.clone());
    other
        .on_log(Some(Box::new(move |_: &[devrig::LogLine<'_>]| {
            r2.lock().unwrap().push(("other", gate.hold().is_ok()));
        })))
        .unwrap();
    // In its own log handler: allowed.
    let (gate, r3, i3) = (s.log_gate(), results.clone(), items.clone());
    s.on_log(Some(Box::new(move |_: &[devrig::LogLine<'_>]| {
        r3.lock().unwrap().push(("own", gate.hold().is_ok()));
        i3.lock().unwrap().push(Item::Line(String::new()));
    })))
    .unwrap();
    // From a thread of the host: before, during and after the run.
    let err = s.hold_logs().unwrap_err();
    assert!(matches!(err, devrig::Error::State(_)), "{err:?}");
    assert!(err.message().contains("log callback"), "{err}");
    s.release_logs().unwrap(); // not held: harmless
    s.start().unwrap();
    other.start().unwrap();
    wait_until(Duration::from_secs(10), "both log handlers", || {
        results.lock().unwrap().len() >= 3
    });
    assert!(matches!(s.hold_logs(), Err(devrig::Error::State(_))));
    let mut r = results.lock().unwrap().clone();
    r.sort();
    assert_eq!(r, [("event", false), ("other", false), ("own", true)]);
    s.release_logs().unwrap();
    s.release_logs().unwrap(); // twice: harmless
    for sup in [&s, &other] {
        sup.cancel().unwrap();
        sup.wait(Some(Duration::from_secs(10))).unwrap();
    }
    assert!(matches!(s.hold_logs(), Err(devrig::Error::State(_))));
}

#[test]
fn a_supervisor_dropped_or_freed_while_held_still_ends_its_run() {
    use std::sync::atomic::{AtomicU32, Ordering};
    for drop_it in [true, false] {
        let (s, _items) = held_sup("held-drop", "exec yes");
        let gate = s.log_gate();
        let pid = Arc::new(AtomicU32::new(0));
        let p = pid.clone();
        s.on_log(Some(Box::new(move |lines: &[devrig::LogLine<'_>]| {
            p.store(lines[0].pid, Ordering::SeqCst);
            let _ = gate.hold();
        })))
        .unwrap();
        s.start().unwrap();
        wait_until(Duration::from_secs(10), "a hold", || {
            pid.load(Ordering::SeqCst) != 0
        });
        let pid = pid.load(Ordering::SeqCst);
        if drop_it {
            // Detaches the handlers and stops the run in the background.
            drop(s);
        } else {
            // What devrig_free does before it waits.
            s.disable_log_holds();
            assert!(matches!(s.hold_logs(), Err(devrig::Error::State(_))));
            s.cancel().unwrap();
            s.wait(Some(Duration::from_secs(10))).unwrap();
        }
        // Reaped: not even a zombie is left.
        wait_until(Duration::from_secs(10), "the child reaped", || {
            !std::path::Path::new(&format!("/proc/{pid}")).exists()
        });
    }
}

#[test]
fn a_hold_longer_than_the_drain_time_loses_no_line_of_a_pipe_kept_open() {
    use EventKind::*;
    // The main process exits while held; a leftover keeps the pipes open,
    // so they never reach EOF. The hold lasts longer than both drain
    // periods (500 ms each): the lines in the pipe must still all come.
    let (s, items) = held_sup(
        "held-drain",
        "echo first; sleep 0.1; seq 1 3000; sleep 30 & exit 0",
    );
    let pid = start_held_at_first(&s, &items);
    wait_until(Duration::from_secs(10), "the main process's exit", || {
        !alive(pid)
    });
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(lines_of(&items), ["first"]);
    s.release_logs().unwrap();
    s.wait(Some(Duration::from_secs(20))).unwrap();
    let mut want = vec!["first".to_string()];
    want.extend((1..=3000).map(|n| n.to_string()));
    assert_eq!(lines_of(&items), want);
    let all = items.lock().unwrap().clone();
    assert_eq!(&all[all.len() - 2..], [Item::Ev(Exited), Item::Ev(Stopped)]);
}
