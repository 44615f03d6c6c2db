// Package config holds the configuration types that the supervisor package
// consumes, as in devrig's config package.
package config

// RestartConfig is the restart section of a service's configuration, as it
// is read from a config file. Durations are in milliseconds.
//
// PolicyFromConfig (package supervisor) copies the values as they are, as
// devrig does: a zero value means zero (MaxRestarts 0 never restarts,
// StartupGraceMs 0 reports "running" at once), not "use the default". Start
// from DefaultRestartConfig when only some fields are meant to change.
//
// Policy is "on-failure", "always" or "never"; "" means "on-failure".
type RestartConfig struct {
	Policy             string `json:"policy,omitempty" toml:"policy" yaml:"policy"`
	MaxRestarts        uint32 `json:"max_restarts" toml:"max_restarts" yaml:"max_restarts"`
	StartupMaxRestarts uint32 `json:"startup_max_restarts" toml:"startup_max_restarts" yaml:"startup_max_restarts"`
	StartupGraceMs     uint64 `json:"startup_grace_ms" toml:"startup_grace_ms" yaml:"startup_grace_ms"`
	InitialDelayMs     uint64 `json:"initial_delay_ms" toml:"initial_delay_ms" yaml:"initial_delay_ms"`
	MaxDelayMs         uint64 `json:"max_delay_ms" toml:"max_delay_ms" yaml:"max_delay_ms"`
}

// DefaultRestartConfig returns the contract defaults: on-failure, 10
// restarts, 3 startup restarts, 2000 ms startup grace, 500 ms initial delay,
// 30000 ms maximum delay.
func DefaultRestartConfig() RestartConfig {
	return RestartConfig{
		Policy:             "on-failure",
		MaxRestarts:        10,
		StartupMaxRestarts: 3,
		StartupGraceMs:     2000,
		InitialDelayMs:     500,
		MaxDelayMs:         30000,
	}
}
