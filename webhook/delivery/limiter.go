package delivery

import (
	"context"
	"sync"
	"time"
)

// Limiter bounds one route's deliveries: at most maxConcurrency attempts in flight and,
// when maxPerSecond > 0, at most maxPerSecond attempts started per second (a token
// bucket holding at most one second's worth, so a burst after a quiet spell is bounded
// too). Limits may change while it is in use (a route edited): the new ones apply to the
// next Acquire. It is safe for concurrent use.
type Limiter struct {
	mu       sync.Mutex
	maxConc  int
	rate     float64
	tokens   float64
	last     time.Time
	inflight int
	// changed is closed (and replaced) whenever a slot is released or the limits change.
	changed chan struct{}
}

// NewLimiter returns a limiter; maxConcurrency < 1 is 1, maxPerSecond <= 0 is no rate limit.
func NewLimiter(maxConcurrency, maxPerSecond int) *Limiter {
	l := &Limiter{changed: make(chan struct{})}
	l.SetLimits(maxConcurrency, maxPerSecond)
	return l
}

// SetLimits changes the limits.
func (l *Limiter) SetLimits(maxConcurrency, maxPerSecond int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	maxConcurrency = max(maxConcurrency, 1)
	rate := float64(max(maxPerSecond, 0))
	if maxConcurrency == l.maxConc && rate == l.rate {
		return
	}
	if rate != l.rate {
		l.tokens, l.last = min(rate, 1), time.Time{}
	}
	l.maxConc, l.rate = maxConcurrency, rate
	l.broadcast()
}

// Limits returns the current limits.
func (l *Limiter) Limits() (maxConcurrency, maxPerSecond int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.maxConc, int(l.rate)
}

func (l *Limiter) broadcast() {
	close(l.changed)
	l.changed = make(chan struct{})
}

// AcquireSlot waits for a concurrency slot. Every successful call must be paired with Release.
func (l *Limiter) AcquireSlot(ctx context.Context) error {
	for {
		l.mu.Lock()
		if l.inflight < l.maxConc {
			l.inflight++
			l.mu.Unlock()
			return nil
		}
		ch := l.changed
		l.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Release gives back a slot.
func (l *Limiter) Release() {
	l.mu.Lock()
	l.inflight--
	l.broadcast()
	l.mu.Unlock()
}

// InFlight is the number of slots held.
func (l *Limiter) InFlight() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.inflight
}

// WaitRate waits until an attempt may start under maxPerSecond, and takes its token.
func (l *Limiter) WaitRate(ctx context.Context) error {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		l.mu.Lock()
		if l.rate <= 0 {
			l.mu.Unlock()
			return nil
		}
		now := time.Now()
		if !l.last.IsZero() {
			l.tokens = min(l.rate, l.tokens+now.Sub(l.last).Seconds()*l.rate)
		}
		l.last = now
		if l.tokens >= 1 {
			l.tokens--
			l.mu.Unlock()
			return nil
		}
		wait := time.Duration((1 - l.tokens) / l.rate * float64(time.Second))
		ch := l.changed
		l.mu.Unlock()
		if timer == nil {
			timer = time.NewTimer(wait)
		} else {
			timer.Reset(wait)
		}
		select {
		case <-timer.C:
		case <-ch:
			timer.Stop()
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
