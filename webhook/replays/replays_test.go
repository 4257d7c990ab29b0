package replays

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/callback-router/callback-router/webhook/routing"
	"github.com/callback-router/callback-router/webhook/spool"
)

// countingSpool wraps a real spool, counting calls and failing the first fail calls.
type countingSpool struct {
	*spool.Spool
	mu    sync.Mutex
	calls map[string]int
	fail  int
}

func (c *countingSpool) ReplayOnce(ctx context.Context, id string, req spool.ReplayRequest) (spool.ReplayResult, error) {
	c.mu.Lock()
	c.calls[id]++
	failing := c.fail > 0
	if failing {
		c.fail--
	}
	c.mu.Unlock()
	if failing {
		return spool.ReplayResult{}, errors.New("spool full")
	}
	return c.Spool.ReplayOnce(ctx, id, req)
}

// TestRunner: the replays of the table run on a real spool, their results appear on
// the metrics; a failed one is retried and exposes errors 1 meanwhile; a replay that
// leaves the table leaves the metrics.
func TestRunner(t *testing.T) {
	sp, err := spool.Open(t.TempDir(), spool.Options{Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	cs := &countingSpool{Spool: sp, calls: map[string]int{}, fail: 1}
	reg := prometheus.NewRegistry()
	r, err := New(cs, reg, logr.Discard(), 50*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Run(ctx)

	a := routing.Replay{UID: "uid-a", Namespace: "ns", Name: "a", Route: "ns/r", Source: spool.SourceDeadLetters}
	r.Set([]routing.Replay{a})
	waitFor(t, reg, `callback_router_replay_errors{replay="uid-a"} 1`)
	waitFor(t, reg, `callback_router_replay_matched{replay="uid-a"} 0`)
	waitFor(t, reg, `callback_router_replay_errors{replay="uid-a"} 0`)

	b := routing.Replay{UID: "uid-b", Namespace: "ns", Name: "b", Route: "ns/r", Source: spool.SourceDelivered}
	r.Set([]routing.Replay{b})
	waitFor(t, reg, `callback_router_replay_replayed{replay="uid-b"} 0`)
	if out := scrape(t, reg); strings.Contains(out, "uid-a") {
		t.Errorf("uid-a left the table but not the metrics:\n%s", out)
	}
	cs.mu.Lock()
	calls := cs.calls["uid-a"]
	cs.mu.Unlock()
	if calls < 2 {
		t.Errorf("uid-a was tried %d times, want a retry after the failure", calls)
	}
	if rec, ok, err := sp.ReplayDone("uid-a"); !ok || err != nil || rec.Matched != 0 {
		t.Errorf("uid-a not recorded in the spool: %+v %v %v", rec, ok, err)
	}
}

// scrape returns reg's text exposition, as /metrics serves it.
func scrape(t *testing.T, reg *prometheus.Registry) string {
	t.Helper()
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(reg, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	return rec.Body.String()
}

func waitFor(t *testing.T, reg *prometheus.Registry, line string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if strings.Contains(scrape(t, reg), line+"\n") {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no %q on the metrics within 5s:\n%s", line, scrape(t, reg))
}
