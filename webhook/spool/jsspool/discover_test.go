package jsspool

import (
	"context"
	"testing"
	"time"

	"github.com/callback-router/callback-router/webhook/callback"
)

// TestRunFindsRoutesStoredBefore: a receiver that starts after copies were stored (by
// itself before Run, or by a receiver that has since died) finds the routes' consumers
// and delivers, without waiting for a discovery tick.
func TestRunFindsRoutesStoredBefore(t *testing.T) {
	for _, n := range []int{1, 3} {
		nc := startNATS(t, n, "", "")
		be := newBackend(t, nil)
		s := openSpool(t, Options{URL: nc.URL(), Replicas: n, DiscoverInterval: time.Hour})
		for i := range 5 {
			if err := s.Enqueue(context.Background(), cb(i), []callback.Target{target("chat/archive", be.srv.URL)}); err != nil {
				t.Fatal(err)
			}
		}
		run(t, s)
		be.waitFor(t, "5 deliveries", 20*time.Second, func(h []hit) bool { return len(h) >= 5 })
	}
}
