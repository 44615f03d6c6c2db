package supervisor

import (
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
	if _, err := ParseRestartMode("sometimes"); err == nil {
		t.Fatal("ParseRestartMode accepted junk")
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
	if err := PolicyFromConfig(&config.RestartConfig{Policy: "bogus"}).Validate(); err == nil {
		t.Fatal("an unknown policy string validated")
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
	p := DefaultPolicy
	p.StartupGrace = -time.Second
	if p.Validate() == nil {
		t.Fatal("negative duration accepted")
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
