package supervisor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/devrig/libdevrig/bindings/go/events"
)

// libdevrig lives inside a Go program that has its own children and signal
// handling: supervisors restart and stop services while the program runs
// os/exec children and receives signals through os/signal. Nothing crashes,
// exec.Cmd.Wait gets every exit status, and the signals arrive.
func TestCoexistsWithOsExecAndOsSignal(t *testing.T) {
	sigs := make(chan os.Signal, 64)
	signal.Notify(sigs, syscall.SIGUSR1, syscall.SIGCHLD, syscall.SIGHUP)
	defer signal.Stop(sigs)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	evts := events.NewBroadcaster()
	logs := events.NewBroadcaster()
	evCh := evts.Subscribe(4096)
	logCh := logs.Subscribe(4096)
	go func() {
		for range logCh {
		}
	}()
	const nsup = 4
	var runs sync.WaitGroup
	for i := 0; i < nsup; i++ {
		p := fastPolicy(RestartAlways)
		p.MaxRestarts = 1 << 30
		s := New(fmt.Sprintf("host-%d", i), "echo tick; sleep 0.02; exit 1", "", nil, p, logs, evts, "")
		s.StopGrace = time.Second
		runs.Go(func() {
			if err := s.Run(ctx); err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}

	// Meanwhile: Go's own children, with various endings.
	type job struct {
		args     []string
		code     int
		signaled syscall.Signal
	}
	jobs := []job{
		{[]string{"sh", "-c", "exit 0"}, 0, 0},
		{[]string{"sh", "-c", "exit 7"}, 7, 0},
		{[]string{"sh", "-c", "sleep 0.05; exit 42"}, 42, 0},
		{[]string{"sh", "-c", "kill -TERM $$"}, -1, syscall.SIGTERM},
	}
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for round := 0; round < 10; round++ {
		for _, j := range jobs {
			wg.Go(func() {
				cmd := exec.Command(j.args[0], j.args[1:]...)
				out, err := cmd.Output()
				_ = out
				var ee *exec.ExitError
				switch {
				case j.code == 0 && err != nil:
					errs <- fmt.Errorf("%v: %v", j.args, err)
				case j.code != 0 && !errors.As(err, &ee):
					errs <- fmt.Errorf("%v: want exit error, got %v", j.args, err)
				case j.code > 0 && ee.ExitCode() != j.code:
					errs <- fmt.Errorf("%v: exit code %d, want %d", j.args, ee.ExitCode(), j.code)
				case j.signaled != 0 && ee.Sys().(syscall.WaitStatus).Signal() != j.signaled:
					errs <- fmt.Errorf("%v: status %v, want signal %v", j.args, ee.Sys(), j.signaled)
				}
			})
		}
		if err := syscall.Kill(os.Getpid(), syscall.SIGUSR1); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	// Our own signals reach os/signal.
	got := 0
	deadline := time.After(10 * time.Second)
	for got == 0 {
		select {
		case s := <-sigs:
			if s == syscall.SIGUSR1 {
				got++
			}
		case <-deadline:
			t.Fatal("SIGUSR1 never reached os/signal")
		}
	}

	// The supervisors kept restarting throughout.
	restarts := 0
	for restarts < nsup*3 {
		select {
		case e := <-evCh:
			if e.Status == "backoff" {
				restarts++
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("only %d restarts seen", restarts)
		}
	}
	cancel()
	done := make(chan struct{})
	go func() { runs.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("supervisors did not stop")
	}
	// Drain, then check nothing of ours is left as a child of this process.
	for len(evCh) > 0 {
		<-evCh
	}
	var ws syscall.WaitStatus
	if pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil); pid > 0 || (err != nil && err != syscall.ECHILD) {
		t.Fatalf("an unreaped child remains: pid %d err %v", pid, err)
	}
	logs.Close()
	evts.Close()
}

const sigchldIgnoredHelper = "sigchld-ignored"

// A host that ignores SIGCHLD (signal.Ignore sets SIG_IGN) has the kernel
// reap every child the moment it exits: an "exit 3" is often gone before
// libdevrig opens its pidfd. That is still a run, whose exit status is
// unknown, not a failed spawn, and the restarts go on until the budget is
// spent. The disposition is process-wide, so the test runs in a helper
// process (TestMain ignores SIGCHLD there before anything else).
func TestHostIgnoringSIGCHLD(t *testing.T) {
	if os.Getenv("DEVRIG_GO_HELPER") != sigchldIgnoredHelper {
		helper := exec.Command(os.Args[0], "-test.run=^TestHostIgnoringSIGCHLD$", "-test.v", "-test.count=1", "-test.timeout=60s")
		helper.Env = append(os.Environ(), "DEVRIG_GO_HELPER="+sigchldIgnoredHelper)
		out, err := helper.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "--- PASS: TestHostIgnoringSIGCHLD") {
			t.Fatalf("helper process: %v\n%s", err, out)
		}
		return
	}

	const restarts = 20
	p := fastPolicy(RestartAlways)
	p.MaxRestarts = restarts
	p.InitialDelay = time.Millisecond
	p.MaxDelay = time.Millisecond
	var s *Supervisor
	r := runSupervisor(t, context.Background(), "ignchld", "exit 3", p, 30*time.Second,
		func(sup *Supervisor) { s = sup })
	// The budget runs out: the run fails, but only for that reason.
	if r.err != nil {
		t.Errorf("Run: %v", r.err)
	}
	count := func(status string) int {
		n := 0
		for _, e := range r.events {
			if e.Status == status {
				n++
			}
		}
		return n
	}
	if n := count(events.StatusSpawnFailed); n != 0 {
		t.Errorf("%d spawn_failed events", n)
	}
	if n := count(events.StatusStarted); n != restarts+1 {
		t.Errorf("%d started events, want %d", n, restarts+1)
	}
	if n := count(events.StatusExited); n != restarts+1 {
		t.Errorf("%d exited events, want %d", n, restarts+1)
	}
	for _, e := range r.events {
		if e.Status == events.StatusExited && !strings.Contains(e.Message, "exit status unknown") {
			t.Errorf("exited event says %q, not \"exit status unknown\"", e.Message)
		}
	}
	if len(r.events) == 0 {
		t.Fatal("no events")
	}
	if last := r.events[len(r.events)-1]; last.Status != events.StatusFailed || !strings.Contains(last.Message, "restart budget") {
		t.Errorf("last event %s %q, want failed (restart budget)", last.Status, last.Message)
	}
	if o := s.Outcome(); o.Kind != OutcomeFailed || o.Restarts != restarts {
		t.Errorf("outcome %+v, want failed after %d restarts", o, restarts)
	}
	if t.Failed() {
		t.Logf("statuses: %v", r.statuses())
	}
}
