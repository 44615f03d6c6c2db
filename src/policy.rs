//! The restart policy and the restart decision.
//!
//! Everything here is pure: the decision takes the policy, the counters, how
//! the run ended, the current time and a source of randomness, and returns
//! what to do. The async driver in `supervisor` only carries it out, so every
//! rule of API.md section 1 is tested here without spawning anything.

use std::collections::VecDeque;
use std::fmt;

use crate::error::{Error, Result};

/// When a service is restarted after it exits on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum RestartMode {
    /// After a non-zero exit or a death by signal.
    #[default]
    OnFailure,
    /// After any exit.
    Always,
    /// Never.
    Never,
}

impl RestartMode {
    /// Parses the config spelling: `on-failure`, `always` or `never`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "on-failure" => Ok(RestartMode::OnFailure),
            "always" => Ok(RestartMode::Always),
            "never" => Ok(RestartMode::Never),
            other => Err(Error::invalid(format!(
                "restart mode {other:?} is not one of \"on-failure\", \"always\", \"never\""
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RestartMode::OnFailure => "on-failure",
            RestartMode::Always => "always",
            RestartMode::Never => "never",
        }
    }
}

impl fmt::Display for RestartMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The tuning knobs of the restart loop. Durations are in milliseconds so
/// that the struct maps one to one onto `devrig_restart_policy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RestartPolicy {
    pub mode: RestartMode,
    pub max_restarts: u32,
    pub startup_max_restarts: u32,
    pub startup_grace_ms: u64,
    pub initial_delay_ms: u64,
    pub max_delay_ms: u64,
    pub reset_after_ms: u64,
    pub crash_loop_limit: u32,
    pub crash_loop_window_ms: u64,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            mode: RestartMode::OnFailure,
            max_restarts: 10,
            startup_max_restarts: 3,
            startup_grace_ms: 2000,
            initial_delay_ms: 500,
            max_delay_ms: 30_000,
            reset_after_ms: 60_000,
            crash_loop_limit: 5,
            crash_loop_window_ms: 30_000,
        }
    }
}

impl RestartPolicy {
    /// Refuses combinations that cannot be meant. Values are never adjusted:
    /// a policy is either used exactly as given or refused.
    pub fn validate(&self) -> Result<()> {
        if self.max_delay_ms < self.initial_delay_ms {
            return Err(Error::invalid(format!(
                "max_delay_ms ({}) is smaller than initial_delay_ms ({})",
                self.max_delay_ms, self.initial_delay_ms
            )));
        }
        Ok(())
    }

    /// The bounds of the backoff delay for exponent `n`:
    /// `capped = min(initial × 2^n, max)`, delay uniform in `[capped/2, capped]`.
    pub fn backoff_bounds(&self, n: u32) -> (u64, u64) {
        let factor = if n >= 64 { u64::MAX } else { 1u64 << n };
        let capped = self
            .initial_delay_ms
            .saturating_mul(factor)
            .min(self.max_delay_ms);
        (capped / 2, capped)
    }
}

/// How one spawn of the service ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    /// The process exited with this code.
    Code(i32),
    /// The process was killed by this signal.
    Signal(i32),
    /// The process could not be spawned at all (counts as a startup failure).
    SpawnFailed,
}

impl ExitStatus {
    pub fn is_success(self) -> bool {
        self == ExitStatus::Code(0)
    }

    /// The exit code as reported to users: -1 when there is none.
    pub fn code(self) -> i32 {
        match self {
            ExitStatus::Code(c) => c,
            _ => -1,
        }
    }

    /// The terminating signal, 0 when there is none.
    pub fn signal(self) -> i32 {
        match self {
            ExitStatus::Signal(s) => s,
            _ => 0,
        }
    }
}

/// Why the supervisor gave up. The messages carry the words API.md promises
/// ("startup", "restart budget", "crash loop").
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GiveUp {
    Startup {
        failures: u32,
        limit: u32,
    },
    RestartBudget {
        max_restarts: u32,
    },
    CrashLoop {
        exits: u32,
        window_ms: u64,
    },
    /// `never` mode and the spawn failed: there is nothing else to try.
    SpawnFailed,
}

impl fmt::Display for GiveUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GiveUp::Startup { failures, limit } => write!(
                f,
                "gave up: {failures} consecutive startup failures (startup_max_restarts is {limit})"
            ),
            GiveUp::RestartBudget { max_restarts } => write!(
                f,
                "gave up: restart budget exhausted ({max_restarts} restarts allowed)"
            ),
            GiveUp::CrashLoop { exits, window_ms } => write!(
                f,
                "gave up: crash loop, {exits} restartable exits within {window_ms} ms"
            ),
            GiveUp::SpawnFailed => write!(f, "gave up: spawn failed and the restart mode is never"),
        }
    }
}

/// What to do after a run ended on its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The run ends normally (outcome completed).
    Complete,
    /// The run ends with outcome failed.
    GiveUp(GiveUp),
    /// Wait `delay_ms`, then perform restart number `attempt`.
    Restart { delay_ms: u64, attempt: u32 },
}

/// The counters the decision carries from one exit to the next.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestartState {
    /// Restarts performed and not yet forgiven by `reset_after`.
    pub restart_count: u32,
    /// Consecutive startup failures.
    pub startup_count: u32,
    /// Monotonic times (ms) of recent restartable exits, oldest first.
    recent_exits: VecDeque<u64>,
}

impl RestartState {
    pub fn new() -> Self {
        Self::default()
    }

    /// To be called when the restart announced by `Decision::Restart` is
    /// actually performed (not when it is cancelled during the backoff).
    pub fn note_restart(&mut self) {
        self.restart_count = self.restart_count.saturating_add(1);
    }
}

/// One finished run of the child, as the decision sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunEnd {
    pub status: ExitStatus,
    /// How long the child lived (0 for a spawn failure).
    pub runtime_ms: u64,
    /// Monotonic clock reading at the exit, in ms (any fixed origin).
    pub now_ms: u64,
}

/// The restart decision of API.md section 1, in its stated order.
///
/// `jitter(lo, hi)` must return a value in `[lo, hi]`; production passes a
/// uniform random draw, tests pass a fixed choice.
pub fn decide(
    policy: &RestartPolicy,
    state: &mut RestartState,
    end: RunEnd,
    jitter: impl FnOnce(u64, u64) -> u64,
) -> Decision {
    let spawn_failed = end.status == ExitStatus::SpawnFailed;

    // 1. Modes that end the run.
    match policy.mode {
        RestartMode::Never if spawn_failed => return Decision::GiveUp(GiveUp::SpawnFailed),
        RestartMode::Never => return Decision::Complete,
        RestartMode::OnFailure if end.status.is_success() => return Decision::Complete,
        _ => {}
    }

    // 2. A long run forgives earlier trouble.
    if !spawn_failed && end.runtime_ms >= policy.reset_after_ms {
        state.restart_count = 0;
        state.startup_count = 0;
    }

    // 3. Crash-loop guard over restartable exits inside the window.
    if policy.crash_loop_limit > 0 {
        let window = policy.crash_loop_window_ms;
        while let Some(&t) = state.recent_exits.front() {
            if end.now_ms.saturating_sub(t) >= window {
                state.recent_exits.pop_front();
            } else {
                break;
            }
        }
        state.recent_exits.push_back(end.now_ms);
        // Only the last `limit` exits can matter; keep memory bounded.
        while state.recent_exits.len() > policy.crash_loop_limit as usize {
            state.recent_exits.pop_front();
        }
        let exits = state.recent_exits.len() as u32;
        if exits >= policy.crash_loop_limit {
            return Decision::GiveUp(GiveUp::CrashLoop {
                exits,
                window_ms: window,
            });
        }
    }

    // 4. Startup failures have their own budget and exponent.
    let n = if spawn_failed || end.runtime_ms < policy.startup_grace_ms {
        state.startup_count = state.startup_count.saturating_add(1);
        if state.startup_count > policy.startup_max_restarts {
            return Decision::GiveUp(GiveUp::Startup {
                failures: state.startup_count,
                limit: policy.startup_max_restarts,
            });
        }
        state.startup_count
    } else {
        state.startup_count = 0;
        state.restart_count
    };

    // 5. The overall restart budget.
    if state.restart_count >= policy.max_restarts {
        return Decision::GiveUp(GiveUp::RestartBudget {
            max_restarts: policy.max_restarts,
        });
    }

    // 6. Backoff with equal jitter.
    let (lo, hi) = policy.backoff_bounds(n);
    let delay_ms = jitter(lo, hi).clamp(lo, hi);
    Decision::Restart {
        delay_ms,
        attempt: state.restart_count.saturating_add(1),
    }
}

/// A small, fast, non-cryptographic generator (splitmix64) for backoff
/// jitter; seeded per supervisor so that services do not restart in step.
#[derive(Clone, Debug)]
pub struct Jitter {
    state: u64,
}

impl Jitter {
    pub fn new(seed: u64) -> Self {
        Jitter { state: seed }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[lo, hi]` (inclusive).
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        let span = hi - lo;
        if span == u64::MAX {
            return self.next_u64();
        }
        // Rejection sampling keeps the draw exactly uniform.
        let n = span + 1;
        let zone = u64::MAX - (u64::MAX % n);
        loop {
            let x = self.next_u64();
            if x < zone {
                return lo + x % n;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RestartPolicy {
        RestartPolicy {
            crash_loop_limit: 0,
            ..RestartPolicy::default()
        }
    }

    fn end(status: ExitStatus, runtime_ms: u64, now_ms: u64) -> RunEnd {
        RunEnd {
            status,
            runtime_ms,
            now_ms,
        }
    }

    fn hi(_: u64, hi: u64) -> u64 {
        hi
    }

    #[test]
    fn defaults_match_the_contract() {
        let p = RestartPolicy::default();
        assert_eq!(p.mode, RestartMode::OnFailure);
        assert_eq!(
            (p.max_restarts, p.startup_max_restarts, p.crash_loop_limit),
            (10, 3, 5)
        );
        assert_eq!(
            (
                p.startup_grace_ms,
                p.initial_delay_ms,
                p.max_delay_ms,
                p.reset_after_ms,
                p.crash_loop_window_ms
            ),
            (2000, 500, 30_000, 60_000, 30_000)
        );
        assert!(p.validate().is_ok());
    }

    #[test]
    fn mode_parse_round_trips_and_names_bad_values() {
        for m in [
            RestartMode::OnFailure,
            RestartMode::Always,
            RestartMode::Never,
        ] {
            assert_eq!(RestartMode::parse(m.as_str()).unwrap(), m);
        }
        let err = RestartMode::parse("sometimes").unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)));
        assert!(err.message().contains("\"sometimes\""));
        assert!(RestartMode::parse("Always").is_err());
    }

    #[test]
    fn validate_refuses_max_delay_below_initial() {
        let p = RestartPolicy {
            initial_delay_ms: 1000,
            max_delay_ms: 999,
            ..RestartPolicy::default()
        };
        let err = p.validate().unwrap_err();
        assert!(err.message().contains("max_delay_ms (999)"));
        assert!(err.message().contains("initial_delay_ms (1000)"));
    }

    #[test]
    fn validate_accepts_extremes() {
        let zero = RestartPolicy {
            mode: RestartMode::Always,
            max_restarts: 0,
            startup_max_restarts: 0,
            startup_grace_ms: 0,
            initial_delay_ms: 0,
            max_delay_ms: 0,
            reset_after_ms: 0,
            crash_loop_limit: 0,
            crash_loop_window_ms: 0,
        };
        assert!(zero.validate().is_ok());
        let max = RestartPolicy {
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
        assert!(max.validate().is_ok());
        assert_eq!(max.backoff_bounds(u32::MAX), (u64::MAX / 2, u64::MAX));
    }

    #[test]
    fn never_completes_whatever_the_exit() {
        let p = RestartPolicy {
            mode: RestartMode::Never,
            ..policy()
        };
        for status in [
            ExitStatus::Code(0),
            ExitStatus::Code(3),
            ExitStatus::Signal(9),
        ] {
            let mut s = RestartState::new();
            assert_eq!(
                decide(&p, &mut s, end(status, 10, 10), hi),
                Decision::Complete
            );
        }
        let mut s = RestartState::new();
        assert_eq!(
            decide(&p, &mut s, end(ExitStatus::SpawnFailed, 0, 0), hi),
            Decision::GiveUp(GiveUp::SpawnFailed)
        );
    }

    #[test]
    fn on_failure_completes_on_zero_and_restarts_otherwise() {
        let p = policy();
        let mut s = RestartState::new();
        assert_eq!(
            decide(&p, &mut s, end(ExitStatus::Code(0), 5000, 5000), hi),
            Decision::Complete
        );
        for status in [ExitStatus::Code(1), ExitStatus::Signal(15)] {
            let mut s = RestartState::new();
            assert!(matches!(
                decide(&p, &mut s, end(status, 5000, 5000), hi),
                Decision::Restart { attempt: 1, .. }
            ));
        }
    }

    #[test]
    fn always_restarts_after_success_too() {
        let p = RestartPolicy {
            mode: RestartMode::Always,
            ..policy()
        };
        let mut s = RestartState::new();
        assert_eq!(
            decide(&p, &mut s, end(ExitStatus::Code(0), 5000, 5000), hi),
            Decision::Restart {
                delay_ms: 500,
                attempt: 1
            }
        );
    }

    #[test]
    fn backoff_doubles_from_restart_count_after_healthy_runs() {
        let p = policy();
        let mut s = RestartState::new();
        let mut delays = vec![];
        for i in 0..7u64 {
            match decide(&p, &mut s, end(ExitStatus::Code(1), 3000, i * 10_000), hi) {
                Decision::Restart { delay_ms, attempt } => {
                    assert_eq!(attempt as u64, i + 1);
                    delays.push(delay_ms);
                    s.note_restart();
                }
                d => panic!("unexpected {d:?}"),
            }
        }
        assert_eq!(delays, [500, 1000, 2000, 4000, 8000, 16000, 30000]);
    }

    #[test]
    fn backoff_uses_startup_count_as_exponent_for_startup_failures() {
        let p = policy();
        let mut s = RestartState::new();
        let d1 = decide(&p, &mut s, end(ExitStatus::Code(1), 100, 0), hi);
        assert_eq!(
            d1,
            Decision::Restart {
                delay_ms: 1000,
                attempt: 1
            }
        );
        assert_eq!(s.startup_count, 1);
    }

    #[test]
    fn jitter_is_passed_the_equal_jitter_bounds_and_clamped() {
        let p = policy();
        let mut s = RestartState::new();
        let mut seen = None;
        let d = decide(&p, &mut s, end(ExitStatus::Code(1), 3000, 0), |lo, hi| {
            seen = Some((lo, hi));
            u64::MAX
        });
        assert_eq!(seen, Some((250, 500)));
        assert_eq!(
            d,
            Decision::Restart {
                delay_ms: 500,
                attempt: 1
            }
        );
        let mut s = RestartState::new();
        let d = decide(&p, &mut s, end(ExitStatus::Code(1), 3000, 0), |_, _| 0);
        assert_eq!(
            d,
            Decision::Restart {
                delay_ms: 250,
                attempt: 1
            }
        );
    }

    #[test]
    fn startup_budget_gives_up_after_limit_consecutive_failures() {
        let p = policy(); // startup_max_restarts = 3
        let mut s = RestartState::new();
        for i in 1..=3u32 {
            let d = decide(&p, &mut s, end(ExitStatus::Code(1), 10, i as u64), hi);
            assert!(matches!(d, Decision::Restart { .. }), "{d:?}");
            s.note_restart();
        }
        let d = decide(&p, &mut s, end(ExitStatus::Code(1), 10, 4), hi);
        assert_eq!(
            d,
            Decision::GiveUp(GiveUp::Startup {
                failures: 4,
                limit: 3
            })
        );
        assert!(d_message(&d).contains("startup"));
    }

    #[test]
    fn spawn_failure_counts_as_startup_failure_even_with_zero_grace() {
        let p = RestartPolicy {
            startup_grace_ms: 0,
            startup_max_restarts: 0,
            ..policy()
        };
        let mut s = RestartState::new();
        assert!(matches!(
            decide(&p, &mut s, end(ExitStatus::SpawnFailed, 0, 0), hi),
            Decision::GiveUp(GiveUp::Startup { .. })
        ));
        // A real run of 0 ms with grace 0 is not a startup failure.
        let mut s = RestartState::new();
        assert!(matches!(
            decide(&p, &mut s, end(ExitStatus::Code(1), 0, 0), hi),
            Decision::Restart { .. }
        ));
    }

    #[test]
    fn healthy_run_resets_startup_count() {
        let p = policy();
        let mut s = RestartState::new();
        decide(&p, &mut s, end(ExitStatus::Code(1), 10, 0), hi);
        s.note_restart();
        assert_eq!(s.startup_count, 1);
        decide(&p, &mut s, end(ExitStatus::Code(1), 2000, 1), hi);
        assert_eq!(s.startup_count, 0);
    }

    #[test]
    fn restart_budget_gives_up_at_max_restarts() {
        let p = RestartPolicy {
            max_restarts: 2,
            ..policy()
        };
        let mut s = RestartState::new();
        for _ in 0..2 {
            assert!(matches!(
                decide(&p, &mut s, end(ExitStatus::Code(1), 3000, 0), hi),
                Decision::Restart { .. }
            ));
            s.note_restart();
        }
        let d = decide(&p, &mut s, end(ExitStatus::Code(1), 3000, 0), hi);
        assert_eq!(
            d,
            Decision::GiveUp(GiveUp::RestartBudget { max_restarts: 2 })
        );
        assert!(d_message(&d).contains("restart budget"));
    }

    #[test]
    fn zero_max_restarts_never_restarts() {
        let p = RestartPolicy {
            max_restarts: 0,
            ..policy()
        };
        let mut s = RestartState::new();
        assert!(matches!(
            decide(&p, &mut s, end(ExitStatus::Code(1), 3000, 0), hi),
            Decision::GiveUp(GiveUp::RestartBudget { .. })
        ));
    }

    #[test]
    fn startup_check_comes_before_restart_budget() {
        let p = RestartPolicy {
            max_restarts: 0,
            startup_max_restarts: 0,
            ..policy()
        };
        let mut s = RestartState::new();
        assert!(matches!(
            decide(&p, &mut s, end(ExitStatus::Code(1), 10, 0), hi),
            Decision::GiveUp(GiveUp::Startup { .. })
        ));
    }

    #[test]
    fn long_run_resets_both_counters_before_the_checks() {
        let p = RestartPolicy {
            max_restarts: 2,
            reset_after_ms: 10_000,
            ..policy()
        };
        let mut s = RestartState {
            restart_count: 2,
            startup_count: 3,
            ..RestartState::default()
        };
        let d = decide(&p, &mut s, end(ExitStatus::Code(1), 10_000, 0), hi);
        assert_eq!(
            d,
            Decision::Restart {
                delay_ms: 500,
                attempt: 1
            }
        );
        assert_eq!((s.restart_count, s.startup_count), (0, 0));
        // Just under reset_after: no reset, budget exhausted.
        let mut s = RestartState {
            restart_count: 2,
            ..RestartState::default()
        };
        assert!(matches!(
            decide(&p, &mut s, end(ExitStatus::Code(1), 9_999, 0), hi),
            Decision::GiveUp(GiveUp::RestartBudget { .. })
        ));
    }

    #[test]
    fn crash_loop_counts_exits_inside_the_window() {
        let p = RestartPolicy {
            crash_loop_limit: 3,
            crash_loop_window_ms: 1000,
            startup_grace_ms: 0,
            ..RestartPolicy::default()
        };
        let mut s = RestartState::new();
        assert!(matches!(
            decide(&p, &mut s, end(ExitStatus::Code(1), 5, 0), hi),
            Decision::Restart { .. }
        ));
        assert!(matches!(
            decide(&p, &mut s, end(ExitStatus::Code(1), 5, 500), hi),
            Decision::Restart { .. }
        ));
        let d = decide(&p, &mut s, end(ExitStatus::Code(1), 5, 999), hi);
        assert_eq!(
            d,
            Decision::GiveUp(GiveUp::CrashLoop {
                exits: 3,
                window_ms: 1000
            })
        );
        assert!(d_message(&d).contains("crash loop"));
    }

    #[test]
    fn crash_loop_forgets_exits_that_left_the_window() {
        let p = RestartPolicy {
            crash_loop_limit: 3,
            crash_loop_window_ms: 1000,
            startup_grace_ms: 0,
            max_restarts: 100,
            ..RestartPolicy::default()
        };
        let mut s = RestartState::new();
        for t in [0u64, 600, 1200, 1800, 2400] {
            assert!(
                matches!(
                    decide(&p, &mut s, end(ExitStatus::Code(1), 5, t), hi),
                    Decision::Restart { .. }
                ),
                "exit at {t}"
            );
        }
    }

    #[test]
    fn crash_loop_is_checked_before_startup_and_budget() {
        let p = RestartPolicy {
            crash_loop_limit: 1,
            max_restarts: 0,
            startup_max_restarts: 0,
            ..RestartPolicy::default()
        };
        let mut s = RestartState::new();
        assert!(matches!(
            decide(&p, &mut s, end(ExitStatus::Code(1), 5, 0), hi),
            Decision::GiveUp(GiveUp::CrashLoop { exits: 1, .. })
        ));
    }

    #[test]
    fn completed_exits_do_not_count_toward_the_crash_loop() {
        let p = RestartPolicy {
            crash_loop_limit: 2,
            ..RestartPolicy::default()
        };
        let mut s = RestartState::new();
        assert_eq!(
            decide(&p, &mut s, end(ExitStatus::Code(0), 5, 0), hi),
            Decision::Complete
        );
        assert!(matches!(
            decide(&p, &mut s, end(ExitStatus::Code(1), 5000, 1), hi),
            Decision::Restart { .. }
        ));
    }

    #[test]
    fn backoff_bounds_saturate_and_cap() {
        let p = RestartPolicy::default();
        assert_eq!(p.backoff_bounds(0), (250, 500));
        assert_eq!(p.backoff_bounds(1), (500, 1000));
        assert_eq!(p.backoff_bounds(6), (15_000, 30_000));
        assert_eq!(p.backoff_bounds(63), (15_000, 30_000));
        assert_eq!(p.backoff_bounds(64), (15_000, 30_000));
        assert_eq!(p.backoff_bounds(u32::MAX), (15_000, 30_000));
        let z = RestartPolicy {
            initial_delay_ms: 0,
            max_delay_ms: 0,
            ..p
        };
        assert_eq!(z.backoff_bounds(5), (0, 0));
        let odd = RestartPolicy {
            initial_delay_ms: 3,
            max_delay_ms: 3,
            ..p
        };
        assert_eq!(odd.backoff_bounds(0), (1, 3));
    }

    #[test]
    fn jitter_stays_in_bounds_and_covers_them() {
        let mut j = Jitter::new(42);
        let mut seen_lo = false;
        let mut seen_hi = false;
        for _ in 0..10_000 {
            let x = j.between(10, 13);
            assert!((10..=13).contains(&x));
            seen_lo |= x == 10;
            seen_hi |= x == 13;
        }
        assert!(seen_lo && seen_hi);
        assert_eq!(j.between(7, 7), 7);
        assert_eq!(j.between(9, 3), 9);
        let _ = j.between(0, u64::MAX);
    }

    fn d_message(d: &Decision) -> String {
        match d {
            Decision::GiveUp(g) => g.to_string(),
            _ => String::new(),
        }
    }
}
