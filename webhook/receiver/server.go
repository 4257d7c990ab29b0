package receiver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"
)

// Server timeouts and limits. Each has a receiver flag of the same meaning.
const (
	// DefaultReadHeaderTimeout bounds reading the request line and headers (slowloris).
	DefaultReadHeaderTimeout = 5 * time.Second
	// DefaultReadTimeout bounds reading a whole request, body included.
	DefaultReadTimeout = 10 * time.Second
	// DefaultWriteTimeout bounds, on the net/http listeners, a request from the end of its
	// headers to the end of the answer, exceeding the longest Sync wait (OpenIM routes, up
	// to 15s). On the fasthttp callback listener it bounds writing the answer only,
	// counted once the handler has returned.
	DefaultWriteTimeout = 20 * time.Second
	// DefaultIdleTimeout closes keep-alive connections idle this long.
	DefaultIdleTimeout = 120 * time.Second
	// DefaultMaxHeaderBytes caps the request line and headers. The fasthttp server
	// allocates it as each connection's read buffer, so it is kept small: a Tencent IM
	// request line with Sign is well under 1 KiB.
	DefaultMaxHeaderBytes = 16 << 10
	// DefaultDrainDelay is how long readyz answers 503 before the listener closes, so that
	// load balancers stop sending first.
	DefaultDrainDelay = 5 * time.Second
	// DefaultShutdownTimeout bounds waiting for callbacks in flight at shutdown.
	DefaultShutdownTimeout = 25 * time.Second
	// DefaultMaxConnections bounds the connections the callback listener serves at once
	// (--max-connections); more are answered 503 and closed. Each costs up to about 30 KiB
	// (read buffer of --max-header-bytes, a body prefetch of 8 KiB, the request state).
	DefaultMaxConnections = 2048

	// OversizeDrainBytes bounds how much of a refused oversized body is read and discarded
	// before the 413 is sent and the connection closed. Closing a socket with unread data
	// makes the kernel send a reset, which can destroy the 413 before the client reads it.
	OversizeDrainBytes = 8 << 20
	// OversizeDrainIdle ends that discarding once the client has sent nothing for this long
	// (it is then waiting for the answer); OversizeDrainMax bounds it in total.
	OversizeDrainIdle = 50 * time.Millisecond
	// OversizeDrainMax bounds the time spent discarding a refused oversized body.
	OversizeDrainMax = time.Second
)

// ServerConfig are the HTTP server settings. Zero values take the defaults above.
type ServerConfig struct {
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	WriteTimeout      time.Duration
	IdleTimeout       time.Duration
	MaxHeaderBytes    int
	ShutdownTimeout   time.Duration
	// MaxConnections bounds the callback listener's connections (fasthttp only).
	MaxConnections int
}

func (c ServerConfig) withDefaults() ServerConfig {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	def(&c.ReadTimeout, DefaultReadTimeout)
	def(&c.WriteTimeout, DefaultWriteTimeout)
	def(&c.IdleTimeout, DefaultIdleTimeout)
	def(&c.ShutdownTimeout, DefaultShutdownTimeout)
	if c.MaxHeaderBytes <= 0 {
		c.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if c.MaxConnections <= 0 {
		c.MaxConnections = DefaultMaxConnections
	}
	return c
}

// NewHTTPServer returns an http.Server for handler with the configured timeouts: the
// metrics and pprof listeners (callbacks are served by NewFastServer).
func NewHTTPServer(handler http.Handler, c ServerConfig) *http.Server {
	c = c.withDefaults()
	return &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: c.ReadHeaderTimeout,
		ReadTimeout:       c.ReadTimeout,
		WriteTimeout:      c.WriteTimeout,
		IdleTimeout:       c.IdleTimeout,
		MaxHeaderBytes:    c.MaxHeaderBytes,
	}
}

// Serve serves on ln until ctx is done, then shuts the server down gracefully: the
// listener closes, callbacks in flight finish (bounded by ShutdownTimeout), idle
// connections close. Flip readiness first (Handler.SetDraining) and wait the drain delay
// before cancelling ctx.
func Serve(ctx context.Context, ln net.Listener, handler http.Handler, c ServerConfig) error {
	c = c.withDefaults()
	srv := NewHTTPServer(handler, c)
	shutdown := func(ctx context.Context) error {
		err := srv.Shutdown(ctx)
		if err != nil {
			_ = srv.Close()
		}
		return err
	}
	return serveGracefully(ctx, ln, c.ShutdownTimeout, srv.Serve, shutdown, http.ErrServerClosed)
}

// serveGracefully runs serve(ln) until ctx is done, then calls shutdown with a context
// bounded by timeout and waits for serve to return. An error from serve before ctx is done
// is returned; after shutdown, closedErr (the server's "closed" error, if it has one) is not
// an error.
func serveGracefully(ctx context.Context, ln net.Listener, timeout time.Duration,
	serve func(net.Listener) error, shutdown func(context.Context) error, closedErr error) error {
	errc := make(chan error, 1)
	go func() { errc <- serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serving on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	err := shutdown(sctx)
	// A serve that had not yet registered ln when shutdown ran would serve on forever:
	// fasthttp's Shutdown closes only the listeners Serve has registered (none yet) and
	// returns at once. Closing ln here too ends such a Serve (fasthttp treats a closed
	// listener as a clean end); for one that did register it, this is a second, harmless
	// Close.
	_ = ln.Close()
	if err != nil {
		return fmt.Errorf("shutting down %s: %w", ln.Addr(), err)
	}
	if err := <-errc; err != nil && (closedErr == nil || !errors.Is(err, closedErr)) {
		return fmt.Errorf("serving on %s: %w", ln.Addr(), err)
	}
	return nil
}
