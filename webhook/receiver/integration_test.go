package receiver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/callback-router/callback-router/api/v1alpha1"
	"github.com/callback-router/callback-router/webhook/callback"
	"github.com/callback-router/callback-router/webhook/routing"
	"github.com/callback-router/callback-router/webhook/spool"
)

const syncRouteYAML = `
apiVersion: v1
kind: Secret
metadata: {name: tok, namespace: ns}
stringData: {token: xxxxyyyy}
---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackRoute
metadata: {name: allow, namespace: ns}
spec:
  provider: TencentIM
  appID: "1"
  commands: [C2C.CallbackBeforeSendMsg]
  mode: Sync
  backend: {url: BACKEND, path: /hook/v1, timeout: 400ms}
  verify: {tokenSecretRef: {name: tok}}
---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackRoute
metadata: {name: reject, namespace: ns}
spec:
  provider: TencentIM
  appID: "1"
  commands: [Group.CallbackBeforeSendMsg]
  mode: Sync
  failurePolicy: Reject
  backend: {url: BACKEND, path: /hook/v1, timeout: 400ms}
  verify: {tokenSecretRef: {name: tok}}
`

// TestSyncBackends drives real loopback backends that answer well, slowly, wrongly, or
// not at all, and checks what Tencent IM hears for each failure policy.
func TestSyncBackends(t *testing.T) {
	type answer func(w http.ResponseWriter, r *http.Request)
	hijackClose := func(w http.ResponseWriter, r *http.Request) {
		c, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			c.Close()
		}
	}
	cases := []struct {
		name    string
		answer  answer
		down    bool
		failed  bool   // the failurePolicy answer is expected
		passed  string // else this body is passed back
		status  int
		outcome string
		kind    string // of failure, as the Reject answer names it
	}{
		{"answers", func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, `{"ActionStatus":"OK","ErrorCode":2,"ErrorInfo":""}`)
		}, false, false, `{"ActionStatus":"OK","ErrorCode":2,"ErrorInfo":""}`, 200, OutcomeSyncAnswered, ""},
		{"4xx with JSON is an answer", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(409)
			_, _ = io.WriteString(w, `{"ActionStatus":"FAIL","ErrorCode":120001,"ErrorInfo":"no"}`)
		}, false, false, `{"ActionStatus":"FAIL","ErrorCode":120001,"ErrorInfo":"no"}`, 409, OutcomeSyncAnswered, ""},
		{"slow", func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-time.After(2 * time.Second):
			case <-r.Context().Done():
			}
		}, false, true, "", 200, "", "timeout"},
		{"down", nil, true, true, "", 200, "", "unavailable"},
		{"500", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(500); _, _ = io.WriteString(w, `{"a":1}`) }, false, true, "", 200, "", "bad answer"},
		{"not JSON", func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, `<html>oops</html>`) }, false, true, "", 200, "", "bad answer"},
		{"empty body", func(w http.ResponseWriter, r *http.Request) {}, false, true, "", 200, "", "bad answer"},
		{"answer too large", func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, `{"x":"`+strings.Repeat("a", DefaultMaxBodyBytes)+`"}`)
		}, false, true, "", 200, "", "bad answer"},
		{"hangs up", hijackClose, false, true, "", 200, "", "unavailable"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			be := newBackend(t, c.answer)
			url := be.URL
			if c.down {
				be.Close() // nothing listens there any more
			}
			f := newFixture(t, strings.ReplaceAll(syncRouteYAML, "BACKEND", url), func(o *Options) { o.Now = time.Now })
			for _, policy := range []struct{ command, route, outcome string }{
				{"C2C.CallbackBeforeSendMsg", "allow", OutcomeSyncFailedAllow},
				{"Group.CallbackBeforeSendMsg", "reject", OutcomeSyncFailedReject},
			} {
				start := time.Now()
				status, body, _ := post(t, tencentURL(f.url, "1", policy.command, testToken, time.Now()), []byte(`{"k":1}`), nil)
				// Inside Tencent's 2s whatever the backend does (loose: the machine is shared).
				if d := time.Since(start); d > 1900*time.Millisecond {
					t.Errorf("%s: answered after %s", policy.route, d)
				}
				switch {
				case !c.failed:
					if status != c.status || string(body) != c.passed {
						t.Errorf("%s: got %d %s, want %d %s", policy.route, status, body, c.status, c.passed)
					}
				case policy.route == "allow":
					if status != 200 || !bytes.Equal(body, tencentOK) {
						t.Errorf("allow: got %d %s", status, body)
					}
				default:
					m := envelope(t, body)
					// Only the route and the kind of failure: no addresses or error text.
					want := "backend of route ns/reject failed (" + c.kind + ")"
					if status != 200 || m["ActionStatus"] != "FAIL" || m["ErrorInfo"] != want {
						t.Errorf("reject: got %d %s, want ErrorInfo %q", status, body, want)
					}
				}
				outcome := c.outcome
				if outcome == "" {
					outcome = policy.outcome
				}
				if n := counterValue(t, f.h, "callback_router_requests_total", map[string]string{"outcome": outcome, "command": policy.command}); n != 1 {
					t.Errorf("%s: outcome %s counted %v times", policy.route, outcome, n)
				}
			}
		})
	}
}

// TestSyncForwarding: the backend gets the body byte for byte, the original query
// without Sign and RequestTime, the X-Callback-* headers; connections are reused.
func TestSyncForwarding(t *testing.T) {
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write(tencentOK) })
	f := newFixture(t, strings.ReplaceAll(syncRouteYAML, "BACKEND", be.URL), nil)
	body := []byte("{\"MsgKey\":\"1_2_3\",  \"odd spacing\" : [1,2,3]}\n")
	u := tencentURL(f.url, "1", "C2C.CallbackBeforeSendMsg", testToken, now)
	const n = 50
	for range n {
		if status, b, _ := post(t, u, body, nil); status != 200 || !bytes.Equal(b, tencentOK) {
			t.Fatalf("got %d %s", status, b)
		}
	}
	reqs := be.take()
	if len(reqs) != n {
		t.Fatalf("backend got %d requests", len(reqs))
	}
	r := reqs[0]
	if !bytes.Equal(r.body, body) {
		t.Errorf("body changed: %q", r.body)
	}
	orig, _ := url.ParseQuery(u[strings.Index(u, "?")+1:])
	got, _ := url.ParseQuery(r.rawQuery)
	for k := range orig {
		if want := orig.Get(k); k != callback.QuerySign && k != callback.QueryRequestTime && got.Get(k) != want {
			t.Errorf("query parameter %s: %q, want %q", k, got.Get(k), want)
		}
	}
	if r.path != "/hook/v1" || got.Has(callback.QuerySign) || got.Has(callback.QueryRequestTime) {
		t.Errorf("path %q query %q: want /hook/v1 and the query without Sign and RequestTime", r.path, r.rawQuery)
	}
	for k, v := range map[string]string{
		callback.HeaderProvider: "TencentIM", callback.HeaderApp: "1", callback.HeaderCommand: "C2C.CallbackBeforeSendMsg",
		callback.HeaderRoute: "ns/allow", callback.HeaderAttempt: "1", callback.HeaderID: "C2C.CallbackBeforeSendMsg:1_2_3",
		"Content-Type": "application/json",
	} {
		if got := r.header.Get(k); got != v {
			t.Errorf("%s: %q, want %q", k, got, v)
		}
	}
	be.mu.Lock()
	conns := be.conns
	be.mu.Unlock()
	if conns != 1 {
		t.Errorf("%d backend connections for %d sequential callbacks, want 1 (keep-alive)", conns, n)
	}
	if v := counterValue(t, f.h, "callback_router_backend_request_duration_seconds", map[string]string{"result": "ok"}); v != n {
		t.Errorf("latency histogram has %v samples", v)
	}
}

// tableWith builds a table like table and lets mutate change the compiled routes (the
// field an app's verify.forwardSignature compiles into, set directly).
func tableWith(t testing.TB, manifests string, mutate func(*routing.CompiledRoute)) *routing.Table {
	t.Helper()
	snap, err := snapshotFromSpec(manifests)
	if err != nil {
		t.Fatal(err)
	}
	for i := range snap.Routes {
		mutate(&snap.Routes[i])
	}
	tab, err := routing.NewTable(snap)
	if err != nil {
		t.Fatal(err)
	}
	return tab
}

// TestForwardSignature: Tencent IM's Sign and RequestTime reach a backend only when its
// compiled route says ForwardSignature, for Sync and for Async (through the real spool).
func TestForwardSignature(t *testing.T) {
	for _, forward := range []bool{false, true} {
		t.Run(fmt.Sprintf("ForwardSignature=%v", forward), func(t *testing.T) {
			queries := make(chan string, 4)
			be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
				queries <- r.URL.RawQuery
				_, _ = io.WriteString(w, `{}`)
			})
			sp, err := spool.Open(t.TempDir(), spool.Options{Registerer: prometheus.NewRegistry()})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- sp.Run(ctx) }()
			t.Cleanup(func() {
				cancel()
				if err := <-done; err != nil {
					t.Error(err)
				}
				_ = sp.Close()
			})
			f := newFixture(t, "", func(o *Options) { o.Sink = sp })
			f.h.SetTable(tableWith(t, routesYAML(be.URL), func(r *routing.CompiledRoute) { r.ForwardSignature = forward }))
			for _, cmd := range []string{"C2C.CallbackBeforeSendMsg", "C2C.CallbackAfterSendMsg"} {
				u := tencentURL(f.url, "1400000001", cmd, testToken, now)
				if status, b, _ := post(t, u, []byte(`{}`), nil); status != 200 {
					t.Fatalf("%s: %d %s", cmd, status, b)
				}
				select {
				case q := <-queries:
					vals, _ := url.ParseQuery(q)
					if vals.Has(callback.QuerySign) != forward || vals.Has(callback.QueryRequestTime) != forward {
						t.Errorf("%s: backend query %q; Sign and RequestTime forwarded: want %v", cmd, q, forward)
					}
					if vals.Get("SdkAppid") != "1400000001" || vals.Get("CallbackCommand") != cmd {
						t.Errorf("%s: backend query %q lacks the app or command", cmd, q)
					}
				case <-time.After(5 * time.Second):
					t.Fatalf("%s: the backend got nothing", cmd)
				}
			}
		})
	}
}

// TestAsyncThroughSpool acknowledges callbacks into the real durable spool and checks
// that every copy reaches its loopback backend, fanned out to each route.
func TestAsyncThroughSpool(t *testing.T) {
	var mu sync.Mutex
	got := map[string][]string{} // route -> callback IDs
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got[r.Header.Get(callback.HeaderRoute)] = append(got[r.Header.Get(callback.HeaderRoute)], r.Header.Get(callback.HeaderID))
		mu.Unlock()
	})
	sp, err := spool.Open(t.TempDir(), spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sp.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
		if err := sp.Close(); err != nil {
			t.Error(err)
		}
	}()
	yaml := strings.ReplaceAll(`
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackRoute
metadata: {name: archive, namespace: a}
spec: {provider: TencentIM, appID: "1", commands: ["*"], backend: {url: BACKEND, path: /a}}
---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackRoute
metadata: {name: analytics, namespace: b}
spec: {provider: TencentIM, appID: "1", commands: ["C2C.*"], backend: {url: BACKEND, path: /b}}
`, "BACKEND", be.URL)
	f := newFixture(t, yaml, func(o *Options) { o.Sink = sp })
	const n = 20
	for i := range n {
		body := fmt.Appendf(nil, `{"MsgKey":"k%d"}`, i)
		if status, b, _ := post(t, tencentURL(f.url, "1", "C2C.CallbackAfterSendMsg", "", now), body, nil); status != 200 {
			t.Fatalf("got %d %s", status, b)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		a, b := len(got["a/archive"]), len(got["b/analytics"])
		mu.Unlock()
		if a == n && b == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("delivered %d and %d of %d", a, b, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if v := counterValue(t, f.h, "callback_router_async_copies_total", map[string]string{"app": "1"}); v != 2*n {
		t.Errorf("async copies counted %v", v)
	}
}

// TestTableSwapUnderLoad swaps tables while callbacks flow: every answer belongs to one
// table or the other, never a mix, and the race detector sees no shared state.
func TestTableSwapUnderLoad(t *testing.T) {
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `{"ActionStatus":"OK","ErrorCode":0,"route":%q}`, r.Header.Get(callback.HeaderRoute))
	})
	mk := func(name string) string {
		return strings.NewReplacer("BACKEND", be.URL, "NAME", name).Replace(`
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackRoute
metadata: {name: NAME, namespace: ns}
spec: {provider: OpenIM, appID: prod, commands: ["*"], mode: Sync, backend: {url: BACKEND, timeout: 10s}}
`)
	}
	t1, t2 := table(t, mk("one")), table(t, mk("two"))
	f := newFixture(t, mk("one"), func(o *Options) { o.Logger = testr.New(t) })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ctx.Err() == nil && i < 10000; i++ {
			if i%2 == 0 {
				f.h.SetTable(t2)
			} else {
				f.h.SetTable(t1)
			}
			time.Sleep(time.Millisecond)
		}
	}()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil && i < 200; i++ {
				resp, err := client.Post(f.url+"/openim/prod/cmd", "application/json", strings.NewReader(`{}`))
				if err != nil {
					t.Errorf("worker %d: %v", w, err)
					return
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if s := string(b); s != `{"ActionStatus":"OK","ErrorCode":0,"route":"ns/one"}` && s != `{"ActionStatus":"OK","ErrorCode":0,"route":"ns/two"}` {
					t.Errorf("worker %d: %s", w, s)
					return
				}
			}
		}()
	}
	wg.Wait()
	if g := counterValue(t, f.h, "callback_router_table_generation", nil); g < 2 {
		t.Errorf("generation %v", g)
	}
}

// TestServeGracefulShutdown: a callback in flight when shutdown starts is answered, and
// ServeFast returns once it is.
func TestServeGracefulShutdown(t *testing.T) {
	started := make(chan struct{})
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		close(started)
		time.Sleep(300 * time.Millisecond)
		_, _ = io.WriteString(w, `{"ActionStatus":"OK","ErrorCode":0,"late":true}`)
	})
	h, err := New(Options{Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	h.SetTable(table(t, strings.ReplaceAll(syncRouteYAML, "BACKEND", be.URL)))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- ServeFast(ctx, ln, h, ServerConfig{ShutdownTimeout: 5 * time.Second}) }()
	answer := make(chan string, 1)
	go func() {
		_, b, _ := post(t, tencentURL("http://"+ln.Addr().String(), "1", "C2C.CallbackBeforeSendMsg", testToken, now), []byte(`{}`), nil)
		answer <- string(b)
	}()
	<-started
	h.SetDraining(true)
	cancel()
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	if a := <-answer; a != `{"ActionStatus":"OK","ErrorCode":0,"late":true}` {
		t.Errorf("in-flight callback got %q", a)
	}
	if _, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		t.Error("listener still open after Serve returned")
	}
}

func TestMetricsExposition(t *testing.T) {
	f := newFixture(t, routesYAML("http://127.0.0.1:1"), nil)
	post(t, tencentURL(f.url, "1400000001", "C2C.CallbackAfterSendMsg", testToken, now), []byte(`{}`), nil)
	post(t, tencentURL(f.url, "1400000001", "Made.Up", "", now), []byte(`{}`), nil)
	// Commands reached only by a prefix are counted under the prefix, however many
	// distinct names callers send.
	post(t, tencentURL(f.url, "1400000001", "Group.Made.Up.1", testToken, now), []byte(`{}`), nil)
	post(t, tencentURL(f.url, "1400000001", "Group.Made.Up.2", testToken, now), []byte(`{}`), nil)
	resp, err := http.Get(f.url + PathMetrics)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`callback_router_requests_total{app="1400000001",command="C2C.CallbackAfterSendMsg",outcome="acknowledged",provider="TencentIM"} 1`,
		// An unverified, unknown command never becomes a label value.
		`callback_router_requests_total{app="1400000001",command="_other",outcome="unauthorized",provider="TencentIM"} 1`,
		`callback_router_verification_failures_total{provider="TencentIM",reason="missing_sign"} 1`,
		`callback_router_requests_total{app="1400000001",command="Group.*",outcome="acknowledged",provider="TencentIM"} 2`,
		`callback_router_table_generation 1`,
		`callback_router_table_routes 7`,
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if strings.Contains(string(b), "Made.Up") {
		t.Errorf("a command no route names became a label value")
	}
	_ = v1alpha1.ProviderOpenIM
}

// blockingSink stores a copy only once released, failing as the spool does if its context
// is done first.
type blockingSink struct {
	entered chan struct{}
	release chan struct{}
	stored  chan struct{}
}

func (s *blockingSink) Enqueue(ctx context.Context, _ *callback.Callback, _ []callback.Target) error {
	close(s.entered)
	select {
	case <-s.release:
		close(s.stored)
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// TestFastShutdownDoesNotCancelEnqueue: a callback whose Async copy is being stored when
// the fasthttp server starts shutting down is stored and acknowledged, not answered 503.
func TestFastShutdownDoesNotCancelEnqueue(t *testing.T) {
	sink := &blockingSink{entered: make(chan struct{}), release: make(chan struct{}), stored: make(chan struct{})}
	h, err := New(Options{Sink: sink, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	h.SetTable(table(t, routesYAML("http://127.0.0.1:1")))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- ServeFast(ctx, ln, h, ServerConfig{ShutdownTimeout: 5 * time.Second}) }()
	type result struct {
		status int
		body   []byte
	}
	answer := make(chan result, 1)
	go func() {
		s, b, _ := post(t, tencentURL("http://"+ln.Addr().String(), "1400000001", "C2C.CallbackAfterSendMsg", testToken, now), []byte(`{}`), nil)
		answer <- result{s, b}
	}()
	<-sink.entered
	h.SetDraining(true)
	cancel()
	time.Sleep(200 * time.Millisecond) // shutdown has started
	close(sink.release)
	a := <-answer
	if a.status != http.StatusOK || !bytes.Equal(a.body, tencentOK) {
		t.Errorf("in-flight callback got %d %s, want the OK acknowledgement", a.status, a.body)
	}
	select {
	case <-sink.stored:
	default:
		t.Error("the copy was not stored")
	}
	if err := <-served; err != nil {
		t.Fatal(err)
	}
}

// stallingSink never stores anything: it waits until its context is done (giving up
// after 2s, so that a test without a deadline fails instead of hanging).
type stallingSink struct{}

func (stallingSink) Enqueue(ctx context.Context, _ *callback.Callback, _ []callback.Target) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(2 * time.Second):
		return errors.New("stalled")
	}
}

// TestEnqueueDeadline: storing the Async copies is bounded: within the Sync budget for a
// Tencent callback that also has a Sync route, else by EnqueueTimeout; past it the
// answer is 503, never an OK.
func TestEnqueueDeadline(t *testing.T) {
	be := newBackend(t, nil)
	yaml := strings.ReplaceAll(`
apiVersion: v1
kind: Secret
metadata: {name: tok, namespace: ns}
stringData: {token: xxxxyyyy}
---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackRoute
metadata: {name: moderate, namespace: ns}
spec:
  provider: TencentIM
  appID: "1"
  commands: [C2C.CallbackBeforeSendMsg]
  mode: Sync
  backend: {url: BACKEND}
  verify: {tokenSecretRef: {name: tok}}
---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackRoute
metadata: {name: archive, namespace: ns}
spec:
  provider: TencentIM
  appID: "1"
  commands: ["C2C.*"]
  backend: {url: BACKEND}
  verify: {tokenSecretRef: {name: tok}}
`, "BACKEND", be.URL)
	budget, enqueue := 200*time.Millisecond, 500*time.Millisecond
	f := newFixture(t, yaml, func(o *Options) {
		o.Sink = stallingSink{}
		o.SyncBudget = budget
		o.EnqueueTimeout = enqueue
		o.Now = time.Now
	})
	client := &http.Client{Timeout: 3 * time.Second}
	for _, c := range []struct {
		command  string
		min, max time.Duration
	}{
		{"C2C.CallbackBeforeSendMsg", budget, budget + 300*time.Millisecond},
		{"C2C.CallbackAfterSendMsg", enqueue, enqueue + 300*time.Millisecond},
	} {
		start := time.Now()
		resp, err := client.Post(tencentURL(f.url, "1", c.command, testToken, time.Now()), "application/json", strings.NewReader(`{}`))
		elapsed := time.Since(start)
		if err != nil {
			t.Fatalf("%s: %v (the copy was never given up on)", c.command, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("%s: %d %s, want 503", c.command, resp.StatusCode, body)
		}
		if elapsed < c.min || elapsed > c.max {
			t.Errorf("%s answered after %s, want between %s and %s", c.command, elapsed, c.min, c.max)
		}
	}
	if got := be.take(); len(got) != 0 {
		t.Errorf("the Sync backend was called although the copy was not stored")
	}
}

// TestSyncSentOnce: a backend that drops the connection after reading the request gets it
// once; the IM platform hears the failurePolicy answer, the request is not re-sent.
func TestSyncSentOnce(t *testing.T) {
	be := newBackend(t, func(w http.ResponseWriter, _ *http.Request) {
		c, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			_ = c.Close()
		}
	})
	f := newFixture(t, strings.ReplaceAll(syncRouteYAML, "BACKEND", be.URL), nil)
	status, body, _ := post(t, tencentURL(f.url, "1", "C2C.CallbackBeforeSendMsg", testToken, now), []byte(`{}`), nil)
	if status != 200 || !bytes.Equal(body, tencentOK) {
		t.Errorf("got %d %s, want the Allow envelope", status, body)
	}
	if got := be.take(); len(got) != 1 {
		t.Errorf("the backend got the Sync request %d times, want once", len(got))
	}
}

// TestSyncSentOnceOnReusedConnection: on a kept-alive connection that was alive when the
// request was written, a backend that then drops it without answering gets the request
// once; only a connection found closed before writing is replaced.
func TestSyncSentOnceOnReusedConnection(t *testing.T) {
	var n atomic.Int32
	be := newBackend(t, func(w http.ResponseWriter, _ *http.Request) {
		if n.Add(1) == 2 {
			if c, _, err := w.(http.Hijacker).Hijack(); err == nil {
				_ = c.Close()
			}
			return
		}
		_, _ = io.WriteString(w, `{"ActionStatus":"OK","ErrorCode":0,"answeredBy":"backend"}`)
	})
	f := newFixture(t, strings.ReplaceAll(syncRouteYAML, "BACKEND", be.URL), nil)
	u := tencentURL(f.url, "1", "C2C.CallbackBeforeSendMsg", testToken, now)
	for i, want := range []string{`{"ActionStatus":"OK","ErrorCode":0,"answeredBy":"backend"}`, string(tencentOK), `{"ActionStatus":"OK","ErrorCode":0,"answeredBy":"backend"}`} {
		if status, body, _ := post(t, u, []byte(`{}`), nil); status != 200 || string(body) != want {
			t.Errorf("callback %d: %d %s, want %s", i+1, status, body, want)
		}
	}
	if got := len(be.take()); got != 3 {
		t.Errorf("the backend got %d requests for 3 callbacks, want 3 (none sent twice)", got)
	}
	be.mu.Lock()
	defer be.mu.Unlock()
	if be.conns != 2 {
		t.Errorf("%d backend connections, want 2 (the first reused, then a new one after the drop)", be.conns)
	}
}
