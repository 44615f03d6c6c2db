package supervisor

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/devrig/libdevrig/bindings/go/events"
)

// handlerErrs collects the first problems a LogHandler saw: a handler runs
// on libdevrig's thread and must not call t.Fatal (runtime.Goexit).
type handlerErrs struct {
	mu   sync.Mutex
	errs []string
}

func (h *handlerErrs) add(format string, args ...any) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.errs) < 10 {
		h.errs = append(h.errs, fmt.Sprintf(format, args...))
	}
}

func (h *handlerErrs) check(t *testing.T) {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.errs) > 0 {
		t.Fatalf("in the handler:\n%s", strings.Join(h.errs, "\n"))
	}
}

// 100,000 numbered lines on stdout and 100,000 on stderr, written at the
// same time: through LogHandler alone (no logs broadcaster) every line
// arrives once, in order per stream, with its fields, in calls of at most
// 1024 lines, and all of them before "exited".
func TestLogHandler100kPerStream(t *testing.T) {
	const n = 100000
	var bad handlerErrs
	var total atomic.Int64
	next := map[string]int{events.StreamStdout: 1, events.StreamStderr: 1}
	var pid atomic.Int64
	t0 := time.Now().Add(-time.Second)
	evts := events.NewBroadcaster()
	evCh := evts.Subscribe(64)
	s := New("handler", fmt.Sprintf("seq 1 %d & seq 1 %d >&2; wait", n, n), "", nil, fastPolicy(RestartNever), nil, evts, "")
	s.LogHandler = func(lines []LogView) {
		if len(lines) == 0 || len(lines) > maxViews {
			bad.add("a call with %d lines", len(lines))
		}
		for i := range lines {
			l := &lines[i]
			st := l.Stream()
			if string(l.Text()) != strconv.Itoa(next[st]) {
				bad.add("%s line %d: got %q", st, next[st], l.Text())
			}
			next[st]++
			if l.Severity() != events.SeverityInfo || l.Level() != events.LevelUnknown ||
				l.PID() <= 0 || l.Timestamp().Before(t0) || l.Timestamp().After(time.Now().Add(time.Second)) {
				bad.add("fields of %q: %s %q %d %v", l.Text(), l.Severity(), l.Level(), l.PID(), l.Timestamp())
			}
			if p := pid.Load(); p != 0 && int64(l.PID()) != p {
				bad.add("pid %d, child is %d", l.PID(), p)
			}
		}
		total.Add(int64(len(lines)))
	}
	done := make(chan error, 1)
	go func() { done <- s.Run(context.Background()); evts.Close() }()
	var statuses []string
	for e := range evCh {
		statuses = append(statuses, e.Status)
		switch e.Status {
		case events.StatusStarted:
			pid.Store(int64(e.PID))
		case events.StatusExited:
			// Every line was handled before "exited" was sent.
			if got := total.Load(); got != 2*n {
				t.Errorf("%d lines handled when exited came, want %d", got, 2*n)
			}
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	bad.check(t)
	wantStatuses(t, statuses, "started", "running", "exited", "stopped")
	if next[events.StreamStdout] != n+1 || next[events.StreamStderr] != n+1 {
		t.Fatalf("stdout %d, stderr %d lines, want %d each", next[events.StreamStdout]-1, next[events.StreamStderr]-1, n)
	}
}

// Reads with more lines than one call takes are split: 300,000 empty lines
// (64 KiB reads hold thousands) arrive in calls of at most 1024.
func TestLogHandlerSplitsLargeBatches(t *testing.T) {
	const n = 300000
	var calls, lines, maxLen, nonEmpty int
	s := New("empty", fmt.Sprintf("head -c %d /dev/zero | tr '\\0' '\\n'", n), "", nil, fastPolicy(RestartNever), nil, nil, "")
	s.LogHandler = func(views []LogView) {
		calls++
		lines += len(views)
		maxLen = max(maxLen, len(views))
		for i := range views {
			if len(views[i].Text()) != 0 {
				nonEmpty++
			}
		}
	}
	if err := s.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Callbacks are done once Run has returned (cgo calls synchronise them
	// with this goroutine, for the race detector too).
	if lines != n || nonEmpty != 0 || maxLen != maxViews {
		t.Fatalf("%d lines (%d not empty) in %d calls, largest %d; want %d empty lines, largest %d",
			lines, nonEmpty, calls, maxLen, n, maxViews)
	}
}

// What a handler copies stays exact after later batches reuse libdevrig's
// buffer and the views slice: string(Text()), bytes.Clone(Text()),
// Event(), and views copied out of the slice (their Stream, Severity,
// Level, PID and Timestamp). Text is raw bytes, Event's LogBody is repaired
// UTF-8, as the broadcaster's. An append to a Text copies instead of
// writing over the next line.
func TestLogHandlerCopiesOutliveTheCall(t *testing.T) {
	var content strings.Builder
	var want []string
	add := func(line string) {
		content.WriteString(line + "\n")
		want = append(want, line)
	}
	for i := 1; i <= 20000; i++ {
		switch {
		case i%7 == 0:
			add(fmt.Sprintf("bad\xff%d\xe2\x82", i))
		case i%11 == 0:
			add("")
		case i%13 == 0:
			add(fmt.Sprintf("ERROR failure %d", i))
		default:
			add(fmt.Sprintf("é€%d %s", i, strings.Repeat("z", i%97)))
		}
		if i == 9000 {
			add(strings.Repeat("y", 20000))
		}
	}
	content.WriteString("Traceback\n  at x\n  at y\n")
	want = append(want, "Traceback\n  at x\n  at y")
	path := filepath.Join(t.TempDir(), "lines")
	if err := os.WriteFile(path, []byte(content.String()), 0o644); err != nil {
		t.Fatal(err)
	}

	var bad handlerErrs
	var strs []string
	var clones [][]byte
	var evs []events.TelemetryEvent
	var kept []LogView
	s := New("copies", "cat "+path, "", nil, fastPolicy(RestartNever), nil, nil, "")
	s.LogHandler = func(lines []LogView) {
		for i := range lines {
			l := &lines[i]
			text := l.Text()
			if cap(text) != len(text) {
				bad.add("cap %d, len %d", cap(text), len(text))
			}
			grown := append(text, "XYZ"...) // must not write into libdevrig's buffer
			if !bytes.Equal(grown[:len(text)], text) {
				bad.add("append changed the text")
			}
			strs = append(strs, string(text))
			clones = append(clones, bytes.Clone(text))
			evs = append(evs, l.Event())
		}
		kept = append(kept, lines...) // copies of the views, not the slice
	}
	if err := s.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	bad.check(t)
	if len(strs) != len(want) {
		t.Fatalf("%d lines, want %d", len(strs), len(want))
	}
	for i, w := range want {
		if strs[i] != w || string(clones[i]) != w {
			t.Fatalf("line %d: %q / %q, want %q", i+1, strs[i], clones[i], w)
		}
		e, k := evs[i], &kept[i]
		if e.Kind != events.KindLogRecord || e.Service != "copies" || e.LogBody != lenientUTF8(w) ||
			e.Stream != events.StreamStdout || e.Stream != k.Stream() || e.LogSeverity != k.Severity() ||
			e.Level != k.Level() || e.PID != k.PID() || e.PID <= 0 || !e.Timestamp.Equal(k.Timestamp()) {
			t.Fatalf("line %d: event %+v, kept view %s %s %q %d %v", i+1, e, k.Stream(), k.Severity(), k.Level(), k.PID(), k.Timestamp())
		}
		if strings.HasPrefix(w, "ERROR") != (e.LogSeverity == events.SeverityError && e.Level == events.LevelError) {
			t.Fatalf("line %d %q: severity %q, level %q", i+1, w, e.LogSeverity, e.Level)
		}
	}
	var zero LogView
	if len(zero.Text()) != 0 || zero.Stream() != events.StreamStdout || zero.Event().LogBody != "" {
		t.Fatal("zero LogView")
	}
}

// With a LogHandler and a logs broadcaster, both receive every entry, in
// the same order, and Event() is what the broadcaster publishes.
func TestLogHandlerWithBroadcaster(t *testing.T) {
	const n = 50000
	var fromHandler []events.TelemetryEvent
	cmd := fmt.Sprintf(`seq 1 %d; echo "WARN careful" >&2; printf 'odd \377\n'`, n)
	r := runSupervisor(t, context.Background(), "both", cmd, fastPolicy(RestartNever), 60*time.Second, func(s *Supervisor) {
		s.LogHandler = func(lines []LogView) {
			for i := range lines {
				fromHandler = append(fromHandler, lines[i].Event())
			}
		}
	})
	if r.err != nil {
		t.Fatal(r.err)
	}
	wantStatuses(t, r.statuses(), "started", "running", "exited", "stopped")
	if len(fromHandler) != n+2 || len(r.logs) != n+2 {
		t.Fatalf("handler %d, broadcaster %d entries, want %d", len(fromHandler), len(r.logs), n+2)
	}
	perStream := func(evs []events.TelemetryEvent, stream string) []events.TelemetryEvent {
		var out []events.TelemetryEvent
		for _, e := range evs {
			if e.Stream == stream {
				out = append(out, e)
			}
		}
		return out
	}
	for _, st := range []string{events.StreamStdout, events.StreamStderr} {
		h, b := perStream(fromHandler, st), perStream(r.logs, st)
		if len(h) != len(b) {
			t.Fatalf("%s: handler %d, broadcaster %d", st, len(h), len(b))
		}
		for i := range h {
			x, y := h[i], b[i]
			if x.Kind != y.Kind || x.Service != y.Service || x.LogBody != y.LogBody || x.LogSeverity != y.LogSeverity ||
				x.Level != y.Level || x.Stream != y.Stream || x.PID != y.PID || !x.Timestamp.Equal(y.Timestamp) {
				t.Fatalf("%s entry %d: handler %+v, broadcaster %+v", st, i, x, y)
			}
		}
	}
	if e := perStream(fromHandler, events.StreamStderr); len(e) != 1 || e[0].LogBody != "WARN careful" || e[0].LogSeverity != events.SeverityWarn {
		t.Fatalf("stderr %+v", e)
	}
	if out := perStream(fromHandler, events.StreamStdout); out[0].LogBody != "1" || out[n].LogBody != "odd \uFFFD" {
		t.Fatalf("stdout entries %q ... %q", out[0].LogBody, out[n].LogBody)
	}
}

// A panic in the LogHandler stops the service (no survivor once Run
// returns), the handler is not called again, and Run panics again with the
// value; the outcome is cancelled.
func TestLogHandlerPanicIsReraisedAfterStop(t *testing.T) {
	type boom struct{ at string }
	evts := events.NewBroadcaster()
	evCh := evts.Subscribe(64)
	s := New("panicky-logs", "seq 1 100000000", "", nil, fastPolicy(RestartAlways), nil, evts, "")
	s.StopGrace = time.Second
	var calls, after atomic.Int64
	var panicked atomic.Bool
	s.LogHandler = func(lines []LogView) {
		calls.Add(1)
		if panicked.Load() {
			after.Add(1)
			return
		}
		for i := range lines {
			if string(lines[i].Text()) == "5000" {
				panicked.Store(true)
				panic(boom{"5000"})
			}
		}
	}
	got := make(chan any, 1)
	go func() {
		defer func() { got <- recover(); evts.Close() }()
		_ = s.Run(context.Background())
	}()
	var pid int
	select {
	case v := <-got:
		if b, ok := v.(boom); !ok || b.at != "5000" {
			t.Fatalf("recovered %#v", v)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a panic in the log handler did not end the run")
	}
	var statuses []string
	for e := range evCh {
		statuses = append(statuses, e.Status)
		if e.Status == events.StatusStarted {
			pid = e.PID
		}
	}
	if pid == 0 || alive(pid) {
		t.Fatalf("child %d alive after Run returned (statuses %v)", pid, statuses)
	}
	// After a panic nothing more is published (as for a panic in any
	// callback), and the service was not restarted.
	if strings.Count(strings.Join(statuses, ","), "started") != 1 {
		t.Fatalf("statuses %v", statuses)
	}
	if after.Load() != 0 {
		t.Fatalf("handler called %d times after its panic", after.Load())
	}
	if o := s.Outcome(); o.Kind != OutcomeCancelled {
		t.Fatalf("outcome %+v", o)
	}
}
