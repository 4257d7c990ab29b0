package receiver

import (
	"context"
	"net"
	"testing"
	"time"
)

// TestServeFastStoppedAtOnce: a server stopped right after it was started (before its
// Serve goroutine may have run) still returns. fasthttp's Shutdown closes only the
// listeners Serve has registered, so Serve starting after it used to serve on forever
// and the shutdown waited for it forever (seen as a 10-minute test hang on a loaded
// machine).
func TestServeFastStoppedAtOnce(t *testing.T) {
	h, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel() // stopped before Serve may even have started
		done := make(chan error, 1)
		go func() { done <- ServeFast(ctx, ln, h, ServerConfig{ShutdownTimeout: time.Second}) }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("round %d: %v", i, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("round %d: ServeFast still serving 10s after it was stopped", i)
		}
	}
}
