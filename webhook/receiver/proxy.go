package receiver

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/valyala/fasthttp"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/callback-router/callback-router/api/v1alpha1"
	"github.com/callback-router/callback-router/webhook/callback"
	"github.com/callback-router/callback-router/webhook/routing"
	"github.com/callback-router/callback-router/webhook/tracing"
)

// errBackendStatus marks a backend answer that counts as a failure.
var errBackendStatus = errors.New("backend failed")

// proxy forwards a callback to its Sync route and passes the answer back. A transport
// error, a timeout, a body that is not JSON (or is over the size limit), or an answer
// checkSyncAnswer refuses (the wrong shape for the provider, a Tencent 5xx) is a
// failure: the IM platform then hears the route's failurePolicy answer, which always
// leaves before the budget runs out.
func (h *Handler) proxy(x *exchange, q *request, cb *callback.Callback, rt *routing.Route, tc *traceCtx) {
	deadline := time.Now().Add(rt.Timeout)
	// The budget counts from the handler's start, so time spent storing Async copies is
	// included (on fasthttp the body was read before the handler ran).
	if b := q.arrived.Add(h.syncBudget(q.provider)); b.Before(deadline) {
		deadline = b
	}
	start := time.Now()
	// The span's options and attributes are built only when a tracer records: they
	// escape to the heap even when handed to the no-op span (the Sync hot path).
	span := noopSpan
	if tc.tracer != nil {
		span = tc.child(tracing.SpanDeliver, trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(
			tracing.AttrRoute.String(rt.RouteKey), tracing.AttrAttempt.Int(1), tracing.AttrMode.String(string(v1alpha1.ModeSync))))
	}
	status, ctype, body, release, err := h.roundTrip(deadline, cb, rt, span.SpanContext())
	if tc.tracer != nil {
		if err != nil {
			span.SetStatus(codes.Error, err.Error())
		} else {
			span.SetAttributes(tracing.AttrStatusCode.Int(status))
		}
		span.End()
	}
	defer release()
	elapsed := time.Since(start).Seconds()
	if err == nil {
		h.metrics.backendObserve(string(q.provider), q.appLabel, "ok", elapsed)
		h.metrics.request(string(q.provider), q.appLabel, q.cmdLabel, OutcomeSyncAnswered)
		if ctype == "" {
			ctype = contentTypeJSON
		}
		x.answer(status, ctype, body)
		return
	}
	h.metrics.backendObserve(string(q.provider), q.appLabel, "error", elapsed)
	// The IM platform may show this to the sender (OpenIM passes errMsg on to the
	// client): only the route and the kind of failure, the error itself goes to the log.
	why := fmt.Sprintf("backend of route %s failed (%s)", rt.RouteKey, failureKind(err))
	if rt.FailurePolicy == v1alpha1.FailurePolicyReject {
		h.log.Info("Sync backend failed, rejecting", "route", rt.RouteKey, "provider", q.provider, "appID", q.appID,
			"command", q.command, "callbackID", cb.ID, "error", err.Error())
		h.metrics.request(string(q.provider), q.appLabel, q.cmdLabel, OutcomeSyncFailedReject)
		x.answer(http.StatusOK, contentTypeJSON, RejectEnvelope(q.provider, http.StatusOK, why))
		return
	}
	h.log.Info("Sync backend failed, allowing", "route", rt.RouteKey, "provider", q.provider, "appID", q.appID,
		"command", q.command, "callbackID", cb.ID, "error", err.Error())
	h.metrics.request(string(q.provider), q.appLabel, q.cmdLabel, OutcomeSyncFailedAllow)
	x.answer(http.StatusOK, contentTypeJSON, OKEnvelope(q.provider))
}

// Kinds of Sync backend failure, as told to the IM platform.
const (
	failureTimeout     = "timeout"
	failureUnavailable = "unavailable"
	failureBadAnswer   = "bad answer"
)

// failureKind classifies a roundTrip error without revealing its detail.
func failureKind(err error) string {
	var te interface{ Timeout() bool }
	switch {
	case errors.Is(err, errBackendStatus), errors.Is(err, errBadAnswer), errors.Is(err, fasthttp.ErrBodyTooLarge):
		return failureBadAnswer
	case errors.Is(err, fasthttp.ErrTimeout), errors.Is(err, fasthttp.ErrDialTimeout),
		errors.As(err, &te) && te.Timeout():
		return failureTimeout
	default:
		return failureUnavailable
	}
}

// contentTypeJSON is the Content-Type of the receiver's answers.
const contentTypeJSON = callback.ContentTypeJSON

// roundTrip sends one attempt and returns the answer. body is valid until release, which
// the caller calls once the answer has been written.
func (h *Handler) roundTrip(deadline time.Time, cb *callback.Callback, rt *routing.Route, attempt trace.SpanContext) (status int, ctype string, body []byte, release func(), err error) {
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	release = func() {
		fasthttp.ReleaseRequest(req)
		fasthttp.ReleaseResponse(resp)
	}
	// The request is built as every backend request is (callback.BackendURL and
	// VisitHeaders, shared with the Async delivery), here on fasthttp's types.
	req.SetRequestURI(callback.BackendURL(rt.URL, cb.RawQuery, rt.ForwardSignature))
	req.Header.SetMethod(http.MethodPost)
	cb.VisitHeaders(rt.RouteKey, 1, req.Header.Set)
	if attempt.IsValid() {
		// A recorded attempt span is the backend's parent.
		req.Header.Set(tracing.HeaderTraceParent, tracing.Format(attempt))
	}
	req.SetBodyRaw(cb.Body)
	if err := h.opts.Client.DoDeadline(req, resp, deadline); err != nil {
		return 0, "", nil, release, fmt.Errorf("sending: %w", err)
	}
	status, body = resp.StatusCode(), resp.Body()
	if !json.Valid(body) {
		return 0, "", nil, release, fmt.Errorf("%w: status %d with a body that is not JSON", errBackendStatus, status)
	}
	if err := checkSyncAnswer(cb.Provider, status, body); err != nil {
		return 0, "", nil, release, err
	}
	return status, string(resp.Header.ContentType()), body, release, nil
}
