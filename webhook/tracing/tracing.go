// Package tracing gives every callback a W3C trace context and, when an OTLP endpoint is
// configured, exports the spans of its path through the receiver with OpenTelemetry's Go
// SDK: receive -> verify -> store -> each delivery attempt.
//
// Without an endpoint no span is recorded, but every callback still gets a trace context:
// the caller's traceparent continued (a new span ID under its trace ID) or a new trace,
// so backends can always correlate what they receive. The context is stored with each
// Async copy, so every attempt, retry and replay carries the same trace ID.
package tracing

import (
	"context"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"net/url"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// Headers of the W3C Trace Context and OpenIM's trace ID.
const (
	HeaderTraceParent = "traceparent"
	HeaderTraceState  = "tracestate"
	// HeaderOperationID is OpenIM's per-request trace ID header (constant.OperationID),
	// forwarded to backends as received.
	HeaderOperationID = "operationID"
)

// Span names.
const (
	SpanReceive = "callback.receive"
	SpanVerify  = "callback.verify"
	SpanFilter  = "callback.filter"
	SpanStore   = "callback.store"
	SpanDeliver = "callback.deliver"
)

// Attribute keys.
const (
	AttrProvider   = attribute.Key("callback.provider")
	AttrApp        = attribute.Key("callback.app")
	AttrCommand    = attribute.Key("callback.command")
	AttrID         = attribute.Key("callback.id")
	AttrRoute      = attribute.Key("callback.route")
	AttrAttempt    = attribute.Key("callback.attempt")
	AttrMode       = attribute.Key("callback.mode")
	AttrReplay     = attribute.Key("callback.replay")
	AttrStatusCode = attribute.Key("http.response.status_code")
)

// Defaults of the exporter.
const (
	// DefaultServiceName is the service.name resource of the receiver's spans.
	DefaultServiceName = "callback-router-receiver"
	// ExportTimeout bounds one OTLP export request.
	ExportTimeout = 10 * time.Second
	// MaxQueueSize is the batch span processor's queue: spans past it are dropped (and
	// counted by the SDK), never block a callback.
	MaxQueueSize = 8192
)

// Provider exports spans to an OTLP/HTTP endpoint.
type Provider struct {
	tp     *sdktrace.TracerProvider
	tracer trace.Tracer
}

// EndpointURL turns --otlp-endpoint ("http://collector:4318", or a full URL ending in
// /v1/traces) into the OTLP/HTTP traces URL.
func EndpointURL(endpoint string) (string, error) {
	u, err := url.Parse(endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("OTLP endpoint %q must be an http(s) URL such as http://127.0.0.1:4318", endpoint)
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = "/v1/traces"
	}
	return u.String(), nil
}

// NewProvider returns a provider exporting with OTLP/HTTP (protobuf) to endpoint, in
// batches. Shut it down to flush.
func NewProvider(endpoint, serviceName string) (*Provider, error) {
	u, err := EndpointURL(endpoint)
	if err != nil {
		return nil, err
	}
	exp, err := otlptracehttp.New(context.Background(), otlptracehttp.WithEndpointURL(u),
		otlptracehttp.WithTimeout(ExportTimeout))
	if err != nil {
		return nil, fmt.Errorf("creating the OTLP exporter: %w", err)
	}
	if serviceName == "" {
		serviceName = DefaultServiceName
	}
	return NewProviderWith(sdktrace.NewBatchSpanProcessor(exp, sdktrace.WithMaxQueueSize(MaxQueueSize)), serviceName), nil
}

// NewProviderWith returns a provider sending spans to sp (tests use an in-memory one).
func NewProviderWith(sp sdktrace.SpanProcessor, serviceName string) *Provider {
	res := resource.NewSchemaless(attribute.String("service.name", serviceName))
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sp), sdktrace.WithResource(res),
		// Callers decide for their traces (a sampled traceparent is recorded, an unsampled
		// one is not); a callback without one starts a sampled trace.
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.AlwaysSample())))
	return &Provider{tp: tp, tracer: tp.Tracer("github.com/callback-router/callback-router/webhook")}
}

// Tracer is the provider's tracer; a nil Provider has none.
func (p *Provider) Tracer() trace.Tracer {
	if p == nil {
		return nil
	}
	return p.tracer
}

// Shutdown flushes the spans still queued and stops the exporter.
func (p *Provider) Shutdown(ctx context.Context) error {
	if p == nil {
		return nil
	}
	return p.tp.Shutdown(ctx)
}

// ForceFlush exports the spans queued so far.
func (p *Provider) ForceFlush(ctx context.Context) error {
	if p == nil {
		return nil
	}
	return p.tp.ForceFlush(ctx)
}

// Parse reads a traceparent header ("00-<32 hex>-<16 hex>-<2 hex>"); ok is false for a
// missing or malformed one (which is then ignored: a new trace starts).
func Parse(traceparent, tracestate string) (trace.SpanContext, bool) {
	tp := strings.TrimSpace(traceparent)
	if len(tp) < 55 || tp[2] != '-' || tp[35] != '-' || tp[52] != '-' {
		return trace.SpanContext{}, false
	}
	ver, err := hex.DecodeString(tp[:2])
	if err != nil || ver[0] == 0xff || (ver[0] == 0 && len(tp) != 55) {
		return trace.SpanContext{}, false
	}
	var cfg trace.SpanContextConfig
	if _, err := hex.Decode(cfg.TraceID[:], []byte(tp[3:35])); err != nil || isUpper(tp[3:35]) {
		return trace.SpanContext{}, false
	}
	if _, err := hex.Decode(cfg.SpanID[:], []byte(tp[36:52])); err != nil || isUpper(tp[36:52]) {
		return trace.SpanContext{}, false
	}
	var flags [1]byte
	if _, err := hex.Decode(flags[:], []byte(tp[53:55])); err != nil {
		return trace.SpanContext{}, false
	}
	cfg.TraceFlags = trace.TraceFlags(flags[0]) & trace.FlagsSampled
	cfg.Remote = true
	if ts, err := trace.ParseTraceState(tracestate); err == nil {
		cfg.TraceState = ts
	}
	sc := trace.NewSpanContext(cfg)
	if !sc.IsValid() {
		return trace.SpanContext{}, false
	}
	return sc, true
}

func isUpper(s string) bool { return strings.ToLower(s) != s }

// Format writes a span context as a traceparent header value.
func Format(sc trace.SpanContext) string {
	if !sc.IsValid() {
		return ""
	}
	var b [55]byte
	b[0], b[1], b[2] = '0', '0', '-'
	tid, sid := sc.TraceID(), sc.SpanID()
	hex.Encode(b[3:35], tid[:])
	b[35] = '-'
	hex.Encode(b[36:52], sid[:])
	b[52] = '-'
	hex.Encode(b[53:55], []byte{byte(sc.TraceFlags())})
	return string(b[:])
}

// Child returns a new span context under parent (the same trace, a new span ID), or a
// new sampled trace when parent is invalid: what a callback carries when no tracer
// records spans.
func Child(parent trace.SpanContext) trace.SpanContext {
	cfg := trace.SpanContextConfig{TraceFlags: trace.FlagsSampled}
	if parent.IsValid() {
		cfg.TraceID, cfg.TraceFlags, cfg.TraceState = parent.TraceID(), parent.TraceFlags(), parent.TraceState()
	} else {
		for !cfg.TraceID.IsValid() {
			putUint64(cfg.TraceID[:8], rand.Uint64()) //nolint:gosec // trace IDs need uniqueness, not secrecy (the OTel SDK uses math/rand too)
			putUint64(cfg.TraceID[8:], rand.Uint64()) //nolint:gosec // as above
		}
	}
	for !cfg.SpanID.IsValid() {
		putUint64(cfg.SpanID[:], rand.Uint64()) //nolint:gosec // as above
	}
	return trace.NewSpanContext(cfg)
}

func putUint64(b []byte, v uint64) {
	for i := range 8 {
		b[i] = byte(v >> (56 - 8*i))
	}
}

// Remote returns ctx carrying a stored traceparent as its remote parent (for delivery
// attempts of a stored copy); ctx unchanged when the value is empty or malformed.
func Remote(ctx context.Context, traceparent string) context.Context {
	sc, ok := Parse(traceparent, "")
	if !ok {
		return ctx
	}
	return trace.ContextWithRemoteSpanContext(ctx, sc)
}
