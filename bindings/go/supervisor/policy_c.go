package supervisor

/*
#include <stdlib.h>
#include "devrig.h"
*/
import "C"

import (
	"time"
	"unsafe"
)

// libraryDefaultPolicy returns devrig_default_policy() as a RestartPolicy
// (crash-loop fields explicit); the tests compare it with DefaultPolicy.
func libraryDefaultPolicy() RestartPolicy {
	c := C.devrig_default_policy()
	return RestartPolicy{
		Mode:               RestartMode(c.mode),
		MaxRestarts:        uint32(c.max_restarts),
		StartupMaxRestarts: uint32(c.startup_max_restarts),
		StartupGrace:       time.Duration(c.startup_grace_ms) * time.Millisecond,
		InitialDelay:       time.Duration(c.initial_delay_ms) * time.Millisecond,
		MaxDelay:           time.Duration(c.max_delay_ms) * time.Millisecond,
		ResetAfter:         time.Duration(c.reset_after_ms) * time.Millisecond,
		CrashLoopLimit:     int(c.crash_loop_limit),
		CrashLoopWindow:    time.Duration(c.crash_loop_window_ms) * time.Millisecond,
	}
}

// libraryParseMode parses a mode with devrig_restart_mode_parse.
func libraryParseMode(s string) (RestartMode, bool) {
	cs := C.CString(s)
	defer C.free(unsafe.Pointer(cs))
	var m uint32
	if C.devrig_restart_mode_parse(cs, &m) != C.DEVRIG_OK {
		return 0, false
	}
	return RestartMode(m), true
}
