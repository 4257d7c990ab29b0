package spool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/go-logr/logr"
	bolt "go.etcd.io/bbolt"

	"github.com/callback-router/callback-router/webhook/callback"
	dctl "github.com/callback-router/callback-router/webhook/delivery"
)

// Delivery outcomes, the values of the outcome label of callback_router_deliveries_total.
const (
	// OutcomeDelivered: the backend answered 2xx.
	OutcomeDelivered = "delivered"
	// OutcomeRetry: the attempt failed in a retryable way and another is scheduled.
	OutcomeRetry = "retry"
	// OutcomeDeadLetter: the attempt failed and the delivery became a dead letter
	// (attempts exhausted, or an answer that retrying cannot fix, such as 400).
	OutcomeDeadLetter = "dead_letter"
)

// httpDoer sends one HTTP request; *http.Client implements it.
type httpDoer interface {
	Do(*http.Request) (*http.Response, error)
}

// newHTTPClient returns the shared delivery client: keep-alive connections, enough idle
// ones per host for every worker of a route, no overall timeout (each attempt has its
// route's), and no redirects (a 3xx is the backend's answer, not a hint to follow).
func newHTTPClient(perHost int) *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			Proxy:               http.ProxyFromEnvironment,
			DialContext:         (&net.Dialer{Timeout: DefaultDialTimeout, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConnsPerHost: perHost,
			IdleConnTimeout:     DefaultIdleConnTimeout,
			ForceAttemptHTTP2:   true,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// attemptResult is what one attempt came to.
type attemptResult struct {
	// ok: the backend answered 2xx.
	ok bool
	// retryable: a connection error, a timeout, 408, 429 or 5xx.
	retryable bool
	// aborted: the attempt was cut short by shutdown; it does not count.
	aborted bool
	// retryAfter is the backend's Retry-After, zero if none.
	retryAfter time.Duration
	// status is the HTTP status, 0 if there was no answer.
	status int
	// reason describes the failure.
	reason string
}

// attempt POSTs cb to t once.
func (s *Spool) attempt(ctx context.Context, cb *callback.Callback, t *callback.Target, n int) attemptResult {
	return attemptWith(ctx, s.client, cb, t, n)
}

// attemptWith POSTs cb to t once through client; both spools deliver with it.
func attemptWith(ctx context.Context, client httpDoer, cb *callback.Callback, t *callback.Target, n int) attemptResult {
	actx, cancel := context.WithTimeout(ctx, t.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(actx, http.MethodPost,
		callback.BackendURL(t.URL, cb.RawQuery, t.ForwardSignature), bytes.NewReader(cb.Body))
	if err != nil {
		// A URL that cannot even form a request never will: dead-letter it.
		return attemptResult{reason: fmt.Sprintf("building request: %v", err)}
	}
	cb.VisitHeaders(t.Route, n, req.Header.Set)
	resp, err := client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return attemptResult{aborted: true, reason: "shutting down"}
		}
		if errors.Is(err, context.DeadlineExceeded) {
			return attemptResult{retryable: true, reason: fmt.Sprintf("timed out after %s", t.Timeout)}
		}
		return attemptResult{retryable: true, reason: err.Error()}
	}
	defer resp.Body.Close()
	res := attemptResult{status: resp.StatusCode}
	switch code := resp.StatusCode; {
	case code >= 200 && code < 300:
		res.ok = true
	case code == http.StatusRequestTimeout, code == http.StatusTooManyRequests, code >= 500:
		res.retryable = true
		res.retryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
	}
	var snippet []byte
	if !res.ok {
		snippet, _ = io.ReadAll(io.LimitReader(resp.Body, MaxErrorBodyBytes))
		res.reason = strings.TrimSpace(fmt.Sprintf("HTTP %d: %s", resp.StatusCode, snippet))
	}
	// Drain what is left so the connection goes back to the pool.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, MaxDrainBytes))
	return res
}

// parseRetryAfter reads a Retry-After header: delay-seconds or an HTTP date.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		if secs > int64(time.Duration(1<<62)/time.Second) {
			return time.Duration(1 << 62)
		}
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// backoff is the wait after failed attempt n (1-based): initial * 2^(n-1), capped at
// max, with "equal jitter" (a uniformly random point in the upper half) so that the
// retries of a burst that failed together spread out instead of hammering the backend
// in step. A Retry-After longer than that wins, capped at maxRetryAfter.
func backoff(t *callback.Target, n int, retryAfter, maxRetryAfter time.Duration) time.Duration {
	d := t.MaxBackoff
	if n-1 < 62 {
		if exp := t.InitialBackoff << (n - 1); exp > 0 && exp < t.MaxBackoff {
			d = exp
		}
	}
	if half := d / 2; half > 0 {
		d = half + rand.N(half+1) //nolint:gosec // jitter spreads retries; it needs no secrecy
	}
	if retryAfter > d {
		d = min(retryAfter, maxRetryAfter)
	}
	return d
}

// loadCallback reads the payload of seq.
func (s *Spool) loadCallback(seq uint64) (*callback.Callback, error) {
	var cb *callback.Callback
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketCallbacks).Get(seqKey(seq))
		if v == nil {
			return fmt.Errorf("%w: payload %d missing", errCorrupt, seq)
		}
		var err error
		cb, err = decodeCallback(v)
		return err
	})
	return cb, err
}

// deliver makes one attempt of it and records the outcome, in br (the backend's breaker;
// probe: this attempt is its half-open probe) and in the spool.
func (s *Spool) deliver(ctx context.Context, q *routeQueue, it *item, br *dctl.Breaker, probe bool) {
	t := it.target
	n := it.attempts + 1
	cb, err := s.loadCallback(it.seq)
	var res attemptResult
	callbackID := ""
	if err != nil {
		res = attemptResult{reason: err.Error()}
		br.Abort(probe) // not the backend's doing
	} else {
		callbackID = cb.ID
		res = s.tracedAttempt(ctx, cb, t, n)
		if res.aborted {
			br.Abort(probe)
		} else {
			// A failure is no useful answer (connection error, timeout, 408, 429, 5xx);
			// any other answer, a 400 included, shows the backend is up.
			br.Done(probe, !res.ok && res.retryable, time.Now())
		}
	}
	// Built only when something is logged: WithValues allocates, and this is the hot path.
	log := func() logr.Logger {
		return s.log.WithValues("route", t.Route, "callbackId", callbackID, "seq", it.seq, "attempt", n)
	}
	if res.aborted {
		q.push(it) // still pending on disk; a later Run resumes it
		return
	}
	key := deliveryKey(it.seq, it.idx)
	// Results are recorded asynchronously (see submitAsync); the in-memory index follows
	// once they are committed, so the next attempt never runs ahead of the stored count.
	switch {
	case res.ok:
		s.metrics.deliveries.WithLabelValues(t.Route, OutcomeDelivered).Inc()
		if it.key == "" {
			q.remove(it)
		}
		s.submitAsync(&op{
			apply: func(w *txWriter) error {
				if err := w.del(bucketPending, key); err != nil {
					return err
				}
				if err := s.retainDelivered(w, key, t, n, it.key); err != nil {
					return err
				}
				return w.dropCallbackIfUnused(it.seq)
			},
			finish: func(err error) {
				if err != nil {
					// Still pending on disk: delivered again after a restart, a duplicate.
					log().Error(err, "Failed to record a delivery")
				}
				if it.key != "" {
					// The next of the key goes only once this one is recorded: after a
					// crash the key resumes here (a duplicate at worst), never past it.
					q.remove(it)
				}
			},
		})
		if s.log.V(1).Enabled() {
			log().V(1).Info("Delivered callback")
		}

	case res.retryable && n < t.MaxAttempts:
		s.metrics.deliveries.WithLabelValues(t.Route, OutcomeRetry).Inc()
		s.metrics.retries.WithLabelValues(t.Route).Inc()
		wait := backoff(t, n, res.retryAfter, s.opts.MaxRetryAfter)
		d := &delivery{Target: *t, Attempts: n, NextAt: time.Now().Add(wait), LastError: res.reason}
		val := encodeDelivery(d)
		s.submitAsync(&op{
			apply: func(w *txWriter) error { return w.put(bucketPending, key, val) },
			finish: func(err error) {
				if err != nil {
					log().Error(err, "Failed to record a failed attempt")
				}
				it.attempts, it.nextAt = n, d.NextAt
				q.push(it)
			},
		})
		if s.log.V(1).Enabled() {
			log().V(1).Info("Delivery failed, will retry", "reason", res.reason, "retryIn", wait.String())
		}

	default:
		s.metrics.deliveries.WithLabelValues(t.Route, OutcomeDeadLetter).Inc()
		now := time.Now()
		val := encodeDelivery(&delivery{Target: *t, Attempts: n, NextAt: now, DeadAt: now, LastError: res.reason})
		s.submitAsync(&op{
			apply: func(w *txWriter) error {
				if err := w.del(bucketPending, key); err != nil {
					return err
				}
				return w.put(bucketDead, key, val)
			},
			finish: func(err error) {
				if err != nil {
					// Not recorded: keep it pending and try again later rather than lose it.
					log().Error(err, "Failed to dead-letter a delivery")
					it.attempts, it.nextAt = n-1, time.Now().Add(t.MaxBackoff)
					q.push(it)
					return
				}
				s.metrics.deadLetters.WithLabelValues(t.Route).Inc()
				q.remove(it)
				// Every dead letter is logged: through a logger that does not sample.
				s.deadLog.Info("Dead-lettered callback", "route", t.Route, "callbackId", callbackID, "seq", it.seq,
					"attempt", n, "reason", res.reason, "retryable", res.retryable)
			},
		})
	}
}
