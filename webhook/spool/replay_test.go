package spool

import (
	"context"
	"net/http"
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

// TestReplayOnce: a replay identified by an ID runs once per spool, also across a
// reopen (the record is in the replay's own transaction); another ID runs on its own.
func TestReplayOnce(t *testing.T) {
	be := newBackend(t, func(_ *http.Request, n int) int {
		if n == 1 {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})
	dir := t.TempDir()
	s, _ := openSpool(t, dir, Options{})
	stop := run(t, s)
	cb := sampleCallback(t, 1)
	if err := s.Enqueue(context.Background(), cb, []callback.Target{target("ns/r", be.URL, 1)}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "dead-lettered", func() bool {
		dl, err := s.DeadLetters(Filter{Route: "ns/r"})
		return err == nil && len(dl) == 1
	})
	req := ReplayRequest{Route: "ns/r", Source: SourceDeadLetters}
	if _, ok, err := s.ReplayDone("uid-1"); ok || err != nil {
		t.Fatalf("ReplayDone before the replay: %v, %v", ok, err)
	}
	for i := range 2 {
		res, err := s.ReplayOnce(context.Background(), "uid-1", req)
		if err != nil || res.Matched != 1 || res.Replayed != 1 {
			t.Fatalf("ReplayOnce #%d: %+v, %v", i, res, err)
		}
	}
	eventually(t, 5*time.Second, "replayed", func() bool { return be.count() == 2 })
	if r := be.requests()[1]; r.id != cb.ID || r.replay != "true" {
		t.Errorf("replayed request %+v", r)
	}
	stop()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s2, _ := openSpool(t, dir, Options{})
	run(t, s2)
	rec, ok, err := s2.ReplayDone("uid-1")
	if err != nil || !ok || rec.Matched != 1 || rec.At.IsZero() {
		t.Fatalf("ReplayDone after reopening: %+v, %v, %v", rec, ok, err)
	}
	if res, err := s2.ReplayOnce(context.Background(), "uid-1", req); err != nil || res.Matched != 1 {
		t.Fatalf("ReplayOnce after reopening: %+v, %v", res, err)
	}
	if res, err := s2.ReplayOnce(context.Background(), "uid-2", req); err != nil || res.Matched != 0 {
		t.Fatalf("another replay, nothing left to replay: %+v, %v", res, err)
	}
	time.Sleep(200 * time.Millisecond)
	if n := be.count(); n != 2 {
		t.Errorf("backend got %d requests, want 2: a replay ran twice", n)
	}
	if _, err := s2.ReplayOnce(context.Background(), "", req); err == nil {
		t.Error("ReplayOnce without an ID succeeded")
	}
}
