package supervisor

/*
#include <stdlib.h>
#include "shims.h"
*/
import "C"

import (
	"context"
	"sync"
	"time"
	"unsafe"
)

// Bookkeeping of the runs started by Start, shared by all of them so that a
// running service has no goroutine and no timer of its own.

// Runs started with one context are stopped together: one context.AfterFunc
// per distinct ctx.Done() channel (not one per run) requests the stop of
// every run of the group, in one cgo call. A host that starts hundreds of
// services with one context gets, on its cancellation, one goroutine making
// one call, rather than hundreds of goroutines created at once, each making
// a call that signals a process (tens of microseconds: long enough for the
// scheduler to hand each one's P to another thread).
var stopGroups struct {
	mu sync.Mutex // guards m; taken before a group's mu
	m  map[<-chan struct{}]*stopGroup
}

// stopGroup holds the live runs of one Done channel.
type stopGroup struct {
	done <-chan struct{}
	stop func() bool // undoes the AfterFunc

	mu    sync.Mutex
	head  *runState // linked through runState.groupPrev/groupNext
	n     int
	fired bool
}

// joinStopGroup makes ctx's cancellation stop rs. A ctx that is never done
// (Done() nil) needs nothing. Called before the run starts: a group that
// fires later cancels rs; one that fired already had its context done, which
// Start then sees (ctx.Err()).
func joinStopGroup(ctx context.Context, rs *runState) {
	done := ctx.Done()
	if done == nil {
		return
	}
	stopGroups.mu.Lock()
	defer stopGroups.mu.Unlock()
	g := stopGroups.m[done]
	if g == nil {
		if stopGroups.m == nil {
			stopGroups.m = make(map[<-chan struct{}]*stopGroup)
		}
		g = &stopGroup{done: done}
		stopGroups.m[done] = g
		g.stop = context.AfterFunc(ctx, g.fire)
	}
	g.mu.Lock()
	rs.groupNext = g.head
	if g.head != nil {
		g.head.groupPrev = rs
	}
	g.head = rs
	g.n++
	g.mu.Unlock()
	rs.group.Store(g)
}

// leaveStopGroup removes rs from its group before its handle is freed; the
// last run to leave a group that has not fired undoes its AfterFunc.
func leaveStopGroup(rs *runState) {
	g := rs.group.Load()
	if g == nil {
		return
	}
	g.mu.Lock() // held by fire while it cancels: rs is not freed meanwhile
	if rs.groupPrev != nil {
		rs.groupPrev.groupNext = rs.groupNext
	} else {
		g.head = rs.groupNext
	}
	if rs.groupNext != nil {
		rs.groupNext.groupPrev = rs.groupPrev
	}
	rs.groupPrev, rs.groupNext = nil, nil
	g.n--
	empty := g.n == 0 && !g.fired
	g.mu.Unlock()
	if !empty {
		return
	}
	stopGroups.mu.Lock()
	g.mu.Lock()
	if g.n == 0 && !g.fired && stopGroups.m[g.done] == g {
		delete(stopGroups.m, g.done)
		g.stop()
	}
	g.mu.Unlock()
	stopGroups.mu.Unlock()
}

// fire is the group's AfterFunc: it requests the stop of every run of the
// group at once. Later Starts with the same (cancelled) context make a new
// group, which fires at once.
func (g *stopGroup) fire() {
	stopGroups.mu.Lock()
	if stopGroups.m[g.done] == g {
		delete(stopGroups.m, g.done)
	}
	stopGroups.mu.Unlock()

	g.mu.Lock()
	defer g.mu.Unlock()
	g.fired = true
	if g.n == 0 {
		return
	}
	// The handles go to C in C memory. None is freed before g.mu is
	// released: finish leaves the group first.
	sups := (*[1 << 28]*C.devrig_supervisor)(C.malloc(C.size_t(g.n) * C.size_t(unsafe.Sizeof(uintptr(0)))))[:g.n:g.n]
	i := 0
	for rs := g.head; rs != nil; rs = rs.groupNext {
		sups[i] = rs.sup
		i++
	}
	C.devrig_go_cancel_all(&sups[0], C.size_t(i))
	C.free(unsafe.Pointer(&sups[0]))
}

// The safety net: should a run end without a terminal event (libdevrig
// emits FAILED even when its run driver panics; only a second panic while
// it does so would leave a run without one), a rare poll of devrig_wait
// still notices. One timer polls every live run, rarely: the polls of hundreds of
// idle services are the only CPU they cost. The interval doubles from
// netFirst up to netMax while runs are live.
const (
	netFirst = 30 * time.Second
	netMax   = 5 * time.Minute
)

var safetyNet struct {
	mu    sync.Mutex
	head  *runState // linked through runState.netPrev/netNext
	timer *time.Timer
	every time.Duration
}

// addToSafetyNet is called once the run has started. The run may have
// ended and been released already (a child that exits at once): it is then
// not added.
func addToSafetyNet(rs *runState) {
	n := &safetyNet
	n.mu.Lock()
	defer n.mu.Unlock()
	if rs.released {
		return
	}
	rs.netNext = n.head
	if n.head != nil {
		n.head.netPrev = rs
	}
	n.head = rs
	rs.inNet = true
	if n.timer == nil {
		n.every = netFirst
		n.timer = time.AfterFunc(n.every, pollSafetyNet)
	}
}

// removeFromSafetyNet is called before the run's handle is freed; the run
// can no longer be added.
func removeFromSafetyNet(rs *runState) {
	n := &safetyNet
	n.mu.Lock()
	defer n.mu.Unlock()
	rs.released = true
	if !rs.inNet {
		return
	}
	if rs.netPrev != nil {
		rs.netPrev.netNext = rs.netNext
	} else {
		n.head = rs.netNext
	}
	if rs.netNext != nil {
		rs.netNext.netPrev = rs.netPrev
	}
	rs.netPrev, rs.netNext, rs.inNet = nil, nil, false
	if n.head == nil && n.timer != nil {
		n.timer.Stop()
		n.timer = nil
	}
}

func pollSafetyNet() {
	n := &safetyNet
	n.mu.Lock()
	var ended []*runState
	for rs := n.head; rs != nil; rs = rs.netNext {
		// In the net, rs is not freed: finish removes it first, under n.mu.
		if C.devrig_wait(rs.sup, 0) != C.DEVRIG_E_TIMEOUT {
			ended = append(ended, rs)
		}
	}
	if n.timer != nil {
		n.every = min(2*n.every, netMax)
		n.timer.Reset(n.every)
	}
	n.mu.Unlock()
	for _, rs := range ended {
		rs.ending()
	}
}
