package supervisor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/devrig/libdevrig/bindings/go/events"
)

// waitDone waits for r's end, failing the test after limit.
func waitDone(t *testing.T, r *Running, limit time.Duration) {
	t.Helper()
	select {
	case <-r.Done():
	case <-time.After(limit):
		t.Fatalf("run did not end within %v", limit)
	}
}

// stopGroupCount is the number of live stop groups.
func stopGroupCount() int {
	stopGroups.mu.Lock()
	defer stopGroups.mu.Unlock()
	return len(stopGroups.m)
}

// Start returns once the child was spawned; the run goes on without the
// caller; Wait and Done report its end, with the outcome set.
func TestStartWaitCompleted(t *testing.T) {
	evts := events.NewBroadcaster()
	ch := evts.Subscribe(64)
	// The child runs until the test lets it end (not for a time: a test
	// goroutine held up longer than that found Done closed already).
	gate := filepath.Join(t.TempDir(), "end")
	s := New("start-done", fmt.Sprintf("while [ ! -e %s ]; do sleep 0.01; done; exit 3", gate),
		"", nil, fastPolicy(RestartNever), nil, evts, "")
	r, err := s.Start(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	started := waitFor(t, ch, 10*time.Second, func(e events.TelemetryEvent) bool { return e.Status == events.StatusStarted })
	if started.PID <= 0 {
		t.Fatalf("started without a pid: %+v", started)
	}
	select {
	case <-r.Done():
		t.Fatal("Done closed while the child still runs")
	default:
	}
	if err := os.WriteFile(gate, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	waitDone(t, r, 20*time.Second)
	if err := r.Wait(); err != nil {
		t.Fatal(err)
	}
	if err := r.Wait(); err != nil { // again: same result
		t.Fatal(err)
	}
	if alive(started.PID) {
		t.Fatalf("pid %d alive after the run ended", started.PID)
	}
	o := s.Outcome()
	if o.Kind != OutcomeCompleted || o.LastExitCode != 3 {
		t.Fatalf("outcome %+v, want completed with exit code 3", o)
	}
	evts.Close()
	var got []string
	for e := range ch {
		got = append(got, e.Status)
	}
	wantStatuses(t, got, "running", "exited", "stopped")
}

// A first spawn that fails is Start's error; the run has then ended.
func TestStartSpawnFailure(t *testing.T) {
	evts := events.NewBroadcaster()
	ch := evts.Subscribe(64)
	s := New("start-nodir", "true", filepath.Join(t.TempDir(), "missing"), nil, fastPolicy(RestartAlways), nil, evts, "")
	r, err := s.Start(context.Background())
	if r != nil || !errors.Is(err, ErrSpawn) {
		t.Fatalf("Start = %v, %v; want nil and a spawn error", r, err)
	}
	if o := s.Outcome(); o.Kind != OutcomeFailed {
		t.Fatalf("outcome %+v, want failed", o)
	}
	evts.Close()
	var got []string
	for e := range ch {
		got = append(got, e.Status)
	}
	wantStatuses(t, got, "spawn_failed", "failed")
	if n := stopGroupCount(); n != 0 {
		t.Fatalf("%d stop groups left", n)
	}
}

// A refused configuration is Start's error, before anything runs.
func TestStartInvalidConfig(t *testing.T) {
	s := New("../bad", "true", "", nil, fastPolicy(RestartNever), nil, nil, "")
	if r, err := s.Start(context.Background()); r != nil || !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("Start = %v, %v; want nil and an invalid-argument error", r, err)
	}
}

// A context cancelled before Start: nothing is spawned, Wait returns at once.
func TestStartCancelledContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	evts := events.NewBroadcaster()
	ch := evts.Subscribe(64)
	s := New("start-early", "echo never", "", nil, fastPolicy(RestartAlways), nil, evts, "")
	r, err := s.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	waitDone(t, r, 10*time.Second)
	if err := r.Wait(); err != nil {
		t.Fatal(err)
	}
	evts.Close()
	for e := range ch {
		if e.Status == events.StatusStarted {
			t.Fatalf("spawned although ctx was cancelled before Start: %+v", e)
		}
	}
	if o := s.Outcome(); o.Kind != OutcomeCancelled {
		t.Fatalf("outcome %+v, want cancelled", o)
	}
}

// Runs started with one context are stopped together by its cancellation,
// contexts that share its Done channel included; a run with another context
// is left alone. Each stopped run's processes are gone when Wait returns,
// and the groups are gone once their runs have ended.
func TestStartStopGroups(t *testing.T) {
	const n = 20
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type key struct{}
	valued := context.WithValue(ctx, key{}, 1) // same Done channel as ctx
	other, cancelOther := context.WithCancel(context.Background())
	defer cancelOther()

	evts := events.NewBroadcaster()
	ch := evts.Subscribe(16 * n)
	start := func(i int, c context.Context) *Running {
		s := New(fmt.Sprintf("group-%d", i), "exec sleep 30", "", nil, fastPolicy(RestartAlways), nil, evts, "")
		r, err := s.Start(c)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	var runs []*Running
	for i := range n {
		c := ctx
		if i%2 == 1 {
			c = valued
		}
		runs = append(runs, start(i, c))
	}
	lone := start(n, other)
	if g := stopGroupCount(); g != 2 {
		t.Fatalf("%d stop groups, want 2 (one per Done channel)", g)
	}

	pids := map[string]int{}
	for len(pids) < n+1 {
		e := waitFor(t, ch, 20*time.Second, func(e events.TelemetryEvent) bool { return e.Status == events.StatusStarted })
		pids[e.Service] = e.PID
	}
	cancel()
	for _, r := range runs {
		waitDone(t, r, 20*time.Second)
		if err := r.Wait(); err != nil {
			t.Fatal(err)
		}
	}
	for svc, p := range pids {
		if svc != fmt.Sprintf("group-%d", n) && alive(p) {
			t.Errorf("%s (pid %d) alive after its run ended", svc, p)
		}
	}
	select {
	case <-lone.Done():
		t.Fatal("a run with another context was stopped")
	default:
	}
	if !alive(pids[fmt.Sprintf("group-%d", n)]) {
		t.Fatal("the child of the run with another context is gone")
	}
	cancelOther()
	waitDone(t, lone, 20*time.Second)
	if g := stopGroupCount(); g != 0 {
		t.Fatalf("%d stop groups left after every run ended", g)
	}

	// A group whose runs all end on their own is removed, its AfterFunc
	// undone: cancelling its context later does nothing.
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	s := New("group-done", "true", "", nil, fastPolicy(RestartNever), nil, nil, "")
	r, err := s.Start(ctx2)
	if err != nil {
		t.Fatal(err)
	}
	waitDone(t, r, 20*time.Second)
	if g := stopGroupCount(); g != 0 {
		t.Fatalf("%d stop groups left after a run completed", g)
	}
	if o := s.Outcome(); o.Kind != OutcomeCompleted {
		t.Fatalf("outcome %+v, want completed", o)
	}
}

// Runs started with Start have no goroutine of their own while they run,
// nor do they after cancelling their context once they have ended.
func TestStartNoGoroutinePerRun(t *testing.T) {
	const n = 50
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	before := runtime.NumGoroutine()
	runs := make([]*Running, n)
	for i := range n {
		s := New(fmt.Sprintf("nog-%d", i), "exec sleep 30", "", nil, fastPolicy(RestartAlways), nil, nil, "")
		r, err := s.Start(ctx)
		if err != nil {
			t.Fatal(err)
		}
		runs[i] = r
	}
	time.Sleep(100 * time.Millisecond)
	if d := runtime.NumGoroutine() - before; d > 5 {
		t.Errorf("%d more goroutines with %d runs (want none per run)", d, n)
	}
	cancel()
	for _, r := range runs {
		waitDone(t, r, 20*time.Second)
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before+2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if d := runtime.NumGoroutine() - before; d > 2 {
		t.Errorf("%d more goroutines after every run ended", d)
	}
}

// Many goroutines may Wait on one run; a callback's panic is raised by each.
func TestStartWaitersAndPanic(t *testing.T) {
	testHookPanic = func(ev *events.TelemetryEvent) {
		if ev.Service == "start-panic" && ev.Status == events.StatusRunning {
			panic("boom in callback")
		}
	}
	defer func() { testHookPanic = nil }()
	evts := events.NewBroadcaster()
	defer evts.Close()
	s := New("start-panic", "exec sleep 30", "", nil, fastPolicy(RestartAlways), nil, evts, "")
	r, err := s.Start(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			defer func() {
				if v := recover(); v != "boom in callback" {
					t.Errorf("Wait: recovered %v, want the callback's panic", v)
				}
			}()
			r.Wait()
		})
	}
	wg.Wait()
	if o := s.Outcome(); o.Kind != OutcomeCancelled {
		t.Fatalf("outcome %+v, want cancelled (a panic stops the service)", o)
	}
}

// The safety net's poll finds nothing to do while runs are alive, and is
// idle (no timer) once none is.
func TestSafetyNetPoll(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	s := New("net", "exec sleep 30", "", nil, fastPolicy(RestartAlways), nil, nil, "")
	r, err := s.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pollSafetyNet()
	select {
	case <-r.Done():
		t.Fatal("the safety net ended a live run")
	case <-time.After(50 * time.Millisecond):
	}
	cancel()
	waitDone(t, r, 20*time.Second)
	safetyNet.mu.Lock()
	idle := safetyNet.head == nil && safetyNet.timer == nil
	safetyNet.mu.Unlock()
	if !idle {
		t.Fatal("the safety net still holds runs or a timer after every run ended")
	}
}

// A run that ends before Start has returned (a child that exits at once)
// leaves nothing behind: no stop group, no entry in the safety net.
func TestStartQuickRunsLeaveNothing(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Half of them end before Start goes on after the spawn.
	testHookStarted = func(rs *runState) {
		if strings.HasSuffix(rs.name, "0") || strings.HasSuffix(rs.name, "2") {
			select {
			case <-rs.done:
			case <-time.After(10 * time.Second):
			}
		}
	}
	defer func() { testHookStarted = nil }()
	for i := range 100 {
		s := New(fmt.Sprintf("quick-%d", i), "exec true", "", nil, fastPolicy(RestartNever), nil, nil, "")
		r, err := s.Start(ctx)
		if err != nil {
			t.Fatal(err)
		}
		waitDone(t, r, 20*time.Second)
	}
	time.Sleep(10 * time.Millisecond)
	safetyNet.mu.Lock()
	idle := safetyNet.head == nil && safetyNet.timer == nil
	safetyNet.mu.Unlock()
	if !idle {
		t.Fatal("the safety net holds runs that have ended")
	}
	if g := stopGroupCount(); g != 0 {
		t.Fatalf("%d stop groups left", g)
	}
}

// wantAlreadyRunning checks that err is Start's refusal of a second run.
func wantAlreadyRunning(t *testing.T, err error, name string) {
	t.Helper()
	var e *Error
	if !errors.Is(err, ErrState) || !errors.As(err, &e) || e.Code != CodeState {
		t.Fatalf("err %v (%T), want an *Error of code CodeState", err, err)
	}
	if want := fmt.Sprintf("supervisor %s: service %q is already running", name, name); err.Error() != want {
		t.Fatalf("err %q, want %q", err, want)
	}
}

// One Supervisor runs one copy of its service at a time: of many
// goroutines calling Start at once, exactly one starts a run, the others
// get ErrState; Run while it is live too. Nothing else is spawned, and
// once the run has ended the Supervisor runs again.
func TestStartTwiceConcurrentlyIsErrState(t *testing.T) {
	const n = 32
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	evts := events.NewBroadcaster()
	ch := evts.Subscribe(256)
	s := New("once", "exec sleep 30", "", nil, fastPolicy(RestartAlways), nil, evts, "")

	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		runs []*Running
		errs []error
	)
	ready := make(chan struct{})
	for range n {
		wg.Go(func() {
			<-ready
			r, err := s.Start(ctx)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
			} else {
				runs = append(runs, r)
			}
		})
	}
	close(ready)
	wg.Wait()
	if len(runs) != 1 || len(errs) != n-1 {
		t.Fatalf("%d Starts succeeded and %d failed, want 1 and %d", len(runs), len(errs), n-1)
	}
	for _, err := range errs {
		wantAlreadyRunning(t, err, "once")
	}
	if err := s.Run(ctx); err == nil {
		t.Fatal("Run accepted while a run is live")
	} else {
		wantAlreadyRunning(t, err, "once")
	}
	select {
	case <-runs[0].Done():
		t.Fatal("the run ended although nothing stopped it")
	default:
	}

	cancel()
	waitDone(t, runs[0], 20*time.Second)
	if err := runs[0].Wait(); err != nil {
		t.Fatal(err)
	}
	if o := s.Outcome(); o.Kind != OutcomeCancelled {
		t.Fatalf("outcome %+v, want cancelled", o)
	}
	// Done is closed after the terminal event was published.
	var got []string
	for len(ch) > 0 {
		got = append(got, (<-ch).Status)
	}
	if n := strings.Count(strings.Join(got, ","), "started"); n != 1 || got[len(got)-1] != "stopped" {
		t.Fatalf("statuses %v, want one \"started\" and \"stopped\" last", got)
	}
	if g := stopGroupCount(); g != 0 {
		t.Fatalf("%d stop groups left", g)
	}

	// Ended: the Supervisor runs again.
	s.Command = "exit 0"
	s.Policy = fastPolicy(RestartNever)
	if err := s.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if o := s.Outcome(); o.Kind != OutcomeCompleted {
		t.Fatalf("outcome %+v, want completed", o)
	}
}

// The Supervisor accepts a new Start only once the previous run's outcome
// is set: a goroutine that calls Start without pause while the run ends
// finds Outcome set as soon as its Start is accepted, and every Start
// before that is refused with ErrState.
func TestStartAgainOnlyOnceOutcomeIsSet(t *testing.T) {
	for i := range 20 {
		s := New(fmt.Sprintf("again-%d", i), "sleep 0.02; exit 3", "", nil, fastPolicy(RestartNever), nil, nil, "")
		first, err := s.Start(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		var next *Running
		for {
			next, err = s.Start(context.Background())
			if err == nil {
				break
			}
			wantAlreadyRunning(t, err, s.Name)
			runtime.Gosched()
		}
		if o := s.Outcome(); o.Kind != OutcomeCompleted || o.LastExitCode != 3 {
			t.Fatalf("outcome %+v when the next Start was accepted, want the first run's (completed, exit code 3)", o)
		}
		waitDone(t, first, 20*time.Second)
		waitDone(t, next, 20*time.Second)
		if err := next.Wait(); err != nil {
			t.Fatal(err)
		}
	}
}

// A Start that fails (configuration refused, by the binding or by
// libdevrig; first spawn failed) leaves the Supervisor free to start, as
// does a run whose context was cancelled before it.
func TestStartFailuresLeaveSupervisorFree(t *testing.T) {
	s := New("../bad", "exec sleep 30", "", nil, fastPolicy(RestartAlways), nil, nil, "")
	if _, err := s.Start(context.Background()); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("Start: %v, want ErrInvalidArgument (refused by libdevrig)", err)
	}
	s.Name = "free"
	s.StopGrace = -time.Second
	if _, err := s.Start(context.Background()); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("Start: %v, want ErrInvalidArgument (refused by the binding)", err)
	}
	s.StopGrace = 0
	s.WorkingDir = filepath.Join(t.TempDir(), "missing")
	for range 2 {
		if _, err := s.Start(context.Background()); !errors.Is(err, ErrSpawn) {
			t.Fatalf("Start: %v, want ErrSpawn", err)
		}
	}
	s.WorkingDir = ""
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	r, err := s.Start(cancelled)
	if err != nil {
		t.Fatal(err)
	}
	waitDone(t, r, 10*time.Second)

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	r, err = s.Start(ctx)
	if err != nil {
		t.Fatalf("Start after failed ones: %v", err)
	}
	// While live, an invalid configuration is still refused as such.
	s.StopGrace = -time.Second
	if _, err := s.Start(ctx); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("Start with a live run and a bad StopGrace: %v, want ErrInvalidArgument", err)
	}
	s.StopGrace = 0
	if _, err := s.Start(ctx); !errors.Is(err, ErrState) {
		t.Fatalf("Start with a live run: %v, want ErrState", err)
	}
	stop()
	waitDone(t, r, 20*time.Second)
	if o := s.Outcome(); o.Kind != OutcomeCancelled {
		t.Fatalf("outcome %+v, want cancelled", o)
	}
}

// Start called from a LogHandler (a libdevrig thread) for a service whose
// first spawn fails returns ErrSpawn at once, with the run ended, and does
// not hold up the calling service.
func TestStartFromLogHandlerWithFailingSpawn(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b := New("b", "true", filepath.Join(t.TempDir(), "missing"), nil, fastPolicy(RestartNever), nil, nil, "")
	a := New("a", "echo ready; exec sleep 30", "", nil, fastPolicy(RestartNever), nil, nil, "")
	res := make(chan error, 1)
	fired := false
	a.LogHandler = func([]LogView) {
		if !fired {
			fired = true
			_, err := b.Start(ctx)
			res <- err
		}
	}
	ra, err := a.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-res:
		if !errors.Is(err, ErrSpawn) {
			t.Fatalf("Start from the LogHandler: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Start from a LogHandler did not return")
	}
	if o := b.Outcome(); o.Kind != OutcomeFailed {
		t.Fatalf("b's outcome %+v", o)
	}
	cancel()
	done := make(chan error, 1)
	go func() { done <- ra.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a did not stop")
	}
}

// A subscriber that sees the terminal event may start the service again at
// once: the Supervisor is free, and Outcome is the ended run's.
func TestStartAgainRightAfterTheTerminalEvent(t *testing.T) {
	evts := events.NewBroadcaster()
	ch := evts.Subscribe(64)
	s := New("again", "exit 0", "", nil, fastPolicy(RestartNever), nil, evts, "")
	var runs []*Running
	for i := 0; i < 20; i++ {
		r, err := s.Start(context.Background())
		if err != nil {
			t.Fatalf("start %d: %v", i, err)
		}
		runs = append(runs, r)
		waitFor(t, ch, 10*time.Second, func(e events.TelemetryEvent) bool { return e.Status == "stopped" })
		if o := s.Outcome(); o.Kind != OutcomeCompleted {
			t.Fatalf("outcome %+v", o)
		}
	}
	for _, r := range runs {
		if err := r.Wait(); err != nil {
			t.Fatal(err)
		}
	}
}

// A panic inside Start (a nil context) does not leave the Supervisor
// claimed for good.
func TestPanicInStartLeavesTheSupervisorFree(t *testing.T) {
	s := New("nilctx", "true", "", nil, fastPolicy(RestartNever), nil, nil, "")
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("Start(nil) did not panic")
			}
		}()
		s.Start(nil) // the nil context is the point
	}()
	if err := s.Run(context.Background()); err != nil {
		t.Fatalf("Run after the panic: %v", err)
	}
}

// The same when the subscriber is slow, so that the run's lines and its
// "stopped" are queued: the Supervisor is freed just before "stopped" is
// handed over, not later.
func TestStartAgainAtTheTerminalEventOfASlowSubscriber(t *testing.T) {
	bc := events.NewBroadcaster()
	ch := bc.Subscribe(0)
	s := New("slowsub", "seq 1 300", "", nil, fastPolicy(RestartNever), bc, bc, "")
	first, err := s.Start(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.After(20 * time.Second)
	for {
		select {
		case e := <-ch:
			if e.Status != "stopped" {
				time.Sleep(time.Millisecond) // slow: the run's deliveries queue up
				continue
			}
			second, err := s.Start(context.Background())
			if err != nil {
				t.Fatalf("Start right after \"stopped\": %v", err)
			}
			go func() {
				for range ch {
				}
			}()
			if err := first.Wait(); err != nil {
				t.Fatal(err)
			}
			if err := second.Wait(); err != nil {
				t.Fatal(err)
			}
			bc.Close()
			return
		case <-deadline:
			t.Fatal("no terminal event")
		}
	}
}
