// Package delivery holds the parts of Async delivery that do not depend on where the
// copies are stored, so that every spool (the embedded bbolt spool, JetStream) protects
// backends the same way:
//
//   - Breaker / Breakers: a circuit breaker per backend URL. A backend that fails
//     Options.BreakerFailures times in a row is not hammered: the breaker opens, nothing
//     is sent to it for Options.BreakerCooldown, then one attempt probes it (half-open);
//     success closes the breaker, failure opens it again. Callbacks held back while it is
//     open make no attempt, so they burn none of their attempts.
//   - Limiter: a route's delivery.maxConcurrency (attempts in flight) and
//     delivery.maxPerSecond (attempts started per second, a token bucket).
//
// Per-key ordering is the spool's: the embedded spool keeps one lane per key in its
// in-memory index (webhook/spool), JetStream partitions its subjects by key.
package delivery
