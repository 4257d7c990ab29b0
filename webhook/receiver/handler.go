// Package receiver is the callback-router data plane: a fasthttp handler that parses IM
// callbacks, verifies them against each matching route's checks, answers Sync routes by
// proxying to their backend, hands Async copies to a durable sink, and always answers in
// the provider's own envelope. The routing table is swapped atomically (SetTable), never
// locked per request, so the same handler serves standalone and in-cluster modes.
package receiver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/semaphore"

	"github.com/callback-router/callback-router/api/v1alpha1"
	"github.com/callback-router/callback-router/webhook/callback"
	"github.com/callback-router/callback-router/webhook/routing"
	"github.com/callback-router/callback-router/webhook/tracing"
)

// AsyncSink stores the Async copies of a callback durably. A nil error means every copy is
// stored and the callback may be acknowledged; an error is answered with 503.
type AsyncSink interface {
	Enqueue(ctx context.Context, cb *callback.Callback, targets []callback.Target) error
}

// Defaults of Options.
const (
	// DefaultMaxBodyBytes is the largest callback body accepted (1 MiB); larger gets 413.
	DefaultMaxBodyBytes = 1 << 20
	// DefaultSyncBudget is the overall deadline of a Tencent IM Sync answer, counted from
	// the moment the handler starts (after the head and at most 8 KiB of the body were read; the
	// rest of the body is read inside the budget): Tencent
	// waits 2s, and the fallback answer must reach it before then.
	DefaultSyncBudget = 1800 * time.Millisecond
	// DefaultMaxConnsPerHost caps the connections to one backend host (the keep-alive pool
	// grows to the number of Sync callbacks in flight to it); past it a callback fails at
	// once and gets its failurePolicy answer.
	DefaultMaxConnsPerHost = 4096
	// DefaultDialTimeout bounds a TCP connect to a backend; a connect never outlasts the
	// request's own deadline either.
	DefaultDialTimeout = time.Second
	// DefaultEnqueueTimeout bounds storing the Async copies of a callback that has no
	// Tencent IM Sync route (those must be stored within the Sync budget, counted from
	// arrival). Past it the answer is 503, as for any store failure.
	DefaultEnqueueTimeout = 5 * time.Second
	// DefaultBackendIdleConnTimeout closes idle backend connections.
	DefaultBackendIdleConnTimeout = 90 * time.Second
	// DefaultOpenIMTimeout is OpenIM's own default webhooks.yml `timeout` (5 s): how long
	// OpenIM waits for the answer to each callback before it gives up and, for a
	// before-callback, refuses the action whatever failedContinue says.
	DefaultOpenIMTimeout = 5 * time.Second
	// OpenIMTimeoutMargin is kept free at the end of OpenIMTimeout: an OpenIM Sync answer
	// leaves the receiver at most OpenIMTimeout - OpenIMTimeoutMargin after the handler
	// started, so the failurePolicy answer reaches OpenIM before it gives up.
	OpenIMTimeoutMargin = 500 * time.Millisecond
	// MaxOpenIMTimeout is the longest OpenIM waits whatever its timeout says (its HTTP
	// client's own cap).
	MaxOpenIMTimeout = 15 * time.Second
)

// Paths of the receiver's HTTP contract.
const (
	PathTencent      = "/tencent"
	PathOpenIMPrefix = "/openim/"
	PathHealthz      = "/healthz"
	PathReadyz       = "/readyz"
	PathMetrics      = "/metrics"
)

// Options configures a Handler. Zero values take the documented defaults.
type Options struct {
	// Sink receives Async copies. Nil answers 503 to callbacks that reach an Async route.
	Sink AsyncSink
	// Client sends Sync requests. Nil uses NewBackendClient(MaxBodyBytes).
	Client *fasthttp.Client
	// MaxBodyBytes caps the callback body and a Sync backend's answer. Default DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// SyncBudget is the overall deadline for a Tencent IM Sync answer. Default DefaultSyncBudget.
	SyncBudget time.Duration
	// OpenIMTimeout is OpenIM's webhooks.yml `timeout`: an OpenIM Sync answer leaves at
	// most OpenIMTimeout - OpenIMTimeoutMargin after arrival (the OpenIM Sync budget),
	// whatever the route's timeout. Default DefaultOpenIMTimeout.
	OpenIMTimeout time.Duration
	// EnqueueTimeout bounds storing the Async copies of a callback, counted from arrival,
	// unless it also has a Sync route (then that provider's Sync budget bounds it).
	// Default DefaultEnqueueTimeout.
	EnqueueTimeout time.Duration
	// TrustedProxies are the peers whose X-Forwarded-For is believed for sourceCIDRs
	// checks. Empty: X-Forwarded-For is ignored.
	TrustedProxies []netip.Prefix
	// Logger logs rejected callbacks and backend failures; nothing on the success path.
	Logger logr.Logger
	// Registry holds the metrics. Nil creates a private registry.
	Registry *prometheus.Registry
	// ServeMetrics serves GET /metrics on this handler too (off when --metrics-listen is used).
	ServeMetrics bool
	// Now is the clock for RequestTime checks. Nil uses time.Now.
	Now func() time.Time
	// MaxInflightBodyBytes bounds the callback bodies held in memory at once. Default
	// DefaultMaxInflightBodyBytes.
	MaxInflightBodyBytes int64
	// Tracer records the spans of each callback (receive, verify, filter, store, the Sync
	// attempt); nil records none. Either way every callback gets a W3C traceparent.
	Tracer trace.Tracer
}

// Handler is the receiver's fasthttp handler (ServeFastHTTP). Create it with New.
type Handler struct {
	opts        Options
	customClock bool // Options.Now was given; else one time.Now serves both clocks
	// fastMetricsH serves the net/http Prometheus handler on the callback listener.
	fastMetricsH fasthttp.RequestHandler
	log          logr.Logger
	metrics      *Metrics
	registry     *prometheus.Registry
	metricsH     http.Handler
	bodyBudget   *semaphore.Weighted

	table      atomic.Pointer[routing.Table]
	generation atomic.Int64
	draining   atomic.Bool
}

// NewBackendClient returns the client used for Sync backends. It is fasthttp's: the
// Sync proxy is the receiver's hot path, and fasthttp's client costs a fraction of
// net/http's per request (no per-connection goroutines, pooled request and response
// objects); see docs/benchmarks.md. Connections are kept alive and reused per host; an
// answer over maxBody bytes is an error.
func NewBackendClient(maxBody int64) *fasthttp.Client {
	return &fasthttp.Client{
		Name:                          "callback-router",
		MaxConnsPerHost:               DefaultMaxConnsPerHost,
		MaxIdleConnDuration:           DefaultBackendIdleConnTimeout,
		MaxResponseBodySize:           int(maxBody),
		ReadBufferSize:                16 << 10,
		WriteBufferSize:               16 << 10,
		DisablePathNormalizing:        true,
		NoDefaultUserAgentHeader:      false,
		DisableHeaderNamesNormalizing: false,
		// DialTimeout, not Dial: fasthttp passes the time left before the request's
		// deadline (0 when there is none), so a connect that hangs never outlasts the
		// Sync budget. Each connection is a checkedConn: a kept-alive one the backend
		// closed while idle is noticed before anything is written to it.
		DialTimeout: func(addr string, timeout time.Duration) (net.Conn, error) {
			if timeout <= 0 || timeout > DefaultDialTimeout {
				timeout = DefaultDialTimeout
			}
			c, err := fasthttp.DialTimeout(addr, timeout)
			if err != nil {
				return nil, err
			}
			return newCheckedConn(c), nil
		},
		// A Sync request is sent again only when nothing of it was written: on a
		// kept-alive connection the backend had closed (errStaleConn). Any other error
		// may come after the backend got the request, and a before-callback must never
		// reach it twice (fasthttp would retry on every write or read error); it gets
		// the route's failurePolicy answer. Up to one attempt per pooled connection, so
		// a pool the backend closed entirely is walked through to a fresh connection.
		RetryIfErr: func(_ *fasthttp.Request, _ int, err error) (bool, bool) {
			return false, errors.Is(err, errStaleConn)
		},
		MaxIdemponentCallAttempts: DefaultMaxConnsPerHost + 1,
	}
}

// New returns a Handler. It is not ready (readyz 503, callbacks 503) until SetTable.
func New(opts Options) (*Handler, error) {
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if opts.Client == nil {
		opts.Client = NewBackendClient(opts.MaxBodyBytes)
	}
	if opts.SyncBudget <= 0 {
		opts.SyncBudget = DefaultSyncBudget
	}
	if opts.OpenIMTimeout <= 0 {
		opts.OpenIMTimeout = DefaultOpenIMTimeout
	}
	if err := ValidateOpenIMTimeout(opts.OpenIMTimeout); err != nil {
		return nil, err
	}
	if opts.EnqueueTimeout <= 0 {
		opts.EnqueueTimeout = DefaultEnqueueTimeout
	}
	if opts.MaxInflightBodyBytes <= 0 {
		opts.MaxInflightBodyBytes = DefaultMaxInflightBodyBytes
	}
	if opts.MaxInflightBodyBytes < opts.MaxBodyBytes {
		return nil, fmt.Errorf("the in-flight body budget (%d bytes) must hold at least one body of the largest size (%d bytes)",
			opts.MaxInflightBodyBytes, opts.MaxBodyBytes)
	}
	customClock := opts.Now != nil
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger.GetSink() == nil {
		opts.Logger = logr.Discard()
	}
	if opts.Registry == nil {
		opts.Registry = prometheus.NewRegistry()
	}
	m, err := NewMetrics(opts.Registry)
	if err != nil {
		return nil, fmt.Errorf("registering metrics: %w", err)
	}
	hd := &Handler{
		customClock: customClock,
		opts:        opts,
		log:         opts.Logger,
		metrics:     m,
		registry:    opts.Registry,
		metricsH:    promhttp.HandlerFor(opts.Registry, promhttp.HandlerOpts{}),
		bodyBudget:  semaphore.NewWeighted(opts.MaxInflightBodyBytes),
	}
	if err := m.registerReady(opts.Registry, hd.Ready); err != nil {
		return nil, fmt.Errorf("registering metrics: %w", err)
	}
	hd.fastMetricsH = fasthttpadaptor.NewFastHTTPHandler(hd.metricsH)
	return hd, nil
}

// SetTable swaps in a new routing table atomically; requests in flight keep the table
// they started with. The first call makes the handler ready.
func (h *Handler) SetTable(t *routing.Table) {
	h.table.Store(t)
	h.metrics.generation.Set(float64(h.generation.Add(1)))
	h.metrics.routes.Set(float64(t.Len()))
}

// Table returns the live routing table, or nil before the first SetTable.
func (h *Handler) Table() *routing.Table { return h.table.Load() }

// SetDraining makes readyz answer 503 so load balancers stop sending, while callbacks in
// flight and arriving are still served until the server shuts down.
func (h *Handler) SetDraining(d bool) { h.draining.Store(d) }

// Registry is the registry the metrics are in, to serve them elsewhere.
func (h *Handler) Registry() *prometheus.Registry { return h.registry }

// MetricsHandler serves the metrics in the Prometheus text format.
func (h *Handler) MetricsHandler() http.Handler { return h.metricsH }

// Ready reports whether a table is loaded and the handler is not draining.
func (h *Handler) Ready() bool { return h.table.Load() != nil && !h.draining.Load() }

// request is the parsed head of a callback.
type request struct {
	provider           v1alpha1.Provider
	appID, command     string
	sign, requestTime  string
	received           time.Time // Options.Now at arrival: RequestTime checks and ReceivedAt
	arrived            time.Time // time.Now at arrival (monotonic): the Sync budget
	appLabel, cmdLabel string
	app                *routing.App
	verifier           verifier
	bodyRead           bool // the whole body was read from the connection
}

// parseURL reads the app and command (and Tencent IM's Sign and RequestTime) from the
// request's URL into q. A URL or command with a control byte is refused: its command
// could never be sent on in the X-Callback-Command header.
func (q *request) parseURL(x *exchange) error {
	if i := controlByte(x.ctx.Request.Header.RequestURI()); i >= 0 {
		return fmt.Errorf("control byte 0x%02x in the URL", x.ctx.Request.Header.RequestURI()[i])
	}
	if q.provider == v1alpha1.ProviderTencentIM {
		tq, err := parseTencentQuery(x.rawQuery())
		if err != nil {
			return err
		}
		q.appID, q.command, q.sign, q.requestTime = tq.app, tq.command, tq.sign, tq.requestTime
		if q.appID == "" || q.command == "" {
			return errors.New("query needs SdkAppid and CallbackCommand")
		}
	} else {
		var ok bool
		if q.appID, q.command, ok = parseOpenIMPath(x.path()); !ok {
			return errors.New("path must be /openim/<appID>/<command>")
		}
	}
	if controlByte(q.appID) >= 0 || controlByte(q.command) >= 0 {
		return errors.New("app or command contains a control character (CR, LF, NUL, ...)")
	}
	return nil
}

func (h *Handler) serveCallback(x *exchange, provider v1alpha1.Provider) {
	arrived := time.Now()
	received := arrived
	if h.customClock {
		received = h.opts.Now()
	}
	q := &request{provider: provider, arrived: arrived, received: received, appLabel: labelOther, cmdLabel: labelOther}
	tc := h.startTrace(x, provider)
	defer tc.end(x, q)
	if x.method() != http.MethodPost {
		h.reject(x, q, http.StatusMethodNotAllowed, OutcomeBadRequest, "method_not_allowed", "callbacks must be POST")
		return
	}
	if err := q.parseURL(x); err != nil {
		h.reject(x, q, http.StatusBadRequest, OutcomeBadRequest, "bad_url", err.Error())
		return
	}
	table := h.table.Load()
	if table == nil {
		h.reject(x, q, http.StatusServiceUnavailable, OutcomeUnavailable, "not_ready", "no routing table loaded yet")
		return
	}
	q.app = table.App(provider, q.appID)
	if q.app == nil {
		h.reject(x, q, http.StatusNotFound, OutcomeNotFound, "no_route", fmt.Sprintf("no route for %s app %s", provider, q.appID))
		return
	}
	q.appLabel = q.appID
	// The command label is the pattern of the routing table the command matched (the
	// command itself when a route names it exactly, else the longest matching prefix
	// such as "Group.*"), never the caller's own string: a route without checks passes
	// every caller, who could otherwise create any number of series.
	if m := q.app.Lookup(q.command); m != nil {
		q.cmdLabel = m.Pattern
	}

	// Verified before the body is read: every check (Sign and RequestTime in the query,
	// Basic auth and the source address in the head) needs only the request's head, so a
	// caller that fails them never gets a byte of its body buffered.
	v := &q.verifier
	vspan := tc.child(tracing.SpanVerify)
	v.init(x, q.received, q.app, h.opts.TrustedProxies, q.sign, q.requestTime)
	sel := v.selectRoutes(q.app, q.command)
	if !sel.passed {
		vspan.SetStatus(codes.Error, sel.reason)
	}
	vspan.End()
	if !sel.passed {
		h.metrics.verifyFails.WithLabelValues(string(provider), sel.reason).Inc()
		status, outcome := http.StatusUnauthorized, OutcomeUnauthorized
		if sel.allSource {
			status, outcome = http.StatusForbidden, OutcomeForbidden
		}
		h.reject(x, q, status, outcome, sel.reason, "callback failed verification: "+sel.reason)
		return
	}

	body, release, err := h.readBody(x, q)
	defer release()
	if err != nil {
		h.rejectBody(x, q, err)
		return
	}
	if !json.Valid(body) {
		h.reject(x, q, http.StatusBadRequest, OutcomeBadRequest, "bad_json", "body is not JSON")
		return
	}
	syncRoute, asyncRoutes := sel.sync, sel.async
	if sel.filtered {
		fspan := tc.child(tracing.SpanFilter)
		syncRoute, asyncRoutes = h.applyFilters(q, x.rawQuery(), body, syncRoute, asyncRoutes)
		fspan.End()
	}

	cb := &callback.Callback{
		Provider:    provider,
		AppID:       q.appID,
		Command:     q.command,
		RawQuery:    x.rawQuery(),
		Body:        body,
		ReceivedAt:  q.received,
		OperationID: operationID(x, provider),
		TraceParent: tracing.Format(tc.sc),
	}
	if syncRoute != nil || len(asyncRoutes) > 0 {
		cb.ID = callback.ComputeID(provider, q.command, body)
		tc.span.SetAttributes(tracing.AttrID.String(cb.ID))
	}
	if len(asyncRoutes) > 0 {
		// Not cancelled by the server: fasthttp closes every RequestCtx's Done as soon as
		// shutdown starts, and a callback in flight then must still be stored and answered.
		// Bounded instead by its own deadline: a Sync answer must still leave within
		// its provider's budget, so its copies are stored within it too.
		deadline := q.arrived.Add(h.opts.EnqueueTimeout)
		if syncRoute != nil {
			deadline = q.arrived.Add(h.syncBudget(provider))
		}
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		sspan := tc.child(tracing.SpanStore)
		sspan.SetAttributes(attribute.Int("callback.copies", len(asyncRoutes)))
		err := h.enqueue(ctx, cb, asyncRoutes)
		if err != nil {
			sspan.SetStatus(codes.Error, err.Error())
		}
		sspan.End()
		cancel()
		if err != nil {
			h.log.Error(err, "Failed to store Async copies", "provider", provider, "appID", q.appID, "command", q.command, "callbackID", cb.ID)
			// Only the kind of failure goes to the IM platform (OpenIM shows errMsg to
			// the sender); the error, with paths and system messages, is in the log.
			kind := "storage unavailable"
			if errors.Is(err, context.DeadlineExceeded) {
				kind = "timeout"
			}
			h.reject(x, q, http.StatusServiceUnavailable, OutcomeUnavailable, "store_failed", "callback could not be stored ("+kind+")")
			return
		}
	}
	if syncRoute == nil {
		h.metrics.request(string(provider), q.appLabel, q.cmdLabel, OutcomeAcknowledged)
		x.answer(http.StatusOK, contentTypeJSON, OKEnvelope(provider))
		return
	}
	h.proxy(x, q, cb, syncRoute, &tc)
}

// traceCtx is a callback's trace: its receive span (a no-op one when no tracer records)
// and the span context its deliveries carry.
type traceCtx struct {
	ctx    context.Context
	tracer trace.Tracer
	span   trace.Span
	sc     trace.SpanContext
}

// noopSpan is what child returns when no tracer records.
var noopSpan = trace.SpanFromContext(context.Background())

// startTrace continues the caller's traceparent, or starts a trace.
func (h *Handler) startTrace(x *exchange, provider v1alpha1.Provider) traceCtx {
	parent, _ := tracing.Parse(string(x.ctx.Request.Header.Peek(tracing.HeaderTraceParent)),
		string(x.ctx.Request.Header.Peek(tracing.HeaderTraceState)))
	t := h.opts.Tracer
	if t == nil {
		return traceCtx{span: noopSpan, sc: tracing.Child(parent)}
	}
	ctx := context.Background()
	if parent.IsValid() {
		ctx = trace.ContextWithRemoteSpanContext(ctx, parent)
	}
	ctx, span := t.Start(ctx, tracing.SpanReceive, trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(tracing.AttrProvider.String(string(provider))))
	sc := span.SpanContext()
	if !sc.IsValid() {
		sc = tracing.Child(parent)
	}
	return traceCtx{ctx: ctx, tracer: t, span: span, sc: sc}
}

// child starts a span under the receive span.
func (tc *traceCtx) child(name string, opts ...trace.SpanStartOption) trace.Span {
	if tc.tracer == nil {
		return noopSpan
	}
	_, s := tc.tracer.Start(tc.ctx, name, opts...)
	return s
}

// end ends the receive span with the answer's status.
func (tc *traceCtx) end(x *exchange, q *request) {
	if tc.tracer == nil {
		return
	}
	status := x.ctx.Response.StatusCode()
	tc.span.SetAttributes(tracing.AttrApp.String(q.appID), tracing.AttrCommand.String(q.command),
		tracing.AttrStatusCode.Int(status))
	if status >= 400 {
		tc.span.SetStatus(codes.Error, http.StatusText(status))
	}
	tc.span.End()
}

// applyFilters keeps the routes whose CEL filter the callback passes. The body is parsed
// once, by the first filter that refers to it; a filter that fails at run time does not
// match, and is counted and logged.
func (h *Handler) applyFilters(q *request, rawQuery string, body []byte, syncRoute *routing.Route, async []*routing.Route) (*routing.Route, []*routing.Route) {
	in := &routing.FilterInput{App: q.appID, Command: q.command, RawQuery: rawQuery, Body: body}
	onErr := func(rt *routing.Route, err error) {
		h.metrics.filterErrors.WithLabelValues(rt.RouteKey).Inc()
		h.log.Info("Route filter failed on a callback; it does not reach the route", "route", rt.RouteKey,
			"provider", q.provider, "appID", q.appID, "command", q.command, "error", err.Error())
	}
	before := len(async)
	if syncRoute != nil {
		before++
		if ok, err := syncRoute.Matches(in); !ok {
			if err != nil {
				onErr(syncRoute, err)
			}
			syncRoute = nil
		}
	}
	async = routing.FilterRoutes(async, in, onErr)
	after := len(async)
	if syncRoute != nil {
		after++
	}
	if n := before - after; n > 0 {
		h.metrics.filteredOut.WithLabelValues(string(q.provider), q.appLabel).Add(float64(n))
	}
	return syncRoute, async
}

func (h *Handler) enqueue(ctx context.Context, cb *callback.Callback, routes []*routing.Route) error {
	if h.opts.Sink == nil {
		return errors.New("no Async sink configured")
	}
	targets := make([]callback.Target, len(routes))
	for i, rt := range routes {
		targets[i] = rt.Target
		if rt.Target.Ordered && cb.OrderKey == "" {
			// Computed once, here, and stored with the copies: order survives restarts.
			cb.OrderKey = callback.ConversationKey(cb.Provider, cb.Body)
		}
	}
	if err := h.opts.Sink.Enqueue(ctx, cb, targets); err != nil {
		return fmt.Errorf("enqueueing %d copies: %w", len(targets), err)
	}
	h.metrics.asyncCopiesAdd(string(cb.Provider), cb.AppID, len(targets))
	return nil
}

// reject answers an error in the provider's envelope, counts it and logs one line. A
// body the handler has not read is left unread and the connection closed after the answer.
func (h *Handler) reject(x *exchange, q *request, status int, outcome, reason, why string) {
	h.rejectDetail(x, q, status, outcome, reason, why, why)
}

// rejectDetail is reject with a log detail that may say more than the answer.
func (h *Handler) rejectDetail(x *exchange, q *request, status int, outcome, reason, why, detail string) {
	h.metrics.request(string(q.provider), q.appLabel, q.cmdLabel, outcome)
	h.log.Info("Rejected callback", "status", status, "reason", reason, "provider", q.provider,
		"appID", q.appID, "command", q.command, "remoteAddr", x.remoteAddr(), "detail", detail)
	if !q.bodyRead && !bodyPrefetched(x.ctx, h.opts.MaxBodyBytes) {
		x.ctx.SetConnectionClose()
	}
	x.answer(status, contentTypeJSON, RejectEnvelope(q.provider, status, why))
}
