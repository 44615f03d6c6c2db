package supervisor

/*
#include <stdlib.h>
#include "devrig.h"
*/
import "C"

import (
	"math"
	"path/filepath"
	"strings"
	"time"
	"unsafe"
)

// hasNUL: C would silently cut such a path at the NUL byte.
func hasNUL(s string) bool { return strings.IndexByte(s, 0) >= 0 }

func errNUL(op string) error {
	return &Error{Op: op, Code: CodeInvalidArgument, Message: "path contains a NUL byte"}
}

func validPID(pid int) bool { return pid > 0 && pid <= math.MaxInt32 }

func graceMs(d time.Duration) C.uint64_t {
	if d < 0 {
		return 0
	}
	return C.uint64_t(d.Milliseconds())
}

// KillTree terminates pid and all of its descendants. Descendants are
// collected before any signal is sent (killing the parent reparents
// survivors, losing the tree). Each process gets SIGTERM, then SIGKILL after
// grace if still alive; it returns as soon as all are gone. A pid that is
// not positive or does not fit a pid_t is ignored (it would signal a process
// group). Blocks up to grace.
func KillTree(pid int, grace time.Duration) {
	if !validPID(pid) {
		return
	}
	C.devrig_kill_tree(C.uint32_t(pid), graceMs(grace))
}

// ProcStartTimeMs returns a process's creation time (milliseconds since the
// Unix epoch), or ok=false if it can't be inspected (gone, or an invalid
// pid). Combined with the PID it forms a reuse-proof identity.
func ProcStartTimeMs(pid int) (int64, bool) {
	if !validPID(pid) {
		return 0, false
	}
	var out C.int64_t
	if C.devrig_proc_start_time_ms(C.uint32_t(pid), &out) != C.DEVRIG_OK {
		return 0, false
	}
	return int64(out), true
}

// SameProcess reports whether pid currently refers to the same process that
// had the given start time, guarding against PID reuse. wantStartMs == 0
// means the start time is unknown: liveness alone decides.
func SameProcess(pid int, wantStartMs int64) bool {
	if !validPID(pid) {
		return false
	}
	return bool(C.devrig_same_process(C.uint32_t(pid), C.int64_t(wantStartMs)))
}

// PIDFilePath returns the path to the devrig master PID file,
// stateDir/devrig.pid.
func PIDFilePath(stateDir string) string {
	if hasNUL(stateDir) {
		return filepath.Join(stateDir, "devrig.pid")
	}
	cdir := C.CString(stateDir)
	defer C.free(unsafe.Pointer(cdir))
	n := C.devrig_pid_file_path(cdir, nil, 0)
	if n == 0 {
		return filepath.Join(stateDir, "devrig.pid")
	}
	buf := (*C.char)(C.malloc(n + 1))
	defer C.free(unsafe.Pointer(buf))
	C.devrig_pid_file_path(cdir, buf, n+1)
	return C.GoStringN(buf, C.int(n))
}

// WritePIDFile writes the current process PID to stateDir/devrig.pid
// (atomically), creating stateDir if needed.
func WritePIDFile(stateDir string) error {
	if hasNUL(stateDir) {
		return errNUL("write pid file")
	}
	cdir := C.CString(stateDir)
	defer C.free(unsafe.Pointer(cdir))
	return call("write pid file", "", func() uint32 { return uint32(C.devrig_write_pid_file(cdir)) })
}

// RemovePIDFile removes the PID file; an absent file is not an error.
func RemovePIDFile(stateDir string) {
	if hasNUL(stateDir) {
		return
	}
	cdir := C.CString(stateDir)
	defer C.free(unsafe.Pointer(cdir))
	C.devrig_remove_pid_file(cdir)
}

// ReapOrphans kills, after a crash of a previous host, every service
// recorded in stateDir whose process is still the same process (pid and
// start time), with its whole tree (as KillTree), and returns how many were
// reaped. A recorded pid now used by another process is never touched. Call
// it before starting supervisors on stateDir. A missing stateDir is an error
// (ErrNotFound).
func ReapOrphans(stateDir string, grace time.Duration) (int, error) {
	if hasNUL(stateDir) {
		return 0, errNUL("reap orphans")
	}
	cdir := C.CString(stateDir)
	defer C.free(unsafe.Pointer(cdir))
	var n C.uint32_t
	err := call("reap orphans in", stateDir, func() uint32 {
		return uint32(C.devrig_reap_orphans(cdir, graceMs(grace), &n))
	})
	return int(n), err
}
