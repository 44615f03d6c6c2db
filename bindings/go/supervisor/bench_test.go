package supervisor

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/devrig/libdevrig/bindings/go/events"
)

// BenchmarkLogLines measures lines per second from a child through the
// batched callback to a subscriber (b.N lines, one run).
func BenchmarkLogLines(b *testing.B) {
	logs := events.NewBroadcaster()
	ch := logs.Subscribe(4096)
	s := New("bench", fmt.Sprintf("seq 1 %d", b.N), "", nil, fastPolicy(RestartNever), logs, nil, "")
	done := make(chan error, 1)
	b.ResetTimer()
	go func() { done <- s.Run(context.Background()); logs.Close() }()
	n := 0
	for range ch {
		n++
	}
	if err := <-done; err != nil || n != b.N {
		b.Fatalf("got %d of %d lines, %v", n, b.N, err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "lines/s")
}

// BenchmarkLogThroughput is W1 of BENCHMARKS.md in-process: b.N lines of 64
// bytes (63 + newline) written as fast as a pipe takes them, each received
// by a subscriber as a TelemetryEvent; nothing may be lost or damaged.
// Run with e.g. -benchtime=2000000x.
func BenchmarkLogThroughput(b *testing.B) {
	line := strings.Repeat("x", 55) + " INFO ok" // 63 bytes
	logs := events.NewBroadcaster()
	ch := logs.Subscribe(4096)
	cmd := fmt.Sprintf("yes '%s' | head -n %d", line, b.N)
	s := New("bench", cmd, "", nil, fastPolicy(RestartNever), logs, nil, "")
	done := make(chan error, 1)
	b.ReportAllocs()
	cpu0 := cpuTime()
	b.ResetTimer()
	go func() { done <- s.Run(context.Background()); logs.Close() }()
	n, bad := 0, 0
	for ev := range ch {
		if len(ev.LogBody) != 63 || ev.LogSeverity != events.SeverityInfo {
			bad++
		}
		n++
	}
	b.StopTimer()
	if err := <-done; err != nil || n != b.N || bad != 0 {
		b.Fatalf("got %d of %d lines (%d damaged), %v", n, b.N, bad, err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "lines/s")
	// This process's CPU time (the binding and libdevrig, not the writer):
	// steadier than lines/s on a busy machine.
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/line")
}

// cpuTime is the user+system CPU time of this process.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkLogHandlerThroughput is BenchmarkLogThroughput through
// Supervisor.LogHandler (no broadcaster): b.N lines of 64 bytes, each
// checked in the handler; nothing may be lost or damaged. Run with e.g.
// -benchtime=2000000x.
func BenchmarkLogHandlerThroughput(b *testing.B) {
	line := strings.Repeat("x", 55) + " INFO ok" // 63 bytes
	cmd := fmt.Sprintf("yes '%s' | head -n %d", line, b.N)
	s := New("bench", cmd, "", nil, fastPolicy(RestartNever), nil, nil, "")
	n, bad := 0, 0
	s.LogHandler = func(lines []LogView) {
		for i := range lines {
			if len(lines[i].Text()) != 63 || lines[i].Severity() != events.SeverityInfo {
				bad++
			}
		}
		n += len(lines)
	}
	b.ReportAllocs()
	cpu0 := cpuTime()
	b.ResetTimer()
	err := s.Run(context.Background())
	b.StopTimer()
	if err != nil || n != b.N || bad != 0 {
		b.Fatalf("got %d of %d lines (%d damaged), %v", n, b.N, bad, err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "lines/s")
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/line")
}
