package spool

import (
	"context"
	"testing"
	"time"

	"github.com/callback-router/callback-router/webhook/callback"
)

// TestDeliveredRetention: with DeliveredRetention a delivered callback is kept (payload
// included) and can be replayed by time range; the sweep removes it, and its payload,
// once the window has passed. Without retention nothing is kept.
func TestDeliveredRetention(t *testing.T) {
	be := newBackend(t, nil)
	s, _ := openSpool(t, t.TempDir(), Options{DeliveredRetention: 300 * time.Millisecond, RetentionSweepInterval: 50 * time.Millisecond})
	stop := run(t, s)
	defer stop()
	cb := sampleCallback(t, 1)
	cb.TraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	if err := s.Enqueue(context.Background(), cb, []callback.Target{target("ns/r", be.URL, 3)}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "delivered and retained", func() bool {
		ds, err := s.Delivered("ns/r")
		return err == nil && len(ds) == 1 && ds[0].ID == cb.ID && ds[0].BodyBytes == len(cb.Body)
	})
	res, err := s.Replay(context.Background(), ReplayRequest{Route: "ns/r", Source: SourceDelivered,
		From: cb.ReceivedAt.Add(-time.Second), To: cb.ReceivedAt.Add(time.Second)})
	if err != nil || res.Matched != 1 || res.Replayed != 1 {
		t.Fatalf("replay: %+v, %v", res, err)
	}
	eventually(t, 5*time.Second, "replayed", func() bool { return be.count() == 2 })
	if r := be.requests()[1]; r.id != cb.ID || r.attempt != "1" {
		t.Errorf("replayed request %+v", r)
	}
	// Outside the range: nothing.
	if res, err := s.Replay(context.Background(), ReplayRequest{Route: "ns/r", Source: SourceDelivered,
		To: cb.ReceivedAt.Add(-time.Hour)}); err != nil || res.Matched != 0 {
		t.Errorf("replay before the callback: %+v, %v", res, err)
	}
	eventually(t, 5*time.Second, "expired and swept", func() bool {
		ds, _ := s.Delivered("")
		return len(ds) == 0 && s.Bytes() == 0
	})
}

// TestReplayRequestValidate lists the requests a replay refuses.
func TestReplayRequestValidate(t *testing.T) {
	now := time.Now()
	for name, r := range map[string]ReplayRequest{
		"no route":       {Source: SourceDelivered},
		"bad source":     {Route: "a/b", Source: "Pending"},
		"ids and range":  {Route: "a/b", Source: SourceDelivered, IDs: []string{"x"}, From: now},
		"inverted range": {Route: "a/b", Source: SourceDelivered, From: now, To: now.Add(-time.Second)},
	} {
		if err := r.Validate(); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
