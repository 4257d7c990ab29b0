package delivery

import (
	"flag"
	"time"
)

// Defaults of Options.
const (
	// DefaultBreakerFailures is how many attempts in a row must fail (connection error,
	// timeout, 408, 429, 5xx) before a backend's breaker opens.
	DefaultBreakerFailures = 5
	// DefaultBreakerCooldown is how long an open breaker sends nothing before it lets one
	// probe through.
	DefaultBreakerCooldown = 30 * time.Second
)

// Options tune backend protection; the zero value uses the defaults.
type Options struct {
	// BreakerFailures; see DefaultBreakerFailures. Negative: no breaker.
	BreakerFailures int
	// BreakerCooldown; see DefaultBreakerCooldown.
	BreakerCooldown time.Duration
}

// WithDefaults fills in zero fields.
func (o Options) WithDefaults() Options {
	if o.BreakerFailures == 0 {
		o.BreakerFailures = DefaultBreakerFailures
	}
	if o.BreakerCooldown <= 0 {
		o.BreakerCooldown = DefaultBreakerCooldown
	}
	return o
}

// BindFlags binds the options to the receiver's flags.
func (o *Options) BindFlags(fs *flag.FlagSet) {
	fs.IntVar(&o.BreakerFailures, "breaker-failures", DefaultBreakerFailures,
		"consecutive failed delivery attempts to one backend URL that open its circuit breaker; negative: no breaker")
	fs.DurationVar(&o.BreakerCooldown, "breaker-cooldown", DefaultBreakerCooldown,
		"how long an open circuit breaker holds deliveries back before one attempt probes the backend")
}
