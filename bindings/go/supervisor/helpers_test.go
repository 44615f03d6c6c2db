package supervisor

import (
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/devrig/libdevrig/bindings/go/events"
)

// fastPolicy restarts quickly and reports "running" at once.
func fastPolicy(mode RestartMode) RestartPolicy {
	return RestartPolicy{
		Mode:               mode,
		MaxRestarts:        10,
		StartupMaxRestarts: 3,
		StartupGrace:       0,
		InitialDelay:       10 * time.Millisecond,
		MaxDelay:           40 * time.Millisecond,
		ResetAfter:         time.Minute,
		CrashLoopLimit:     -1,
	}
}

type result struct {
	err    error
	events []events.TelemetryEvent // status changes, in order
	logs   []events.TelemetryEvent // log records, in order
}

func (r result) statuses() []string {
	out := make([]string, len(r.events))
	for i, e := range r.events {
		out[i] = e.Status
	}
	return out
}

// runSupervisor runs a supervisor built from the arguments until Run returns,
// collecting everything published, and fails the test after limit.
func runSupervisor(t *testing.T, ctx context.Context, name, command string, policy RestartPolicy, limit time.Duration, tweak func(*Supervisor)) result {
	t.Helper()
	logs, evts := events.NewBroadcaster(), events.NewBroadcaster()
	logCh, evCh := logs.Subscribe(4096), evts.Subscribe(256)
	s := New(name, command, "", nil, policy, logs, evts, "")
	if tweak != nil {
		tweak(s)
	}
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var r result
	timer := time.NewTimer(limit)
	defer timer.Stop()
	for {
		select {
		case e := <-evCh:
			r.events = append(r.events, e)
		case l := <-logCh:
			r.logs = append(r.logs, l)
		case err := <-done:
			r.err = err
			logs.Close()
			evts.Close()
			for e := range evCh {
				r.events = append(r.events, e)
			}
			for l := range logCh {
				r.logs = append(r.logs, l)
			}
			return r
		case <-timer.C:
			t.Fatalf("%s: Run did not return within %v; statuses so far %v", name, limit, r.statuses())
		}
	}
}

func wantStatuses(t *testing.T, got []string, want ...string) {
	t.Helper()
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("statuses\n got  %v\n want %v", got, want)
	}
}

// waitFor receives from ch until an event satisfies pred.
func waitFor(t *testing.T, ch <-chan events.TelemetryEvent, limit time.Duration, pred func(events.TelemetryEvent) bool) events.TelemetryEvent {
	t.Helper()
	timer := time.NewTimer(limit)
	defer timer.Stop()
	for {
		select {
		case e, ok := <-ch:
			if !ok {
				t.Fatalf("channel closed before the awaited event")
			}
			if pred(e) {
				return e
			}
		case <-timer.C:
			t.Fatalf("awaited event did not come within %v", limit)
		}
	}
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || (s[i+2] != 'Z' && s[i+2] != 'X')
}

// waitGone waits until none of pids is alive.
func waitGone(t *testing.T, limit time.Duration, pids ...int) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		var left []int
		for _, p := range pids {
			if alive(p) {
				left = append(left, p)
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("processes still alive after %v: %v", limit, left)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
