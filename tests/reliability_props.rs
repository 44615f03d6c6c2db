//! Property tests of the pure core (issue 6): the line splitter, the
//! multiline grouper and the long-line cutter over arbitrary byte streams cut
//! at arbitrary read boundaries, and the restart decision over random exit
//! histories and clocks.
//!
//! `cargo test --release` runs a modest number of cases per property (a few
//! seconds in all); `make fuzz` (tests/fuzz/Makefile) runs the same
//! properties with PROPTEST_CASES raised by orders of magnitude.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use devrig::logs::{EntrySink, LineAssembler, LineSplitter, PieceKind};
use devrig::policy::{
    decide, Decision, ExitStatus, GiveUp, Jitter, RestartMode, RestartPolicy, RestartState, RunEnd,
};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::Config as PtConfig;

// ---------------------------------------------------------------------------
// A per-thread count of live heap bytes, to bound what the splitter and the
// grouper hold between reads.

struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
}

fn adjust(d: isize) {
    let _ = LIVE.try_with(|c| c.set(c.get() + d));
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = System.alloc(l);
        if !p.is_null() {
            adjust(l.size() as isize);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        adjust(-(l.size() as isize));
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let q = System.realloc(p, l, new);
        if !q.is_null() {
            adjust(new as isize - l.size() as isize);
        }
        q
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> isize {
    LIVE.with(|c| c.get())
}

// ---------------------------------------------------------------------------
// Configuration: PROPTEST_CASES overrides every default below.

fn cases(default: u32) -> PtConfig {
    cases_div(default, 1)
}

/// Like `cases`, with PROPTEST_CASES divided by `div` (for costly properties).
fn cases_div(default: u32, div: u32) -> PtConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .map_or(default, |n| (n / div).max(1));
    PtConfig {
        cases,
        failure_persistence: None,
        max_shrink_iters: 20_000,
        ..PtConfig::default()
    }
}

// ---------------------------------------------------------------------------
// Inputs.

/// Bytes biased toward what matters: newlines, carriage returns, indentation,
/// UTF-8 lead and continuation bytes.
fn byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        3 => Just(b'\n'),
        1 => Just(b'\r'),
        2 => Just(b' '),
        1 => Just(b'\t'),
        8 => b'a'..=b'z',
        1 => Just(0xC3u8),
        1 => Just(0xE2u8),
        1 => Just(0xF0u8),
        2 => 0x80u8..=0xBF,
        1 => any::<u8>(),
    ]
}

/// Either bytes at random or lines of random lengths (so that lines longer
/// than max, and exactly max, max + 1, occur often).
fn stream() -> impl Strategy<Value = Vec<u8>> {
    let raw = prop::collection::vec(byte(), 0..1200);
    let line = (
        prop::collection::vec(
            byte().prop_map(|b| if b == b'\n' { b'n' } else { b }),
            0..160,
        ),
        prop_oneof![
            Just(&b"\n"[..]),
            Just(&b"\r\n"[..]),
            Just(&b""[..]),
            Just(&b"\r"[..])
        ],
        prop::option::of(prop_oneof![Just(b' '), Just(b'\t')]),
    )
        .prop_map(|(mut body, end, indent)| {
            if let Some(i) = indent {
                body.insert(0, i);
            }
            body.extend_from_slice(end);
            body
        });
    let lines = prop::collection::vec(line, 0..30).prop_map(|v| v.concat());
    prop_oneof![raw, lines]
}

fn max_line() -> impl Strategy<Value = usize> {
    prop_oneof![4 => 1usize..=12, 3 => 13usize..=80, 1 => 81usize..=400]
}

/// Read boundaries (sorted, deduplicated offsets into the input) and the
/// offsets at which the idle timer fires.
#[derive(Clone, Debug)]
struct Cuts {
    reads: Vec<Index>,
    idles: Vec<Index>,
}

fn cuts() -> impl Strategy<Value = Cuts> {
    (
        prop::collection::vec(any::<Index>(), 0..40),
        prop_oneof![3 => Just(vec![]), 1 => prop::collection::vec(any::<Index>(), 0..6)],
    )
        .prop_map(|(reads, idles)| Cuts { reads, idles })
}

fn offsets(idx: &[Index], len: usize) -> Vec<usize> {
    let mut v: Vec<usize> = idx.iter().map(|i| i.index(len + 1)).collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// The input as a sequence of reads, each possibly followed by an idle flush.
fn schedule(input: &[u8], c: &Cuts) -> Vec<(std::ops::Range<usize>, bool)> {
    let reads = offsets(&c.reads, input.len());
    let idles = offsets(&c.idles, input.len());
    let mut points: Vec<usize> = reads.iter().chain(&idles).copied().collect();
    points.push(input.len());
    points.sort_unstable();
    points.dedup();
    let mut out = vec![];
    let mut at = 0;
    for p in points {
        out.push((at..p, idles.binary_search(&p).is_ok()));
        at = p;
    }
    out
}

// ---------------------------------------------------------------------------
// The model of API.md "Log lines", multiline off: one line per `\n`, a
// trailing `\r` dropped, a non-empty unterminated rest delivered at a flush
// (the idle timer or the end of the stream).

fn model_lines(input: &[u8], sched: &[(std::ops::Range<usize>, bool)]) -> Vec<Vec<u8>> {
    let mut lines = vec![];
    let mut cur: Vec<u8> = vec![];
    let finish = |cur: &mut Vec<u8>, lines: &mut Vec<Vec<u8>>| {
        if cur.last() == Some(&b'\r') {
            cur.pop();
        }
        lines.push(std::mem::take(cur));
    };
    for (range, idle) in sched {
        for &b in &input[range.clone()] {
            if b == b'\n' {
                finish(&mut cur, &mut lines);
            } else {
                cur.push(b);
            }
        }
        if *idle && !cur.is_empty() {
            finish(&mut cur, &mut lines);
        }
    }
    if !cur.is_empty() {
        finish(&mut cur, &mut lines);
    }
    lines
}

/// Runs the splitter over the schedule. Returns the pieces, and checks after
/// every read that what it holds is bounded.
fn run_splitter(
    input: &[u8],
    max: usize,
    sched: &[(std::ops::Range<usize>, bool)],
) -> Result<Vec<(Vec<u8>, PieceKind)>, TestCaseError> {
    let mut s = LineSplitter::new(max);
    let mut pieces: Vec<(Vec<u8>, PieceKind)> = vec![];
    // Bytes of the current unfinished line not yet delivered as a Cut piece.
    let mut unfinished = 0usize;
    for (range, idle) in sched {
        let chunk = &input[range.clone()];
        let before = pieces.len();
        s.push(chunk, &mut |b, k| pieces.push((b.to_vec(), k)));
        if *idle {
            s.flush(&mut |b, k| pieces.push((b.to_vec(), k)));
        }
        // Account: after the last '\n' of this chunk, the unfinished line is
        // what follows it; Cut pieces delivered since then are not held.
        match chunk.iter().rposition(|&b| b == b'\n') {
            Some(i) => unfinished = chunk.len() - i - 1,
            None => unfinished += chunk.len(),
        }
        if *idle {
            unfinished = 0;
        }
        let mut cut_tail = 0;
        for (b, k) in pieces[before..].iter().rev() {
            if *k == PieceKind::End {
                break;
            }
            cut_tail += b.len();
        }
        // Only Cut pieces of the unfinished line can follow its start; they
        // came out of it.
        let cut_of_unfinished = cut_tail.min(unfinished);
        let held = unfinished - cut_of_unfinished;
        prop_assert!(
            held <= max + 1,
            "splitter holds {held} bytes with max {max}"
        );
        prop_assert_eq!(s.has_partial(), held > 0);
        unfinished = held;
    }
    s.flush(&mut |b, k| pieces.push((b.to_vec(), k)));
    prop_assert!(!s.has_partial());
    Ok(pieces)
}

fn join_pieces(pieces: &[(Vec<u8>, PieceKind)]) -> Result<Vec<Vec<u8>>, TestCaseError> {
    let mut lines = vec![];
    let mut cur = vec![];
    for (b, k) in pieces {
        cur.extend_from_slice(b);
        if *k == PieceKind::End {
            lines.push(std::mem::take(&mut cur));
        }
    }
    prop_assert!(cur.is_empty(), "Cut pieces without a final End piece");
    Ok(lines)
}

proptest! {
    #![proptest_config(cases(1500))]

    /// Multiline off: the pieces, joined per line, are exactly the model's
    /// lines; no piece is longer than max; Cut pieces are never empty; the
    /// bytes held between reads stay within max + 1; the pieces do not depend on the read boundaries.
    #[test]
    fn splitter_delivers_every_byte_once_in_order(
        input in stream(), max in max_line(), c in cuts()
    ) {
        let sched = schedule(&input, &c);
        let pieces = run_splitter(&input, max, &sched)?;
        for (b, k) in &pieces {
            prop_assert!(b.len() <= max, "piece of {} bytes with max {}", b.len(), max);
            if *k == PieceKind::Cut {
                prop_assert!(!b.is_empty(), "empty Cut piece");
            }
        }
        let lines = join_pieces(&pieces)?;
        prop_assert_eq!(&lines, &model_lines(&input, &sched));

        // Without idle flushes, the read boundaries change nothing at all.
        if c.idles.is_empty() {
            let whole = run_splitter(&input, max, &[(0..input.len(), false)])?;
            prop_assert_eq!(pieces, whole);
        }
    }

    /// Multiline on: entries never exceed max; an entry's later lines are
    /// indented; split back on '\n', the entries are exactly the pieces the
    /// splitter delivers with multiline off, in order.
    #[test]
    fn grouper_joins_back_to_the_same_lines(
        input in stream(), max in max_line(), c in cuts()
    ) {
        let sched = schedule(&input, &c);
        let pieces = run_splitter(&input, max, &sched)?;
        let mut a = LineAssembler::new(true, max);
        let mut entries: Vec<Vec<u8>> = vec![];
        for (range, idle) in &sched {
            a.push(&input[range.clone()], &mut entries);
            if *idle {
                a.flush(&mut entries);
                prop_assert!(!a.holds_data());
            }
        }
        a.flush(&mut entries);
        prop_assert!(!a.holds_data());
        let mut units: Vec<Vec<u8>> = vec![];
        for e in &entries {
            prop_assert!(e.len() <= max, "entry of {} bytes with max {}", e.len(), max);
            for (i, part) in e.split(|&b| b == b'\n').enumerate() {
                if i > 0 {
                    prop_assert!(matches!(part.first(), Some(b' ' | b'\t')),
                        "continuation {:?} is not indented", part);
                }
                units.push(part.to_vec());
            }
        }
        let expected: Vec<Vec<u8>> = pieces.into_iter().map(|(b, _)| b).collect();
        prop_assert_eq!(units, expected);
    }

    /// Multiline off through the assembler: the entries are the splitter's
    /// pieces, one for one.
    #[test]
    fn assembler_without_multiline_is_the_splitter(
        input in stream(), max in max_line(), c in cuts()
    ) {
        let sched = schedule(&input, &c);
        let pieces = run_splitter(&input, max, &sched)?;
        let mut a = LineAssembler::new(false, max);
        let mut entries: Vec<Vec<u8>> = vec![];
        for (range, idle) in &sched {
            a.push(&input[range.clone()], &mut entries);
            if *idle {
                a.flush(&mut entries);
            }
        }
        a.flush(&mut entries);
        let expected: Vec<Vec<u8>> = pieces.into_iter().map(|(b, _)| b).collect();
        prop_assert_eq!(entries, expected);
    }
}

proptest! {
    #![proptest_config(cases_div(200, 50))]

    /// Memory held by the assembler (both stages) over a long stream fed in
    /// pipe-sized reads stays bounded by max_line_bytes and the read size,
    /// whatever the stream's length: measured with a counting allocator,
    /// outputs consumed without allocating.
    #[test]
    fn assembler_memory_is_bounded(
        seed in any::<u64>(),
        max in prop_oneof![1usize..=64, 1000usize..=5000],
        multiline in any::<bool>(),
        read in 1usize..=4096,
        newline_every in prop_oneof![Just(0usize), 1usize..=20_000],
    ) {
        const TOTAL: usize = 200_000;
        let mut rng = Jitter::new(seed);
        let mut chunk = vec![0u8; read];
        let mut a = LineAssembler::new(multiline, max);
        let mut sink = CountingSink {
            delivered: 0,
            last: Vec::with_capacity(max + 1),
            has_last: false,
        };
        let mut fed = 0usize;
        let mut peak = 0isize;
        let base = live();
        while fed < TOTAL {
            for b in chunk.iter_mut() {
                fed += 1;
                *b = if newline_every > 0 && rng.between(0, newline_every as u64) == 0 {
                    b'\n'
                } else if rng.between(0, 7) == 0 {
                    b' '
                } else {
                    b'x'
                };
            }
            a.push(&chunk, &mut sink);
            peak = peak.max(live() - base);
        }
        a.flush(&mut sink);
        let delivered = sink.delivered + if sink.has_last { sink.last.len() } else { 0 };
        let bound = (2 * (max + 1 + read) + 2 * max + 256) as isize;
        prop_assert!(peak <= bound, "peak {} bytes held, bound {}", peak, bound);
        prop_assert!(delivered > 0);
    }
}

/// Counts the bytes of finished entries, keeping only the entry that may
/// still grow (so that it can be taken back).
struct CountingSink {
    delivered: usize,
    last: Vec<u8>,
    has_last: bool,
}

impl EntrySink for CountingSink {
    fn push(&mut self, text: &[u8]) {
        if self.has_last {
            self.delivered += self.last.len();
        }
        self.last.clear();
        self.last.extend_from_slice(text);
        self.has_last = true;
    }

    fn extend_last(&mut self, text: &[u8]) {
        self.last.push(b'\n');
        self.last.extend_from_slice(text);
    }

    fn take_last(&mut self, into: &mut Vec<u8>) {
        std::mem::swap(&mut self.last, into);
        self.last.clear();
        self.has_last = false;
    }
}

// ---------------------------------------------------------------------------
// The restart decision.

fn policy() -> impl Strategy<Value = RestartPolicy> {
    let mode = prop_oneof![
        Just(RestartMode::OnFailure),
        Just(RestartMode::Always),
        Just(RestartMode::Never)
    ];
    let small = (
        mode.clone(),
        0u32..8,
        0u32..5,
        0u64..3000,
        0u64..2000,
        0u64..100_000,
        0u64..200_000,
        0u32..7,
        0u64..60_000,
    );
    let extreme = (
        mode,
        prop_oneof![Just(0u32), Just(1), Just(u32::MAX)],
        prop_oneof![Just(0u32), Just(1), Just(u32::MAX)],
        prop_oneof![Just(0u64), Just(1), Just(u64::MAX)],
        prop_oneof![Just(0u64), Just(1), Just(u64::MAX / 3), Just(u64::MAX)],
        prop_oneof![Just(0u64), Just(1), Just(u64::MAX)],
        prop_oneof![Just(0u64), Just(1), Just(u64::MAX)],
        prop_oneof![Just(0u32), Just(1), Just(u32::MAX)],
        prop_oneof![Just(0u64), Just(1), Just(u64::MAX)],
    );
    prop_oneof![3 => small, 1 => extreme].prop_map(
        |(mode, max_restarts, smax, grace, initial, extra, reset, limit, window)| RestartPolicy {
            mode,
            max_restarts,
            startup_max_restarts: smax,
            startup_grace_ms: grace,
            initial_delay_ms: initial,
            max_delay_ms: initial.saturating_add(extra),
            reset_after_ms: reset,
            crash_loop_limit: limit,
            crash_loop_window_ms: window,
        },
    )
}

#[derive(Clone, Debug)]
struct Exit {
    status: ExitStatus,
    runtime_ms: u64,
    /// Time from the previous decision's delay to this spawn (scheduling
    /// noise; 0 for a spawn failure).
    gap_ms: u64,
    /// Where the jitter falls in [lo, hi], in 1/1000.
    jitter_milli: u64,
}

fn exits() -> impl Strategy<Value = Vec<Exit>> {
    let status = prop_oneof![
        3 => (1i32..=255).prop_map(ExitStatus::Code),
        1 => Just(ExitStatus::Code(0)),
        1 => prop_oneof![Just(9), Just(15), Just(6), Just(11)].prop_map(ExitStatus::Signal),
        1 => Just(ExitStatus::SpawnFailed),
    ];
    let runtime = prop_oneof![
        3 => 0u64..100,
        2 => 100u64..5000,
        1 => 5000u64..200_000,
        1 => Just(u64::MAX / 4),
    ];
    prop::collection::vec(
        (status, runtime, 0u64..50, 0u64..=1000).prop_map(|(status, rt, gap, j)| Exit {
            runtime_ms: if status == ExitStatus::SpawnFailed {
                0
            } else {
                rt
            },
            status,
            gap_ms: gap,
            jitter_milli: j,
        }),
        1..60,
    )
}

/// API.md section 1, written again from the text, independently of
/// src/policy.rs: the list of restartable exit times is kept in full.
#[derive(Default, Debug)]
struct Model {
    restart_count: u64,
    startup_count: u64,
    restartable: Vec<u64>,
}

#[derive(Debug, PartialEq, Eq)]
enum Expect {
    Complete,
    GiveUpNeverSpawn,
    GiveUpCrashLoop,
    GiveUpStartup,
    GiveUpBudget,
    Restart { n: u64, attempt: u64 },
}

fn model_decide(p: &RestartPolicy, m: &mut Model, e: &Exit, now: u64) -> Expect {
    let spawn_failed = e.status == ExitStatus::SpawnFailed;
    match p.mode {
        RestartMode::Never if spawn_failed => return Expect::GiveUpNeverSpawn,
        RestartMode::Never => return Expect::Complete,
        RestartMode::OnFailure if e.status == ExitStatus::Code(0) => return Expect::Complete,
        _ => {}
    }
    if !spawn_failed && e.runtime_ms >= p.reset_after_ms {
        m.restart_count = 0;
        m.startup_count = 0;
    }
    if p.crash_loop_limit > 0 {
        m.restartable.push(now);
        let inside = m
            .restartable
            .iter()
            .filter(|&&t| (now - t) < p.crash_loop_window_ms)
            .count()
            .max(1) as u64; // this exit always counts
        if inside >= p.crash_loop_limit as u64 {
            return Expect::GiveUpCrashLoop;
        }
    }
    let n = if spawn_failed || e.runtime_ms < p.startup_grace_ms {
        m.startup_count += 1;
        if m.startup_count > p.startup_max_restarts as u64 {
            return Expect::GiveUpStartup;
        }
        m.startup_count
    } else {
        m.startup_count = 0;
        m.restart_count
    };
    if m.restart_count >= p.max_restarts as u64 {
        return Expect::GiveUpBudget;
    }
    Expect::Restart {
        n,
        attempt: m.restart_count + 1,
    }
}

fn capped(p: &RestartPolicy, n: u64) -> u64 {
    let f: u128 = if n >= 127 { u128::MAX } else { 1u128 << n };
    (p.initial_delay_ms as u128)
        .saturating_mul(f)
        .min(p.max_delay_ms as u128) as u64
}

proptest! {
    #![proptest_config(cases(3000))]

    /// Over random policies, exit histories and clocks: the decision matches
    /// the contract's model step for step; every delay lies in
    /// [capped/2, capped]; restarts never exceed max_restarts since the last
    /// reset, nor startup_max_restarts in a row; the crash-loop guard gives
    /// up exactly when limit restartable exits fall inside the window; and
    /// the first non-restart decision ends the run (exactly one terminal).
    #[test]
    fn restart_decision_follows_the_contract(
        p in policy(), history in exits(), start in prop_oneof![Just(0u64), any::<u32>().prop_map(u64::from)]
    ) {
        prop_assume!(p.validate().is_ok());
        let mut st = RestartState::new();
        let mut m = Model::default();
        let mut now = start;
        let mut terminal = 0;
        let mut restarts_since_reset = 0u64;
        let mut startup_in_a_row = 0u64;
        for e in &history {
            now = now.saturating_add(e.gap_ms).saturating_add(e.runtime_ms);
            let end = RunEnd { status: e.status, runtime_ms: e.runtime_ms, now_ms: now };
            let mut asked = None;
            let d = decide(&p, &mut st, end, |lo, hi| {
                asked = Some((lo, hi));
                lo + ((hi - lo) as u128 * e.jitter_milli as u128 / 1000) as u64
            });
            let want = model_decide(&p, &mut m, e, now);
            match (&d, &want) {
                (Decision::Complete, Expect::Complete)
                | (Decision::GiveUp(GiveUp::SpawnFailed), Expect::GiveUpNeverSpawn)
                | (Decision::GiveUp(GiveUp::CrashLoop { .. }), Expect::GiveUpCrashLoop)
                | (Decision::GiveUp(GiveUp::Startup { .. }), Expect::GiveUpStartup)
                | (Decision::GiveUp(GiveUp::RestartBudget { .. }), Expect::GiveUpBudget) => {}
                (Decision::Restart { delay_ms, attempt }, Expect::Restart { n, attempt: want_attempt }) => {
                    let hi = capped(&p, *n);
                    let lo = hi / 2;
                    prop_assert_eq!(asked, Some((lo, hi)), "jitter bounds for n={}", n);
                    prop_assert!(lo <= *delay_ms && *delay_ms <= hi,
                        "delay {} outside [{}, {}]", delay_ms, lo, hi);
                    prop_assert_eq!(*attempt as u64, *want_attempt);
                }
                _ => prop_assert!(false, "decision {:?}, contract says {:?} (policy {:?}, exit {:?})", d, want, p, e),
            }
            if e.status != ExitStatus::SpawnFailed && e.runtime_ms >= p.reset_after_ms
                && !matches!(want, Expect::Complete | Expect::GiveUpNeverSpawn) {
                restarts_since_reset = 0;
                startup_in_a_row = 0;
            }
            match d {
                Decision::Restart { .. } => {
                    let startup = e.status == ExitStatus::SpawnFailed || e.runtime_ms < p.startup_grace_ms;
                    startup_in_a_row = if startup { startup_in_a_row + 1 } else { 0 };
                    prop_assert!(startup_in_a_row <= p.startup_max_restarts as u64);
                    restarts_since_reset += 1;
                    prop_assert!(restarts_since_reset <= p.max_restarts as u64);
                    st.note_restart();
                    m.restart_count += 1;
                    if let Decision::Restart { delay_ms, .. } = d {
                        now = now.saturating_add(delay_ms);
                    }
                }
                _ => {
                    terminal += 1;
                    break;
                }
            }
        }
        prop_assert!(terminal <= 1);
    }

    /// A service that keeps failing is given up on after a bounded number of
    /// exits when its runs are short of reset_after: never more than
    /// max_restarts restarts, whatever the clock does.
    #[test]
    fn a_failing_service_always_reaches_one_terminal_decision(
        p in policy().prop_map(|mut p| {
            if p.mode == RestartMode::Never { p.mode = RestartMode::Always }
            p.max_restarts = p.max_restarts.min(999);
            p.reset_after_ms = p.reset_after_ms.max(1);
            p
        }),
        seed in any::<u64>()
    ) {
        let mut rng = Jitter::new(seed);
        let mut st = RestartState::new();
        let mut now = 0u64;
        let mut restarts = 0u32;
        loop {
            let runtime = rng.between(0, p.reset_after_ms - 1);
            now = now.saturating_add(runtime).saturating_add(rng.between(0, 100));
            let end = RunEnd { status: ExitStatus::Code(1), runtime_ms: runtime, now_ms: now };
            match decide(&p, &mut st, end, |lo, hi| rng.between(lo, hi)) {
                Decision::Restart { delay_ms, .. } => {
                    restarts += 1;
                    prop_assert!(restarts <= p.max_restarts, "restart {} past max_restarts {}", restarts, p.max_restarts);
                    st.note_restart();
                    now = now.saturating_add(delay_ms);
                }
                Decision::Complete => prop_assert!(false, "a failure completed"),
                Decision::GiveUp(_) => break,
            }
        }
    }

    /// The production jitter draws inside [lo, hi], extremes included.
    #[test]
    fn jitter_stays_inside_its_bounds(
        seed in any::<u64>(),
        lo in prop_oneof![any::<u64>(), Just(0u64), Just(u64::MAX)],
        span in prop_oneof![any::<u64>(), 0u64..4, Just(u64::MAX)],
    ) {
        let hi = lo.saturating_add(span);
        let mut j = Jitter::new(seed);
        for _ in 0..8 {
            let x = j.between(lo, hi);
            prop_assert!(lo <= x && x <= hi);
        }
    }
}
