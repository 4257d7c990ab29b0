package spool

import (
	"context"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/callback-router/callback-router/webhook/callback"
	dctl "github.com/callback-router/callback-router/webhook/delivery"
)

// TestRouteMaxConcurrencyObserved: a route's delivery.maxConcurrency bounds the requests
// in flight at its backend (here 3, below the spool's default of 16), and is reached.
func TestRouteMaxConcurrencyObserved(t *testing.T) {
	const limit, n = 3, 60
	b := newOrderBackend(t, "", func(seen, int) (time.Duration, int) { return 30 * time.Millisecond, http.StatusOK })
	s, _ := openSpool(t, t.TempDir(), Options{})
	run(t, s)
	tgt := target("chat/limited", b.URL+"/im", 5)
	tgt.MaxConcurrency = limit
	for i := range n {
		if err := s.Enqueue(context.Background(), conversationCallback("u"+string(rune('a'+i%26)), i), []callback.Target{tgt}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 20*time.Second, "every delivery", func() bool { return len(b.requests()) == n })
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.maxAll > limit {
		t.Errorf("%d requests in flight at the backend, above maxConcurrency %d", b.maxAll, limit)
	}
	if b.maxAll < limit {
		t.Errorf("at most %d requests in flight: maxConcurrency %d never reached", b.maxAll, limit)
	}
}

// TestRouteMaxPerSecondObserved: a route's delivery.maxPerSecond bounds the requests
// the backend receives per second. The limiter starts at most maxPerSecond+1 attempts in
// any one second (the bucket starts with one token); a request's arrival trails its
// start by a varying few milliseconds (goroutines, the race detector, a busy machine),
// so arrivals are counted in windows of 900ms: each lies inside one second of starts
// when that trail varies by under 50ms.
func TestRouteMaxPerSecondObserved(t *testing.T) {
	const rate, n = 20, 50
	b := newBackend(t, nil)
	s, _ := openSpool(t, t.TempDir(), Options{})
	tgt := target("chat/paced", b.URL+"/im", 5)
	tgt.MaxPerSecond = rate
	for i := range n { // stored before Run: the whole backlog is due at once
		if err := s.Enqueue(context.Background(), sampleCallback(t, i), []callback.Target{tgt}); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	run(t, s)
	eventually(t, 20*time.Second, "every delivery", func() bool { return b.count() == n })
	got := b.requests()
	elapsed := got[len(got)-1].at.Sub(start)
	worst := 0
	for i := range got {
		in := 0
		for j := i; j < len(got) && got[j].at.Sub(got[i].at) < 900*time.Millisecond; j++ {
			in++
		}
		worst = max(worst, in)
	}
	t.Logf("%d deliveries at maxPerSecond %d took %s; busiest 900ms window: %d", n, rate, elapsed.Round(time.Millisecond), worst)
	if worst > rate+1 {
		t.Errorf("%d requests in 900ms, above maxPerSecond %d (+1 burst)", worst, rate)
	}
	if min := time.Duration(n-rate-1) * time.Second / rate; elapsed < min {
		t.Errorf("%d deliveries took %s, less than the %s the rate allows", n, elapsed, min)
	}
}

// TestCircuitBreaker: a backend that keeps failing opens its breaker after
// BreakerFailures attempts in a row; while open it gets no request at all; after the
// cool-down exactly one probe goes (half-open); a failed probe opens it again; once the
// backend recovers the next probe closes it and everything held back is delivered. The
// callbacks held back burn no attempts: with maxAttempts 4 and 5ms retries, without the
// breaker every one would be a dead letter long before the backend recovers.
func TestCircuitBreaker(t *testing.T) {
	const failures, cooldown, n = 3, 400 * time.Millisecond, 6
	var healthy atomic.Bool
	b := newBackend(t, func(*http.Request, int) int {
		if healthy.Load() {
			return http.StatusOK
		}
		return http.StatusServiceUnavailable
	})
	s, reg := openSpool(t, t.TempDir(), Options{Delivery: dctl.Options{BreakerFailures: failures, BreakerCooldown: cooldown}})
	tgt := target("chat/guarded", b.URL+"/im", 4)
	tgt.MaxConcurrency = 1 // one attempt at a time, so the counts below are exact
	for i := range n {
		if err := s.Enqueue(context.Background(), sampleCallback(t, i), []callback.Target{tgt}); err != nil {
			t.Fatal(err)
		}
	}
	backendLabel := map[string]string{"backend": tgt.URL}
	state := func() float64 { return metricValue(t, reg, "callback_router_circuit_breaker_state", backendLabel) }
	transitions := func(to string) float64 {
		return metricValue(t, reg, "callback_router_circuit_breaker_transitions_total", map[string]string{"backend": tgt.URL, "state": to})
	}
	run(t, s)

	// Closed -> open after `failures` failed attempts in a row.
	eventually(t, 5*time.Second, "the breaker to open", func() bool { return state() == float64(dctl.Open) })
	if got := b.count(); got != failures {
		t.Errorf("breaker opened after %d requests, want %d", got, failures)
	}
	// Open: nothing is sent during the cool-down.
	time.Sleep(cooldown * 3 / 4)
	if got := b.count(); got != failures {
		t.Errorf("%d requests while the breaker was open, want none after the first %d", got-failures, failures)
	}
	if held := metricValue(t, reg, "callback_router_spool_held_by_breaker", map[string]string{"route": tgt.Route}); held < 1 {
		t.Errorf("callback_router_spool_held_by_breaker %v while the breaker is open, want the callbacks held", held)
	}
	// Half-open: after the cool-down, one probe; it fails, so the breaker opens again.
	eventually(t, 5*time.Second, "a probe", func() bool { return b.count() == failures+1 })
	eventually(t, 5*time.Second, "the failed probe to reopen the breaker", func() bool { return transitions("open") == 2 })
	if got := transitions("half_open"); got != 1 {
		t.Errorf("half_open entered %v times, want 1", got)
	}
	time.Sleep(cooldown / 2)
	if got := b.count(); got != failures+1 {
		t.Errorf("%d requests after the failed probe, want 1 probe only", got)
	}
	// The backend recovers: the next probe closes the breaker and the rest follow.
	healthy.Store(true)
	eventually(t, 5*time.Second, "every callback delivered", func() bool {
		return metricValue(t, reg, "callback_router_deliveries_total", map[string]string{"route": tgt.Route, "outcome": OutcomeDelivered}) == n
	})
	if state() != float64(dctl.Closed) || transitions("closed") != 1 {
		t.Errorf("breaker state %v, closed %v times; want closed once", state(), transitions("closed"))
	}
	if dl := metricValue(t, reg, "callback_router_dead_letters_total", map[string]string{"route": tgt.Route}); dl != 0 {
		t.Errorf("%v dead letters: callbacks burned their attempts while the breaker was open", dl)
	}
	if got := b.count(); got != failures+2+n-1 {
		t.Errorf("backend got %d requests, want %d failed + 2 probes + %d more deliveries", got, failures, n-1)
	}
	for _, r := range b.requests() {
		if r.attempt > "4" || len(r.attempt) != 1 {
			t.Errorf("attempt %s of %s: above maxAttempts", r.attempt, r.id)
		}
	}
}

// TestCircuitBreakerClientErrorsKeepItClosed: a 400 is an answer (the backend is up):
// it dead-letters the callback but does not count toward opening the breaker.
func TestCircuitBreakerClientErrorsKeepItClosed(t *testing.T) {
	b := newBackend(t, func(*http.Request, int) int { return http.StatusBadRequest })
	s, reg := openSpool(t, t.TempDir(), Options{Delivery: dctl.Options{BreakerFailures: 2, BreakerCooldown: time.Hour}})
	run(t, s)
	tgt := target("chat/picky", b.URL+"/im", 3)
	for i := range 5 {
		if err := s.Enqueue(context.Background(), sampleCallback(t, i), []callback.Target{tgt}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 5*time.Second, "five dead letters", func() bool {
		return metricValue(t, reg, "callback_router_dead_letters_total", map[string]string{"route": tgt.Route}) == 5
	})
	if st := metricValue(t, reg, "callback_router_circuit_breaker_state", map[string]string{"backend": tgt.URL}); st != float64(dctl.Closed) {
		t.Errorf("breaker state %v after 400s, want closed", st)
	}
}
