package supervisor

import (
	"context"
	"fmt"
	"testing"

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
