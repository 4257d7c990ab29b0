package cli

import (
	"bytes"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/callback-router/callback-router/webhook/callback"
	"github.com/callback-router/callback-router/webhook/samples"
)

// otlpCollector is a loopback OTLP/HTTP traces endpoint: it decodes each protobuf
// ExportTraceServiceRequest and keeps the spans.
type otlpCollector struct {
	*httptest.Server
	mu    sync.Mutex
	spans []*tracepb.Span
}

func newOTLPCollector(t *testing.T) *otlpCollector {
	c := &otlpCollector{}
	c.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/x-protobuf" {
			http.Error(w, "want POST /v1/traces application/x-protobuf", http.StatusBadRequest)
			return
		}
		b, _ := io.ReadAll(r.Body)
		var req coltracepb.ExportTraceServiceRequest
		if err := proto.Unmarshal(b, &req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		c.mu.Lock()
		for _, rs := range req.ResourceSpans {
			for _, ss := range rs.ScopeSpans {
				c.spans = append(c.spans, ss.Spans...)
			}
		}
		c.mu.Unlock()
		out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(out)
	}))
	t.Cleanup(c.Close)
	return c
}

// byTrace returns the spans of a trace ID (hex), by name.
func (c *otlpCollector) byTrace(traceID string) map[string][]*tracepb.Span {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string][]*tracepb.Span{}
	for _, s := range c.spans {
		if hex.EncodeToString(s.TraceId) == traceID {
			out[s.Name] = append(out[s.Name], s)
		}
	}
	return out
}

const tracingRoutes = `
apiVersion: v1
kind: Secret
metadata: {name: tok, namespace: im}
stringData: {token: cli-token}
---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackApp
metadata: {name: chat, namespace: im}
spec:
  provider: TencentIM
  appID: "1400000001"
  receiverRef: {name: default}
  verify: {tokenSecretRef: {name: tok}}
  allowedRoutes: [{namespaces: {from: All}}]
---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackApp
metadata: {name: openim, namespace: im}
spec: {provider: OpenIM, appID: prod, receiverRef: {name: default}, allowedRoutes: [{namespaces: {from: All}}]}
---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackRoute
metadata: {name: moderation, namespace: chat}
spec: {appRef: {name: chat, namespace: im}, commands: [C2C.CallbackBeforeSendMsg], mode: Sync, backend: {url: BACKEND, path: /moderate}}
---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackRoute
metadata: {name: archive, namespace: chat}
spec:
  appRef: {name: chat, namespace: im}
  commands: [C2C.CallbackAfterSendMsg]
  backend: {url: BACKEND, path: /archive}
  retry: {maxAttempts: 3, initialBackoff: 10ms, maxBackoff: 20ms}
---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackRoute
metadata: {name: openim-archive, namespace: chat}
spec: {appRef: {name: openim, namespace: im}, commands: ["*"], backend: {url: BACKEND, path: /openim}}
`

// TestTracing runs the real binary with --otlp-endpoint at a loopback OTLP/HTTP
// collector: a callback with a caller's traceparent reaches the Async backend (after one
// failed attempt) under the same trace, a Sync callback without one starts a trace, OpenIM's
// operationID is forwarded, and after SIGTERM the collector holds the spans receive,
// verify, store and one per attempt, in the caller's trace.
//
//nolint:gocyclo // one end-to-end scenario told in order
func TestTracing(t *testing.T) {
	col := newOTLPCollector(t)
	var mu sync.Mutex
	got := map[string][]http.Header{}
	failedOnce := false
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got[r.URL.Path] = append(got[r.URL.Path], r.Header.Clone())
		fail := r.URL.Path == "/archive" && !failedOnce
		failedOnce = failedOnce || fail
		mu.Unlock()
		if fail {
			http.Error(w, "try again", http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, `{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":""}`)
	}))
	defer be.Close()
	dir := t.TempDir()
	routes := filepath.Join(dir, "routes.yaml")
	if err := os.WriteFile(routes, []byte(strings.ReplaceAll(tracingRoutes, "BACKEND", be.URL)), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd, addr, _ := startReceiver(t, "--routes", routes, "--spool-dir", filepath.Join(dir, "spool"),
		"--otlp-endpoint", col.URL, "--drain-delay", "0s")

	signed := func(command string) string {
		rt := strconv.FormatInt(time.Now().Unix(), 10)
		q := url.Values{"SdkAppid": {"1400000001"}, "CallbackCommand": {command}, "contenttype": {"json"},
			"RequestTime": {rt}, "Sign": {callback.TencentSign("cli-token", rt)}}
		return "http://" + addr + "/tencent?" + q.Encode()
	}
	postWith := func(u string, body []byte, hdr map[string]string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, u, bytes.NewReader(body))
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %d %s", u, resp.StatusCode, b)
		}
	}
	const callerTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
	const callerSpan = "00f067aa0ba902b7"
	c2c, _ := samples.Get("tencent-c2c-after-send")
	postWith(signed("C2C.CallbackAfterSendMsg"), c2c.Body, map[string]string{"traceparent": "00-" + callerTrace + "-" + callerSpan + "-01"})
	postWith(signed("C2C.CallbackBeforeSendMsg"), c2c.Body, nil)
	oim, _ := samples.Get("openim-after-send-single")
	postWith("http://"+addr+"/openim/prod/"+oim.Command, oim.Body, map[string]string{"operationID": "op-1646445464564"})

	waitFor := func(path string, n int) []http.Header {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			mu.Lock()
			hs := append([]http.Header(nil), got[path]...)
			mu.Unlock()
			if len(hs) >= n {
				return hs
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s got %d requests, want %d", path, len(hs), n)
			}
		}
	}
	parts := func(tp string) []string {
		p := strings.Split(tp, "-")
		if len(p) != 4 || p[0] != "00" || len(p[1]) != 32 || len(p[2]) != 16 || len(p[3]) != 2 {
			t.Fatalf("traceparent %q is not W3C", tp)
		}
		return p
	}
	archive := waitFor("/archive", 2)
	var attemptSpans []string
	for _, h := range archive {
		p := parts(h.Get("traceparent"))
		if p[1] != callerTrace || p[2] == callerSpan {
			t.Errorf("Async delivery traceparent %s: want trace %s continued under a new span", h.Get("traceparent"), callerTrace)
		}
		attemptSpans = append(attemptSpans, p[2])
	}
	if attemptSpans[0] == attemptSpans[1] {
		t.Errorf("both attempts carried span %s; each attempt is its own span", attemptSpans[0])
	}
	mod := waitFor("/moderate", 1)
	syncTrace := parts(mod[0].Get("traceparent"))[1]
	if syncTrace == callerTrace || syncTrace == strings.Repeat("0", 32) {
		t.Errorf("Sync callback without a traceparent: trace %s, want a new one", syncTrace)
	}
	op := waitFor("/openim", 1)
	if op[0].Get("operationID") != "op-1646445464564" || op[0].Get("traceparent") == "" {
		t.Errorf("OpenIM delivery headers %v", op[0])
	}

	// SIGTERM flushes the spans.
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var spans map[string][]*tracepb.Span
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		spans = col.byTrace(callerTrace)
		if len(spans["callback.deliver"]) >= 2 && len(spans["callback.receive"]) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("spans of the caller's trace: %v", spans)
		}
	}
	recv := spans["callback.receive"][0]
	if hex.EncodeToString(recv.ParentSpanId) != callerSpan || recv.Kind != tracepb.Span_SPAN_KIND_SERVER {
		t.Errorf("receive span parent %x kind %v, want the caller's span %s, server", recv.ParentSpanId, recv.Kind, callerSpan)
	}
	for _, name := range []string{"callback.verify", "callback.store"} {
		if len(spans[name]) != 1 || !bytes.Equal(spans[name][0].ParentSpanId, recv.SpanId) {
			t.Errorf("%s: %v, want one child of the receive span", name, spans[name])
		}
	}
	var ids []string
	for _, s := range spans["callback.deliver"] {
		ids = append(ids, hex.EncodeToString(s.SpanId))
		if s.Kind != tracepb.Span_SPAN_KIND_CLIENT {
			t.Errorf("deliver span kind %v", s.Kind)
		}
	}
	for _, a := range attemptSpans {
		if !strings.Contains(strings.Join(ids, ","), a) {
			t.Errorf("the backend's parent span %s is not an exported attempt span (%v)", a, ids)
		}
	}
	if s := col.byTrace(syncTrace)["callback.deliver"]; len(s) != 1 {
		t.Errorf("Sync trace %s: %d deliver spans, want 1", syncTrace, len(s))
	}
}
