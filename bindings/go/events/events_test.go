package events

import (
	"sync"
	"testing"
	"time"

	"github.com/devrig/libdevrig/bindings/go/internal/evhook"
)

func recv(t *testing.T, ch <-chan TelemetryEvent) (TelemetryEvent, bool) {
	t.Helper()
	select {
	case e, ok := <-ch:
		return e, ok
	case <-time.After(5 * time.Second):
		t.Fatal("nothing received")
	}
	return TelemetryEvent{}, false
}

func TestZeroValueAndFanOut(t *testing.T) {
	var b Broadcaster // the zero value works, as devrig's does
	a, c := b.Subscribe(4), b.Subscribe(4)
	b.Send(TelemetryEvent{Kind: KindLogRecord, Service: "s", LogBody: "x"})
	for _, ch := range []<-chan TelemetryEvent{a, c} {
		if e, ok := recv(t, ch); !ok || e.LogBody != "x" || e.Kind != KindLogRecord {
			t.Fatalf("got %+v %v", e, ok)
		}
	}
	b.Unsubscribe(a)
	if _, ok := recv(t, a); ok {
		t.Fatal("unsubscribed channel not closed")
	}
	b.Unsubscribe(a) // twice: harmless
	b.Send(TelemetryEvent{Status: "y"})
	if e, _ := recv(t, c); e.Status != "y" {
		t.Fatalf("got %+v", e)
	}
	b.Close()
	if _, ok := recv(t, c); ok {
		t.Fatal("Close did not close the channel")
	}
	b.Close()
	b.Send(TelemetryEvent{}) // after Close: nothing
	if _, ok := recv(t, b.Subscribe(1)); ok {
		t.Fatal("Subscribe after Close returned an open channel")
	}
}

func TestOrderPreservedUnderBackpressure(t *testing.T) {
	b := NewBroadcaster()
	ch := b.Subscribe(0)
	const n = 10000
	go func() {
		for i := 0; i < n; i++ {
			b.Send(TelemetryEvent{RestartCount: uint32(i)})
		}
		b.Close()
	}()
	i := 0
	for e := range ch {
		if e.RestartCount != uint32(i) {
			t.Fatalf("event %d out of order: %d", i, e.RestartCount)
		}
		i++
	}
	if i != n || b.Dropped() != 0 {
		t.Fatalf("got %d, dropped %d", i, b.Dropped())
	}
}

func TestDropAtOnceWhenTimeoutNotPositive(t *testing.T) {
	b := NewBroadcaster()
	b.SetSendTimeout(0)
	ch := b.Subscribe(1)
	b.Send(TelemetryEvent{Status: "1"})
	b.Send(TelemetryEvent{Status: "2"}) // full: dropped at once
	if b.Dropped() != 1 {
		t.Fatalf("dropped %d", b.Dropped())
	}
	if e, _ := recv(t, ch); e.Status != "1" {
		t.Fatalf("got %q", e.Status)
	}
}

func TestStalledSubscriberCostsOneTimeout(t *testing.T) {
	b := NewBroadcaster()
	b.SetSendTimeout(50 * time.Millisecond)
	stuck := b.Subscribe(1)
	live := b.Subscribe(100)
	t0 := time.Now()
	for i := 0; i < 50; i++ {
		b.Send(TelemetryEvent{RestartCount: uint32(i)})
	}
	if d := time.Since(t0); d > 2*time.Second {
		t.Fatalf("50 sends took %v with a stuck subscriber", d)
	}
	if len(live) != 50 || b.Dropped() != 49 {
		t.Fatalf("live got %d, dropped %d", len(live), b.Dropped())
	}
	// Reading again un-stalls it.
	<-stuck
	b.Send(TelemetryEvent{Status: "again"})
	if e, _ := recv(t, stuck); e.Status != "again" {
		t.Fatalf("got %+v", e)
	}
}

func TestUnsubscribeWakesBlockedSend(t *testing.T) {
	b := NewBroadcaster()
	b.SetSendTimeout(time.Hour)
	ch := b.Subscribe(0)
	sent := make(chan struct{})
	go func() {
		b.Send(TelemetryEvent{})
		close(sent)
	}()
	time.Sleep(20 * time.Millisecond) // let Send block (not required for correctness)
	b.Unsubscribe(ch)
	select {
	case <-sent:
	case <-time.After(5 * time.Second):
		t.Fatal("Unsubscribe did not wake a blocked Send")
	}
}

func TestConcurrentUse(t *testing.T) {
	b := NewBroadcaster()
	b.SetSendTimeout(0) // nobody reads: drop instead of waiting
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Go(func() {
			for j := 0; j < 200; j++ {
				ch := b.Subscribe(2)
				b.Send(TelemetryEvent{Status: "x"})
				b.Unsubscribe(ch)
			}
		})
	}
	wg.Wait()
	b.Close()
}

func TestKindStrings(t *testing.T) {
	if KindServiceStatusChange != 0 || KindLogRecord != 1 || KindLogRecord.String() != "LogRecord" {
		t.Fatal("kind values")
	}
}

// sendBatch (the supervisor's per-read delivery, through internal/evhook)
// keeps Send's semantics: every subscriber gets every event in order, with
// backpressure; a stalled subscriber costs one timeout per batch, not one
// per event; Unsubscribe wakes it.
func TestSendBatch(t *testing.T) {
	if f, ok := evhook.SendBatch.(func(*Broadcaster, []TelemetryEvent)); !ok || f == nil {
		t.Fatalf("evhook.SendBatch is %T", evhook.SendBatch)
	}
	b := NewBroadcaster()
	b.SetSendTimeout(time.Second)
	fast, slow := b.Subscribe(0), b.Subscribe(2)
	batch := make([]TelemetryEvent, 50)
	for i := range batch {
		batch[i] = TelemetryEvent{Kind: KindLogRecord, PID: i}
	}
	var wg sync.WaitGroup
	for _, ch := range []<-chan TelemetryEvent{fast, slow} {
		wg.Go(func() {
			for i := range batch {
				if ch == slow && i%10 == 0 {
					time.Sleep(5 * time.Millisecond)
				}
				if e, _ := recv(t, ch); e.PID != i {
					t.Errorf("event %d: got PID %d", i, e.PID)
					return
				}
			}
		})
	}
	b.sendBatch(batch)
	wg.Wait()
	if d := b.Dropped(); d != 0 {
		t.Fatalf("%d dropped", d)
	}

	// A subscriber that stopped reading: one timeout, then drops at once.
	b.Unsubscribe(fast)
	b.SetSendTimeout(50 * time.Millisecond)
	t0 := time.Now()
	b.sendBatch(batch)
	if el := time.Since(t0); el > 2*time.Second {
		t.Fatalf("a stalled subscriber cost %v", el)
	}
	if d := b.Dropped(); d != uint64(len(batch)-2) {
		t.Fatalf("%d dropped, want %d", d, len(batch)-2)
	}

	// Unsubscribe wakes a batch blocked on a full buffer.
	b.SetSendTimeout(time.Hour)
	for len(slow) > 0 {
		<-slow
	}
	done := make(chan struct{})
	go func() { b.sendBatch(batch); close(done) }()
	time.Sleep(20 * time.Millisecond)
	b.Unsubscribe(slow)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Unsubscribe did not wake sendBatch")
	}
	b.Close()
	b.sendBatch(batch) // after Close: nothing, no panic
}

func TestDetectLogLevelMatchesDevrig(t *testing.T) {
	for text, want := range map[string]string{
		"ERROR boom":      "error",
		"a fatal thing":   "error",
		"WARNING: disk":   "warn",
		"TRACE enter":     "debug",
		"debug: x":        "debug",
		"plain":           "info",
		"INFO: no error!": "error", // devrig's check is by priority, not position
	} {
		if got := DetectLogLevel(text); got != want {
			t.Errorf("DetectLogLevel(%q) = %q, want %q", text, got, want)
		}
	}
}

// trySendBatch and trySend (the supervisor's path on libdevrig's threads,
// through internal/evhook) never wait: what fits is delivered at once (or
// dropped as Send would: stalled subscriber, timeout <= 0), the rest comes
// back as a backlog, a copy, whose Deliver waits as Send does.
func TestTrySendBatchNeverWaits(t *testing.T) {
	trySendBatch, ok := evhook.TrySendBatch.(func(*Broadcaster, []TelemetryEvent) evhook.Backlog)
	if !ok || trySendBatch == nil {
		t.Fatalf("evhook.TrySendBatch is %T", evhook.TrySendBatch)
	}
	trySend, ok := evhook.TrySend.(func(*Broadcaster, TelemetryEvent) evhook.Backlog)
	if !ok || trySend == nil {
		t.Fatalf("evhook.TrySend is %T", evhook.TrySend)
	}
	b := NewBroadcaster()
	b.SetSendTimeout(time.Hour)
	small, big := b.Subscribe(2), b.Subscribe(10)
	batch := make([]TelemetryEvent, 5)
	for i := range batch {
		batch[i] = TelemetryEvent{PID: i}
	}
	if trySendBatch(b, nil) != nil {
		t.Fatal("a backlog for nothing")
	}
	bl := trySendBatch(b, batch)
	if bl == nil {
		t.Fatal("no backlog though a buffer was full")
	}
	if len(small) != 2 || len(big) != 5 {
		t.Fatalf("delivered %d and %d at once", len(small), len(big))
	}
	for i := range batch {
		batch[i].PID = -1 // the backlog is a copy
	}
	// The backlog waits for room in small only, in order.
	done := make(chan struct{})
	go func() { bl.Deliver(); close(done) }()
	for i := 0; i < 5; i++ {
		if e, _ := recv(t, small); e.PID != i {
			t.Fatalf("small: event %d has PID %d", i, e.PID)
		}
	}
	<-done
	if len(big) != 5 || b.Dropped() != 0 {
		t.Fatalf("big got %d, dropped %d", len(big), b.Dropped())
	}
	for len(big) > 0 {
		<-big
	}

	// A sender waiting for room in small holds its lock: trySend does not
	// wait behind it, and leaves small's event to a backlog.
	for i := 0; i < 2; i++ {
		b.Send(TelemetryEvent{})
	}
	sent := make(chan struct{})
	go func() { b.Send(TelemetryEvent{Status: "blocked"}); close(sent) }()
	for !b.subs[0].waiting.Load() {
		time.Sleep(time.Millisecond)
	}
	got := make(chan evhook.Backlog, 1)
	go func() { got <- trySend(b, TelemetryEvent{Status: "try"}) }()
	select {
	case bl = <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("trySend waited behind a blocked Send")
	}
	if bl == nil || len(big) != 3 {
		t.Fatalf("backlog %v, big has %d", bl, len(big))
	}
	b.Unsubscribe(small) // wakes the blocked Send; the backlog is moot
	<-sent
	bl.Deliver()
	for len(big) > 0 {
		<-big
	}

	// Drops as Send would: no backlog with a timeout <= 0, nor for a
	// stalled subscriber.
	b.SetSendTimeout(0)
	full := b.Subscribe(1)
	if trySendBatch(b, make([]TelemetryEvent, 3)) != nil {
		t.Fatal("a backlog with a send timeout of 0")
	}
	b.SetSendTimeout(10 * time.Millisecond)
	b.Send(TelemetryEvent{}) // full is full: stalls it after 10 ms
	if trySendBatch(b, make([]TelemetryEvent, 3)) != nil {
		t.Fatal("a backlog for a stalled subscriber")
	}
	<-full
	b.Close()
	if trySendBatch(b, batch) != nil {
		t.Fatal("a backlog after Close")
	}
}
