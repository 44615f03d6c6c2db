package supervisor

/*
#include "devrig.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"runtime"
)

// ErrorCode is a libdevrig status code.
type ErrorCode int

// Status codes of libdevrig (devrig_status).
const (
	CodeInvalidArgument ErrorCode = 1
	CodeSpawn           ErrorCode = 2
	CodeState           ErrorCode = 3
	CodeIO              ErrorCode = 4
	CodeNotFound        ErrorCode = 5
	CodeTimeout         ErrorCode = 6
	CodePanic           ErrorCode = 7
)

// Sentinel errors, matched by errors.Is against an *Error of that code.
var (
	ErrInvalidArgument = errors.New("devrig: invalid argument")
	ErrSpawn           = errors.New("devrig: spawn failed")
	ErrState           = errors.New("devrig: invalid state")
	ErrIO              = errors.New("devrig: I/O error")
	ErrNotFound        = errors.New("devrig: not found")
	ErrTimeout         = errors.New("devrig: timeout")
	ErrPanic           = errors.New("devrig: internal panic")
)

// Error is a failure reported by libdevrig.
type Error struct {
	Op      string    // the operation, e.g. "spawn web"
	Code    ErrorCode // libdevrig's status code
	Message string    // devrig_last_error()
}

func (e *Error) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("%s: devrig status %d", e.Op, int(e.Code))
	}
	return e.Op + ": " + e.Message
}

// Is matches the sentinel error of e's code.
func (e *Error) Is(target error) bool {
	switch e.Code {
	case CodeInvalidArgument:
		return target == ErrInvalidArgument
	case CodeSpawn:
		return target == ErrSpawn
	case CodeState:
		return target == ErrState
	case CodeIO:
		return target == ErrIO
	case CodeNotFound:
		return target == ErrNotFound
	case CodeTimeout:
		return target == ErrTimeout
	case CodePanic:
		return target == ErrPanic
	}
	return false
}

// call runs f, a libdevrig call, and turns a failure into an *Error with the
// message of devrig_last_error() and the operation op, followed by " " and
// subject when that is not empty (joined only on failure: nothing is
// allocated on success). The OS thread is locked so that the thread-local
// message is read on the thread that set it.
func call(op, subject string, f func() uint32) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	st := f()
	if st == C.DEVRIG_OK {
		return nil
	}
	if subject != "" {
		op += " " + subject
	}
	return &Error{Op: op, Code: ErrorCode(st), Message: C.GoString(C.devrig_last_error())}
}

// Version returns the version of the linked libdevrig, e.g. "0.1.0".
func Version() string { return C.GoString(C.devrig_version()) }
