package receiver

import (
	"context"
	"io"
	"net"
	"testing"
	"time"
)

// TestFastIdleConnectionClosedSilently: a connection that sends nothing is closed after
// the read timeout without an unsolicited answer.
func TestFastIdleConnectionClosedSilently(t *testing.T) {
	h, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeFast(ctx, ln, h, ServerConfig{ReadTimeout: 200 * time.Millisecond}) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	if len(b) != 0 {
		t.Errorf("got an answer to no request: %q (%v)", b, err)
	}
}
