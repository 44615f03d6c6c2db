package supervisor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/devrig/libdevrig/bindings/go/config"
	"github.com/devrig/libdevrig/bindings/go/events"
)

func TestCompletedOnFailureExitZero(t *testing.T) {
	r := runSupervisor(t, context.Background(), "done", "echo hello; exit 0", fastPolicy(RestartOnFailure), 20*time.Second, nil)
	if r.err != nil {
		t.Fatal(r.err)
	}
	wantStatuses(t, r.statuses(), "started", "running", "exited", "stopped")
	if r.events[0].PID <= 0 || r.events[2].ExitCode != 0 {
		t.Fatalf("bad details: %+v", r.events)
	}
	if len(r.logs) != 1 || r.logs[0].LogBody != "hello" || r.logs[0].PID != r.events[0].PID {
		t.Fatalf("logs: %+v", r.logs)
	}
}

func TestRunningAfterStartupGrace(t *testing.T) {
	p := fastPolicy(RestartNever)
	p.StartupGrace = 200 * time.Millisecond
	r := runSupervisor(t, context.Background(), "grace", "sleep 0.6", p, 20*time.Second, nil)
	wantStatuses(t, r.statuses(), "started", "running", "exited", "stopped")
	started, running := r.events[0].Timestamp, r.events[1].Timestamp
	if d := running.Sub(started); d < 150*time.Millisecond {
		t.Fatalf("running came %v after started, before the grace", d)
	}
}

func TestRestartBudget(t *testing.T) {
	p := fastPolicy(RestartOnFailure)
	p.MaxRestarts = 2
	r := runSupervisor(t, context.Background(), "budget", "exit 3", p, 20*time.Second, nil)
	if r.err != nil {
		t.Fatal(r.err)
	}
	wantStatuses(t, r.statuses(),
		"started", "running", "exited", "backoff",
		"started", "running", "exited", "backoff",
		"started", "running", "exited", "failed")
	last := r.events[len(r.events)-1]
	if !strings.Contains(last.Message, "restart budget") {
		t.Fatalf("failed message %q does not name the restart budget", last.Message)
	}
	if r.events[2].ExitCode != 3 || r.events[3].RestartCount != 1 || r.events[7].RestartCount != 2 {
		t.Fatalf("details: %+v", r.events)
	}
	for _, i := range []int{3, 7} {
		if d := r.events[i].Delay; d < 5*time.Millisecond || d > 40*time.Millisecond {
			t.Fatalf("backoff delay %v outside [capped/2, capped]", d)
		}
	}
}

func TestAlwaysRestartsAfterCleanExit(t *testing.T) {
	p := fastPolicy(RestartAlways)
	p.MaxRestarts = 1
	r := runSupervisor(t, context.Background(), "always", "exit 0", p, 20*time.Second, nil)
	wantStatuses(t, r.statuses(),
		"started", "running", "exited", "backoff",
		"started", "running", "exited", "failed")
}

func TestStartupFailureGivesUp(t *testing.T) {
	p := fastPolicy(RestartOnFailure)
	p.StartupGrace = 10 * time.Second
	p.StartupMaxRestarts = 2
	r := runSupervisor(t, context.Background(), "startup", "exit 1", p, 30*time.Second, nil)
	if r.err != nil {
		t.Fatal(r.err)
	}
	wantStatuses(t, r.statuses(),
		"started", "exited", "backoff",
		"started", "exited", "backoff",
		"started", "exited", "failed")
	if last := r.events[len(r.events)-1]; !strings.Contains(last.Message, "startup") {
		t.Fatalf("failed message %q does not name startup", last.Message)
	}
}

func TestNeverRestarts(t *testing.T) {
	r := runSupervisor(t, context.Background(), "never", "exit 4", fastPolicy(RestartNever), 20*time.Second, nil)
	if r.err != nil {
		t.Fatal(r.err)
	}
	wantStatuses(t, r.statuses(), "started", "running", "exited", "stopped")
	if r.events[2].ExitCode != 4 {
		t.Fatalf("exit code %d", r.events[2].ExitCode)
	}
}

func TestCrashLoopGuard(t *testing.T) {
	p := fastPolicy(RestartAlways)
	p.CrashLoopLimit = 3
	p.CrashLoopWindow = 30 * time.Second
	r := runSupervisor(t, context.Background(), "loop", "exit 2", p, 20*time.Second, nil)
	st := r.statuses()
	if st[len(st)-1] != "failed" || !strings.Contains(r.events[len(st)-1].Message, "crash loop") {
		t.Fatalf("statuses %v, last %+v", st, r.events[len(st)-1])
	}
	if n := strings.Count(strings.Join(st, ","), "started"); n != 3 {
		t.Fatalf("%d spawns, want 3: %v", n, st)
	}
}

func TestSignalDeathIsReported(t *testing.T) {
	r := runSupervisor(t, context.Background(), "sig", "kill -9 $$", fastPolicy(RestartNever), 20*time.Second, nil)
	wantStatuses(t, r.statuses(), "started", "running", "exited", "stopped")
	if e := r.events[2]; e.ExitCode != -1 || e.Signal != 9 {
		t.Fatalf("exited: code %d signal %d", e.ExitCode, e.Signal)
	}
}

func TestSpawnFailureIsRunError(t *testing.T) {
	r := runSupervisor(t, context.Background(), "nodir", "true", fastPolicy(RestartOnFailure), 20*time.Second, func(s *Supervisor) {
		s.WorkingDir = filepath.Join(t.TempDir(), "missing")
	})
	if r.err == nil || !errors.Is(r.err, ErrSpawn) {
		t.Fatalf("err = %v, want a spawn error", r.err)
	}
	wantStatuses(t, r.statuses(), "spawn_failed", "failed")
}

// Every refusal of the configuration is an *Error of code
// CodeInvalidArgument whose text names the service and the bad value.
func TestInvalidConfigIsRunError(t *testing.T) {
	cases := []struct {
		name  string
		tweak func(*Supervisor)
		want  string // err.Error(), exactly
	}{
		{"unsafe name", func(s *Supervisor) { s.Name = "../etc" },
			`supervisor ../etc: service name "../etc" is not a safe file name (1-128 of A-Z a-z 0-9 . _ - @ +, not starting with '.')`},
		{"empty command", func(s *Supervisor) { s.Command = "" }, `supervisor ok: command "" of service "ok" is empty`},
		{"bad env key", func(s *Supervisor) { s.Env = map[string]string{"A=B": "x"} },
			`env A=B of ok: environment key "A=B" must be non-empty and contain no '=' or NUL`},
		{"max<initial", func(s *Supervisor) {
			s.Policy.MaxDelay = 100 * time.Millisecond
			s.Policy.InitialDelay = 500 * time.Millisecond
		},
			"supervisor ok: restart policy: MaxDelay (100ms) is below InitialDelay (500ms)"},
		{"negative duration", func(s *Supervisor) { s.Policy.StartupGrace = -time.Second },
			"supervisor ok: restart policy: StartupGrace is negative (-1s)"},
		{"bad mode", func(s *Supervisor) { s.Policy.Mode = RestartMode(9) },
			"supervisor ok: restart policy: invalid mode RestartMode(9): want RestartOnFailure, RestartAlways or RestartNever"},
		{"bad config", func(s *Supervisor) { s.Policy = PolicyFromConfig(&config.RestartConfig{Policy: "sometimes"}) },
			`supervisor ok: restart policy "sometimes": want "on-failure", "always" or "never"`},
		{"negative StopGrace", func(s *Supervisor) { s.StopGrace = -time.Second }, "supervisor ok: StopGrace is negative (-1s)"},
		{"negative MaxLineBytes", func(s *Supervisor) { s.MaxLineBytes = -1 }, "supervisor ok: MaxLineBytes is negative (-1)"},
		{"huge MaxLineBytes", func(s *Supervisor) { s.MaxLineBytes = 1<<30 + 1 },
			"max line bytes of ok: max_line_bytes 1073741825 is out of range (1..=1073741824)"},
		{"NUL in command", func(s *Supervisor) { s.Command = "true\x00rm -rf /" }, "supervisor ok: command contains a NUL byte"},
		{"NUL in env", func(s *Supervisor) { s.Env = map[string]string{"A": "x\x00y"} }, `supervisor ok: env value of "A" contains a NUL byte`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := New("ok", "true", "", nil, fastPolicy(RestartNever), nil, nil, "")
			c.tweak(s)
			err := s.Run(context.Background())
			if err == nil {
				t.Fatal("Run accepted an invalid configuration")
			}
			var e *Error
			if !errors.Is(err, ErrInvalidArgument) || !errors.As(err, &e) || e.Code != CodeInvalidArgument {
				t.Fatalf("Run: %v (%T), want an *Error of code CodeInvalidArgument", err, err)
			}
			if err.Error() != c.want {
				t.Fatalf("Run: %q\nwant %q", err.Error(), c.want)
			}
			if o := s.Outcome(); o.Kind != OutcomeNone {
				t.Fatalf("outcome %+v after a refusal, want none", o)
			}
			if r, err2 := s.Start(context.Background()); r != nil || err2 == nil || err2.Error() != err.Error() {
				t.Fatalf("Start = %v, %v; want nil and Run's error %v", r, err2, err)
			}
		})
	}
}

func TestCancelBeforeRun(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r := runSupervisor(t, ctx, "early", "echo never", fastPolicy(RestartAlways), 20*time.Second, nil)
	if r.err != nil {
		t.Fatal(r.err)
	}
	if st := strings.Join(r.statuses(), ","); st != "stopped" && st != "stopping,stopped" {
		t.Fatalf("statuses %v, want [stopped] or [stopping stopped]", st)
	}
	if len(r.logs) != 0 {
		t.Fatalf("logs from a service that never started: %+v", r.logs)
	}
}

// The service forks a tree (a background child, and one that escapes with
// setsid); cancelling ctx stops all of it and Run returns after the reaping.
func TestCancelStopsTreeNoSurvivors(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logs, evts := events.NewBroadcaster(), events.NewBroadcaster()
	logCh, evCh := logs.Subscribe(64), evts.Subscribe(64)
	cmd := `sleep 1000 & echo "bg $!"; setsid sleep 1000 & echo "escaped $!"; echo ready; wait`
	s := New("tree", cmd, "", nil, fastPolicy(RestartAlways), logs, evts, "")
	s.StopGrace = 2 * time.Second
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()

	started := waitFor(t, evCh, 20*time.Second, func(e events.TelemetryEvent) bool { return e.Status == "started" })
	pids := []int{started.PID}
	for {
		l := waitFor(t, logCh, 20*time.Second, func(events.TelemetryEvent) bool { return true })
		if l.LogBody == "ready" {
			break
		}
		f := strings.Fields(l.LogBody)
		p, _ := strconv.Atoi(f[len(f)-1])
		pids = append(pids, p)
	}
	if len(pids) != 3 {
		t.Fatalf("pids %v", pids)
	}
	for _, p := range pids {
		if !alive(p) {
			t.Fatalf("pid %d not alive before cancel", p)
		}
	}
	go func() { // keep draining so Send never waits
		for range logCh {
		}
	}()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	// Run has returned: everything must already be gone (no waiting).
	for _, p := range pids {
		if alive(p) {
			t.Errorf("pid %d survived the stop", p)
		}
	}
	var tail []string
	for len(evCh) > 0 {
		tail = append(tail, (<-evCh).Status)
	}
	if len(tail) < 2 || tail[len(tail)-2] != "stopping" && tail[len(tail)-2] != "exited" || tail[len(tail)-1] != "stopped" {
		t.Fatalf("events after cancel: %v", tail)
	}
	if o := s.Outcome(); o.Kind != OutcomeCancelled {
		t.Fatalf("outcome %+v", o)
	}
	logs.Close()
	evts.Close()
}

func TestCancelDuringBackoffEndsAtOnce(t *testing.T) {
	p := fastPolicy(RestartAlways)
	p.InitialDelay, p.MaxDelay = time.Minute, time.Minute
	ctx, cancel := context.WithCancel(context.Background())
	evts := events.NewBroadcaster()
	ch := evts.Subscribe(64)
	s := New("backoff", "exit 1", "", nil, p, nil, evts, "")
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	waitFor(t, ch, 20*time.Second, func(e events.TelemetryEvent) bool { return e.Status == "backoff" })
	t0 := time.Now()
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("cancel during backoff did not end the run")
	}
	if d := time.Since(t0); d > 5*time.Second {
		t.Fatalf("cancel during backoff took %v", d)
	}
	waitFor(t, ch, time.Second, func(e events.TelemetryEvent) bool { return e.Status == "stopped" })
}

func TestEnvAndWorkingDir(t *testing.T) {
	dir := t.TempDir()
	r := runSupervisor(t, context.Background(), "env", `echo "$FOO|$BAR|$(pwd)"`, fastPolicy(RestartNever), 20*time.Second, func(s *Supervisor) {
		s.Env = map[string]string{"FOO": "foo value", "BAR": "ünï"}
		s.WorkingDir = dir
	})
	real, _ := filepath.EvalSymlinks(dir)
	if len(r.logs) != 1 || (r.logs[0].LogBody != "foo value|ünï|"+dir && r.logs[0].LogBody != "foo value|ünï|"+real) {
		t.Fatalf("logs %+v", r.logs)
	}
}

func TestLogFields(t *testing.T) {
	cmd := `echo "INFO one"; echo "WARN two" >&2; echo "plain"; printf 'bad \377 byte\n'; printf 'Traceback\n  at x\n  at y\nnext\n'; printf 'no newline'`
	t0 := time.Now().Add(-time.Second)
	r := runSupervisor(t, context.Background(), "fields", cmd, fastPolicy(RestartNever), 20*time.Second, nil)
	var stdout []events.TelemetryEvent
	var stderr []events.TelemetryEvent
	for _, l := range r.logs {
		if l.Kind != events.KindLogRecord || l.Service != "fields" || l.PID != r.events[0].PID || l.Timestamp.Before(t0) {
			t.Fatalf("bad record %+v", l)
		}
		if l.Stream == events.StreamStderr {
			stderr = append(stderr, l)
		} else {
			stdout = append(stdout, l)
		}
	}
	var bodies []string
	for _, l := range stdout {
		bodies = append(bodies, l.LogBody)
	}
	want := []string{"INFO one", "plain", "bad \uFFFD byte", "Traceback\n  at x\n  at y", "next", "no newline"}
	if strings.Join(bodies, "|") != strings.Join(want, "|") {
		t.Fatalf("stdout bodies %q, want %q", bodies, want)
	}
	// devrig's spelling in LogSeverity ("info" also when there is no level
	// word), the exact level in Level.
	if stdout[0].LogSeverity != "info" || stdout[1].LogSeverity != "info" ||
		stdout[0].Level != "info" || stdout[1].Level != "" {
		t.Fatalf("severities %q %q, levels %q %q", stdout[0].LogSeverity, stdout[1].LogSeverity,
			stdout[0].Level, stdout[1].Level)
	}
	if len(stderr) != 1 || stderr[0].LogBody != "WARN two" || stderr[0].LogSeverity != "warn" ||
		stderr[0].Level != "warn" {
		t.Fatalf("stderr %+v", stderr)
	}
}

// 100,000 numbered lines arrive complete and in order, before "exited", on
// the same broadcaster as the status changes.
func TestLogIntegrity100k(t *testing.T) {
	const n = 100000
	b := events.NewBroadcaster()
	ch := b.Subscribe(1024)
	s := New("seq", fmt.Sprintf("seq 1 %d; echo done >&2", n), "", nil, fastPolicy(RestartNever), b, b, "")
	done := make(chan error, 1)
	go func() { done <- s.Run(context.Background()) }()
	next := 1
	sawExited := false
	timer := time.NewTimer(120 * time.Second)
	defer timer.Stop()
	for !sawExited {
		select {
		case e := <-ch:
			switch {
			case e.Kind == events.KindLogRecord && e.Stream == events.StreamStdout:
				if e.LogBody != strconv.Itoa(next) {
					t.Fatalf("line %d: got %q", next, e.LogBody)
				}
				next++
			case e.Kind == events.KindServiceStatusChange && e.Status == "exited":
				sawExited = true
			}
		case <-timer.C:
			t.Fatalf("timed out at line %d", next)
		}
	}
	if next != n+1 {
		t.Fatalf("got %d lines before exited, want %d", next-1, n)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if d := b.Dropped(); d != 0 {
		t.Fatalf("%d events dropped", d)
	}
	b.Close()
}

// A slow reader slows the service (backpressure) without losing anything.
func TestSlowSubscriberLosesNothing(t *testing.T) {
	logs := events.NewBroadcaster()
	ch := logs.Subscribe(1)
	s := New("slow", "seq 1 300", "", nil, fastPolicy(RestartNever), logs, nil, "")
	done := make(chan error, 1)
	go func() { done <- s.Run(context.Background()) }()
	for i := 1; i <= 300; i++ {
		e := waitFor(t, ch, 20*time.Second, func(events.TelemetryEvent) bool { return true })
		if e.LogBody != strconv.Itoa(i) {
			t.Fatalf("line %d: %q", i, e.LogBody)
		}
		if i%50 == 0 {
			time.Sleep(20 * time.Millisecond)
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// A subscriber that never reads must not block the supervisor forever.
func TestStuckSubscriberDoesNotBlockForever(t *testing.T) {
	logs := events.NewBroadcaster()
	logs.SetSendTimeout(100 * time.Millisecond)
	_ = logs.Subscribe(1) // never read
	s := New("stuck", "seq 1 5000", "", nil, fastPolicy(RestartNever), logs, nil, "")
	done := make(chan error, 1)
	go func() { done <- s.Run(context.Background()) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a stuck subscriber blocked the supervisor")
	}
	if logs.Dropped() == 0 {
		t.Fatal("nothing was dropped for the stuck subscriber")
	}
}

func TestRunTwiceSequentially(t *testing.T) {
	evts := events.NewBroadcaster()
	ch := evts.Subscribe(64)
	s := New("twice", "true", "", nil, fastPolicy(RestartNever), nil, evts, "")
	for i := 0; i < 2; i++ {
		if err := s.Run(context.Background()); err != nil {
			t.Fatal(err)
		}
		waitFor(t, ch, 5*time.Second, func(e events.TelemetryEvent) bool { return e.Status == "stopped" })
		if o := s.Outcome(); o.Kind != OutcomeCompleted {
			t.Fatalf("outcome %+v", o)
		}
	}
}

// Outcome() is up to date as soon as the terminal event is seen, without
// waiting for Run or Wait to return.
func TestOutcomeIsSetWhenTheTerminalEventArrives(t *testing.T) {
	evts := events.NewBroadcaster()
	ch := evts.Subscribe(64)
	budget := fastPolicy(RestartAlways)
	budget.MaxRestarts = 1
	for i := 0; i < 20; i++ {
		for _, c := range []struct {
			cmd    string
			policy RestartPolicy
			status string
			want   OutcomeKind
		}{
			{"exit 0", fastPolicy(RestartOnFailure), "stopped", OutcomeCompleted},
			{"exit 1", budget, "failed", OutcomeFailed},
		} {
			s := New("endnow", c.cmd, "", nil, c.policy, nil, evts, "")
			r, err := s.Start(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			ev := waitFor(t, ch, 10*time.Second, func(e events.TelemetryEvent) bool {
				return e.Status == "stopped" || e.Status == "failed"
			})
			o := s.Outcome()
			if ev.Status != c.status || o.Kind != c.want || o.Message != ev.Message {
				t.Fatalf("%q: event %q %q, outcome %+v", c.cmd, ev.Status, ev.Message, o)
			}
			if err := r.Wait(); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func TestManySupervisorsConcurrently(t *testing.T) {
	const n = 20
	evts := events.NewBroadcaster()
	ch := evts.Subscribe(n * 16)
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		s := New(fmt.Sprintf("svc-%d", i), "echo hi", "", nil, fastPolicy(RestartNever), nil, evts, "")
		go func() { errs <- s.Run(context.Background()) }()
	}
	for i := 0; i < n; i++ {
		select {
		case err := <-errs:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("supervisors did not finish")
		}
	}
	stopped := map[string]bool{}
	for len(ch) > 0 {
		if e := <-ch; e.Status == "stopped" {
			stopped[e.Service] = true
		}
	}
	if len(stopped) != n {
		t.Fatalf("%d services stopped, want %d", len(stopped), n)
	}
}

func TestPanicInCallbackIsReraisedAfterStop(t *testing.T) {
	testHookPanic = func(ev *events.TelemetryEvent) {
		if ev.Service == "panicky" && ev.Status == "running" {
			panic("boom")
		}
	}
	defer func() { testHookPanic = nil }()
	evts := events.NewBroadcaster()
	s := New("panicky", "sleep 1000", "", nil, fastPolicy(RestartAlways), nil, evts, "")
	s.StopGrace = time.Second
	got := make(chan any, 1)
	go func() {
		defer func() { got <- recover() }()
		_ = s.Run(context.Background())
	}()
	select {
	case v := <-got:
		if v == nil || !strings.Contains(fmt.Sprint(v), "boom") {
			t.Fatalf("recovered %v", v)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("a panic in a callback did not end the run")
	}
	if o := s.Outcome(); o.Kind != OutcomeCancelled {
		t.Fatalf("outcome %+v", o)
	}
}

func TestStateDirRecordsAndVersion(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	s := New("rec", "true", "", nil, fastPolicy(RestartNever), nil, nil, dir)
	if err := s.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); err != nil {
		t.Fatal(err)
	}
	if v := Version(); v == "" {
		t.Fatal("empty version")
	}
}

// Without a logs broadcaster the output is still drained: a chatty service
// does not block on a full pipe.
func TestNoLogsBroadcasterStillDrains(t *testing.T) {
	r := runSupervisor(t, context.Background(), "quiet", "seq 1 300000; exit 5", fastPolicy(RestartNever), 60*time.Second, func(s *Supervisor) {
		s.logBroadcast = nil
	})
	wantStatuses(t, r.statuses(), "started", "running", "exited", "stopped")
	if len(r.logs) != 0 || r.events[2].ExitCode != 5 {
		t.Fatalf("logs %d, exit %d", len(r.logs), r.events[2].ExitCode)
	}
}

func TestLongLinesAndMultilineOff(t *testing.T) {
	cmd := `head -c 2500 /dev/zero | tr '\0' x; echo; printf 'a\n  b\n'`
	r := runSupervisor(t, context.Background(), "long", cmd, fastPolicy(RestartNever), 20*time.Second, func(s *Supervisor) {
		s.MaxLineBytes = 1000
		s.DisableMultiline = true
	})
	var lens []int
	var bodies []string
	for _, l := range r.logs {
		lens = append(lens, len(l.LogBody))
		bodies = append(bodies, l.LogBody)
	}
	if fmt.Sprint(lens[:3]) != "[1000 1000 500]" || strings.Join(bodies[3:], "|") != "a|  b" {
		t.Fatalf("pieces %v, bodies %q", lens, bodies)
	}
	s := New("neg", "true", "", nil, fastPolicy(RestartNever), nil, nil, "")
	s.MaxLineBytes = -1
	if s.Run(context.Background()) == nil {
		t.Fatal("negative MaxLineBytes accepted")
	}
}

// Log lines are copied out of C in groups sharing one allocation; bodies
// stay exact across group boundaries, with invalid UTF-8 repaired per line
// (never leaking into a neighbour), empty lines, multibyte characters and a
// line longer than a group. Both copy paths: one region, and line by line.
func TestLogGroupsExact(t *testing.T) {
	var content strings.Builder
	var want []string
	add := func(line string) {
		content.WriteString(line + "\n")
		want = append(want, lenientUTF8(line))
	}
	for i := 1; i <= 3000; i++ {
		switch {
		case i%7 == 0:
			add(fmt.Sprintf("bad\xff%d\xe2\x82", i)) // a stray byte, a truncated sequence
		case i%11 == 0:
			add("")
		case i%13 == 0:
			add("\xac" + strconv.Itoa(i)) // starts with a continuation byte
		default:
			add(fmt.Sprintf("é€%d %s", i, strings.Repeat("z", i%97)))
		}
		if i == 1500 {
			add(strings.Repeat("y", 20000))
		}
	}
	path := filepath.Join(t.TempDir(), "lines")
	if err := os.WriteFile(path, []byte(content.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, notContiguous := range []bool{false, true} {
		t.Run(fmt.Sprintf("notContiguous=%v", notContiguous), func(t *testing.T) {
			testNotContiguous = notContiguous
			defer func() { testNotContiguous = false }()
			r := runSupervisor(t, context.Background(), "groups", "cat "+path, fastPolicy(RestartNever), 60*time.Second, nil)
			if r.err != nil {
				t.Fatal(r.err)
			}
			if len(r.logs) != len(want) {
				t.Fatalf("%d lines, want %d", len(r.logs), len(want))
			}
			for i, l := range r.logs {
				if l.LogBody != want[i] {
					t.Fatalf("line %d: %q, want %q", i+1, l.LogBody, want[i])
				}
			}
		})
	}
}
