package supervisor

/*
#include "shims.h"
*/
import "C"

import (
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/devrig/libdevrig/bindings/go/events"
)

// LogView is one log entry lent to a LogHandler (an addition): libdevrig's
// record of the line, read through methods, so that handing a batch to Go
// costs one copy of the records and nothing per line.
//
// Text and Event read libdevrig's buffer: call them during the LogHandler
// call that received the view; afterwards the buffer is overwritten or
// freed. Copy what you keep: string(v.Text()), bytes.Clone(v.Text()), or
// v.Event(). Stream, Severity, Level, PID and Timestamp read values held in
// the view itself, and stay right in a copy of it kept after the call (the
// slice passed to the handler is reused: copy the views, not the slice).
// A zero LogView has an empty Text.
type LogView struct {
	l C.devrig_log_line // Text and Event read through its pointers
}

// Text returns the entry's bytes as the child wrote them, without the
// newline (a multiline group joined with '\n'). It is lent: valid only
// during the LogHandler call. Unlike TelemetryEvent.LogBody, bytes that are
// not UTF-8 are not replaced. Its capacity is its length, so an append
// copies rather than writing into libdevrig's buffer; do not modify it.
func (v *LogView) Text() []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(v.l.text)), int(v.l.len))
}

// Stream returns events.StreamStdout or events.StreamStderr.
func (v *LogView) Stream() string {
	if v.l.stream == C.DEVRIG_STDERR {
		return events.StreamStderr
	}
	return events.StreamStdout
}

// Severity returns the severity in devrig's spelling, as
// TelemetryEvent.LogSeverity: "error", "warn", "info" (also for a line
// without a level word) or "debug" (also for TRACE).
func (v *LogView) Severity() string {
	if k := uint(v.l.level); k < uint(len(severities)) {
		return severities[k]
	}
	return events.SeverityInfo
}

// Level returns the exact level, as TelemetryEvent.Level: "trace",
// "debug", "info", "warn", "error", or "" when there is no level word.
func (v *LogView) Level() string {
	if k := uint(v.l.level); k < uint(len(levels)) {
		return levels[k]
	}
	return events.LevelUnknown
}

// PID returns the pid of the child that wrote the entry.
func (v *LogView) PID() int { return int(v.l.pid) }

// Timestamp returns when the entry was read (ms precision; the entries of
// one read share one).
func (v *LogView) Timestamp() time.Time { return time.UnixMilli(int64(v.l.timestamp_ms)) }

// Event returns an owned copy of the entry: the events.KindLogRecord event
// the logs broadcaster publishes for it (LogBody with bytes that are not
// UTF-8 replaced by U+FFFD). Call it during the LogHandler call, like Text;
// the event may be kept, or sent on a Broadcaster.
func (v *LogView) Event() events.TelemetryEvent {
	body := string(v.Text())
	if !utf8.ValidString(body) {
		body = lenientUTF8(body)
	}
	var service string
	if v.l.service != nil {
		service = C.GoString(v.l.service)
	}
	return events.TelemetryEvent{
		Kind:        events.KindLogRecord,
		Service:     service,
		LogBody:     body,
		LogSeverity: v.Severity(),
		Level:       v.Level(),
		Stream:      v.Stream(),
		PID:         v.PID(),
		Timestamp:   v.Timestamp(),
	}
}
