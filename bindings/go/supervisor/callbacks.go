package supervisor

/*
#include "shims.h"
*/
import "C"

import (
	"fmt"
	"runtime/cgo"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/devrig/libdevrig/bindings/go/events"
	"github.com/devrig/libdevrig/bindings/go/internal/evhook"
)

// runState is what the C callbacks reach through a cgo.Handle during one Run.
type runState struct {
	name string
	logs *events.Broadcaster
	evts *events.Broadcaster
	sup  *C.devrig_supervisor // for devrig_cancel after a panic

	// handler is Supervisor.LogHandler at the start of the run.
	handler func([]LogView)

	// Log path state, used only by goDevrigLogBatch (never concurrent).
	views  []LogView // lent to handler, reused
	evbuf  []events.TelemetryEvent
	lastMs int64
	lastTs time.Time

	// Life of the run (see Start): the cgo.Handle the callbacks receive,
	// the owner whose Outcome is set, and what Wait returns once done is
	// closed.
	handle cgo.Handle
	owner  *Supervisor
	gen    uint64 // owner's claim number for this run
	err    error
	done   chan struct{}
	// ended is set by the one who collects the run (claimEnd).
	ended atomic.Bool
	// The stop group of the run's context, and the run's links in it
	// (guarded by the group's mu); the links in the safety net (guarded
	// by safetyNet.mu). A run leaves both before its handle is freed, so
	// neither a stop nor a poll uses a freed handle. See runs.go.
	group                atomic.Pointer[stopGroup]
	groupPrev, groupNext *runState
	netPrev, netNext     *runState
	inNet, released      bool

	mu       sync.Mutex
	panicked bool
	panicVal any

	// The deliveries that had to wait (see publish), made at the run's
	// first; nil for a run that never found a subscriber full.
	dq atomic.Pointer[delivery]
}

// delivery is a run's queue of deliveries that could not be made without
// waiting, and the state of the goroutine that makes them.
type delivery struct {
	mu    sync.Mutex
	queue []pending
	// busy: the delivery goroutine runs; everything the run publishes goes
	// behind it, through queue. idle is closed when it turns false.
	busy bool
	idle chan struct{}
	// held: the run's logs are held (devrig_hold_logs) until the queue is
	// delivered; the goroutine releases them.
	held bool
}

// pending is one delivery left to the delivery goroutine: the rest of a
// send that did not fit (backlog), or events sent after it (b, evs).
type pending struct {
	backlog evhook.Backlog
	b       *events.Broadcaster
	evs     []events.TelemetryEvent
	// free: evs is the run's terminal event, queued behind earlier
	// deliveries; the Supervisor is freed for a new Start right before it
	// is sent, so that a subscriber who sees it may start again at once,
	// and no new run's events overtake it.
	free bool
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

// testNotContiguous, set by a test, makes copyGroup take the path for
// texts that are not contiguous in memory.
var testNotContiguous bool

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

// By devrig_level: devrig's severity spelling, and the exact level.
var severities = [...]string{events.SeverityInfo, events.SeverityDebug, events.SeverityDebug,
	events.SeverityInfo, events.SeverityWarn, events.SeverityError}
var levels = [...]string{events.LevelUnknown, events.LevelTrace, events.LevelDebug,
	events.LevelInfo, events.LevelWarn, events.LevelError}

// Events' unexported batch sends (see internal/evhook): sendBatch takes
// one lock per batch instead of one per line; trySendBatch and trySend
// never wait, and return what did not fit.
var (
	sendBatch    = evhook.SendBatch.(func(*events.Broadcaster, []events.TelemetryEvent))
	trySendBatch = evhook.TrySendBatch.(func(*events.Broadcaster, []events.TelemetryEvent) evhook.Backlog)
	trySend      = evhook.TrySend.(func(*events.Broadcaster, events.TelemetryEvent) evhook.Backlog)
)

// Publishing never blocks a libdevrig thread: those few threads serve every
// service, and one that waited for a subscriber to make room (up to the
// send timeout) stalled every service of the process, their stops
// included. So the callbacks deliver what fits at once (trySendBatch);
// when a subscriber is full, the rest goes to the run's queue, and one
// goroutine, started then and ending when the queue is empty, delivers it
// with the broadcaster's waiting rules (send timeout, stalled subscribers).
// Everything the run publishes meanwhile goes behind it, so the lines and
// statuses of a run keep their order. For log lines the backpressure
// reaches the child without a thread waiting: the log callback holds the
// run's logs (devrig_hold_logs) while the queue is not empty, libdevrig
// stops reading the child's pipes, and the goroutine releases them
// (devrig_release_logs) once the queue is delivered. Status events need no
// hold: a run has few of them, and libdevrig waits for the release before
// a child's "exited". The run is released (finish) only once the queue is
// delivered, so Wait returns after the terminal event was handed over.

// publish delivers evs to b without waiting, or queues what it cannot
// (behind anything already queued), copied: evs is reused by the caller.
func (rs *runState) publish(b *events.Broadcaster, evs []events.TelemetryEvent) {
	if d := rs.dq.Load(); d != nil && d.queueIfBusy(func() pending {
		return pending{b: b, evs: slices.Clone(evs)}
	}) {
		return
	}
	// Nothing queued and no goroutine: only this run's callbacks, which
	// are never concurrent, start one.
	if bl := trySendBatch(b, evs); bl != nil {
		rs.enqueue(pending{backlog: bl})
	}
}

// publishOne is publish for one event, without allocating when it fits.
func (rs *runState) publishOne(b *events.Broadcaster, ev events.TelemetryEvent) {
	if d := rs.dq.Load(); d != nil && d.queueIfBusy(func() pending {
		return pending{b: b, evs: []events.TelemetryEvent{ev}}
	}) {
		return
	}
	if bl := trySend(b, ev); bl != nil {
		rs.enqueue(pending{backlog: bl})
	}
}

// publishTerminal publishes the run's terminal event and frees the
// Supervisor for a new Start just before: behind the run's queued
// deliveries if there are any (the goroutine frees it, see pending.free),
// else at once. What of it does not fit a full subscriber is then queued,
// and a new run's events may reach that subscriber first.
func (rs *runState) publishTerminal(b *events.Broadcaster, ev events.TelemetryEvent) {
	if d := rs.dq.Load(); d != nil && d.queueIfBusy(func() pending {
		return pending{b: b, evs: []events.TelemetryEvent{ev}, free: true}
	}) {
		return
	}
	rs.release(true)
	if bl := trySend(b, ev); bl != nil {
		rs.enqueue(pending{backlog: bl})
	}
}

// queueIfBusy queues mk() if the delivery goroutine runs.
func (d *delivery) queueIfBusy(mk func() pending) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.busy {
		d.queue = append(d.queue, mk())
	}
	return d.busy
}

// enqueue queues p and starts the delivery goroutine if needed.
func (rs *runState) enqueue(p pending) {
	d := rs.dq.Load()
	if d == nil {
		d = &delivery{}
		rs.dq.Store(d) // callbacks are never concurrent: no other store
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.queue = append(d.queue, p)
	if !d.busy {
		d.busy, d.idle = true, make(chan struct{})
		go rs.deliverQueued(d)
	}
}

// holdIfBehind is called by the log callback after publishing a batch:
// while deliveries are queued, the run's logs are held, so that libdevrig
// reads no more of the child's output until the goroutine has caught up
// (backpressure: the child blocks on its full pipe).
func (rs *runState) holdIfBehind() {
	d := rs.dq.Load()
	if d == nil {
		return
	}
	d.mu.Lock()
	if !d.busy || d.held {
		d.mu.Unlock()
		return
	}
	// Under d.mu, as the release: the goroutine cannot release before
	// held says there is something to release.
	if C.devrig_hold_logs(rs.sup) == C.DEVRIG_OK {
		d.held = true
		d.mu.Unlock()
		return
	}
	// Only if libdevrig refused the hold (it does not, from inside the
	// log callback of a live handle): wait here as the binding once did,
	// rather than queue without bound.
	idle := d.idle
	d.mu.Unlock()
	<-idle
}

// deliverQueued is the delivery goroutine: it delivers d's queue in order,
// waiting for room as the broadcaster's Send does, then releases the held
// logs and ends. After a panic in a callback nothing more is published.
func (rs *runState) deliverQueued(d *delivery) {
	for {
		d.mu.Lock()
		if len(d.queue) == 0 {
			if d.held {
				// Under d.mu: see holdIfBehind. The handle is not freed
				// before idle is closed (finish waits for it).
				C.devrig_release_logs(rs.sup)
				d.held = false
			}
			d.queue = nil
			d.busy = false
			close(d.idle)
			d.mu.Unlock()
			return
		}
		p := d.queue[0]
		d.queue[0] = pending{}
		d.queue = d.queue[1:]
		d.mu.Unlock()
		if p.free {
			rs.release(true)
		}
		switch {
		case rs.dead():
		case p.backlog != nil:
			p.backlog.Deliver()
		default:
			sendBatch(p.b, p.evs)
		}
	}
}

// waitDelivered waits until the run's queued deliveries, if any, have been
// made and the delivery goroutine has ended.
func (rs *runState) waitDelivered() {
	d := rs.dq.Load()
	if d == nil {
		return
	}
	d.mu.Lock()
	busy, idle := d.busy, d.idle
	d.mu.Unlock()
	if busy {
		<-idle
	}
}

// Log lines are copied out of C in groups: the texts of a group go into one
// Go allocation, and each line's LogBody is a substring of it. A retained
// LogBody keeps its group's bytes alive, so groups are small: at most
// groupBytes of text (a longer line is a group by itself) and groupLines
// lines (the reusable event buffer of a run).
const (
	groupBytes = 4 << 10
	groupLines = 64
)

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
	batch := unsafe.Slice(lines, int(count))
	if rs.handler != nil {
		rs.lend(batch)
	}
	if rs.logs == nil {
		return
	}
	if rs.evbuf == nil {
		rs.evbuf = make([]events.TelemetryEvent, groupLines)
	}
	// Callbacks of one handle are never concurrent: evbuf is ours. It is
	// cleared on the way out so that it does not keep texts alive.
	used := 0
	defer func() { clear(rs.evbuf[:used]) }()
	for len(batch) > 0 {
		n := rs.copyGroup(batch)
		used = max(used, n)
		// Never waits: what does not fit is queued (copied).
		rs.publish(rs.logs, rs.evbuf[:n])
		batch = batch[n:]
	}
	rs.holdIfBehind()
}

// maxViews bounds the lines of one LogHandler call, and so the views
// buffer kept for a run (a read of empty lines can hold 64 Ki of them).
const maxViews = 1024

// lend passes batch to rs.handler as views, in calls of at most maxViews
// lines. The records (LogView wraps devrig_log_line) are copied, one
// memmove, into a Go buffer reused across the batches of a run, so that a
// handler that keeps or writes to the slice never touches libdevrig's
// array, freed after this call; the texts are not copied at all. Nothing
// is done per line: the LogView methods decode what the handler asks for.
func (rs *runState) lend(batch []C.devrig_log_line) {
	for len(batch) > 0 {
		n := min(len(batch), maxViews)
		if cap(rs.views) < n {
			rs.views = make([]LogView, n)
		}
		views := rs.views[:n]
		copy(views, unsafe.Slice((*LogView)(unsafe.Pointer(&batch[0])), n))
		rs.handler(views)
		batch = batch[n:]
	}
}

// copyGroup fills rs.evbuf with events for the first lines of batch (one
// group, at least one line) and returns how many it took.
//
// In libdevrig each text is followed by a NUL byte in one arena, so the
// texts of a batch are contiguous (text[i+1] == text[i] + len[i] + 1) and a
// group is one copy; otherwise each text is copied, with the same layout.
// NUL separators keep every line a separate UTF-8 sequence, so one
// validation of the group tells whether any line needs repairing.
func (rs *runState) copyGroup(batch []C.devrig_log_line) int {
	n, size, contiguous := 0, 0, true
	for n < len(batch) && n < len(rs.evbuf) {
		l := &batch[n]
		if n > 0 && size+int(l.len) > groupBytes {
			break
		}
		if n > 0 && uintptr(unsafe.Pointer(l.text)) != uintptr(unsafe.Pointer(batch[0].text))+uintptr(size) {
			contiguous = false
		}
		size += int(l.len) + 1
		n++
	}
	var text string
	if contiguous && !testNotContiguous {
		// One copy (GoStringN does not zero the memory first); the region
		// ends before the last text's NUL.
		text = C.GoStringN(batch[0].text, C.int(size-1))
	} else {
		buf := make([]byte, size-1)
		off := 0
		for i := range n {
			l := &batch[i]
			off += copy(buf[off:], unsafe.Slice((*byte)(unsafe.Pointer(l.text)), int(l.len)))
			if i < n-1 {
				buf[off] = 0
				off++
			}
		}
		// buf is never written again: the strings may share it.
		text = unsafe.String(unsafe.SliceData(buf), len(buf))
	}
	valid := utf8.ValidString(text)

	off := 0
	for i := range n {
		l := &batch[i]
		body := text[off : off+int(l.len)]
		off += int(l.len) + 1
		if !valid && !utf8.ValidString(body) {
			body = lenientUTF8(body)
		}
		sev, lvl := events.SeverityInfo, events.LevelUnknown
		if int(l.level) < len(severities) {
			sev, lvl = severities[l.level], levels[l.level]
		}
		stream := events.StreamStdout
		if l.stream == C.DEVRIG_STDERR {
			stream = events.StreamStderr
		}
		if ms := int64(l.timestamp_ms); ms != rs.lastMs || rs.lastTs.IsZero() {
			rs.lastMs, rs.lastTs = ms, time.UnixMilli(ms)
		}
		// Field by field, not a composite literal (built on the stack, then
		// all 248 bytes copied): evbuf's other fields are always zero (it
		// is only ever written here and cleared after each batch).
		e := &rs.evbuf[i]
		e.Kind = events.KindLogRecord
		e.Service = rs.name
		e.LogBody = body
		e.LogSeverity = sev
		e.Level = lvl
		e.Stream = stream
		e.PID = int(l.pid)
		e.Timestamp = rs.lastTs
	}
	return n
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
	terminal := e.kind == C.DEVRIG_EVENT_STOPPED || e.kind == C.DEVRIG_EVENT_FAILED
	if terminal {
		// Deferred first, so it runs last: after the Send and after a
		// panic was recovered.
		defer rs.ending()
		// libdevrig sets the outcome before the terminal event: record it
		// before the event is published, so that a subscriber who sees
		// "stopped" or "failed" finds Outcome() up to date. The Supervisor
		// is freed for a new Start when the event is sent (publishTerminal).
		rs.release(false)
	}
	defer rs.recoverInto()
	if rs.dead() || rs.evts == nil {
		if terminal {
			rs.release(true)
		}
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
		hooked := ev // only this copy escapes to the heap, not ev
		testHookPanic(&hooked)
		ev = hooked
	}
	// Never waits: queued behind the run's pending deliveries, if any.
	if terminal {
		rs.publishTerminal(rs.evts, ev)
		return
	}
	rs.publishOne(rs.evts, ev)
}
