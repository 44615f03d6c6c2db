// Package events defines the telemetry events a supervisor publishes and a
// Broadcaster that distributes them to any number of subscribers.
//
// It reproduces devrig's events package (TelemetryEvent, Broadcaster with
// Subscribe, Unsubscribe, Send, Close) and adds fields for the details
// libdevrig reports (stream, pid, timestamp, exit code, signal, restart
// count, delay, message).
package events

import (
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/devrig/libdevrig/bindings/go/internal/evhook"
)

func init() {
	evhook.SendBatch = func(b *Broadcaster, evs []TelemetryEvent) { b.sendBatch(evs) }
	evhook.TrySendBatch = func(b *Broadcaster, evs []TelemetryEvent) evhook.Backlog {
		return b.trySendBatch(evs)
	}
	evhook.TrySend = func(b *Broadcaster, ev TelemetryEvent) evhook.Backlog {
		evs := [1]TelemetryEvent{ev}
		return b.trySendBatch(evs[:])
	}
}

// ServiceStatusKind says which kind of event a TelemetryEvent is.
type ServiceStatusKind int

const (
	// KindServiceStatusChange: a state change of a service; Status says which.
	KindServiceStatusChange ServiceStatusKind = iota
	// KindLogRecord: one log entry of a service (LogBody, LogSeverity).
	KindLogRecord
	// KindTraceUpdate is kept for compatibility with devrig; the supervisor
	// never sends it.
	KindTraceUpdate
	// KindMetricUpdate is kept for compatibility with devrig; the supervisor
	// never sends it.
	KindMetricUpdate
)

// String returns the kind's name.
func (k ServiceStatusKind) String() string {
	switch k {
	case KindServiceStatusChange:
		return "ServiceStatusChange"
	case KindLogRecord:
		return "LogRecord"
	case KindTraceUpdate:
		return "TraceUpdate"
	case KindMetricUpdate:
		return "MetricUpdate"
	}
	return "ServiceStatusKind(?)"
}

// Status values of KindServiceStatusChange events, one per libdevrig event
// kind. See the package supervisor documentation for when each is sent.
const (
	StatusStarted     = "started"      // a child was spawned (PID)
	StatusRunning     = "running"      // the child outlived the startup grace
	StatusExited      = "exited"       // the child exited (ExitCode, Signal, Runtime)
	StatusBackoff     = "backoff"      // a restart follows after Delay (RestartCount: its number)
	StatusSpawnFailed = "spawn_failed" // a spawn failed (Message)
	StatusStopping    = "stopping"     // a stop was requested
	StatusStopped     = "stopped"      // terminal: cancelled or completed
	StatusFailed      = "failed"       // terminal: gave up (Message says why)
	StatusWarning     = "warning"      // not terminal: e.g. the state record could not be written
)

// Log severities (LogSeverity of KindLogRecord events), as devrig's own
// DetectLogLevel spells them: a TRACE line is "debug", and a line without a
// level word is "info". The exact level is in TelemetryEvent.Level.
const (
	SeverityDebug = "debug"
	SeverityInfo  = "info"
	SeverityWarn  = "warn"
	SeverityError = "error"
)

// Exact levels (Level of KindLogRecord events, an addition); "" when the
// line has no level word.
const (
	LevelUnknown = ""
	LevelTrace   = "trace"
	LevelDebug   = "debug"
	LevelInfo    = "info"
	LevelWarn    = "warn"
	LevelError   = "error"
)

// Streams of KindLogRecord events.
const (
	StreamStdout = "stdout"
	StreamStderr = "stderr"
)

// TelemetryEvent is the discriminated union of events emitted by a
// supervisor. The first fields are devrig's; the rest are additions.
type TelemetryEvent struct {
	Kind ServiceStatusKind

	// ServiceStatusChange fields
	Service string
	Status  string

	// LogRecord fields (also set Service)
	LogBody     string
	LogSeverity string
	TraceID     string
	SpanID      string

	// TraceUpdate / MetricUpdate carry their data as raw JSON (unused here).
	RawJSON []byte

	// Additions.

	// Stream is "stdout" or "stderr" (log records only).
	Stream string
	// Level is the exact level libdevrig detected in a log record: "trace",
	// "debug", "info", "warn", "error", or "" when there is no level word.
	Level string
	// PID is the child concerned: the writer of a log line, the child of
	// a status change (0 when there is none).
	PID int
	// Timestamp is when the line was read or the state changed (ms precision).
	Timestamp time.Time
	// ExitCode is the exit code for "exited" (and "stopped"/"failed": the
	// last exit), -1 when killed by a signal.
	ExitCode int
	// Signal is the terminating signal for "exited", 0 if none.
	Signal int
	// RestartCount is the number of restarts performed so far; for
	// "backoff", the number of the coming restart.
	RestartCount uint32
	// Delay is the backoff delay ("backoff" only).
	Delay time.Duration
	// Runtime is how long the child lived ("exited" only).
	Runtime time.Duration
	// Message adds words: why a supervisor gave up ("startup", "restart
	// budget", "crash loop", or the spawn error), a spawn error, a warning.
	Message string
}

// DefaultSendTimeout is how long Send waits for a subscriber whose buffer
// is full before it considers the subscriber stalled (see Broadcaster).
const DefaultSendTimeout = 5 * time.Second

type subscriber struct {
	ch      chan TelemetryEvent
	quit    chan struct{} // closed by Unsubscribe/Close: wakes a blocked Send
	mu      sync.Mutex    // serialises sends and the close of ch
	closed  bool
	stalled bool
	// waiting is set while a sender holding mu waits for room (up to the
	// send timeout): trySendBatch does not wait for mu behind it.
	waiting atomic.Bool
}

// Broadcaster distributes events to any number of subscribers. The zero
// value is ready to use (with DefaultSendTimeout); so is NewBroadcaster().
//
// Delivery: each subscriber has a buffered channel (Subscribe's cap). Send
// puts the event in every subscriber's buffer, in order. When a buffer is
// full, Send waits for room (backpressure: a slow log reader slows the
// service through its pipe and nothing is lost), but never forever: after
// the send timeout without room the subscriber is marked stalled and the
// event is dropped for it (counted by Dropped); while it stays stalled, events
// that do not fit are dropped at once, so a subscriber that stopped reading
// costs the supervisor one timeout, not one per event. As soon as it has room
// again it is no longer stalled. Unsubscribe and Close wake a blocked Send.
//
// devrig's own Broadcaster drops at once when a buffer is full; call
// SetSendTimeout with a value <= 0 for exactly that behaviour.
//
// A supervisor publishing here follows these rules without making
// libdevrig's shared threads wait: what does not fit is delivered later by
// a goroutine of its run, in order, while the run stops reading its
// service's output (see package supervisor). So a subscriber that is slow
// or stuck holds back only the services that publish to it.
type Broadcaster struct {
	mu sync.Mutex
	// subs is copy-on-write: an element visible in a slice taken under mu
	// is never changed afterwards (Subscribe appends past every earlier
	// length; Unsubscribe builds a new array), so senders use that slice
	// after unlocking without copying it.
	subs      []*subscriber
	closed    bool
	timeout   time.Duration
	timeoutOK bool
	dropped   atomic.Uint64
}

// NewBroadcaster returns an empty Broadcaster.
func NewBroadcaster() *Broadcaster { return &Broadcaster{} }

// SetSendTimeout sets how long Send waits for room in a full subscriber
// buffer before dropping; d <= 0 drops at once (devrig's behaviour).
func (b *Broadcaster) SetSendTimeout(d time.Duration) {
	b.mu.Lock()
	b.timeout, b.timeoutOK = d, true
	b.mu.Unlock()
}

// Dropped returns how many deliveries were dropped because a subscriber's
// buffer stayed full.
func (b *Broadcaster) Dropped() uint64 { return b.dropped.Load() }

// Subscribe returns a channel that will receive future events; cap is its
// buffer depth (negative counts as 0). The caller must drain it and should
// call Unsubscribe when done. After Close it returns a closed channel.
func (b *Broadcaster) Subscribe(cap int) <-chan TelemetryEvent {
	if cap < 0 {
		cap = 0
	}
	s := &subscriber{ch: make(chan TelemetryEvent, cap), quit: make(chan struct{})}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		s.closed = true
		close(s.ch)
		return s.ch
	}
	b.subs = append(b.subs, s)
	return s.ch
}

// Unsubscribe removes a channel returned by Subscribe and closes it. Unknown
// channels are ignored; calling it twice is harmless.
func (b *Broadcaster) Unsubscribe(ch <-chan TelemetryEvent) {
	b.mu.Lock()
	var found *subscriber
	for i, s := range b.subs {
		if s.ch == ch {
			found = s
			b.subs = append(b.subs[:i:i], b.subs[i+1:]...)
			break
		}
	}
	b.mu.Unlock()
	if found != nil {
		found.shut()
	}
}

func (s *subscriber) shut() {
	close(s.quit) // wake a Send blocked on this subscriber
	s.mu.Lock()
	s.closed = true
	close(s.ch)
	s.mu.Unlock()
}

// Send delivers ev to every current subscriber (see Broadcaster for what
// happens when a buffer is full). Safe from any goroutine; a Send after
// Close does nothing.
func (b *Broadcaster) Send(ev TelemetryEvent) {
	subs, timeout := b.snapshot()
	for _, s := range subs {
		b.deliver(s, []TelemetryEvent{ev}, timeout)
	}
}

// sendBatch delivers evs in order, as Send would one by one, but takes the
// broadcaster's lock once and each subscriber's lock once per batch. Each
// subscriber receives the whole batch in turn. Used by the supervisor for
// the log lines of one read (reached through internal/evhook).
func (b *Broadcaster) sendBatch(evs []TelemetryEvent) {
	if len(evs) == 0 {
		return
	}
	subs, timeout := b.snapshot()
	for _, s := range subs {
		b.deliver(s, evs, timeout)
	}
}

// snapshot returns the current subscribers (nil after Close) and the send
// timeout. The slice must not be modified (see subs).
func (b *Broadcaster) snapshot() ([]*subscriber, time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, 0
	}
	timeout := DefaultSendTimeout
	if b.timeoutOK {
		timeout = b.timeout
	}
	return b.subs, timeout
}

// deliver puts evs into s's buffer, in order.
func (b *Broadcaster) deliver(s *subscriber, evs []TelemetryEvent, timeout time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	var t *time.Timer
	defer func() {
		if t != nil {
			t.Stop()
		}
	}()
	for i := range evs {
		if b.offer(s, evs[i], timeout) {
			continue
		}
		if t == nil {
			t = time.NewTimer(timeout)
		} else {
			t.Reset(timeout) // Go >= 1.23 timers: no stale expiry to drain
		}
		s.waiting.Store(true)
		select {
		case s.ch <- evs[i]:
		case <-s.quit:
			s.waiting.Store(false)
			return // unsubscribed or closed: nothing more for it
		case <-t.C:
			s.stalled = true
			b.dropped.Add(1)
		}
		s.waiting.Store(false)
	}
}

// trySendBatch delivers what of evs fits without waiting, as sendBatch
// would otherwise (drops for stalled subscribers and with a send timeout
// <= 0 included), and returns the rest as a backlog, nil when nothing is
// left. It never waits for room, nor for a subscriber's lock held by a
// sender that waits for room: the supervisor calls it on libdevrig's few
// shared threads, which must not block (reached through internal/evhook).
func (b *Broadcaster) trySendBatch(evs []TelemetryEvent) evhook.Backlog {
	if len(evs) == 0 {
		return nil
	}
	subs, timeout := b.snapshot()
	var bl *backlog
	for _, s := range subs {
		if i := b.tryDeliver(s, evs, timeout); i < len(evs) {
			if bl == nil {
				bl = &backlog{b: b}
			}
			bl.subs = append(bl.subs, s)
			bl.from = append(bl.from, i)
		}
	}
	if bl == nil {
		return nil // not a nil *backlog in an interface
	}
	lo := len(evs)
	for _, i := range bl.from {
		lo = min(lo, i)
	}
	bl.evs = append([]TelemetryEvent(nil), evs[lo:]...)
	for k := range bl.from {
		bl.from[k] -= lo
	}
	return bl
}

// tryDeliver puts evs into s's buffer, in order, as long as there is room
// (dropping for a stalled subscriber or with timeout <= 0, as deliver
// does), and returns how many it disposed of: evs[n:] needs a wait for
// room. A subscriber whose lock is held by a sender waiting for room gets
// nothing (n = 0): it is full.
func (b *Broadcaster) tryDeliver(s *subscriber, evs []TelemetryEvent, timeout time.Duration) int {
	if !s.lockUnlessWaiting() {
		return 0
	}
	defer s.mu.Unlock()
	if s.closed {
		return len(evs)
	}
	for i := range evs {
		if !b.offer(s, evs[i], timeout) {
			return i
		}
	}
	return len(evs)
}

// offer puts ev into s's buffer if there is room, or drops it (counted)
// for a stalled subscriber or with timeout <= 0; false when neither, that
// is when ev needs a wait for room. s.mu is held.
func (b *Broadcaster) offer(s *subscriber, ev TelemetryEvent, timeout time.Duration) bool {
	select {
	case s.ch <- ev:
		s.stalled = false
		return true
	default:
	}
	if timeout <= 0 || s.stalled {
		b.dropped.Add(1)
		return true
	}
	return false
}

// lockUnlessWaiting takes s.mu, or gives up (false) when its holder is
// waiting for room. Other holders keep it for a moment only (a send
// without waiting, a close), so they are waited for by yielding.
func (s *subscriber) lockUnlessWaiting() bool {
	for !s.mu.TryLock() {
		if s.waiting.Load() {
			return false
		}
		runtime.Gosched()
	}
	return true
}

// backlog is what trySendBatch could not deliver: for subscribers subs,
// evs[from[k]:] each.
type backlog struct {
	b    *Broadcaster
	subs []*subscriber
	from []int
	evs  []TelemetryEvent
}

// Deliver delivers the backlog as sendBatch would, waiting for room up to
// the broadcaster's current send timeout. Subscribers that were removed
// meanwhile get nothing more.
func (bl *backlog) Deliver() {
	_, timeout := bl.b.snapshot()
	for k, s := range bl.subs {
		bl.b.deliver(s, bl.evs[bl.from[k]:], timeout)
	}
}

// Close closes every subscriber channel; later Sends do nothing and later
// Subscribes get a closed channel. Calling it twice is harmless.
func (b *Broadcaster) Close() {
	b.mu.Lock()
	subs := b.subs
	b.subs = nil
	b.closed = true
	b.mu.Unlock()
	for _, s := range subs {
		s.shut()
	}
}

// LogLine is a structured log line emitted by a supervised service (kept
// from devrig's package; the supervisor publishes TelemetryEvents).
type LogLine struct {
	Service  string
	Text     string
	IsStderr bool
	Level    string
}

// DetectLogLevel infers a log severity from common words in the text, as
// devrig's own function does: "error", "warn", "debug", else "info".
// (libdevrig's detection, used for LogSeverity, looks at whole words.)
func DetectLogLevel(text string) string {
	for _, c := range []struct {
		words []string
		level string
	}{
		{[]string{"ERROR", "error", "FATAL", "fatal", "PANIC", "panic", "CRIT", "crit"}, SeverityError},
		{[]string{"WARN", "warn", "WARNING", "warning"}, SeverityWarn},
		{[]string{"DEBUG", "debug", "TRACE", "trace"}, SeverityDebug},
	} {
		for _, w := range c.words {
			if strings.Contains(text, w) {
				return c.level
			}
		}
	}
	return SeverityInfo
}
