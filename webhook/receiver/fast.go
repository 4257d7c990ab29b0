package receiver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"github.com/valyala/fasthttp"

	"github.com/callback-router/callback-router/api/v1alpha1"
)

// fastExchange carries a fasthttp request.
type fastExchange struct {
	ctx   *fasthttp.RequestCtx
	query string
	qSet  bool
}

func (x *fastExchange) method() string { return string(x.ctx.Method()) }
func (x *fastExchange) path() string   { return string(x.ctx.Path()) }
func (x *fastExchange) rawQuery() string {
	if !x.qSet {
		x.query, x.qSet = string(x.ctx.URI().QueryString()), true
	}
	return x.query
}
func (x *fastExchange) remoteAddr() string { return x.ctx.RemoteAddr().String() }
func (x *fastExchange) bodyStable() bool   { return false }
func (x *fastExchange) header(name string) string {
	return string(x.ctx.Request.Header.Peek(name))
}
func (x *fastExchange) context() context.Context { return x.ctx }

func (x *fastExchange) remoteIP() netip.Addr {
	if a, ok := x.ctx.RemoteAddr().(*net.TCPAddr); ok {
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			return ip.Unmap()
		}
	}
	return netip.Addr{}
}

func (x *fastExchange) basicAuth() (string, string, bool) {
	// Parsed as net/http does, so both servers accept exactly the same credentials.
	r := http.Request{Header: http.Header{"Authorization": {string(x.ctx.Request.Header.Peek("Authorization"))}}}
	return r.BasicAuth()
}

func (x *fastExchange) forwardedFor() []string {
	var out []string
	x.ctx.Request.Header.VisitAll(func(k, v []byte) {
		if bytes.EqualFold(k, []byte("X-Forwarded-For")) {
			out = append(out, string(v))
		}
	})
	return out
}

func (x *fastExchange) body(limit int64) ([]byte, error) {
	// The server already refused bodies over Server.MaxRequestBodySize (see fastError).
	b := x.ctx.PostBody()
	if int64(len(b)) > limit {
		return nil, errTooLarge
	}
	return b, nil
}

func (x *fastExchange) answer(status int, contentType string, body []byte) {
	x.ctx.SetStatusCode(status)
	x.ctx.SetContentType(contentType)
	x.ctx.SetBody(body)
}

// ServeFastHTTP serves the same paths as ServeHTTP on fasthttp, the receiver's own server:
// it parses requests with a fraction of net/http's CPU and allocations.
func (h *Handler) ServeFastHTTP(ctx *fasthttp.RequestCtx) {
	p := ctx.Path()
	switch {
	case string(p) == PathTencent || string(p) == PathTencent+"/":
		h.serveCallback(&fastExchange{ctx: ctx}, v1alpha1.ProviderTencentIM)
	case bytes.HasPrefix(p, []byte(PathOpenIMPrefix)):
		h.serveCallback(&fastExchange{ctx: ctx}, v1alpha1.ProviderOpenIM)
	case string(p) == PathMetrics && h.opts.ServeMetrics:
		h.fastMetrics(ctx)
	default:
		// healthz, readyz, 404: small and rare, answered by the net/http code.
		h.fastStd(ctx)
	}
}

func (h *Handler) fastMetrics(ctx *fasthttp.RequestCtx) { h.fastMetricsH(ctx) }

// fastError answers what fasthttp refuses before the handler runs (body over the limit,
// malformed request) in the provider's envelope when the path is a callback path.
func (h *Handler) fastError(ctx *fasthttp.RequestCtx, err error) {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() && len(ctx.Request.Header.RawHeaders()) == 0 {
		// A read timeout before a request was parsed: typically a connection that never
		// sent one (HTTP clients dial ahead and may leave the spare connection unused),
		// or a slow client. Close it without an answer nobody asked for.
		_ = ctx.Conn().Close()
		return
	}
	status, outcome, why := http.StatusBadRequest, OutcomeBadRequest, "malformed request: "+err.Error()
	if errors.Is(err, fasthttp.ErrBodyTooLarge) {
		status, outcome, why = http.StatusRequestEntityTooLarge, OutcomeTooLarge, fmt.Sprintf("body over %d bytes", h.opts.MaxBodyBytes)
		discardOversizedBody(ctx.Conn())
	}
	var provider v1alpha1.Provider
	switch p := string(ctx.Request.URI().Path()); {
	case p == PathTencent || p == PathTencent+"/":
		provider = v1alpha1.ProviderTencentIM
	case strings.HasPrefix(p, PathOpenIMPrefix):
		provider = v1alpha1.ProviderOpenIM
	default:
		ctx.Error(http.StatusText(status), status)
		return
	}
	h.metrics.request(string(provider), labelOther, labelOther, outcome)
	h.log.Info("Rejected callback", "status", status, "reason", outcome, "provider", provider,
		"remoteAddr", ctx.RemoteAddr().String(), "detail", why)
	ctx.Response.Header.Set("Connection", "close")
	ctx.SetStatusCode(status)
	ctx.SetContentType(contentTypeJSON)
	ctx.SetBody(RejectEnvelope(provider, status, why))
}

// discardOversizedBody reads what the client is still sending of a refused body, within
// OversizeDrainBytes and OversizeDrainMax, stopping once it pauses for OversizeDrainIdle
// (it then waits for the answer). fasthttp closes the connection after the 413; with the
// body read, that close is a clean FIN rather than a reset that could destroy the answer.
func discardOversizedBody(conn net.Conn) {
	buf := make([]byte, 32<<10)
	deadline := time.Now().Add(OversizeDrainMax)
	for n := 0; n < OversizeDrainBytes && time.Now().Before(deadline); {
		next := time.Now().Add(OversizeDrainIdle)
		if next.After(deadline) {
			next = deadline
		}
		_ = conn.SetReadDeadline(next)
		m, err := conn.Read(buf)
		n += m
		if err != nil {
			break
		}
	}
	// fasthttp sets its own deadlines for writing the answer.
	_ = conn.SetReadDeadline(time.Time{})
}

// NewFastServer returns the fasthttp server the receiver listens with. fasthttp has no
// separate header timeout: ReadTimeout bounds reading the headers and body of each
// request, IdleTimeout the wait for the next one on a keep-alive connection.
// MaxHeaderBytes is the per-connection read buffer, which must hold the request line and
// headers.
func (h *Handler) NewFastServer(c ServerConfig) *fasthttp.Server {
	c = c.withDefaults()
	return &fasthttp.Server{
		Handler:                       h.ServeFastHTTP,
		ErrorHandler:                  h.fastError,
		Name:                          "callback-router",
		ReadTimeout:                   c.ReadTimeout,
		WriteTimeout:                  c.WriteTimeout,
		IdleTimeout:                   c.IdleTimeout,
		MaxRequestBodySize:            int(h.opts.MaxBodyBytes),
		ReadBufferSize:                c.MaxHeaderBytes,
		NoDefaultServerHeader:         true,
		NoDefaultContentType:          true,
		DisableHeaderNamesNormalizing: false,
		CloseOnShutdown:               true,
		Logger:                        fastLogger{h.log},
	}
}

// fastLogger sends fasthttp's own messages (connection errors it already answered through
// fastError) to the receiver's log at debug level instead of the standard logger.
type fastLogger struct{ log logr.Logger }

func (l fastLogger) Printf(format string, args ...any) {
	l.log.V(1).Info("HTTP server: " + fmt.Sprintf(format, args...))
}

// ServeFast serves h on ln with fasthttp until ctx is done, then shuts down gracefully:
// the listener closes, requests in flight finish (bounded by ShutdownTimeout), idle
// connections close. Flip readiness first (SetDraining) and wait the drain delay.
func ServeFast(ctx context.Context, ln net.Listener, h *Handler, c ServerConfig) error {
	c = c.withDefaults()
	srv := h.NewFastServer(c)
	return serveGracefully(ctx, ln, c.ShutdownTimeout, srv.Serve, srv.ShutdownWithContext, nil)
}
