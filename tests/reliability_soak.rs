//! Load and soak (issue 6): many services restarting continuously while
//! flooding their logs with sequence-numbered lines. Checked: no line lost,
//! duplicated or reordered (per child and stream); descriptors, threads and
//! memory of the host do not grow over time (sampled from /proc/self); no
//! zombie; no survivor after stopping all.
//!
//! `cargo test --release` runs `soak_small` (50 services, a few seconds).
//! `make -C tests/soak soak` runs `soak_long` (500 services, minutes):
//! SOAK_SERVICES and SOAK_SECS set its size.

use std::collections::HashMap;
use std::fs;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use devrig::{
    Config, Event, EventKind, LogLine, OutcomeKind, RestartMode, RestartPolicy, Stream, Supervisor,
};

const LINES: u64 = 300;

#[derive(Default)]
struct Check {
    /// Next expected sequence number per (pid, stream).
    next: HashMap<(u32, u8), u64>,
    violations: Vec<String>,
}

#[derive(Default)]
struct Totals {
    lines: AtomicU64,
    spawns: AtomicU64,
    full_runs: AtomicU64,
    exits: AtomicU64,
}

fn status_field(name: &str) -> u64 {
    let s = fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn fd_count() -> u64 {
    fs::read_dir("/proc/self/fd").unwrap().count() as u64
}

/// (children, of which zombies) of this process, all threads.
fn children() -> (u64, u64) {
    let (mut n, mut z) = (0, 0);
    for t in fs::read_dir("/proc/self/task").unwrap().flatten() {
        let c = fs::read_to_string(t.path().join("children")).unwrap_or_default();
        for pid in c.split_whitespace() {
            n += 1;
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if stat
                .rsplit(')')
                .next()
                .and_then(|s| s.split_whitespace().next())
                == Some("Z")
            {
                z += 1;
            }
        }
    }
    (n, z)
}

fn marked_alive(mark: &str) -> usize {
    let needle = format!("RELI_SOAK={mark}");
    let mut n = 0;
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(env) = fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if env.split(|&b| b == 0).any(|v| v == needle.as_bytes()) {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let st = stat
                .rsplit(')')
                .next()
                .and_then(|s| s.split_whitespace().next());
            if !matches!(st, Some("Z" | "X") | None) {
                n += 1;
            }
        }
    }
    n
}

fn raise_nofile() {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid pointers.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        r.rlim_cur = r.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &r);
    }
}

#[derive(Clone, Copy, Debug)]
struct Sample {
    t: f64,
    fds: u64,
    threads: u64,
    rss_kb: u64,
    children: u64,
    zombies: u64,
    lines: u64,
    spawns: u64,
}

fn soak(services: usize, secs: u64) {
    raise_nofile();
    let mark = format!("{}-{}", std::process::id(), devrig::events::now_ms());
    let totals = Arc::new(Totals::default());
    let mut handles = vec![];
    // Warm up: the shared runtime's own descriptors and threads exist
    // before the baseline is taken.
    let mut warm = Config::new("warm", "true").unwrap();
    warm.policy.mode = RestartMode::Never;
    Supervisor::new(warm).unwrap().run().unwrap();
    let base_fds = fd_count();
    let base_threads = status_field("Threads:");
    // stdout: "O n" for every n; stderr: "E n" for every 10th n.
    let cmd = format!(
        "i=0; while [ $i -lt {LINES} ]; do echo \"O $i\"; \
         if [ $((i % 10)) -eq 0 ]; then echo \"E $((i / 10))\" >&2; fi; i=$((i+1)); done; exit 0"
    );
    for k in 0..services {
        let mut cfg = Config::new(&format!("soak{k}"), &cmd).unwrap();
        cfg.policy = RestartPolicy {
            mode: RestartMode::Always,
            max_restarts: u32::MAX,
            startup_max_restarts: u32::MAX,
            startup_grace_ms: 0,
            initial_delay_ms: 40,
            max_delay_ms: 80,
            reset_after_ms: u64::MAX,
            crash_loop_limit: 0,
            crash_loop_window_ms: 0,
        };
        cfg.stop_grace = Duration::from_millis(1000);
        cfg.env.push(("RELI_SOAK".into(), mark.clone().into()));
        let s = Supervisor::new(cfg).unwrap();
        let check = Arc::new(Mutex::new(Check::default()));
        let (c1, t1) = (check.clone(), totals.clone());
        s.on_log(Some(Box::new(move |lines: &[LogLine<'_>]| {
            let mut c = c1.lock().unwrap();
            t1.lines.fetch_add(lines.len() as u64, Ordering::Relaxed);
            for l in lines {
                let text = std::str::from_utf8(l.text()).unwrap_or("?");
                let (tag, n) = text.split_once(' ').unwrap_or(("?", "x"));
                let want_tag = if l.stream == Stream::Stdout { "O" } else { "E" };
                let Ok(n) = n.parse::<u64>() else {
                    c.violations
                        .push(format!("pid {}: bad line {text:?}", l.pid));
                    continue;
                };
                if tag != want_tag {
                    c.violations
                        .push(format!("pid {}: {text:?} on {:?}", l.pid, l.stream));
                }
                let key = (l.pid, l.stream as u8);
                let want = *c.next.get(&key).unwrap_or(&0);
                if n != want {
                    c.violations.push(format!(
                        "pid {} {:?}: got {n}, expected {want}",
                        l.pid, l.stream
                    ));
                }
                c.next.insert(key, n + 1);
            }
        })))
        .unwrap();
        let (c2, t2) = (check.clone(), totals.clone());
        s.on_event(Some(Box::new(move |e: &Event| match e.kind {
            EventKind::Started => {
                t2.spawns.fetch_add(1, Ordering::Relaxed);
            }
            EventKind::Exited => {
                t2.exits.fetch_add(1, Ordering::Relaxed);
                let mut c = c2.lock().unwrap();
                let out = c.next.remove(&(e.pid, Stream::Stdout as u8)).unwrap_or(0);
                let err = c.next.remove(&(e.pid, Stream::Stderr as u8)).unwrap_or(0);
                if e.exit_code == 0 && e.signal == 0 {
                    // Exited on its own: every line must have arrived.
                    if out != LINES || err != LINES / 10 {
                        c.violations.push(format!(
                            "pid {} exited 0 after {out} stdout and {err} stderr lines",
                            e.pid
                        ));
                    }
                    t2.full_runs.fetch_add(1, Ordering::Relaxed);
                }
            }
            _ => {}
        })))
        .unwrap();
        handles.push((s, check));
    }
    let t0 = Instant::now();
    for (s, _) in &handles {
        s.start().unwrap();
    }
    let mut samples: Vec<Sample> = vec![];
    let period = Duration::from_millis(if secs > 20 { 1000 } else { 250 });
    while t0.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(period);
        let (children, zombies) = children();
        samples.push(Sample {
            t: t0.elapsed().as_secs_f64(),
            fds: fd_count(),
            threads: status_field("Threads:"),
            rss_kb: status_field("VmRSS:"),
            children,
            zombies,
            lines: totals.lines.load(Ordering::Relaxed),
            spawns: totals.spawns.load(Ordering::Relaxed),
        });
    }
    let t_stop = Instant::now();
    for (s, _) in &handles {
        s.cancel().unwrap();
    }
    for (s, _) in &handles {
        s.wait(None).unwrap();
        assert_eq!(s.outcome().kind, OutcomeKind::Cancelled);
    }
    let stop_ms = t_stop.elapsed().as_millis();
    let mut violations = vec![];
    for (_, c) in &handles {
        violations.extend(c.lock().unwrap().violations.iter().cloned());
    }
    drop(handles);
    let end_fds = fd_count();
    let (end_children, _) = children();
    let survivors = marked_alive(&mark);

    // Figures.
    println!("SOAK services={services} secs={secs}");
    println!("SOAK   t(s)   fds threads  rss(kB) children zombies     lines  spawns");
    for s in &samples {
        println!(
            "SOAK {:6.1} {:5} {:7} {:8} {:8} {:7} {:9} {:7}",
            s.t, s.fds, s.threads, s.rss_kb, s.children, s.zombies, s.lines, s.spawns
        );
    }
    println!(
        "SOAK totals: {} lines, {} spawns, {} exits, {} complete runs checked line by line",
        totals.lines.load(Ordering::Relaxed),
        totals.spawns.load(Ordering::Relaxed),
        totals.exits.load(Ordering::Relaxed),
        totals.full_runs.load(Ordering::Relaxed)
    );
    println!(
        "SOAK stop: all {services} stopped in {stop_ms} ms; fds {base_fds} before, {end_fds} after; \
         children after: {end_children}; survivors: {survivors}; violations: {}",
        violations.len()
    );

    assert!(
        violations.is_empty(),
        "{} violations, first: {:?}",
        violations.len(),
        &violations[..violations.len().min(10)]
    );
    assert!(totals.full_runs.load(Ordering::Relaxed) >= services as u64);
    assert_eq!(end_fds, base_fds, "descriptors leaked");
    assert_eq!(end_children, 0, "children left (zombies?)");
    assert_eq!(survivors, 0, "processes survived the stop");
    // Threads: fixed, whatever the number of handles.
    let max_threads = samples.iter().map(|s| s.threads).max().unwrap();
    assert!(
        max_threads <= base_threads + devrig::WORKER_THREADS as u64 + 4,
        "threads grew to {max_threads} from {base_threads}"
    );
    // Descriptors: at most 3 per live child at any time.
    for s in &samples {
        assert!(
            s.fds <= base_fds + 8 + 3 * services as u64,
            "{} descriptors at {:.1} s",
            s.fds,
            s.t
        );
    }
    // Memory: the second half does not grow past the first half's peak
    // (with slack for allocator noise).
    if samples.len() >= 4 {
        let half = samples.len() / 2;
        let first = samples[..half].iter().map(|s| s.rss_kb).max().unwrap();
        let second = samples[half..].iter().map(|s| s.rss_kb).max().unwrap();
        assert!(
            second <= first + first / 4 + 8 * 1024,
            "RSS grew: {first} kB peak in the first half, {second} kB in the second"
        );
    }
}

#[test]
fn soak_small() {
    soak(50, 4);
}

#[test]
#[ignore = "long: run by make -C tests/soak soak"]
fn soak_long() {
    let services = std::env::var("SOAK_SERVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let secs = std::env::var("SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(120);
    soak(services, secs);
}
