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
// Publishing never makes libdevrig's few shared threads wait for a
// subscriber: when a buffer is full, the rest is delivered by a goroutine of
// the run, with the Broadcaster's rules (send timeout, stalled subscribers),
// and meanwhile the run reads no more of its service's output, so the child
// waits on its full pipe. A slow or stuck subscriber thus delays only the
// services that publish to it, never the supervision of the others. Lines
// and statuses of a run keep their order, and Run returns once everything
// of the run has been handed to the subscribers (or dropped by those rules).
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
//
// # Many services
//
// Run blocks until the run ends. Start (an addition) starts the run the
// same way and returns once the child was spawned, with a Running to Wait
// on: a running service then costs no goroutine, and the runs started with
// one context are stopped together, in one call, when it is cancelled.
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
	// stopped (an addition; 0 means the libdevrig default, 5 s; negative is
	// refused by Run).
	StopGrace time.Duration
	// DisableMultiline turns off the grouping of indented lines (stack
	// traces) into one entry (an addition; grouping is on by default).
	DisableMultiline bool
	// MaxLineBytes bounds one delivered entry; longer lines come in pieces
	// (an addition; 0 means the libdevrig default, 65536; at most 1<<30;
	// negative is refused by Run).
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
	// few threads, shared by every service: while it runs, that thread
	// serves no other service, so a handler that waits delays them all,
	// their stops included. Keep it short (hand slow work to a goroutine),
	// and never wait in it for anything that waits for Run. A panic in it stops the service and Run
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
	// live is set while a run started by Start is live: from Start until
	// the run's terminal event, where its outcome is recorded in the same
	// critical section (so no Start is accepted before Outcome tells how
	// the previous run ended). gen numbers the claims: an older run that is
	// released later (finish) changes neither live nor Outcome.
	live bool
	gen  uint64
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

// Outcome returns the result of the most recent Run that ended. A run's
// outcome is recorded at its terminal event ("stopped" or "failed"), before
// that event is published; Wait returns, and Done is closed, a moment later.
func (s *Supervisor) Outcome() Outcome {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.outcome
}

// Run supervises the process until ctx is cancelled or the restart budget is
// exhausted. The returned error is non-nil only if the process could not be
// spawned at all (errors.Is(err, ErrSpawn)) or the configuration was
// refused: an unsafe Name, an empty Command, an invalid Policy (see
// RestartPolicy.Validate), a negative StopGrace or MaxLineBytes, a bad Env
// key, ... Every refusal is an *Error of code CodeInvalidArgument
// (errors.Is(err, ErrInvalidArgument)) whose text names the service and the
// bad value, e.g. `supervisor web: StopGrace is negative (-1s)`, and nothing
// was started. Cancelling ctx stops the service (SIGTERM to
// its process group, SIGKILL after StopGrace) and Run returns once every
// process of the run has been reaped. A ctx cancelled before Run makes it
// return at once without spawning.
//
// A Supervisor runs one copy of its service at a time. While a run started
// by Run or Start is live (until its terminal event, "stopped" or
// "failed", where Outcome is set: every process of the run is reaped by
// then, and a subscriber that sees the event may start the service again
// at once), another
// Run or Start on the same Supervisor starts nothing and returns an *Error
// of code CodeState (errors.Is(err, ErrState)), e.g. `supervisor web:
// service "web" is already running`. Once the run has ended, the Supervisor
// can run again, as in devrig.
//
// Run is Start followed by Wait.
func (s *Supervisor) Run(ctx context.Context) error {
	r, err := s.Start(ctx)
	if err != nil {
		return err
	}
	return r.Wait()
}

// Running is a run started by Start (an addition). It has no goroutine of
// its own while the service runs: libdevrig supervises it on its few shared
// threads, and cancelling the context given to Start stops it.
type Running struct {
	rs *runState
}

// Start starts a run as Run does, but returns as soon as the first spawn
// was attempted instead of when the run ends (an addition). Its error is
// the one Run would return before supervising: the configuration was
// refused, or the first spawn failed (errors.Is(err, ErrSpawn)); the run
// has then ended, every process reaped, and Outcome says how. A ctx
// cancelled before Start makes the run end at once without spawning (Start
// returns a Running whose Wait returns at once).
//
// As for Run, a Supervisor runs one copy of its service at a time: while a
// run it started is live (until its terminal event, where Outcome is set;
// Done is closed a moment later), Start and Run return an *Error of code CodeState
// (errors.Is(err, ErrState)) naming the service; of concurrent calls,
// exactly one starts a run. The configuration is checked first: an invalid
// one is refused as such (ErrInvalidArgument) even while a run is live.
//
// Cancelling ctx stops the service, exactly as for Run. Runs started with
// one context are stopped together: their stop requests are registered
// with a single context.AfterFunc per ctx.Done() channel, so hundreds of
// services cost no goroutine while they run, and their cancellation makes
// one goroutine stop them all.
//
// Wait, or Done, tells when the run has ended. A run nobody waits for still
// ends and releases everything once its context is cancelled (or once it
// completes or gives up), but a panic of a callback is raised only by Wait.
func (s *Supervisor) Start(ctx context.Context) (*Running, error) {
	if ctx == nil {
		panic("supervisor: Start with a nil Context") // as the context package does
	}
	if err := s.check(); err != nil {
		return nil, err
	}
	gen, err := s.claimRun()
	if err != nil {
		return nil, err
	}
	// Until the run exists, any way out of Start (an error, or a panic such
	// as a nil ctx's) gives the claim back.
	handedOff := false
	defer func() {
		if !handedOff {
			s.unclaimRun(gen)
		}
	}()
	sup, err := s.build()
	if err != nil {
		return nil, err
	}

	rs := &runState{name: s.Name, logs: s.logBroadcast, evts: s.eventBroadcast, sup: sup,
		handler: s.LogHandler, owner: s, gen: gen, done: make(chan struct{})}
	rs.handle = cgo.NewHandle(rs)
	h := C.uintptr_t(rs.handle)
	if rs.logs != nil || rs.handler != nil {
		if err := call("register log callback", "", func() uint32 {
			return uint32(C.devrig_go_on_log_batch(sup, h))
		}); err != nil {
			rs.handle.Delete()
			C.devrig_free(sup)
			return nil, err
		}
	}
	// The event callback is registered even without an events broadcaster:
	// the terminal event is how the binding learns that the run is ending.
	if err := call("register event callback", "", func() uint32 {
		return uint32(C.devrig_go_on_event(sup, h))
	}); err != nil {
		rs.handle.Delete()
		C.devrig_free(sup)
		return nil, err
	}

	// Joined before the start, so that a cancellation during the spawn is
	// not missed; devrig_cancel before the run makes it end at once.
	joinStopGroup(ctx, rs)
	if ctx.Err() != nil {
		C.devrig_cancel(sup) // the run ends at once, without spawning
	}
	// No OS thread is blocked for the life of the run: devrig_start returns
	// once the first spawn was attempted; the end of the run is signalled by
	// the event callback (the terminal event), then collected (ending).
	// From here on the run gives the claim back itself (release, at its
	// end).
	handedOff = true
	if err := startRun(sup, s.Name); err != nil {
		if e, ok := err.(*Error); ok && e.Code == CodeSpawn {
			rs.ending() // the run has ended, after its terminal event
		} else if rs.claimEnd() { // unless a terminal event was delivered
			rs.finish()
		}
		<-rs.done
		rs.repanic()
		return nil, err
	}
	if testHookStarted != nil {
		testHookStarted(rs)
	}
	addToSafetyNet(rs) // unless the run has already ended
	return &Running{rs: rs}, nil
}

// Wait waits for the run to end and returns what Run returns: nil, or the
// run's error. Once it returns, every process of the run has been reaped
// and Outcome tells how the run ended. If a callback panicked, Wait panics
// again with its value. Any number of goroutines may wait.
func (r *Running) Wait() error {
	<-r.rs.done
	r.rs.repanic()
	return r.rs.err
}

// Done returns a channel that is closed when the run has ended, as for
// Wait: every process reaped, Outcome set.
func (r *Running) Done() <-chan struct{} { return r.rs.done }

// testHookStarted, when set by a test, is called by Start once the run has
// started.
var testHookStarted func(*runState)

// claimRun marks s as having a live run, unless it has one already: one
// Supervisor runs one copy of its service at a time (as one libdevrig
// handle runs once). The run's release, or unclaimRun when nothing was
// started, clears the mark. It returns the claim's number.
func (s *Supervisor) claimRun() (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.live {
		return 0, &Error{Op: "supervisor " + s.Name, Code: CodeState,
			Message: fmt.Sprintf("service %q is already running", s.Name)}
	}
	s.live = true
	s.gen++
	return s.gen, nil
}

// unclaimRun undoes claim gen when Start fails before the run exists.
func (s *Supervisor) unclaimRun(gen uint64) {
	s.mu.Lock()
	if s.gen == gen {
		s.live = false
	}
	s.mu.Unlock()
}

// release records the outcome of an ended run and, with free, lets its
// Supervisor run again, in one step; unless a newer run has been started
// meanwhile (the terminal event released this run already).
func (rs *runState) release(free bool) {
	out, ok := outcomeOf(rs.sup)
	s := rs.owner
	s.mu.Lock()
	if s.gen == rs.gen {
		if ok {
			s.outcome = out
		}
		if free {
			s.live = false
		}
	}
	s.mu.Unlock()
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
	return call("spawn", name, func() uint32 { return uint32(C.devrig_start(sup)) })
}

// claimEnd reports whether the caller is the one to collect the run (once
// per run).
func (rs *runState) claimEnd() bool {
	return rs.ended.CompareAndSwap(false, true)
}

// ending is called once the run is about to end: after its terminal event
// was delivered, or when the safety net saw it end. The run ends right
// after its terminal event, so a goroutine (the only one the run ever has)
// polls devrig_wait until it has, then releases it. devrig_wait is never
// called with a blocking timeout, which would hold an OS thread.
func (rs *runState) ending() {
	if !rs.claimEnd() {
		return
	}
	go func() {
		d := 20 * time.Microsecond
		for !rs.collect() {
			time.Sleep(d)
			d = min(2*d, 10*time.Millisecond)
		}
	}()
}

// collect finishes the run if it has ended; false if it is still ending.
func (rs *runState) collect() bool {
	var st uint32
	err := call("run", rs.name, func() uint32 {
		st = uint32(C.devrig_wait(rs.sup, 0))
		return st
	})
	if st == C.DEVRIG_E_TIMEOUT {
		return false
	}
	rs.err = err
	rs.finish()
	return true
}

// finish releases an ended run: once everything it published has been
// handed to subscribers (the delivery goroutine, if any, has ended, and
// with it its last use of the handle), its outcome is recorded and its
// owner accepts a new Start (unless the terminal event did both already),
// the C handle is freed (at once: the run has ended), and Wait is released.
func (rs *runState) finish() {
	rs.waitDelivered()
	// Out of both first: neither uses the handle once it is freed.
	removeFromSafetyNet(rs)
	leaveStopGroup(rs)

	rs.release(true)
	C.devrig_free(rs.sup) // the run has ended: returns at once
	rs.handle.Delete()
	close(rs.done)
}

// outcomeOf reads the outcome of an ended run.
func outcomeOf(sup *C.devrig_supervisor) (Outcome, bool) {
	// By value through the shim: &out given to C would be a heap allocation.
	r := C.devrig_go_outcome_get(sup)
	if r.status != C.DEVRIG_OK {
		return Outcome{}, false
	}
	out := r.outcome
	return Outcome{
		Kind:         OutcomeKind(out.kind),
		LastExitCode: int(out.last_exit_code),
		LastSignal:   int(out.last_signal),
		Restarts:     uint32(out.restarts),
		Message:      C.GoString(out.message),
	}, true
}

// invalid is a refusal of s's configuration by Start: an *Error of code
// CodeInvalidArgument, as libdevrig's own refusals (whose operation is also
// "supervisor NAME").
func (s *Supervisor) invalid(format string, args ...any) error {
	return &Error{Op: "supervisor " + s.Name, Code: CodeInvalidArgument, Message: fmt.Sprintf(format, args...)}
}

// check refuses, before anything is built, the configuration that only
// the binding sees: an invalid Policy, a negative StopGrace or
// MaxLineBytes, strings with a NUL byte. libdevrig checks the rest (name,
// command, env keys, MaxLineBytes too large).
func (s *Supervisor) check() error {
	if err := s.Policy.Validate(); err != nil {
		return s.invalid("%s", err.Error())
	}
	if s.StopGrace < 0 {
		return s.invalid("StopGrace is negative (%v)", s.StopGrace)
	}
	if s.MaxLineBytes < 0 {
		return s.invalid("MaxLineBytes is negative (%d)", s.MaxLineBytes)
	}
	return s.checkNUL()
}

// checkNUL refuses strings that C would silently cut at a NUL byte.
func (s *Supervisor) checkNUL() error {
	bad := func(what, v string) error {
		if strings.IndexByte(v, 0) >= 0 {
			return s.invalid("%s contains a NUL byte", what)
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
	if err := call("supervisor", s.Name, func() uint32 {
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
		err := call("working dir of", s.Name, func() uint32 { return uint32(C.devrig_set_working_dir(sup, cdir)) })
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
		err := call("env "+k+" of", s.Name, func() uint32 { return uint32(C.devrig_set_env(sup, ck, cv)) })
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
	// By value through the shim: &cp given to C would be a heap allocation.
	if err := call("policy of", s.Name, func() uint32 { return uint32(C.devrig_go_set_policy(sup, cp)) }); err != nil {
		return fail(err)
	}
	if s.StopGrace > 0 {
		if err := call("stop grace of", s.Name, func() uint32 {
			return uint32(C.devrig_set_stop_grace_ms(sup, C.uint64_t(s.StopGrace.Milliseconds())))
		}); err != nil {
			return fail(err)
		}
	}
	if s.DisableMultiline {
		if err := call("multiline of", s.Name, func() uint32 { return uint32(C.devrig_set_multiline(sup, false)) }); err != nil {
			return fail(err)
		}
	}
	if s.MaxLineBytes > 0 { // negative: refused by check
		if err := call("max line bytes of", s.Name, func() uint32 {
			return uint32(C.devrig_set_max_line_bytes(sup, C.size_t(s.MaxLineBytes)))
		}); err != nil {
			return fail(err)
		}
	}
	if s.stateDir != "" {
		cdir := C.CString(s.stateDir)
		err := call("state dir of", s.Name, func() uint32 { return uint32(C.devrig_set_state_dir(sup, cdir)) })
		C.free(unsafe.Pointer(cdir))
		if err != nil {
			return fail(err)
		}
	}
	runtime.KeepAlive(s)
	return sup, nil
}
