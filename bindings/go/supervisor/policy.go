package supervisor

import (
	"fmt"
	"strconv"
	"time"

	"github.com/devrig/libdevrig/bindings/go/config"
)

// RestartMode determines when a process should be restarted.
type RestartMode int

const (
	RestartOnFailure RestartMode = iota // restart only on non-zero exit
	RestartAlways                       // restart regardless of exit code
	RestartNever                        // never restart
)

// String returns "on-failure", "always" or "never".
func (m RestartMode) String() string {
	switch m {
	case RestartOnFailure:
		return "on-failure"
	case RestartAlways:
		return "always"
	case RestartNever:
		return "never"
	}
	return fmt.Sprintf("RestartMode(%d)", int(m))
}

// ParseRestartMode parses "on-failure", "always" or "never". Any other
// string is refused with an *Error of code CodeInvalidArgument naming it,
// e.g. `restart policy "bogus": want "on-failure", "always" or "never"`.
func ParseRestartMode(s string) (RestartMode, error) {
	switch s {
	case "on-failure":
		return RestartOnFailure, nil
	case "always":
		return RestartAlways, nil
	case "never":
		return RestartNever, nil
	}
	return 0, &Error{Op: "restart policy " + strconv.Quote(s), Code: CodeInvalidArgument,
		Message: `want "on-failure", "always" or "never"`}
}

// invalidMode marks a policy built from an unknown mode string (kept in
// RestartPolicy.unknownMode); Run refuses it.
const invalidMode RestartMode = -1

// RestartPolicy holds all tuning knobs for the restart loop.
//
// The first seven fields are devrig's. CrashLoopLimit and CrashLoopWindow are
// additions whose zero values mean the contract defaults, so policies written
// for devrig keep devrig's guard (5 restartable exits within 30 s give up):
// CrashLoopLimit 0 means 5, a negative CrashLoopLimit turns the guard off;
// CrashLoopWindow 0 means 30 s. Durations are passed to libdevrig in whole
// milliseconds (truncated); negative durations are refused by Run.
type RestartPolicy struct {
	Mode               RestartMode
	MaxRestarts        uint32
	StartupMaxRestarts uint32
	StartupGrace       time.Duration
	InitialDelay       time.Duration
	MaxDelay           time.Duration
	ResetAfter         time.Duration
	CrashLoopLimit     int
	CrashLoopWindow    time.Duration

	// unknownMode is the Policy string PolicyFromConfig could not parse
	// (Mode is then invalidMode), so that Validate can name it; "" otherwise.
	unknownMode string
}

// Contract defaults of the crash-loop guard (used when the fields are zero).
const (
	DefaultCrashLoopLimit  = 5
	DefaultCrashLoopWindow = 30 * time.Second
)

// DefaultPolicy matches the defaults of libdevrig (devrig_default_policy).
var DefaultPolicy = RestartPolicy{
	Mode:               RestartOnFailure,
	MaxRestarts:        10,
	StartupMaxRestarts: 3,
	StartupGrace:       2 * time.Second,
	InitialDelay:       500 * time.Millisecond,
	MaxDelay:           30 * time.Second,
	ResetAfter:         60 * time.Second,
}

// PolicyFromConfig converts a config RestartConfig to a RestartPolicy. A nil
// cfg gives DefaultPolicy. Values are copied as they are (zero means zero, as
// in devrig); ResetAfter and the crash-loop guard take their defaults. Policy
// "" means on-failure; any string other than "on-failure", "always" and
// "never" yields a policy that Validate, Start and Run refuse with an error
// naming the string (devrig silently used on-failure).
func PolicyFromConfig(cfg *config.RestartConfig) RestartPolicy {
	if cfg == nil {
		return DefaultPolicy
	}
	mode, unknown := RestartOnFailure, ""
	if cfg.Policy != "" {
		m, err := ParseRestartMode(cfg.Policy)
		if err != nil {
			m, unknown = invalidMode, cfg.Policy
		}
		mode = m
	}
	return RestartPolicy{
		Mode:               mode,
		MaxRestarts:        cfg.MaxRestarts,
		StartupMaxRestarts: cfg.StartupMaxRestarts,
		StartupGrace:       msDuration(cfg.StartupGraceMs),
		InitialDelay:       msDuration(cfg.InitialDelayMs),
		MaxDelay:           msDuration(cfg.MaxDelayMs),
		ResetAfter:         DefaultPolicy.ResetAfter,
		unknownMode:        unknown,
	}
}

func msDuration(ms uint64) time.Duration {
	const max = uint64(1<<63-1) / uint64(time.Millisecond)
	if ms > max {
		ms = max
	}
	return time.Duration(ms) * time.Millisecond
}

// Validate reports what Start and Run would refuse in p: an unknown mode
// (from PolicyFromConfig, an unknown Policy string), a negative duration, or
// MaxDelay < InitialDelay. Its error is an *Error of code
// CodeInvalidArgument (errors.Is(err, ErrInvalidArgument)) that names the
// bad value, e.g. `restart policy: MaxDelay (100ms) is below InitialDelay
// (500ms)` or `restart policy "bogus": want "on-failure", "always" or
// "never"`.
func (p RestartPolicy) Validate() error {
	switch p.Mode {
	case RestartOnFailure, RestartAlways, RestartNever:
	default:
		if p.Mode == invalidMode && p.unknownMode != "" {
			_, err := ParseRestartMode(p.unknownMode)
			return err
		}
		return policyError("invalid mode %v: want RestartOnFailure, RestartAlways or RestartNever", p.Mode)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"StartupGrace", p.StartupGrace}, {"InitialDelay", p.InitialDelay}, {"MaxDelay", p.MaxDelay},
		{"ResetAfter", p.ResetAfter}, {"CrashLoopWindow", p.CrashLoopWindow}} {
		if d.v < 0 {
			return policyError("%s is negative (%v)", d.name, d.v)
		}
	}
	if p.MaxDelay < p.InitialDelay {
		return policyError("MaxDelay (%v) is below InitialDelay (%v)", p.MaxDelay, p.InitialDelay)
	}
	return nil
}

// policyError is a refusal of a restart policy by Validate.
func policyError(format string, args ...any) error {
	return &Error{Op: "restart policy", Code: CodeInvalidArgument, Message: fmt.Sprintf(format, args...)}
}

// crashLoop returns the effective guard: limit (0 = off) and window.
func (p RestartPolicy) crashLoop() (uint32, time.Duration) {
	limit := uint32(DefaultCrashLoopLimit)
	switch {
	case p.CrashLoopLimit < 0:
		limit = 0
	case p.CrashLoopLimit > 0:
		limit = uint32(min(p.CrashLoopLimit, 1<<32-1))
	}
	window := p.CrashLoopWindow
	if window == 0 {
		window = DefaultCrashLoopWindow
	}
	return limit, window
}
