// Command flaky supervises a service that crashes now and then, printing its
// log lines and state changes, until the time is up or Ctrl-C.
//
//	go run ./examples/flaky -for 5s
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/devrig/libdevrig/bindings/go/events"
	"github.com/devrig/libdevrig/bindings/go/supervisor"
)

const flakyService = `echo "INFO starting (pid $$)"
i=0
while [ $i -lt 5 ]; do
  i=$((i+1)); echo "INFO working $i"; sleep 0.1
done
if [ $(( $(od -An -N1 -tu1 /dev/urandom) % 2 )) -eq 0 ]; then
  echo "ERROR something broke" >&2; exit 1
fi
echo "INFO done"`

func main() {
	runFor := flag.Duration("for", 5*time.Second, "stop the service after this long (0: until Ctrl-C)")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *runFor > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *runFor)
		defer cancel()
	}

	// One broadcaster for both logs and state changes keeps them in order:
	// a child's lines come before its "exited".
	bus := events.NewBroadcaster()
	ch := bus.Subscribe(256)

	policy := supervisor.DefaultPolicy
	policy.Mode = supervisor.RestartAlways
	policy.StartupGrace = 300 * time.Millisecond
	policy.InitialDelay = 100 * time.Millisecond
	policy.MaxDelay = time.Second
	policy.CrashLoopLimit = -1 // this one is flaky on purpose

	sup := supervisor.New("flaky", flakyService, "", nil, policy, bus, bus, "")
	sup.StopGrace = 2 * time.Second

	printed := make(chan struct{})
	go func() {
		defer close(printed)
		for e := range ch {
			if e.Kind == events.KindLogRecord {
				fmt.Printf("%s [%s %d] %-5s %s\n", e.Timestamp.Format("15:04:05.000"), e.Stream, e.PID, e.LogSeverity, e.LogBody)
				continue
			}
			fmt.Printf("%s == %s", e.Timestamp.Format("15:04:05.000"), e.Status)
			switch e.Status {
			case "started", "running":
				fmt.Printf(" pid=%d", e.PID)
			case "exited":
				fmt.Printf(" code=%d signal=%d after %v", e.ExitCode, e.Signal, e.Runtime)
			case "backoff":
				fmt.Printf(" restart #%d in %v", e.RestartCount, e.Delay)
			}
			if e.Message != "" {
				fmt.Printf(" (%s)", e.Message)
			}
			fmt.Println()
		}
	}()

	err := sup.Run(ctx)
	bus.Close()
	<-printed
	if err != nil {
		fmt.Fprintln(os.Stderr, "flaky:", err)
		os.Exit(1)
	}
	o := sup.Outcome()
	fmt.Printf("outcome: %v after %d restarts (%s)\n", o.Kind, o.Restarts, o.Message)
}
