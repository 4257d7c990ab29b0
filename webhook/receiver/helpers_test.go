package receiver

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"

	"github.com/callback-router/callback-router/api/v1alpha1"
	"github.com/callback-router/callback-router/webhook/callback"
	"github.com/callback-router/callback-router/webhook/routing"
)

// now is the test clock: RequestTimes are signed relative to it.
var now = time.Unix(1669872112, 0)

const testToken = "xxxxyyyy" // Tencent's documented example token

// sample is one file of testdata/ (copied from the shared samples).
type sample struct {
	name     string
	provider v1alpha1.Provider
	command  string
	body     []byte
}

var sampleCommands = map[string]string{
	"tencent-c2c-after-send.json":              "C2C.CallbackAfterSendMsg",
	"tencent-group-after-send.json":            "Group.CallbackAfterSendMsg",
	"tencent-official-account-after-send.json": "OfficialAccount.CallbackAfterSendMsg",
	"tencent-push-offline-push.json":           "Push.OfflinePush",
	"openim-after-send-single.json":            "callbackAfterSendSingleMsgCommand",
}

func loadSamples(t testing.TB) []sample {
	t.Helper()
	files, err := filepath.Glob("testdata/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no samples in testdata: %v", err)
	}
	var out []sample
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		name := filepath.Base(f)
		cmd, ok := sampleCommands[name]
		if !ok {
			t.Fatalf("testdata/%s: add its command to sampleCommands", name)
		}
		p := v1alpha1.ProviderTencentIM
		if strings.HasPrefix(name, "openim-") {
			p = v1alpha1.ProviderOpenIM
		}
		out = append(out, sample{name, p, cmd, b})
	}
	return out
}

// recordingSink is an AsyncSink that records what it is given, or fails.
type recordingSink struct {
	mu    sync.Mutex
	calls []sinkCall
	err   error
}

type sinkCall struct {
	cb      callback.Callback
	targets []callback.Target
}

func (s *recordingSink) Enqueue(_ context.Context, cb *callback.Callback, targets []callback.Target) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return s.err
	}
	c := *cb
	c.Body = append([]byte(nil), cb.Body...)
	s.calls = append(s.calls, sinkCall{c, append([]callback.Target(nil), targets...)})
	return nil
}

func (s *recordingSink) take() []sinkCall {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.calls
	s.calls = nil
	return c
}

// backend is a loopback backend recording what it receives.
type backend struct {
	*httptest.Server
	mu       sync.Mutex
	requests []recorded
	conns    int
	handle   func(w http.ResponseWriter, r *http.Request)
}

type recorded struct {
	path, rawQuery string
	header         http.Header
	body           []byte
}

func newBackend(t testing.TB, handle func(w http.ResponseWriter, r *http.Request)) *backend {
	b := &backend{handle: handle}
	b.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		b.mu.Lock()
		b.requests = append(b.requests, recorded{r.URL.Path, r.URL.RawQuery, r.Header.Clone(), body})
		b.mu.Unlock()
		if b.handle != nil {
			b.handle(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(OKEnvelope(v1alpha1.Provider(r.Header.Get(callback.HeaderProvider))))
	}))
	b.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			b.mu.Lock()
			b.conns++
			b.mu.Unlock()
		}
	}
	b.Start()
	t.Cleanup(b.Close)
	return b
}

func (b *backend) take() []recorded {
	b.mu.Lock()
	defer b.mu.Unlock()
	r := b.requests
	b.requests = nil
	return r
}

// table builds the routing table a per-route YAML describes (see tablespec_test.go).
func table(t testing.TB, manifests string) *routing.Table {
	t.Helper()
	snap, err := snapshotFromSpec(manifests)
	if err != nil {
		t.Fatal(err)
	}
	tab, err := routing.NewTable(snap)
	if err != nil {
		t.Fatal(err)
	}
	return tab
}

// fixture is a receiver served by its fasthttp server (ServeFast, what the receiver
// command listens with) twice: on loopback TCP at url, and on fasthttp's in-memory
// listener (mem) for requests that must come from a chosen peer address (see do).
type fixture struct {
	h    *Handler
	url  string
	mem  *fasthttputil.InmemoryListener
	sink *recordingSink
}

func newFixture(t testing.TB, manifests string, mutate func(*Options)) *fixture {
	t.Helper()
	sink := &recordingSink{}
	opts := Options{Sink: sink, Now: func() time.Time { return now }, ServeMetrics: true}
	if mutate != nil {
		mutate(&opts)
	}
	h, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if manifests != "" {
		h.SetTable(table(t, manifests))
	}
	f := &fixture{h: h, sink: sink, mem: fasthttputil.NewInmemoryListener()}
	f.url = "http://" + serveFast(t, h, nil, ServerConfig{}).String()
	serveFast(t, h, f.mem, ServerConfig{})
	return f
}

// serveFast serves h with ServeFast on ln (a new loopback listener when nil) until the
// test ends, and returns the listener's address.
func serveFast(t testing.TB, h *Handler, ln net.Listener, c ServerConfig) net.Addr {
	t.Helper()
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeFast(ctx, ln, h, c) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return ln.Addr()
}

// do sends one request to the fixture's in-memory listener as if from peer (an
// "ip:port"), with a raw target (path and query, sent as they are).
func (f *fixture) do(t testing.TB, peer, target string, hdr map[string]string, body []byte) (int, []byte) {
	t.Helper()
	ap := netip.MustParseAddrPort(peer)
	c := &fasthttp.HostClient{
		Addr: "receiver",
		Dial: func(string) (net.Conn, error) {
			return f.mem.DialWithLocalAddr(net.TCPAddrFromAddrPort(ap))
		},
		DisablePathNormalizing: true,
	}
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.Header.SetMethod(http.MethodPost)
	req.SetRequestURI("http://receiver" + target)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	req.SetBody(body)
	if err := c.DoTimeout(req, resp, 5*time.Second); err != nil {
		t.Fatalf("%s: %v", target, err)
	}
	if ct := string(resp.Header.ContentType()); resp.StatusCode() != http.StatusOK && !strings.HasPrefix(ct, "application/json") {
		t.Errorf("%s: answer %d with content type %q", target, resp.StatusCode(), ct)
	}
	return resp.StatusCode(), append([]byte(nil), resp.Body()...)
}

func sign(token, rt string) string {
	s := sha256.Sum256([]byte(token + rt))
	return hex.EncodeToString(s[:])
}

// tencentURL is the URL Tencent IM would call, signed with token when it is not empty.
func tencentURL(base, app, command, token string, at time.Time) string {
	q := url.Values{}
	q.Set("SdkAppid", app)
	q.Set("CallbackCommand", command)
	q.Set("contenttype", "json")
	q.Set("ClientIP", "203.0.113.7")
	q.Set("OptPlatform", "iOS")
	if token != "" {
		rt := strconv.FormatInt(at.Unix(), 10)
		q.Set("RequestTime", rt)
		q.Set("Sign", sign(token, rt))
	}
	return base + "/tencent?" + q.Encode()
}

// post sends a callback and returns the status and body.
func post(t testing.TB, u string, body []byte, hdr map[string]string) (int, []byte, http.Header) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b, resp.Header
}

// envelope decodes an answer, failing unless it is a JSON object.
func envelope(t testing.TB, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("answer %q is not a JSON object: %v", b, err)
	}
	return m
}

var errDiskFull = errors.New("disk full")
