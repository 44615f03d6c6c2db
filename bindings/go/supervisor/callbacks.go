package supervisor

/*
#include "shims.h"
*/
import "C"

import (
	"fmt"
	"runtime/cgo"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/devrig/libdevrig/bindings/go/events"
)

// runState is what the C callbacks reach through a cgo.Handle during one Run.
type runState struct {
	name string
	logs *events.Broadcaster
	evts *events.Broadcaster
	sup  *C.devrig_supervisor // for devrig_cancel after a panic

	// ended is closed once the terminal event has been delivered (after
	// its Send): the run ends right after it.
	ended     chan struct{}
	endedOnce sync.Once

	mu       sync.Mutex
	panicked bool
	panicVal any
}

// recoverInto is deferred by every exported function: a Go panic never
// crosses into C. The first panic is kept, the run is cancelled, and Run
// panics again with it on the caller's goroutine once everything is reaped.
func (rs *runState) recoverInto() {
	r := recover()
	if r == nil {
		return
	}
	rs.mu.Lock()
	first := !rs.panicked
	if first {
		rs.panicked, rs.panicVal = true, r
	}
	rs.mu.Unlock()
	if first {
		C.devrig_cancel(rs.sup) // callable from inside a callback
	}
}

func (rs *runState) dead() bool {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return rs.panicked
}

func (rs *runState) repanic() {
	rs.mu.Lock()
	p, v := rs.panicked, rs.panicVal
	rs.mu.Unlock()
	if p {
		panic(v) // the original value, as if the callback had run here
	}
}

// testHookPanic, when set by a test, is called in the event callback.
var testHookPanic func(ev *events.TelemetryEvent)

// stateOf looks the handle up; an invalid handle (a bug) gives nil rather
// than a panic that would unwind into C.
func stateOf(h C.uintptr_t) (rs *runState) {
	defer func() {
		if recover() != nil {
			rs = nil
		}
	}()
	rs, _ = cgo.Handle(h).Value().(*runState)
	return rs
}

func lenientString(p *C.char, n C.size_t) string {
	s := C.GoStringN(p, C.int(n))
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	return s
}

var severities = [...]string{events.SeverityUnknown, events.SeverityTrace, events.SeverityDebug,
	events.SeverityInfo, events.SeverityWarn, events.SeverityError}

//export goDevrigLogBatch
func goDevrigLogBatch(h C.uintptr_t, lines *C.devrig_log_line, count C.size_t) {
	rs := stateOf(h)
	if rs == nil || count == 0 {
		return
	}
	defer rs.recoverInto()
	if rs.dead() {
		return
	}
	// Copy everything out of C memory first, then publish (Send may wait
	// for a slow subscriber; the C data is only lent for this call).
	batch := unsafe.Slice(lines, int(count))
	evs := make([]events.TelemetryEvent, len(batch))
	for i := range batch {
		l := &batch[i]
		sev := events.SeverityUnknown
		if int(l.level) < len(severities) {
			sev = severities[l.level]
		}
		stream := events.StreamStdout
		if l.stream == C.DEVRIG_STDERR {
			stream = events.StreamStderr
		}
		evs[i] = events.TelemetryEvent{
			Kind:        events.KindLogRecord,
			Service:     rs.name,
			LogBody:     lenientString(l.text, l.len),
			LogSeverity: sev,
			Stream:      stream,
			PID:         int(l.pid),
			Timestamp:   time.UnixMilli(int64(l.timestamp_ms)),
		}
	}
	for i := range evs {
		rs.logs.Send(evs[i])
	}
}

var statuses = map[uint32]string{
	C.DEVRIG_EVENT_STARTED:      events.StatusStarted,
	C.DEVRIG_EVENT_RUNNING:      events.StatusRunning,
	C.DEVRIG_EVENT_EXITED:       events.StatusExited,
	C.DEVRIG_EVENT_BACKOFF:      events.StatusBackoff,
	C.DEVRIG_EVENT_SPAWN_FAILED: events.StatusSpawnFailed,
	C.DEVRIG_EVENT_STOPPING:     events.StatusStopping,
	C.DEVRIG_EVENT_STOPPED:      events.StatusStopped,
	C.DEVRIG_EVENT_FAILED:       events.StatusFailed,
	C.DEVRIG_EVENT_WARNING:      events.StatusWarning,
}

//export goDevrigEvent
func goDevrigEvent(h C.uintptr_t, e *C.devrig_event) {
	rs := stateOf(h)
	if rs == nil || e == nil {
		return
	}
	if e.kind == C.DEVRIG_EVENT_STOPPED || e.kind == C.DEVRIG_EVENT_FAILED {
		// Deferred first, so it runs last: after the Send and after a
		// panic was recovered.
		defer rs.endedOnce.Do(func() { close(rs.ended) })
	}
	defer rs.recoverInto()
	if rs.dead() || rs.evts == nil {
		return
	}
	status, ok := statuses[uint32(e.kind)]
	if !ok {
		status = fmt.Sprintf("event_%d", int(e.kind))
	}
	ev := events.TelemetryEvent{
		Kind:         events.KindServiceStatusChange,
		Service:      rs.name,
		Status:       status,
		PID:          int(e.pid),
		Timestamp:    time.UnixMilli(int64(e.timestamp_ms)),
		ExitCode:     int(e.exit_code),
		Signal:       int(e.signal),
		RestartCount: uint32(e.restart_count),
		Delay:        time.Duration(e.delay_ms) * time.Millisecond,
		Runtime:      time.Duration(e.runtime_ms) * time.Millisecond,
		Message:      C.GoString(e.message),
	}
	if testHookPanic != nil {
		testHookPanic(&ev)
	}
	rs.evts.Send(ev)
}
