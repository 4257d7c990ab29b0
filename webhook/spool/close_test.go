package spool

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/go-logr/logr/funcr"

	"github.com/callback-router/callback-router/webhook/callback"
)

// TestCloseReportsPending: deliveries still in the spool at shutdown are logged with their
// count, so that losing the directory afterwards (a deleted pod's emptyDir) is never silent.
func TestCloseReportsPending(t *testing.T) {
	var mu sync.Mutex
	var lines []string
	log := funcr.New(func(prefix, args string) {
		mu.Lock()
		defer mu.Unlock()
		lines = append(lines, args)
	}, funcr.Options{})

	dir := t.TempDir()
	s, err := Open(dir, Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	// Not running: nothing is delivered, so every delivery is still pending at Close.
	targets := []callback.Target{target("chat/a", "http://127.0.0.1:1", 3), target("chat/b", "http://127.0.0.1:1", 3)}
	for i := range 3 {
		if err := s.Enqueue(context.Background(), sampleCallback(t, i), targets); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	mu.Lock()
	defer mu.Unlock()
	var found string
	for _, l := range lines {
		if strings.Contains(l, "Closed spool with deliveries pending") {
			found = l
		}
	}
	if found == "" {
		t.Fatalf("no pending report at close; log: %q", lines)
	}
	if !strings.Contains(found, `"pending"=6`) {
		t.Errorf("want 6 pending deliveries (3 callbacks x 2 routes) in %q", found)
	}
}
