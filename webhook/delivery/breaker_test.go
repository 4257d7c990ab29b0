package delivery

import (
	"context"
	"testing"
	"time"
)

// TestBreakerStates walks one breaker through closed -> open -> half-open -> open ->
// half-open -> closed with explicit times.
func TestBreakerStates(t *testing.T) {
	var closedURL string
	bs := NewBreakers(Options{BreakerFailures: 3, BreakerCooldown: 10 * time.Second}, func(u string) { closedURL = u })
	b := bs.For("http://127.0.0.1:1/im")
	if bs.For("http://127.0.0.1:1/im") != b {
		t.Fatal("For returned two breakers for one URL")
	}
	t0 := time.Unix(1000, 0)
	allow := func(at time.Time) (bool, bool, time.Duration) { return b.Allow(at) }

	// Failures below the threshold, and a success in between, keep it closed.
	for range 2 {
		if ok, probe, _ := allow(t0); !ok || probe {
			t.Fatal("closed breaker refused an attempt")
		}
		b.Done(false, true, t0)
	}
	b.Done(false, false, t0) // a success resets the count
	for range 2 {
		b.Done(false, true, t0)
	}
	if b.State() != Closed {
		t.Fatalf("state %v after 2 failures since a success, want closed", b.State())
	}
	b.Done(false, true, t0)
	if b.State() != Open {
		t.Fatalf("state %v after 3 failures in a row, want open", b.State())
	}
	if ok, _, wait := allow(t0.Add(4 * time.Second)); ok || wait != 6*time.Second {
		t.Fatalf("open breaker: ok=%v wait=%s, want refused for 6s more", ok, wait)
	}
	// After the cool-down: one probe, the others wait.
	ok, probe, _ := allow(t0.Add(10 * time.Second))
	if !ok || !probe || b.State() != HalfOpen {
		t.Fatalf("after the cool-down: ok=%v probe=%v state=%v, want a probe in half-open", ok, probe, b.State())
	}
	if ok, _, _ := allow(t0.Add(10 * time.Second)); ok {
		t.Fatal("a second attempt went through while the probe was out")
	}
	// A late failure of an attempt made before the breaker opened does not count as the probe.
	b.Done(true, true, t0.Add(11*time.Second))
	if b.State() != Open {
		t.Fatalf("failed probe: state %v, want open", b.State())
	}
	if ok, _, _ := allow(t0.Add(15 * time.Second)); ok {
		t.Fatal("reopened breaker let an attempt through before its new cool-down ended")
	}
	// An aborted probe (shutdown) lets another probe go.
	if ok, probe, _ := allow(t0.Add(21 * time.Second)); !ok || !probe {
		t.Fatal("no probe after the second cool-down")
	}
	b.Abort(true)
	if ok, probe, _ := allow(t0.Add(21 * time.Second)); !ok || !probe {
		t.Fatal("no new probe after an aborted one")
	}
	b.Done(true, false, t0.Add(22*time.Second))
	if b.State() != Closed || closedURL != "http://127.0.0.1:1/im" {
		t.Fatalf("successful probe: state %v, onClose %q; want closed and notified", b.State(), closedURL)
	}
}

func TestBreakersDisabled(t *testing.T) {
	bs := NewBreakers(Options{BreakerFailures: -1}, nil)
	b := bs.For("http://127.0.0.1:1/")
	if b != nil {
		t.Fatal("a breaker exists although they are disabled")
	}
	for range 100 {
		b.Done(false, true, time.Now())
	}
	if ok, _, _ := b.Allow(time.Now()); !ok {
		t.Fatal("nil breaker refused an attempt")
	}
}

func TestLimiterConcurrency(t *testing.T) {
	l := NewLimiter(2, 0)
	ctx := context.Background()
	for range 2 {
		if err := l.AcquireSlot(ctx); err != nil {
			t.Fatal(err)
		}
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if err := l.AcquireSlot(short); err == nil {
		t.Fatal("a third slot was granted with maxConcurrency 2")
	}
	got := make(chan error, 1)
	go func() { got <- l.AcquireSlot(ctx) }()
	l.Release()
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	// Raising the limit frees a waiter at once.
	go func() { got <- l.AcquireSlot(ctx) }()
	l.SetLimits(3, 0)
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	if l.InFlight() != 3 {
		t.Fatalf("in flight %d, want 3", l.InFlight())
	}
}

func TestPartition(t *testing.T) {
	if Partition("", 16) != -1 {
		t.Error("a callback without a conversation got a partition")
	}
	seen := map[int]bool{}
	for i := range 1000 {
		key := "c2c:4:user" + string(rune('a'+i%26)) + "_" + string(rune('a'+i/26))
		p := Partition(key, 16)
		if p < 0 || p >= 16 || Partition(key, 16) != p {
			t.Fatalf("Partition(%q) = %d: not a stable partition of 16", key, p)
		}
		seen[p] = true
	}
	if len(seen) != 16 {
		t.Errorf("1,000 keys fell in %d of 16 partitions", len(seen))
	}
}
