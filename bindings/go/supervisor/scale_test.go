package supervisor

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/devrig/libdevrig/bindings/go/events"
)

// osThreads is the Threads line of /proc/self/status.
func osThreads(t testing.TB) int {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "Threads:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no Threads line in /proc/self/status")
	return 0
}

// 200 services run at once through Run, each in its own goroutine: the OS
// thread count stays small (no thread is blocked per run), and cancelling
// the context stops them all, with nothing left alive once Run returns.
func TestManyRunsUseFewThreads(t *testing.T) {
	const n = 200
	const maxThreads = 40 // Go's own threads, libdevrig's, and cgo calls in progress
	before := osThreads(t)

	// Sample the thread count all along, not only once everything runs.
	var peak atomic.Int64
	peak.Store(int64(before))
	stopSampling := make(chan struct{})
	var sampler sync.WaitGroup
	sampler.Go(func() {
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stopSampling:
				return
			case <-tick.C:
				if v := int64(osThreads(t)); v > peak.Load() {
					peak.Store(v)
				}
			}
		}
	})

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logs, evts := events.NewBroadcaster(), events.NewBroadcaster()
	evCh := evts.Subscribe(n * 8)
	errs := make(chan error, n)
	var runs sync.WaitGroup
	for i := range n {
		s := New(fmt.Sprintf("many-%d", i), "exec sleep 30", "", nil, fastPolicy(RestartAlways), logs, evts, "")
		s.StopGrace = 5 * time.Second
		runs.Go(func() { errs <- s.Run(ctx) })
	}

	pids := map[string]int{}
	deadline := time.After(60 * time.Second)
	for len(pids) < n {
		select {
		case e := <-evCh:
			if e.Status == events.StatusStarted {
				pids[e.Service] = e.PID
			} else if e.Status == events.StatusStopped || e.Status == events.StatusFailed {
				t.Fatalf("%s ended early: %s %s", e.Service, e.Status, e.Message)
			}
		case <-deadline:
			t.Fatalf("only %d of %d services started", len(pids), n)
		}
	}
	time.Sleep(200 * time.Millisecond) // let every run settle
	running := osThreads(t)
	for svc, p := range pids {
		if !alive(p) {
			t.Fatalf("%s (pid %d) not alive before cancel", svc, p)
		}
	}

	t0 := time.Now()
	cancel()
	finished := make(chan struct{})
	go func() { runs.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-time.After(60 * time.Second):
		t.Fatal("Run did not return for every service after cancel")
	}
	stopAll := time.Since(t0)
	close(stopSampling)
	sampler.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	// Every Run has returned: every child must already be gone.
	for svc, p := range pids {
		if alive(p) {
			t.Errorf("%s (pid %d) survived the stop", svc, p)
		}
	}
	stopped := 0
	for len(evCh) > 0 {
		if e := <-evCh; e.Status == events.StatusStopped {
			stopped++
		}
	}
	if stopped != n {
		t.Errorf("%d stopped events, want %d", stopped, n)
	}
	t.Logf("%d services: threads %d before, %d while running, peak %d; stop-all %v",
		n, before, running, peak.Load(), stopAll)
	if p := peak.Load(); p > maxThreads {
		t.Errorf("OS threads peaked at %d with %d services (want <= %d)", p, n, maxThreads)
	}
	logs.Close()
	evts.Close()
}
