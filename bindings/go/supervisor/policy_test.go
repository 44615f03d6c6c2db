package supervisor

import (
	"errors"
	"testing"
	"time"

	"github.com/devrig/libdevrig/bindings/go/config"
)

func TestDefaultPolicyMatchesLibrary(t *testing.T) {
	lib := libraryDefaultPolicy()
	limit, window := DefaultPolicy.crashLoop()
	p := DefaultPolicy
	p.CrashLoopLimit, p.CrashLoopWindow = int(limit), window
	if lib != p {
		t.Fatalf("DefaultPolicy %+v differs from devrig_default_policy %+v", p, lib)
	}
	if DefaultPolicy.Mode != RestartOnFailure || DefaultPolicy.MaxRestarts != 10 || DefaultPolicy.StartupMaxRestarts != 3 ||
		DefaultPolicy.StartupGrace != 2*time.Second || DefaultPolicy.InitialDelay != 500*time.Millisecond ||
		DefaultPolicy.MaxDelay != 30*time.Second || DefaultPolicy.ResetAfter != 60*time.Second {
		t.Fatalf("DefaultPolicy = %+v", DefaultPolicy)
	}
}

func TestRestartModeValues(t *testing.T) {
	if RestartOnFailure != 0 || RestartAlways != 1 || RestartNever != 2 {
		t.Fatal("RestartMode values differ from devrig's")
	}
	for s, m := range map[string]RestartMode{"on-failure": RestartOnFailure, "always": RestartAlways, "never": RestartNever} {
		if got, err := ParseRestartMode(s); err != nil || got != m || m.String() != s {
			t.Fatalf("%s: %v %v %v", s, got, err, m.String())
		}
		if cm, ok := libraryParseMode(s); !ok || cm != m {
			t.Fatalf("C parses %s as %d", s, cm)
		}
	}
	_, err := ParseRestartMode("sometimes")
	var e *Error
	if !errors.As(err, &e) || e.Code != CodeInvalidArgument || !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("ParseRestartMode(junk): %v (%T), want an *Error of code CodeInvalidArgument", err, err)
	}
	if want := `restart policy "sometimes": want "on-failure", "always" or "never"`; err.Error() != want {
		t.Fatalf("ParseRestartMode(junk): %q, want %q", err, want)
	}
}

func TestPolicyFromConfig(t *testing.T) {
	if PolicyFromConfig(nil) != DefaultPolicy {
		t.Fatal("nil config is not DefaultPolicy")
	}
	cfg := &config.RestartConfig{Policy: "always", MaxRestarts: 5, StartupMaxRestarts: 2,
		StartupGraceMs: 3000, InitialDelayMs: 100, MaxDelayMs: 1000}
	want := RestartPolicy{Mode: RestartAlways, MaxRestarts: 5, StartupMaxRestarts: 2,
		StartupGrace: 3 * time.Second, InitialDelay: 100 * time.Millisecond, MaxDelay: time.Second,
		ResetAfter: 60 * time.Second}
	if got := PolicyFromConfig(cfg); got != want {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
	for s, m := range map[string]RestartMode{"": RestartOnFailure, "on-failure": RestartOnFailure, "never": RestartNever} {
		if got := PolicyFromConfig(&config.RestartConfig{Policy: s}).Mode; got != m {
			t.Fatalf("%q -> %v", s, got)
		}
	}
	// An unknown string is refused by Validate, which names it.
	bogus := PolicyFromConfig(&config.RestartConfig{Policy: "bogus", MaxDelayMs: 1000})
	err := bogus.Validate()
	var e *Error
	if !errors.As(err, &e) || e.Code != CodeInvalidArgument || !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("Validate: %v (%T), want an *Error of code CodeInvalidArgument", err, err)
	}
	if want := `restart policy "bogus": want "on-failure", "always" or "never"`; err.Error() != want {
		t.Fatalf("Validate: %q, want %q", err, want)
	}
	if bogus == PolicyFromConfig(&config.RestartConfig{Policy: "other", MaxDelayMs: 1000}) {
		t.Fatal("policies from two different unknown strings are equal")
	}
	// A mode set afterwards replaces the unknown one.
	bogus.Mode = RestartAlways
	if err := bogus.Validate(); err != nil {
		t.Fatalf("Validate after setting Mode: %v", err)
	}
	d := config.DefaultRestartConfig()
	if got := PolicyFromConfig(&d); got != DefaultPolicy {
		t.Fatalf("DefaultRestartConfig gives %+v", got)
	}
}

func TestPolicyValidateAndCrashLoopDefaults(t *testing.T) {
	if err := DefaultPolicy.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		tweak func(*RestartPolicy)
		want  string
	}{
		{func(p *RestartPolicy) { p.StartupGrace = -time.Second }, "restart policy: StartupGrace is negative (-1s)"},
		{func(p *RestartPolicy) { p.CrashLoopWindow = -time.Millisecond }, "restart policy: CrashLoopWindow is negative (-1ms)"},
		{func(p *RestartPolicy) { p.MaxDelay = time.Second; p.InitialDelay = 2 * time.Second },
			"restart policy: MaxDelay (1s) is below InitialDelay (2s)"},
		{func(p *RestartPolicy) { p.Mode = invalidMode },
			"restart policy: invalid mode RestartMode(-1): want RestartOnFailure, RestartAlways or RestartNever"},
	} {
		p := DefaultPolicy
		c.tweak(&p)
		err := p.Validate()
		var e *Error
		if !errors.As(err, &e) || e.Code != CodeInvalidArgument || err.Error() != c.want {
			t.Fatalf("Validate: %v (%T), want an *Error of code CodeInvalidArgument %q", err, err, c.want)
		}
	}
	l, w := (RestartPolicy{CrashLoopLimit: -1}).crashLoop()
	if l != 0 || w != 30*time.Second {
		t.Fatalf("off: %d %v", l, w)
	}
	l, w = (RestartPolicy{CrashLoopLimit: 7, CrashLoopWindow: time.Second}).crashLoop()
	if l != 7 || w != time.Second {
		t.Fatalf("set: %d %v", l, w)
	}
}
