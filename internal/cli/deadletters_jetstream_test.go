package cli

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/callback-router/callback-router/api/v1alpha1"
	"github.com/callback-router/callback-router/internal/natstest"
	"github.com/callback-router/callback-router/webhook/callback"
	"github.com/callback-router/callback-router/webhook/spool"
	"github.com/callback-router/callback-router/webhook/spool/jsspool"
)

// TestDeadLettersCommandJetStream: `deadletters --spool-url` lists, redrives and purges
// the dead letters of a JetStream spool while a receiver's spool runs on it, as it does
// for a spool directory; a redriven callback is delivered at once with attempt 1.
func TestDeadLettersCommandJetStream(t *testing.T) {
	nc, err := natstest.Start(1, t.TempDir(), "", "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Stop)
	var accept atomic.Bool
	var delivered atomic.Int64
	var lastAttempt atomic.Value
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !accept.Load() {
			http.Error(w, "bad request", http.StatusBadRequest) // dead letter at once
			return
		}
		lastAttempt.Store(r.Header.Get(callback.HeaderAttempt))
		delivered.Add(1)
	}))
	defer backend.Close()

	s, err := jsspool.Open(context.Background(), jsspool.Options{URL: nc.URL(), Replicas: 1, Logger: logr.Discard(), DiscoverInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = s.Run(ctx) }()
	ids := map[string]string{}
	for i, route := range []string{"chat/archive", "chat/analytics"} {
		body := []byte(`{"CallbackCommand":"C2C.CallbackAfterSendMsg","MsgKey":"k` + string(rune('0'+i)) + `"}`)
		cb := &callback.Callback{
			ID: callback.ComputeID(v1alpha1.ProviderTencentIM, "C2C.CallbackAfterSendMsg", body), Provider: v1alpha1.ProviderTencentIM,
			AppID: "1400000001", Command: "C2C.CallbackAfterSendMsg", Body: body, ReceivedAt: time.Now(),
		}
		ids[route] = cb.ID
		if err := s.Enqueue(ctx, cb, []callback.Target{{Route: route, URL: backend.URL, MaxAttempts: 3}}); err != nil {
			t.Fatal(err)
		}
	}
	url := nc.URL()
	var dls []spool.DeadLetter
	deadline := time.Now().Add(15 * time.Second)
	for len(dls) < 2 {
		out, err := runDeadLettersCmd(t, "list", "--spool-url", url, "--output", "json")
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal([]byte(out), &dls); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		if time.Now().After(deadline) {
			t.Fatalf("dead letters: %s", out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, dl := range dls {
		if dl.ID != ids[dl.Route] || dl.Attempts != 1 || !strings.Contains(dl.LastError, "HTTP 400") || !strings.HasPrefix(dl.Key, "js-") {
			t.Errorf("dead letter %+v", dl)
		}
	}
	out, err := runDeadLettersCmd(t, "list", "--spool-url", url)
	if err != nil || !strings.Contains(out, "chat/archive") || !strings.Contains(out, "chat/analytics") {
		t.Errorf("table: %v\n%s", err, out)
	}

	accept.Store(true)
	out, err = runDeadLettersCmd(t, "redrive", "--spool-url", url, "--route", "chat/archive")
	if err != nil || !strings.Contains(out, "Redrove 1 dead letters: running receivers deliver them now.") {
		t.Fatalf("redrive: %v\n%s", err, out)
	}
	for delivered.Load() < 1 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if delivered.Load() != 1 || lastAttempt.Load() != "1" {
		t.Errorf("after redrive: %d delivered, attempt %v; want 1 with attempt 1", delivered.Load(), lastAttempt.Load())
	}
	out, err = runDeadLettersCmd(t, "purge", "--spool-url", url, "--id", ids["chat/analytics"])
	if err != nil || !strings.Contains(out, "Purged 1 dead letters.") {
		t.Fatalf("purge: %v\n%s", err, out)
	}
	out, err = runDeadLettersCmd(t, "list", "--spool-url", url, "--output", "json")
	if err != nil || strings.TrimSpace(out) != "[]" {
		t.Errorf("after redrive and purge: %v %s", err, out)
	}
	// Never creates streams: a mistyped stream name is an error.
	if _, err := runDeadLettersCmd(t, "list", "--spool-url", url, "--spool-stream", "TYPO"); err == nil || !strings.Contains(err.Error(), "stream TYPO does not exist") {
		t.Errorf("mistyped stream: %v", err)
	}
}
