package jsspool

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/callback-router/callback-router/webhook/callback"
	"github.com/callback-router/callback-router/webhook/delivery"
	"github.com/callback-router/callback-router/webhook/spool"
)

// TestOrderedAcrossReceivers: two receivers share a stream; the copies of a route with
// ordering are stored through either of them, alternately, per conversation in order.
// Both deliver; every conversation reaches the backend in order (its head failing once
// with 503 holds back only that conversation, retried first), never two copies of one
// conversation at once, while conversations progress in parallel.
func TestOrderedAcrossReceivers(t *testing.T) {
	const convs, perConv = 6, 12
	nc := startNATS(t, 1, "", "")
	var mu sync.Mutex
	got := map[string][]int{}
	inflight := map[string]bool{}
	failed := map[string]bool{}
	var overlap []string
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b struct {
			Conv string
			N    int
		}
		raw, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(raw, &b); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		if inflight[b.Conv] {
			overlap = append(overlap, fmt.Sprintf("%s #%d", b.Conv, b.N))
		}
		inflight[b.Conv] = true
		fail := b.N == 3 && !failed[b.Conv]
		failed[b.Conv] = failed[b.Conv] || fail
		mu.Unlock()
		time.Sleep(5 * time.Millisecond)
		mu.Lock()
		inflight[b.Conv] = false
		if !fail {
			got[b.Conv] = append(got[b.Conv], b.N)
		}
		mu.Unlock()
		if fail {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	t.Cleanup(be.Close)
	a := openSpool(t, Options{URL: nc.URL(), Replicas: 1, Partitions: 4})
	b := openSpool(t, Options{URL: nc.URL(), Replicas: 1, Partitions: 4})
	run(t, a)
	run(t, b)
	tg := target("chat/ordered", be.URL)
	tg.Ordered = true
	for n := range perConv {
		for c := range convs {
			conv := fmt.Sprintf("c2c:u%d", c)
			body := fmt.Appendf(nil, `{"Conv":%q,"N":%d}`, conv, n)
			cbk := &callback.Callback{ID: fmt.Sprintf("%s-%d", conv, n), Provider: "TencentIM", AppID: "1", Command: "C2C.CallbackAfterSendMsg",
				Body: body, OrderKey: conv}
			via := a
			if (n+c)%2 == 1 {
				via = b
			}
			if err := via.Enqueue(context.Background(), cbk, []callback.Target{tg}); err != nil {
				t.Fatal(err)
			}
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		done := 0
		for _, ns := range got {
			done += len(ns)
		}
		mu.Unlock()
		if done >= convs*perConv {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("delivered %d of %d", done, convs*perConv)
		}
		time.Sleep(20 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	for conv, ns := range got {
		for i, n := range ns {
			if n != i {
				t.Errorf("%s delivered out of order: %v", conv, ns)
				break
			}
		}
	}
	if len(overlap) > 0 {
		t.Errorf("copies of one conversation in flight at once: %v", overlap)
	}
}

// TestCircuitBreakerHoldsWithoutBurningAttempts: a backend that keeps failing opens the
// breaker after BreakerFailures attempts; while it is open nothing is sent and the copy
// is held, not Nak'd, so waiting uses none of its attempts (only the half-open probes,
// one per cool-down, do): with maxAttempts 6 and an outage far longer than 6 retries
// (backoff 10-50ms), nothing is dead-lettered, and the copy is delivered once the
// backend is back.
func TestCircuitBreakerHoldsWithoutBurningAttempts(t *testing.T) {
	nc := startNATS(t, 1, "", "")
	var mu sync.Mutex
	up := false
	var hits []time.Time
	be := newBackend(t, func(w http.ResponseWriter, n int) {
		mu.Lock()
		defer mu.Unlock()
		hits = append(hits, time.Now())
		if !up {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	})
	s := openSpool(t, Options{URL: nc.URL(), Replicas: 1, Delivery: delivery.Options{BreakerFailures: 2, BreakerCooldown: 700 * time.Millisecond}})
	run(t, s)
	tg := target("chat/archive", be.srv.URL)
	tg.MaxAttempts = 6
	if err := s.Enqueue(context.Background(), cb(1), []callback.Target{tg}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2500 * time.Millisecond) // without the breaker: 6 attempts in ~0.3s, a dead letter
	mu.Lock()
	n := len(hits)
	up = true
	mu.Unlock()
	if n < 2 || n > 5 {
		t.Errorf("%d attempts during a 2.5s outage with a 0.7s cool-down after 2 failures; want 2 plus one probe per cool-down", n)
	}
	if dls, err := s.DeadLetters(spool.Filter{}); err != nil || len(dls) != 0 {
		t.Fatalf("dead letters while the breaker held the copy: %+v %v", dls, err)
	}
	be.waitFor(t, "the delivery once the backend is up", 10*time.Second, func(h []hit) bool { return len(h) > n })
}
