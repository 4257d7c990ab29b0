package receiver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"

	"github.com/go-logr/logr"
	"github.com/valyala/fasthttp"
)

// ServeFastHTTP serves the receiver's paths: callbacks, probes and (with ServeMetrics)
// the metrics.
func (h *Handler) ServeFastHTTP(ctx *fasthttp.RequestCtx) {
	p := ctx.Path()
	if raw := ctx.Request.Header.RequestURI(); controlByte(raw) >= 0 {
		// fasthttp does not parse a URI with a control byte; its path as sent tells
		// whose callback it was meant to be (parseURL then refuses it with 400).
		p, _, _ = bytes.Cut(raw, []byte("?"))
	}
	if provider, ok := providerOf(p); ok {
		h.serveCallback(&exchange{ctx: ctx}, provider)
		return
	}
	switch string(p) {
	case PathHealthz:
		fastText(ctx, http.StatusOK, "ok\n")
	case PathReadyz:
		switch {
		case h.draining.Load():
			fastText(ctx, http.StatusServiceUnavailable, "draining\n")
		case h.table.Load() == nil:
			fastText(ctx, http.StatusServiceUnavailable, "no routing table loaded yet\n")
		default:
			fastText(ctx, http.StatusOK, "ok\n")
		}
	case PathMetrics:
		if h.opts.ServeMetrics {
			h.fastMetricsH(ctx)
			return
		}
		fallthrough
	default:
		fastText(ctx, http.StatusNotFound, "not found: callbacks go to /tencent or /openim/<appID>/<command>\n")
	}
	if ctx.Request.Header.ContentLength() != 0 {
		// A body nobody reads (StreamRequestBody): do not parse it as the next request.
		ctx.SetConnectionClose()
	}
}

func fastText(ctx *fasthttp.RequestCtx, status int, s string) {
	ctx.SetStatusCode(status)
	ctx.SetContentType("text/plain; charset=utf-8")
	ctx.SetBodyString(s)
}

// fastError answers what fasthttp refuses before the handler runs (a malformed request
// line or header) in the provider's envelope when the path is a callback path. The
// error's text, which may quote the request, goes only to the log.
func (h *Handler) fastError(ctx *fasthttp.RequestCtx, err error) {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() && len(ctx.Request.Header.RawHeaders()) == 0 {
		// A read timeout before a request was parsed: typically a connection that never
		// sent one (HTTP clients dial ahead and may leave the spare connection unused),
		// or a slow client. Close it without an answer nobody asked for.
		_ = ctx.Conn().Close()
		return
	}
	status, outcome, why := http.StatusBadRequest, OutcomeBadRequest, "malformed request"
	if errors.Is(err, fasthttp.ErrBodyTooLarge) {
		status, outcome, why = http.StatusRequestEntityTooLarge, OutcomeTooLarge, fmt.Sprintf("body over %d bytes", h.opts.MaxBodyBytes)
	}
	ctx.Response.Header.Set("Connection", "close")
	provider, ok := providerOf(ctx.Request.URI().Path())
	if !ok {
		// The request could not be parsed far enough to tell its provider (its path may be
		// one of ours): answer in JSON all the same, never plain text.
		ctx.SetStatusCode(status)
		ctx.SetContentType(contentTypeJSON)
		ctx.SetBodyString(`{"error":"` + http.StatusText(status) + `"}`)
		return
	}
	h.metrics.request(string(provider), labelOther, labelOther, outcome)
	h.log.Info("Rejected callback", "status", status, "reason", outcome, "provider", provider,
		"remoteAddr", ctx.RemoteAddr().String(), "detail", err.Error())
	ctx.SetStatusCode(status)
	ctx.SetContentType(contentTypeJSON)
	ctx.SetBody(RejectEnvelope(provider, status, why))
}

// NewFastServer returns the fasthttp server the receiver listens with. fasthttp has no
// separate header timeout: ReadTimeout bounds reading the headers and body of each
// request, IdleTimeout the wait for the next one on a keep-alive connection.
// MaxHeaderBytes is the per-connection read buffer, which must hold the request line and
// headers.
func (h *Handler) NewFastServer(c ServerConfig) *fasthttp.Server {
	c = c.withDefaults()
	return &fasthttp.Server{
		Handler:            h.ServeFastHTTP,
		ErrorHandler:       h.fastError,
		Name:               "callback-router",
		ReadTimeout:        c.ReadTimeout,
		WriteTimeout:       c.WriteTimeout,
		IdleTimeout:        c.IdleTimeout,
		MaxRequestBodySize: int(h.opts.MaxBodyBytes),
		// Bodies are read by the handler, after verification and within the in-flight
		// body budget; fasthttp reads at most bodyPrefetchBytes of one with its head.
		StreamRequestBody: true,
		// Connections beyond this get fasthttp's plain-text 503 and are closed, before
		// any request is read (so no provider envelope is known).
		Concurrency:                   c.MaxConnections,
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
