package supervisor

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/devrig/libdevrig/bindings/go/events"
)

// TestMain doubles as a helper process. For TestReapOrphans: with
// DEVRIG_GO_HELPER=orphan it runs a supervisor on a state directory, prints
// the service's pid and waits to be SIGKILLed (a host crash). For
// TestHostIgnoringSIGCHLD: with DEVRIG_GO_HELPER=sigchld-ignored it sets
// SIGCHLD to SIG_IGN before anything else, then runs the tests it is given
// (that one).
func TestMain(m *testing.M) {
	switch os.Getenv("DEVRIG_GO_HELPER") {
	case "orphan":
		orphanHelper()
		return
	case sigchldIgnoredHelper:
		signal.Ignore(syscall.SIGCHLD)
	}
	os.Exit(m.Run())
}

func orphanHelper() {
	evts := events.NewBroadcaster()
	ch := evts.Subscribe(16)
	p := DefaultPolicy
	p.StartupGrace = 0 // "running" follows the state record with the pid
	s := New("orphan", "sleep 1000 & sleep 1000", "", nil, p, nil, evts, os.Getenv("DEVRIG_GO_STATE"))
	go func() { _ = s.Run(context.Background()) }()
	for e := range ch {
		if e.Status == "running" {
			fmt.Printf("pid %d\n", e.PID)
		}
	}
}

func TestProcStartTimeAndSameProcess(t *testing.T) {
	start, ok := ProcStartTimeMs(os.Getpid())
	if !ok {
		t.Fatal("no start time for the test process")
	}
	now := time.Now().UnixMilli()
	if start > now+1000 || start < now-24*3600*1000 {
		t.Fatalf("start time %d is implausible (now %d)", start, now)
	}
	if !SameProcess(os.Getpid(), start) || !SameProcess(os.Getpid(), 0) {
		t.Fatal("SameProcess false for this process")
	}
	if SameProcess(os.Getpid(), start-5000) {
		t.Fatal("SameProcess true for another start time")
	}
	for _, pid := range []int{0, -1, 1 << 40} {
		if _, ok := ProcStartTimeMs(pid); ok {
			t.Fatalf("ProcStartTimeMs(%d) ok", pid)
		}
		if SameProcess(pid, 0) {
			t.Fatalf("SameProcess(%d)", pid)
		}
		KillTree(pid, time.Millisecond) // refused, must not signal a group
	}

	// A child that exited and was reaped is no longer the same process.
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	if SameProcess(cmd.Process.Pid, start) {
		t.Fatal("SameProcess true for a reaped child")
	}
}

func TestKillTree(t *testing.T) {
	// A parent with children and a grandchild, started by Go's own os/exec.
	cmd := exec.Command("sh", "-c", `sleep 1000 & echo $!; sh -c 'sleep 1000 & echo $!; wait' & wait`)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	var pids []int
	for len(pids) < 2 && sc.Scan() {
		p, _ := strconv.Atoi(strings.TrimSpace(sc.Text()))
		pids = append(pids, p)
	}
	if len(pids) != 2 {
		t.Fatalf("pids %v", pids)
	}
	t0 := time.Now()
	KillTree(cmd.Process.Pid, 5*time.Second)
	if d := time.Since(t0); d > 4*time.Second {
		t.Fatalf("KillTree took %v though everything died at SIGTERM", d)
	}
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGTERM {
		t.Fatalf("parent wait: %v", err)
	}
	waitGone(t, 5*time.Second, pids...)
}

func TestKillTreeEscalatesToSigkill(t *testing.T) {
	cmd := exec.Command("sh", "-c", `trap '' TERM; echo ready; while :; do sleep 0.05; done`)
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	bufio.NewScanner(out).Scan() // "ready": the trap is set
	KillTree(cmd.Process.Pid, 300*time.Millisecond)
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("wait: %v", err)
	}
}

func TestPIDFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	if got, want := PIDFilePath(dir), filepath.Join(dir, "devrig.pid"); got != want {
		t.Fatalf("PIDFilePath = %q, want %q", got, want)
	}
	if err := WritePIDFile(dir); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(PIDFilePath(dir))
	// The decimal pid alone, as devrig wrote it.
	if err != nil || string(b) != strconv.Itoa(os.Getpid()) {
		t.Fatalf("pid file %q, %v", b, err)
	}
	RemovePIDFile(dir)
	if _, err := os.Stat(PIDFilePath(dir)); !os.IsNotExist(err) {
		t.Fatalf("pid file still there: %v", err)
	}
	RemovePIDFile(dir) // absent: fine
	if err := WritePIDFile(dir + "\x00/x"); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("NUL in state dir: %v", err)
	}
	if err := WritePIDFile("/proc/definitely/not/writable"); err == nil {
		t.Fatal("WritePIDFile into /proc succeeded")
	}
}

func TestReapOrphans(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state")
	helper := exec.Command(os.Args[0], "-test.run=^$")
	helper.Env = append(os.Environ(), "DEVRIG_GO_HELPER=orphan", "DEVRIG_GO_STATE="+state)
	out, _ := helper.StdoutPipe()
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	if !sc.Scan() {
		t.Fatal("helper printed no pid")
	}
	pid, err := strconv.Atoi(strings.TrimPrefix(sc.Text(), "pid "))
	if err != nil {
		t.Fatal(err)
	}
	// Crash the host: its service survives as an orphan.
	_ = helper.Process.Kill()
	_ = helper.Wait()
	if !alive(pid) {
		t.Fatalf("service %d died with its host", pid)
	}
	n, err := ReapOrphans(state, 2*time.Second)
	if err != nil || n != 1 {
		t.Fatalf("ReapOrphans = %d, %v; want 1", n, err)
	}
	waitGone(t, 5*time.Second, pid)
	if n, err := ReapOrphans(state, time.Second); err != nil || n != 0 {
		t.Fatalf("second ReapOrphans = %d, %v", n, err)
	}
	if _, err := ReapOrphans(filepath.Join(state, "missing"), time.Second); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing dir: %v", err)
	}
}
