package supervisor

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/devrig/libdevrig/bindings/go/events"
)

// A subscriber that never reads must cost only its own services: the
// others keep being supervised on time, their stops included. Before
// publishing stopped blocking libdevrig's shared threads, B (which ignores
// SIGTERM, StopGrace 300 ms, and shares nothing with the spammers) got its
// SIGKILL 5 s after its cancel: every worker was waiting for the stuck
// subscriber. Both the README's pattern (one broadcaster shared by every
// service, for logs and statuses) and one stuck broadcaster per service
// (as many as libdevrig has threads, and more) are tried.
func TestStuckSubscriberDoesNotDelayOtherServices(t *testing.T) {
	for _, shared := range []bool{true, false} {
		t.Run(fmt.Sprintf("shared=%v", shared), func(t *testing.T) {
			bEvts := events.NewBroadcaster()
			bCh := bEvts.Subscribe(64)
			ctxB, cancelB := context.WithCancel(context.Background())
			defer cancelB()
			b := New("freeB", `trap '' TERM; while :; do sleep 0.05; done`, "", nil, fastPolicy(RestartNever), nil, bEvts, "")
			b.StopGrace = 300 * time.Millisecond
			rb, err := b.Start(ctxB)
			if err != nil {
				t.Fatal(err)
			}
			waitFor(t, bCh, 10*time.Second, func(e events.TelemetryEvent) bool { return e.Status == "running" })

			ctxA, cancelA := context.WithCancel(context.Background())
			defer cancelA()
			type stuck struct {
				b  *events.Broadcaster
				ch <-chan events.TelemetryEvent
			}
			var stucks []stuck
			var runs []*Running
			one := events.NewBroadcaster()
			for i := 0; i < 4; i++ {
				bc := one
				if !shared || i == 0 {
					if !shared {
						bc = events.NewBroadcaster()
					}
					stucks = append(stucks, stuck{bc, bc.Subscribe(0)}) // never read
				}
				a := New(fmt.Sprintf("spam%d", i), `while :; do echo spam; sleep 0.005; done`, "", nil,
					fastPolicy(RestartNever), bc, bc, "")
				r, err := a.Start(ctxA)
				if err != nil {
					t.Fatal(err)
				}
				runs = append(runs, r)
			}
			// Every spammer is held back by its stuck subscriber before B
			// is cancelled: its deliveries are queued and its logs held.
			waitHeldBack(t, 10*time.Second, runs...)

			t0 := time.Now()
			cancelB()
			if err := rb.Wait(); err != nil {
				t.Fatal(err)
			}
			if d := time.Since(t0); d > 2*time.Second {
				t.Fatalf("B (StopGrace 300ms, ignores SIGTERM) stopped %v after its cancel", d)
			}
			if o := b.Outcome(); o.Kind != OutcomeCancelled || o.LastSignal != 9 {
				t.Fatalf("B's outcome %+v", o)
			}
			// The spammers end too once cancelled: their stuck
			// subscribers are removed (which wakes what waits for them).
			for _, s := range stucks {
				s.b.Unsubscribe(s.ch)
			}
			cancelA()
			for _, r := range runs {
				select {
				case <-r.Done():
				case <-time.After(20 * time.Second):
					t.Fatal("a spammer did not end")
				}
			}
		})
	}
}

// waitHeldBack waits until each run has deliveries queued behind a full
// subscriber and its logs held (libdevrig reads no more of its output).
func waitHeldBack(t *testing.T, limit time.Duration, runs ...*Running) {
	t.Helper()
	heldBack := func(r *Running) bool {
		d := r.rs.dq.Load()
		if d == nil {
			return false
		}
		d.mu.Lock()
		defer d.mu.Unlock()
		return d.busy && d.held
	}
	deadline := time.Now().Add(limit)
	for _, r := range runs {
		for !heldBack(r) {
			if time.Now().After(deadline) {
				t.Fatalf("%s was not held back by its stuck subscriber after %v", r.rs.name, limit)
			}
			time.Sleep(time.Millisecond)
		}
	}
}

// A slow subscriber that keeps reading gets every line, in order, and the
// child is slowed down to its pace (its pipe fills up) instead of lines
// being dropped.
func TestSlowSubscriberGetsEveryLineAndSlowsTheChild(t *testing.T) {
	const n = 200000 // 1.3 MB: far more than a pipe and a read hold
	b := events.NewBroadcaster()
	ch := b.Subscribe(16)
	s := New("slowed", fmt.Sprintf("seq 1 %d", n), "", nil, fastPolicy(RestartNever), b, b, "")
	done := make(chan error, 1)
	go func() { done <- s.Run(context.Background()) }()
	next := 1
	var exited events.TelemetryEvent
	t0 := time.Now()
	deadline := time.After(120 * time.Second)
	for exited.Status == "" {
		select {
		case e := <-ch:
			switch {
			case e.Kind == events.KindLogRecord:
				if e.LogBody != strconv.Itoa(next) {
					t.Fatalf("line %d: got %q", next, e.LogBody)
				}
				next++
				if next%2000 == 0 {
					time.Sleep(4 * time.Millisecond) // 400 ms in all
				}
			case e.Status == "exited":
				exited = e
			}
		case <-deadline:
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
	// Unhindered, seq writes its 1.3 MB in a few milliseconds; held back
	// by the reader's 400 ms of pauses (all but the last ~200 KB of them,
	// at most, while it runs) it lives much longer.
	if exited.Runtime < 150*time.Millisecond {
		t.Fatalf("the child lived %v of the reader's %v: it was not slowed", exited.Runtime, time.Since(t0))
	}
}

// On one broadcaster for logs and statuses, with a subscriber slow enough
// that deliveries queue up, each spawn's lines come in order between its
// "started" and its "exited", the terminal status comes last, and Run
// returns only once everything of the run has been handed to the
// subscriber (the broadcaster is closed right after Run: anything not yet
// delivered would be lost).
func TestLinesAndStatusesKeepTheirOrderOnASharedBroadcaster(t *testing.T) {
	const lines = 20000
	p := fastPolicy(RestartOnFailure)
	p.MaxRestarts = 2
	b := events.NewBroadcaster()
	ch := b.Subscribe(1)
	slow := make(chan []events.TelemetryEvent, 1)
	go func() {
		var got []events.TelemetryEvent
		for e := range ch {
			got = append(got, e)
			if len(got)%1000 == 0 {
				time.Sleep(2 * time.Millisecond)
			}
		}
		slow <- got
	}()
	s := New("ordered", fmt.Sprintf("seq 1 %d; echo err >&2; exit 1", lines), "", nil, p, b, b, "")
	if err := s.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	b.Close()
	got := <-slow
	if d := b.Dropped(); d != 0 {
		t.Fatalf("%d events dropped", d)
	}
	var statuses []string
	pid, next, spawns, stderr := 0, 0, 0, 0
	for i, e := range got {
		if e.Kind == events.KindServiceStatusChange {
			statuses = append(statuses, e.Status)
			switch e.Status {
			case "started":
				pid, next = e.PID, 1
				spawns++
			case "exited":
				if next != lines+1 || stderr != spawns {
					t.Fatalf("spawn %d: exited after %d of %d lines (stderr %d)", spawns, next-1, lines, stderr)
				}
			case "failed":
				if i != len(got)-1 {
					t.Fatalf("%d events after the terminal one", len(got)-1-i)
				}
			}
			continue
		}
		if e.PID != pid {
			t.Fatalf("a line of pid %d outside its spawn (current %d)", e.PID, pid)
		}
		if e.Stream == events.StreamStderr {
			stderr++
			continue
		}
		if e.LogBody != strconv.Itoa(next) {
			t.Fatalf("spawn %d, line %d: got %q", spawns, next, e.LogBody)
		}
		next++
	}
	wantStatuses(t, statuses,
		"started", "running", "exited", "backoff",
		"started", "running", "exited", "backoff",
		"started", "running", "exited", "failed")
}
