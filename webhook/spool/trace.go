package spool

import (
	"context"
	"fmt"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/callback-router/callback-router/api/v1alpha1"
	"github.com/callback-router/callback-router/webhook/callback"
	"github.com/callback-router/callback-router/webhook/tracing"
)

// tracedAttempt is attempt inside a span (Options.Tracer) whose parent is the trace
// context stored with the callback, so every attempt of a copy, hours later or after a
// restart, joins the trace its receive began; the backend gets the attempt span as its
// parent. Without a tracer the stored traceparent is sent as it is.
func (s *Spool) tracedAttempt(ctx context.Context, cb *callback.Callback, t *callback.Target, n int) attemptResult {
	cb.Replay = t.Replay
	if s.opts.Tracer == nil {
		return s.attempt(ctx, cb, t, n)
	}
	_, span := s.opts.Tracer.Start(tracing.Remote(ctx, cb.TraceParent), tracing.SpanDeliver,
		trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(
			tracing.AttrRoute.String(t.Route), tracing.AttrAttempt.Int(n), tracing.AttrID.String(cb.ID),
			tracing.AttrMode.String(string(v1alpha1.ModeAsync)), tracing.AttrReplay.Bool(cb.Replay)))
	if sc := span.SpanContext(); sc.IsValid() {
		cb.TraceParent = tracing.Format(sc)
	}
	res := s.attempt(ctx, cb, t, n)
	if res.status != 0 {
		span.SetAttributes(tracing.AttrStatusCode.Int(res.status))
	}
	if !res.ok {
		span.SetStatus(codes.Error, fmt.Sprintf("%s (retryable: %v)", res.reason, res.retryable))
	}
	span.End()
	return res
}
