// Go rows of the libdevrig benchmarks: the os/exec baselines and the rows
// through the Go binding. One row per invocation; prints one JSON line.
//
//	gobench w1-scanner|w1-devrig|w1-devrig-broadcaster WRITER N
//	gobench w3-exec|w3-devrig N
package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/devrig/libdevrig/bindings/go/events"
	"github.com/devrig/libdevrig/bindings/go/supervisor"
)

func die(err error) {
	fmt.Fprintln(os.Stderr, "gobench:", err)
	os.Exit(1)
}

func statusField(key string) int64 {
	b, _ := os.ReadFile("/proc/self/status")
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, key+":") {
			f := strings.Fields(l[len(key)+1:])
			v, _ := strconv.ParseInt(f[0], 10, 64)
			return v
		}
	}
	return -1
}

func cpuSecs() float64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return tv(ru.Utime) + tv(ru.Stime)
}

// cpuPerLine is this process's CPU time (user + system, not the writer's)
// since cpu0, per line: steadier than lines/s on a busy machine.
func cpuPerLine(cpu0 float64, n int) float64 { return (cpuSecs() - cpu0) / float64(n) * 1e9 }

func raiseNofile() {
	var r syscall.Rlimit
	syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r)
	r.Cur = r.Max
	syscall.Setrlimit(syscall.RLIMIT_NOFILE, &r)
}

func w1Scanner(writer string, n int) {
	cpu0 := cpuSecs()
	t0 := time.Now()
	cmd := exec.Command("/bin/sh", "-c", fmt.Sprintf("exec %s %d", writer, n))
	out, err := cmd.StdoutPipe()
	if err != nil {
		die(err)
	}
	if err := cmd.Start(); err != nil {
		die(err)
	}
	sc := bufio.NewScanner(out)
	count, bad := 0, 0
	var secs float64
	for sc.Scan() {
		if len(sc.Bytes()) != 63 {
			bad++
		}
		count++
		if count == n {
			secs = time.Since(t0).Seconds()
		}
	}
	cmd.Wait()
	fmt.Printf("{\"lines\":%d,\"lost\":%d,\"bad\":%d,\"secs\":%.6f,\"rate\":%.1f,\"cpu_ns_line\":%.1f}\n",
		count, n-count, bad, secs, float64(count)/secs, cpuPerLine(cpu0, n))
}

func quietPolicy() supervisor.RestartPolicy {
	p := supervisor.DefaultPolicy
	p.Mode = supervisor.RestartNever
	p.StartupGrace = 0
	return p
}

// w1Devrig consumes the lines through Supervisor.LogHandler, the binding's
// documented fast path: batches of lent views on libdevrig's thread.
func w1Devrig(writer string, n int) {
	count, bad := 0, 0
	var secs float64
	cpu0 := cpuSecs()
	t0 := time.Now()
	s := supervisor.New("w1", fmt.Sprintf("exec %s %d", writer, n), "", nil, quietPolicy(), nil, nil, "")
	// Never concurrent for one run; Run's return orders it before the read below.
	s.LogHandler = func(lines []supervisor.LogView) {
		for i := range lines {
			if t := lines[i].Text(); len(t) != 63 || t[0] != 'l' {
				bad++
			}
		}
		count += len(lines)
		if count == n {
			secs = time.Since(t0).Seconds()
		}
	}
	if err := s.Run(context.Background()); err != nil {
		die(err)
	}
	fmt.Printf("{\"lines\":%d,\"lost\":%d,\"bad\":%d,\"secs\":%.6f,\"rate\":%.1f,\"cpu_ns_line\":%.1f}\n",
		count, n-count, bad, secs, float64(count)/secs, cpuPerLine(cpu0, n))
}

// w1DevrigBroadcaster consumes the lines as the seed API publishes them:
// one TelemetryEvent per line on an events.Broadcaster channel.
func w1DevrigBroadcaster(writer string, n int) {
	logs := events.NewBroadcaster()
	ch := logs.Subscribe(4096)
	cpu0 := cpuSecs()
	s := supervisor.New("w1", fmt.Sprintf("exec %s %d", writer, n), "", nil, quietPolicy(), logs, nil, "")
	count, bad := 0, 0
	var secs float64
	done := make(chan struct{})
	t0 := time.Now()
	go func() {
		for ev := range ch {
			if ev.Kind != events.KindLogRecord {
				continue
			}
			if len(ev.LogBody) != 63 {
				bad++
			}
			count++
			if count == n {
				secs = time.Since(t0).Seconds()
				close(done)
			}
		}
	}()
	if err := s.Run(context.Background()); err != nil {
		die(err)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
	}
	logs.Unsubscribe(ch)
	fmt.Printf("{\"lines\":%d,\"lost\":%d,\"bad\":%d,\"dropped\":%d,\"secs\":%.6f,\"rate\":%.1f,\"cpu_ns_line\":%.1f}\n",
		count, n-count, bad, logs.Dropped(), secs, float64(count)/secs, cpuPerLine(cpu0, n))
}

// report prints a W3 row. RSS per service is measured from the first service
// to the last, as in every W3 row; what the first one costs is reported apart.
func report(n int, threads int64, startAll, stopAll float64, rss0, rssFirst, rss1 int64, idle float64) {
	fmt.Printf("{\"n\":%d,\"threads\":%d,\"start_all\":%.6f,\"stop_all\":%.6f,\"rss_per_kib\":%.2f,\"rss_first_kib\":%d,\"idle_cpu\":%.5f}\n",
		n, threads, startAll, stopAll, float64(rss1-rssFirst)/float64(n-1), rssFirst-rss0, idle)
}

func idleCPU() float64 {
	c0, t0 := cpuSecs(), time.Now()
	time.Sleep(3 * time.Second)
	return (cpuSecs() - c0) / time.Since(t0).Seconds()
}

// One goroutine per child: it reads the child's stdout and stderr (merged
// into one pipe reader each) and waits for it.
func w3Exec(n int) {
	raiseNofile()
	rss0 := statusField("VmRSS")
	var rssFirst int64
	cmds := make([]*exec.Cmd, n)
	var wg sync.WaitGroup
	t0 := time.Now()
	for i := range n {
		c := exec.Command("/bin/sh", "-c", "exec sleep 3600")
		stdout, err := c.StdoutPipe()
		if err != nil {
			die(err)
		}
		stderr, err := c.StderrPipe()
		if err != nil {
			die(err)
		}
		if err := c.Start(); err != nil {
			die(err)
		}
		if i == 0 {
			rssFirst = statusField("VmRSS")
		}
		cmds[i] = c
		wg.Add(1)
		go func() {
			defer wg.Done()
			go func() {
				sc := bufio.NewScanner(stderr)
				for sc.Scan() {
				}
			}()
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
			}
			c.Wait()
		}()
	}
	startAll := time.Since(t0).Seconds()
	time.Sleep(500 * time.Millisecond)
	threads, rss1 := statusField("Threads"), statusField("VmRSS")
	idle := idleCPU()
	t2 := time.Now()
	for _, c := range cmds {
		c.Process.Signal(syscall.SIGTERM)
	}
	wg.Wait()
	report(n, threads, startAll, time.Since(t2).Seconds(), rss0, rssFirst, rss1, idle)
}

// w3Devrig runs the services as a devrig host does: one logs broadcaster
// and one events broadcaster shared by every service, each read by one
// goroutine, and each service started with Supervisor.Start (no goroutine
// per service; ctx's cancellation stops them all).
func w3Devrig(n int) {
	raiseNofile()
	rss0 := statusField("VmRSS")
	logs, evts := events.NewBroadcaster(), events.NewBroadcaster()
	logCh, evCh := logs.Subscribe(256), evts.Subscribe(256)
	allStarted := make(chan struct{})
	var readers sync.WaitGroup
	readers.Go(func() {
		for range logCh {
		}
	})
	readers.Go(func() {
		started := 0
		for ev := range evCh {
			if ev.Status == events.StatusStarted {
				if started++; started == n {
					close(allStarted)
				}
			}
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	runs := make([]*supervisor.Running, n)
	var rssFirst int64
	t0 := time.Now()
	for i := range n {
		s := supervisor.New("svc-"+strconv.Itoa(i), "exec sleep 3600", "", nil, quietPolicy(), logs, evts, "")
		r, err := s.Start(ctx)
		if err != nil {
			die(err)
		}
		runs[i] = r
		if i == 0 {
			rssFirst = statusField("VmRSS")
		}
	}
	<-allStarted // every "started" event read by the host
	startAll := time.Since(t0).Seconds()
	time.Sleep(500 * time.Millisecond)
	threads, rss1 := statusField("Threads"), statusField("VmRSS")
	idle := idleCPU()
	t2 := time.Now()
	cancel()
	for _, r := range runs {
		if err := r.Wait(); err != nil {
			die(err)
		}
	}
	stopAll := time.Since(t2).Seconds()
	logs.Close()
	evts.Close()
	readers.Wait()
	report(n, threads, startAll, stopAll, rss0, rssFirst, rss1, idle)
}

func main() {
	if len(os.Args) < 3 {
		die(fmt.Errorf("usage: gobench ROW ARGS"))
	}
	atoi := func(s string) int { v, _ := strconv.Atoi(s); return v }
	switch os.Args[1] {
	case "w1-scanner":
		w1Scanner(os.Args[2], atoi(os.Args[3]))
	case "w1-devrig":
		w1Devrig(os.Args[2], atoi(os.Args[3]))
	case "w1-devrig-broadcaster":
		w1DevrigBroadcaster(os.Args[2], atoi(os.Args[3]))
	case "w3-exec":
		w3Exec(atoi(os.Args[2]))
	case "w3-devrig":
		w3Devrig(atoi(os.Args[2]))
	default:
		die(fmt.Errorf("unknown row %s", os.Args[1]))
	}
}
