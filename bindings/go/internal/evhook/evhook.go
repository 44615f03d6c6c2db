// Package evhook lets package supervisor reach an unexported method of
// package events without adding it to the public API: events sets SendBatch
// at init to a func(*events.Broadcaster, []events.TelemetryEvent) (typed
// any here, since this package cannot import events without a cycle).
package evhook

// SendBatch is set by package events' init.
var SendBatch any
