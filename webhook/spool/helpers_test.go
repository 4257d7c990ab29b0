package spool

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/callback-router/callback-router/api/v1alpha1"
	"github.com/callback-router/callback-router/webhook/callback"
)

// c2cCommand is the command of testdata/tencent-c2c-after-send.json.
const c2cCommand = "C2C.CallbackAfterSendMsg"

// sampleCallback returns the Tencent C2C sample with its MsgKey made unique by n, so
// that every callback of a test has its own X-Callback-Id.
func sampleCallback(t testing.TB, n int) *callback.Callback {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", "tencent-c2c-after-send.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	m["MsgKey"] = "test_" + strconv.Itoa(n)
	body, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return &callback.Callback{
		ID:         callback.ComputeID(v1alpha1.ProviderTencentIM, c2cCommand, body),
		Provider:   v1alpha1.ProviderTencentIM,
		AppID:      "1400000001",
		Command:    c2cCommand,
		RawQuery:   "SdkAppid=1400000001&CallbackCommand=" + c2cCommand + "&contenttype=json&ClientIP=127.0.0.1&OptPlatform=RESTAPI",
		Body:       body,
		ReceivedAt: time.Now(),
	}
}

// received is one request a test backend got.
type received struct {
	id, route, attempt, query, contentType, replay string
	body                                           []byte
	at                                             time.Time
}

// backend is a real HTTP server on loopback that records what it receives and answers
// with whatever status its respond func returns.
type backend struct {
	*httptest.Server
	mu  sync.Mutex
	got []received
	// respond returns the status to answer; n is the 1-based count of requests so far.
	// It may set response headers on w.
	respond func(w http.ResponseWriter, r *http.Request, n int) int
}

// newBackend starts a backend answering respond(r, n), or 200 if respond is nil.
func newBackend(t testing.TB, respond func(r *http.Request, n int) int) *backend {
	if respond == nil {
		return newBackendW(t, nil)
	}
	return newBackendW(t, func(_ http.ResponseWriter, r *http.Request, n int) int { return respond(r, n) })
}

func newBackendW(t testing.TB, respond func(w http.ResponseWriter, r *http.Request, n int) int) *backend {
	t.Helper()
	return newBackendAt(t, "", respond)
}

// newBackendAt starts a backend on addr ("": any loopback port).
func newBackendAt(t testing.TB, addr string, respond func(w http.ResponseWriter, r *http.Request, n int) int) *backend {
	t.Helper()
	b := &backend{respond: respond}
	b.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		b.mu.Lock()
		b.got = append(b.got, received{
			id: r.Header.Get(callback.HeaderID), route: r.Header.Get(callback.HeaderRoute),
			attempt: r.Header.Get(callback.HeaderAttempt), query: r.URL.RawQuery,
			contentType: r.Header.Get("Content-Type"), replay: r.Header.Get(callback.HeaderReplay), body: body, at: time.Now(),
		})
		n := len(b.got)
		b.mu.Unlock()
		code := http.StatusOK
		if b.respond != nil {
			code = b.respond(w, r, n)
		}
		w.WriteHeader(code)
		_, _ = w.Write([]byte(`{"ok":false}`))
	}))
	if addr != "" {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("listening on %s: %v", addr, err)
		}
		_ = b.Listener.Close()
		b.Listener = l
	}
	b.Start()
	t.Cleanup(b.Close)
	return b
}

func (b *backend) requests() []received {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]received(nil), b.got...)
}

func (b *backend) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.got)
}

// target is a fast-retrying target for tests.
func target(route, url string, maxAttempts int) callback.Target {
	return callback.Target{Route: route, URL: url, Timeout: 2 * time.Second, MaxAttempts: maxAttempts,
		InitialBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond}
}

// openSpool opens a spool in dir with a fresh metrics registry and closes it at cleanup.
func openSpool(t testing.TB, dir string, opts Options) (*Spool, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	opts.Registerer = reg
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, reg
}

// run runs s until the test ends (or stop is called) and checks Run's result.
func run(t testing.TB, s *Spool) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Errorf("Run did not return 10s after its context was cancelled")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// downAddr returns a loopback address where nothing listens (yet).
func downAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	return addr
}

// eventually polls cond every 5ms until it holds or timeout passes.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// metricValue returns the value of the metric name with the given labels (0 if absent).
func metricValue(t testing.TB, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
					continue metrics
				}
			}
			return value(m)
		}
	}
	return 0
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	}
	return 0
}
