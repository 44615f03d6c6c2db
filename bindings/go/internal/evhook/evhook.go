// Package evhook lets package supervisor reach unexported methods of
// package events without adding them to the public API: events sets the
// variables below at init (typed any here, since this package cannot import
// events without a cycle).
package evhook

// SendBatch is a func(*events.Broadcaster, []events.TelemetryEvent): it
// delivers the events in order, as Send would one by one, waiting for room
// in a full subscriber buffer up to the send timeout.
var SendBatch any

// TrySendBatch is a func(*events.Broadcaster, []events.TelemetryEvent)
// Backlog: it delivers what fits without waiting, as SendBatch would
// otherwise, and returns the rest (nil when nothing is left). It never
// waits for room, nor behind a sender that does: it may be called on a
// libdevrig thread.
var TrySendBatch any

// TrySend is TrySendBatch for one event, a func(*events.Broadcaster,
// events.TelemetryEvent) Backlog.
var TrySend any

// Backlog is what a TrySendBatch or TrySend could not deliver without
// waiting: per subscriber whose buffer was full, the events it has still
// to receive, in order (its own copy). Deliver delivers them as SendBatch
// would, waiting for room up to the broadcaster's send timeout (then the
// subscriber is stalled and the rest dropped for it, as by Send); it must
// not be called on a libdevrig thread.
type Backlog interface {
	Deliver()
}
