// Package supervisor manages the lifecycle of a single supervised service
// process: spawning, log capture, restart policy, and graceful cancellation.
//
// It reproduces the API of devrig's Go supervisor package (v0.37.0) backed by
// libdevrig through cgo. Status changes are published on the events
// broadcaster as events.KindServiceStatusChange with these Status strings,
// one per libdevrig event kind:
//
//	"started"      a child was spawned (PID)
//	"running"      the child is still alive StartupGrace after "started"
//	               (at once when StartupGrace is 0); sent for every spawn
//	"exited"       the child exited (ExitCode, Signal, Runtime); every log
//	               line it wrote was sent before this event
//	"backoff"      a restart follows after Delay (RestartCount: its number)
//	"spawn_failed" a spawn failed (Message)
//	"stopping"     a stop was requested (ctx cancelled)
//	"stopped"      terminal: the run was cancelled or completed
//	"failed"       terminal: the supervisor gave up; Message names why
//	               ("startup", "restart budget", "crash loop", or the spawn error)
//	"warning"      not terminal: e.g. the state record could not be written
//
// Every run ends with exactly one terminal event and nothing follows it.
// Log entries are published on the logs broadcaster as events.KindLogRecord
// with LogBody, LogSeverity (devrig's spelling: "error", "warn", "info",
// "debug"; TRACE lines are "debug" and lines without a level word "info"),
// and the additions Level (exact: "trace" ... "error", "" when none), Stream,
// PID and Timestamp.
//
// # High-volume logs
//
// One TelemetryEvent per line over a channel costs far more than reading
// the line. For high-volume logs set Supervisor.LogHandler (an addition): a
// func([]LogView) called on libdevrig's thread with each batch of entries,
// lent as views of libdevrig's buffer: nothing is allocated per entry and no
// text is copied.
//
//	s := supervisor.New("web", cmd, "", nil, policy, nil, evts, "")
//	var out []byte // reused; only the handler touches it
//	s.LogHandler = func(lines []supervisor.LogView) {
//		out = out[:0]
//		for i := range lines {
//			out = append(append(out, lines[i].Text()...), '\n') // Text is lent: copy it
//		}
//		os.Stdout.Write(out)
//	}
//
// It can be used alone (logs broadcaster nil) or together with the logs
// broadcaster, which then also receives every entry.
package supervisor

/*
#include <stdlib.h>
#include "shims.h"
*/
import "C"

import (
	"context"
	"fmt"
	"runtime"
	"runtime/cgo"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/devrig/libdevrig/bindings/go/events"
)

// Supervisor manages a single service process. The exported fields may be
// changed before Run; each Run uses their values at the time it starts.
type Supervisor struct {
	Name       string
	Command    string
	WorkingDir string
	Env        map[string]string
	Policy     RestartPolicy

	// StopGrace is the time between SIGTERM and SIGKILL when the service is
	// stopped (an addition; 0 means the libdevrig default, 5 s).
	StopGrace time.Duration
	// DisableMultiline turns off the grouping of indented lines (stack
	// traces) into one entry (an addition; grouping is on by default).
	DisableMultiline bool
	// MaxLineBytes bounds one delivered entry; longer lines come in pieces
	// (an addition; 0 means the libdevrig default, 65536; at most 1<<30).
	MaxLineBytes int
	// LogHandler, when set, receives the service's log entries in batches:
	// the fast path for high-volume logs (an addition), with no allocation
	// and no copy of the text per entry. See LogView.
	//
	// It is called synchronously on a libdevrig thread with the entries of
	// one read of the child's output (at most 1024 a call), never
	// concurrently for one run; the entries of each stream come in order, and
	// all of a child's entries before its "exited" status. The slice is
	// reused and each Text is lent, valid only during the call: copy what
	// you keep (see LogView). Like the C callbacks it runs on one of libdevrig's
	// few shared threads: a slow handler slows its own service (the child
	// blocks on a full pipe), so keep it short, and never wait in it for
	// anything that waits for Run. A panic in it stops the service and Run
	// panics again with the value once every process is reaped; do not call
	// runtime.Goexit (t.FailNow) in it.
	//
	// It works alongside the logs broadcaster given to New: with both, each
	// batch goes to the handler first, then to the broadcaster, so both see
	// every entry. With only the handler (logs nil), no TelemetryEvent is
	// built at all.
	LogHandler func(lines []LogView)

	logBroadcast   *events.Broadcaster
	eventBroadcast *events.Broadcaster
	stateDir       string

	mu      sync.Mutex
	outcome Outcome
}

// New creates a Supervisor. logs and evts may be nil (nothing is published
// there); stateDir "" keeps no state records.
func New(
	name, command, workingDir string,
	env map[string]string,
	policy RestartPolicy,
	logs *events.Broadcaster,
	evts *events.Broadcaster,
	stateDir string,
) *Supervisor {
	return &Supervisor{
		Name:           name,
		Command:        command,
		WorkingDir:     workingDir,
		Env:            env,
		Policy:         policy,
		logBroadcast:   logs,
		eventBroadcast: evts,
		stateDir:       stateDir,
	}
}

// OutcomeKind says how a run ended.
type OutcomeKind int

const (
	OutcomeNone      OutcomeKind = iota // the run has not ended (or not started)
	OutcomeCompleted                    // the service exited and was not restarted
	OutcomeCancelled                    // ctx was cancelled
	OutcomeFailed                       // the supervisor gave up, or the first spawn failed
)

// String returns "none", "completed", "cancelled" or "failed".
func (k OutcomeKind) String() string {
	switch k {
	case OutcomeNone:
		return "none"
	case OutcomeCompleted:
		return "completed"
	case OutcomeCancelled:
		return "cancelled"
	case OutcomeFailed:
		return "failed"
	}
	return fmt.Sprintf("OutcomeKind(%d)", int(k))
}

// Outcome is the result of the last run (an addition).
type Outcome struct {
	Kind         OutcomeKind
	LastExitCode int // -1 after a signal, 0 when no child exited
	LastSignal   int
	Restarts     uint32 // restarts performed
	Message      string
}

// Outcome returns the result of the most recent Run that ended.
func (s *Supervisor) Outcome() Outcome {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.outcome
}

// Run supervises the process until ctx is cancelled or the restart budget is
// exhausted. The returned error is non-nil only if the process could not be
// spawned at all (or the configuration was refused: an unsafe Name, an empty
// Command, an invalid Policy). Cancelling ctx stops the service (SIGTERM to
// its process group, SIGKILL after StopGrace) and Run returns once every
// process of the run has been reaped. A ctx cancelled before Run makes it
// return at once without spawning.
func (s *Supervisor) Run(ctx context.Context) error {
	if err := s.Policy.Validate(); err != nil {
		return fmt.Errorf("supervisor %s: %w", s.Name, err)
	}
	if s.StopGrace < 0 {
		return fmt.Errorf("supervisor %s: negative StopGrace", s.Name)
	}
	if err := s.checkNUL(); err != nil {
		return err
	}
	sup, err := s.build()
	if err != nil {
		return err
	}

	rs := &runState{name: s.Name, logs: s.logBroadcast, evts: s.eventBroadcast, sup: sup,
		handler: s.LogHandler, ended: make(chan struct{})}
	h := cgo.NewHandle(rs)
	defer h.Delete()
	if rs.logs != nil || rs.handler != nil {
		if err := call("register log callback", func() uint32 {
			return uint32(C.devrig_go_on_log_batch(sup, C.uintptr_t(h)))
		}); err != nil {
			C.devrig_free(sup)
			return err
		}
	}
	// The event callback is registered even without an events broadcaster:
	// the terminal event is how Run learns that the run is ending.
	if err := call("register event callback", func() uint32 {
		return uint32(C.devrig_go_on_event(sup, C.uintptr_t(h)))
	}); err != nil {
		C.devrig_free(sup)
		return err
	}

	if ctx.Err() != nil {
		C.devrig_cancel(sup) // the run ends at once, without spawning
	}
	// No OS thread is blocked for the life of the run: devrig_start returns
	// once the first spawn was attempted, the wait happens in Go (on the
	// terminal event, delivered by the event callback), and devrig_wait is
	// only polled, never called with a blocking timeout.
	runErr := startRun(sup, s.Name)
	var code ErrorCode
	if e, ok := runErr.(*Error); ok {
		code = e.Code
	}
	if runErr == nil {
		awaitEnd(ctx, sup, rs.ended)
	}
	if runErr == nil || code == CodeSpawn { // the run was started: collect it
		if err := reap(sup, s.Name); runErr == nil {
			runErr = err
		}
	}

	var out C.devrig_outcome
	if C.devrig_outcome_get(sup, &out) == C.DEVRIG_OK {
		o := Outcome{
			Kind:         OutcomeKind(out.kind),
			LastExitCode: int(out.last_exit_code),
			LastSignal:   int(out.last_signal),
			Restarts:     uint32(out.restarts),
			Message:      C.GoString(out.message),
		}
		s.mu.Lock()
		s.outcome = o
		s.mu.Unlock()
	}
	C.devrig_free(sup) // the run has ended: returns at once
	runtime.KeepAlive(rs)
	rs.repanic()
	return runErr
}

// startSlots bounds the devrig_start calls in progress. Each blocks its OS
// thread until the first spawn was attempted (about a millisecond); without
// a bound, hundreds of Runs starting at once would make the Go runtime
// create a thread for each (and it keeps threads it created).
var startSlots = make(chan struct{}, 2)

// startRun starts the run in the background (devrig_start).
func startRun(sup *C.devrig_supervisor, name string) error {
	startSlots <- struct{}{}
	defer func() { <-startSlots }()
	return call("spawn "+name, func() uint32 { return uint32(C.devrig_start(sup)) })
}

// Safety net while waiting for the terminal event: should the run end
// without one (only a panic inside libdevrig's run driver does), a rare
// poll of devrig_wait still notices. Rare on purpose: polls of hundreds of
// idle services are the only CPU they would cost. Doubling up to the max.
const (
	endPollFirst = 30 * time.Second
	endPollMax   = 5 * time.Minute
)

// awaitEnd waits in Go until the run is ending: ended is closed by the
// event callback once the terminal event (stopped/failed) was delivered.
// Cancelling ctx requests the stop (devrig_cancel) and keeps waiting.
func awaitEnd(ctx context.Context, sup *C.devrig_supervisor, ended <-chan struct{}) {
	done := ctx.Done()
	d := endPollFirst
	poll := time.NewTimer(d)
	defer poll.Stop()
	for {
		select {
		case <-ended:
			return
		case <-done:
			C.devrig_cancel(sup)
			done = nil
		case <-poll.C:
			if C.devrig_wait(sup, 0) != C.DEVRIG_E_TIMEOUT {
				return
			}
			d = min(2*d, endPollMax)
			poll.Reset(d)
		}
	}
}

// reap returns the status of a run that has ended or is about to: the run
// ends right after its terminal event (the callback has returned), so the
// polls of devrig_wait are few and short; no OS thread blocks.
func reap(sup *C.devrig_supervisor, name string) error {
	d := 20 * time.Microsecond
	for {
		var st uint32
		err := call("run "+name, func() uint32 {
			st = uint32(C.devrig_wait(sup, 0))
			return st
		})
		if st != C.DEVRIG_E_TIMEOUT {
			return err
		}
		time.Sleep(d)
		d = min(2*d, 10*time.Millisecond)
	}
}

// checkNUL refuses strings that C would silently cut at a NUL byte.
func (s *Supervisor) checkNUL() error {
	bad := func(what, v string) error {
		if strings.IndexByte(v, 0) >= 0 {
			return &Error{Op: "supervisor " + s.Name, Code: CodeInvalidArgument, Message: what + " contains a NUL byte"}
		}
		return nil
	}
	errs := []error{bad("name", s.Name), bad("command", s.Command), bad("working dir", s.WorkingDir), bad("state dir", s.stateDir)}
	for k, v := range s.Env {
		errs = append(errs, bad("env key "+strconv.Quote(k), k), bad("env value of "+strconv.Quote(k), v))
	}
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// build creates the C handle and applies the configuration.
func (s *Supervisor) build() (*C.devrig_supervisor, error) {
	cname := C.CString(s.Name)
	defer C.free(unsafe.Pointer(cname))
	ccmd := C.CString(s.Command)
	defer C.free(unsafe.Pointer(ccmd))

	var sup *C.devrig_supervisor
	if err := call("supervisor "+s.Name, func() uint32 {
		sup = C.devrig_new(cname, ccmd)
		if sup == nil {
			return C.DEVRIG_E_INVALID_ARGUMENT
		}
		return C.DEVRIG_OK
	}); err != nil {
		return nil, err
	}
	fail := func(err error) (*C.devrig_supervisor, error) {
		C.devrig_free(sup)
		return nil, err
	}
	if s.WorkingDir != "" {
		cdir := C.CString(s.WorkingDir)
		err := call("working dir of "+s.Name, func() uint32 { return uint32(C.devrig_set_working_dir(sup, cdir)) })
		C.free(unsafe.Pointer(cdir))
		if err != nil {
			return fail(err)
		}
	}
	keys := make([]string, 0, len(s.Env))
	for k := range s.Env {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		ck, cv := C.CString(k), C.CString(s.Env[k])
		err := call("env "+k+" of "+s.Name, func() uint32 { return uint32(C.devrig_set_env(sup, ck, cv)) })
		C.free(unsafe.Pointer(ck))
		C.free(unsafe.Pointer(cv))
		if err != nil {
			return fail(err)
		}
	}
	p := s.Policy
	limit, window := p.crashLoop()
	cp := C.devrig_restart_policy{
		mode:                 uint32(p.Mode),
		max_restarts:         C.uint32_t(p.MaxRestarts),
		startup_max_restarts: C.uint32_t(p.StartupMaxRestarts),
		startup_grace_ms:     C.uint64_t(p.StartupGrace.Milliseconds()),
		initial_delay_ms:     C.uint64_t(p.InitialDelay.Milliseconds()),
		max_delay_ms:         C.uint64_t(p.MaxDelay.Milliseconds()),
		reset_after_ms:       C.uint64_t(p.ResetAfter.Milliseconds()),
		crash_loop_limit:     C.uint32_t(limit),
		crash_loop_window_ms: C.uint64_t(window.Milliseconds()),
	}
	if err := call("policy of "+s.Name, func() uint32 { return uint32(C.devrig_set_policy(sup, &cp)) }); err != nil {
		return fail(err)
	}
	if s.StopGrace > 0 {
		if err := call("stop grace of "+s.Name, func() uint32 {
			return uint32(C.devrig_set_stop_grace_ms(sup, C.uint64_t(s.StopGrace.Milliseconds())))
		}); err != nil {
			return fail(err)
		}
	}
	if s.DisableMultiline {
		if err := call("multiline of "+s.Name, func() uint32 { return uint32(C.devrig_set_multiline(sup, false)) }); err != nil {
			return fail(err)
		}
	}
	if s.MaxLineBytes != 0 {
		if s.MaxLineBytes < 0 {
			return fail(fmt.Errorf("supervisor %s: negative MaxLineBytes", s.Name))
		}
		if err := call("max line bytes of "+s.Name, func() uint32 {
			return uint32(C.devrig_set_max_line_bytes(sup, C.size_t(s.MaxLineBytes)))
		}); err != nil {
			return fail(err)
		}
	}
	if s.stateDir != "" {
		cdir := C.CString(s.stateDir)
		err := call("state dir of "+s.Name, func() uint32 { return uint32(C.devrig_set_state_dir(sup, cdir)) })
		C.free(unsafe.Pointer(cdir))
		if err != nil {
			return fail(err)
		}
	}
	runtime.KeepAlive(s)
	return sup, nil
}
