package spool

import (
	"context"
	"net/http"
	"time"

	"github.com/callback-router/callback-router/webhook/callback"
)

// Queue is the durable store and delivery loop the receiver runs on. The embedded spool
// (*Spool, a bbolt file per pod) and the JetStream spool (package
// webhook/spool/jsspool, a NATS JetStream stream) both implement it, so the receiver,
// its command line and `callback-router deadletters` work with either.
type Queue interface {
	// Enqueue stores cb with one pending delivery per target and returns nil only once
	// that is durable; any error is answered 503.
	Enqueue(ctx context.Context, cb *callback.Callback, targets []callback.Target) error
	// Run delivers until ctx is done or the queue is closed.
	Run(ctx context.Context) error
	// Close stops deliveries and releases the store; acknowledged callbacks stay stored.
	Close() error
	// DeadLetters lists the dead letters that match f.
	DeadLetters(f Filter) ([]DeadLetter, error)
	// Redrive moves the matching dead letters back to pending with their attempts reset.
	Redrive(ctx context.Context, f Filter) (int, error)
	// PurgeDeadLetters deletes the matching dead letters for good.
	PurgeDeadLetters(ctx context.Context, f Filter) (int, error)
}

var _ Queue = (*Spool)(nil)

// AttemptResult is what one delivery attempt came to.
type AttemptResult struct {
	// OK: the backend answered 2xx.
	OK bool
	// Retryable: a connection error, a timeout, 408, 429 or 5xx.
	Retryable bool
	// Aborted: the attempt was cut short by shutdown (ctx done); it does not count.
	Aborted bool
	// RetryAfter is the backend's Retry-After, zero if none.
	RetryAfter time.Duration
	// Status is the HTTP status, 0 if there was no answer.
	Status int
	// Reason describes the failure.
	Reason string
}

// Attempt POSTs cb to t once (attempt number n, sent as X-Callback-Attempt) through
// client, exactly as the embedded spool does: same headers, same timeout (t.Timeout),
// same classification of answers. Other spools deliver with it.
func Attempt(ctx context.Context, client *http.Client, cb *callback.Callback, t *callback.Target, n int) AttemptResult {
	r := attemptWith(ctx, client, cb, t, n)
	return AttemptResult{OK: r.ok, Retryable: r.retryable, Aborted: r.aborted, RetryAfter: r.retryAfter, Status: r.status, Reason: r.reason}
}

// Backoff is the wait after failed attempt n (1-based) of t: exponential with equal
// jitter, a longer Retry-After winning (capped at maxRetryAfter).
func Backoff(t *callback.Target, n int, retryAfter, maxRetryAfter time.Duration) time.Duration {
	return backoff(t, n, retryAfter, maxRetryAfter)
}

// NormalizeTarget fills in the route defaults (timeout, attempts, backoff), as stored.
func NormalizeTarget(t callback.Target) callback.Target { return normalizeTarget(t) }

// NewHTTPClient returns the delivery client the embedded spool uses: keep-alive,
// perHost idle connections per backend, no redirects, no overall timeout.
func NewHTTPClient(perHost int) *http.Client { return newHTTPClient(perHost) }
