package receiver

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	"github.com/valyala/fasthttp"
)

// rawExchange writes req as it is on a new loopback connection to the fixture and reads
// one answer (status, body).
func rawExchange(t *testing.T, addr, req string) (int, []byte) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	var resp fasthttp.Response
	if err := resp.Read(bufio.NewReader(c)); err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	return resp.StatusCode(), append([]byte(nil), resp.Body()...)
}

// logLines is a logger recording every line.
type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *logLines) has(subs ...string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, line := range l.lines {
		ok := true
		for _, s := range subs {
			ok = ok && strings.Contains(line, s)
		}
		if ok {
			return true
		}
	}
	return false
}

func (l *logLines) attach(o *Options) {
	o.Logger = funcr.New(func(prefix, args string) {
		l.mu.Lock()
		l.lines = append(l.lines, prefix+" "+args)
		l.mu.Unlock()
	}, funcr.Options{})
}

func hostOf(u string) string { return strings.TrimPrefix(u, "http://") }

// TestSyncIdleClosingBackend: a backend that closes kept-alive connections idle for
// 300 ms, called every 450 ms (the 1 s / 1.5 s, scaled), answers every Sync
// callback, each exactly once. Before, a callback sent on a connection the backend had
// closed got the failurePolicy answer (3 of 6).
func TestSyncIdleClosingBackend(t *testing.T) {
	var mu sync.Mutex
	requests, conns := 0, 0
	be := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		mu.Lock()
		requests++
		mu.Unlock()
		_, _ = io.WriteString(w, `{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"","answeredBy":"backend"}`)
	}))
	be.Config.IdleTimeout = 300 * time.Millisecond
	be.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			mu.Lock()
			conns++
			mu.Unlock()
		}
	}
	be.Start()
	defer be.Close()
	f := newFixture(t, strings.ReplaceAll(syncRouteYAML, "BACKEND", be.URL), nil)
	const n = 6
	for i := range n {
		if i > 0 {
			time.Sleep(450 * time.Millisecond)
		}
		// Every other callback is larger than the client's write buffer, so that its
		// first write to the connection happens while the request is being written.
		cb := []byte(`{}`)
		if i%2 == 1 {
			cb = []byte(`{"pad":"` + strings.Repeat("x", 64<<10) + `"}`)
		}
		status, body, _ := post(t, tencentURL(f.url, "1", "C2C.CallbackBeforeSendMsg", testToken, now), cb, nil)
		if status != 200 || !strings.Contains(string(body), "answeredBy") {
			t.Errorf("callback %d: %d %s, want the backend's answer", i+1, status, body)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if requests != n {
		t.Errorf("the backend got %d requests for %d callbacks", requests, n)
	}
	if conns < 2 {
		t.Errorf("the backend saw %d connection(s): it never closed an idle one, the test shows nothing", conns)
	}
}

// TestUnverifiedBodyNotRead: a callback that fails verification is answered from its head
// alone: the receiver does not wait for (or buffer) the body it declares.
func TestUnverifiedBodyNotRead(t *testing.T) {
	f := newFixture(t, routesYAML("http://127.0.0.1:1"), nil)
	c, err := net.Dial("tcp", hostOf(f.url))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// The head and 8 KiB of a declared 1 MiB body, then nothing more.
	fmt.Fprintf(c, "POST /tencent?SdkAppid=1400000001&CallbackCommand=C2C.CallbackAfterSendMsg HTTP/1.1\r\nHost: r\r\nContent-Length: %d\r\n\r\n", 1<<20)
	_, _ = c.Write(bytes.Repeat([]byte(" "), 8<<10))
	start := time.Now()
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	var resp fasthttp.Response
	if err := resp.Read(bufio.NewReader(c)); err != nil {
		t.Fatalf("no answer before the body was sent: %v", err)
	}
	if resp.StatusCode() != http.StatusUnauthorized || envelope(t, resp.Body())["ActionStatus"] != "FAIL" {
		t.Errorf("got %d %s, want 401 in the envelope", resp.StatusCode(), resp.Body())
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("answered after %s", d)
	}
	if !resp.ConnectionClose() {
		t.Error("the connection with an unread body was kept open")
	}
}

// TestBodyBudget: verified bodies share Options.MaxInflightBodyBytes; a callback that finds
// no room within BodyBudgetWait is answered 503 in the envelope, and is served again once
// room is freed.
func TestBodyBudget(t *testing.T) {
	const limit = 64 << 10
	f := newFixture(t, routesYAML("http://127.0.0.1:1"), func(o *Options) {
		o.MaxBodyBytes, o.MaxInflightBodyBytes = limit, limit
	})
	u := tencentURL("", "1400000001", "C2C.CallbackAfterSendMsg", testToken, now)
	// A signed callback declaring the whole budget and sending half of it holds it.
	c, err := net.Dial("tcp", hostOf(f.url))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	body := []byte(`{"pad":"` + strings.Repeat("x", limit-10) + `"}`)
	fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: r\r\nContent-Length: %d\r\n\r\n", u, len(body))
	_, _ = c.Write(body[:limit/2])
	time.Sleep(200 * time.Millisecond)
	start := time.Now()
	status, answer, _ := post(t, f.url+u, []byte(`{}`), nil)
	if status != http.StatusServiceUnavailable || envelope(t, answer)["ActionStatus"] != "FAIL" {
		t.Errorf("with the budget held: %d %s, want 503 in the envelope", status, answer)
	}
	if d := time.Since(start); d < BodyBudgetWait {
		t.Errorf("answered after %s, before BodyBudgetWait (%s)", d, BodyBudgetWait)
	}
	if v := counterValue(t, f.h, "callback_router_body_budget_exhausted_total", nil); v != 1 {
		t.Errorf("budget exhaustion counted %v times", v)
	}
	// The first callback finishes and frees the budget.
	_, _ = c.Write(body[limit/2:])
	var resp fasthttp.Response
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if err := resp.Read(bufio.NewReader(c)); err != nil || resp.StatusCode() != 200 {
		t.Fatalf("the held callback: %v %d %s", err, resp.StatusCode(), resp.Body())
	}
	if status, answer, _ := post(t, f.url+u, []byte(`{}`), nil); status != 200 {
		t.Errorf("after the budget was freed: %d %s", status, answer)
	}
}

// TestMaxConnections: connections past ServerConfig.MaxConnections are refused at once.
func TestMaxConnections(t *testing.T) {
	h, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	addr := serveFast(t, h, nil, ServerConfig{MaxConnections: 4}).String()
	var held []net.Conn
	defer func() {
		for _, c := range held {
			_ = c.Close()
		}
	}()
	for range 4 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	time.Sleep(100 * time.Millisecond)
	status, body := rawExchange(t, addr, "GET /healthz HTTP/1.1\r\nHost: r\r\n\r\n")
	if status != http.StatusServiceUnavailable {
		t.Errorf("connection 5 of at most 4: %d %s, want 503", status, body)
	}
	_ = held[0].Close()
	held = held[1:]
	time.Sleep(100 * time.Millisecond)
	if status, body := rawExchange(t, addr, "GET /healthz HTTP/1.1\r\nHost: r\r\n\r\n"); status != 200 {
		t.Errorf("after one closed: %d %s", status, body)
	}
}

// TestChunkedOverLimit: a chunked body over the limit is a 413 in the provider's envelope,
// counted and logged like a Content-Length one.
func TestChunkedOverLimit(t *testing.T) {
	var logs logLines
	f := newFixture(t, routesYAML("http://127.0.0.1:1"), func(o *Options) {
		o.MaxBodyBytes = 1 << 10
		o.MaxInflightBodyBytes = 1 << 20
		logs.attach(o)
	})
	u := tencentURL("", "1400000001", "C2C.CallbackAfterSendMsg", testToken, now)
	chunk := strings.Repeat("a", 600)
	req := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: r\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n{\"a\":\"%s\r\n%x\r\n%s\"}\r\n0\r\n\r\n",
		u, len(chunk)+6, chunk, len(chunk)+2, chunk)
	status, body := rawExchange(t, hostOf(f.url), req)
	if status != http.StatusRequestEntityTooLarge || envelope(t, body)["ActionStatus"] != "FAIL" {
		t.Errorf("got %d %s, want 413 in the FAIL envelope", status, body)
	}
	if v := counterValue(t, f.h, "callback_router_requests_total", map[string]string{"outcome": OutcomeTooLarge}); v != 1 {
		t.Errorf("too_large counted %v times", v)
	}
	if !logs.has("Rejected callback", "too_large") {
		t.Error("not logged")
	}
	if got := f.sink.take(); len(got) != 0 {
		t.Errorf("stored %d copies", len(got))
	}
	// Under the limit, chunked is fine.
	small := `{"a":1}`
	req = fmt.Sprintf("POST %s HTTP/1.1\r\nHost: r\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n", u, len(small), small)
	if status, body := rawExchange(t, hostOf(f.url), req); status != 200 {
		t.Errorf("small chunked body: %d %s", status, body)
	}
	if got := f.sink.take(); len(got) != 1 || string(got[0].cb.Body) != small {
		t.Errorf("small chunked body stored as %+v", got)
	}
}

// TestRefusedAtTheDoor: URLs whose bytes another parser or a header could not carry the
// same way are 400 in the provider's envelope and nothing is stored: control bytes in the
// URL, a command with CR, LF or NUL, ambiguous Tencent queries.
func TestRefusedAtTheDoor(t *testing.T) {
	f := newFixture(t, routesYAML("http://127.0.0.1:1")+`---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackRoute
metadata: {name: everything, namespace: chat}
spec:
  provider: TencentIM
  appID: "1400000001"
  commands: ["*"]
  backend: {url: "http://127.0.0.1:1"}
  verify: {tokenSecretRef: {name: tok}}
---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackRoute
metadata: {name: openim-everything, namespace: chat}
spec:
  provider: OpenIM
  appID: prod
  commands: ["*"]
  backend: {url: "http://127.0.0.1:1"}
`, nil)
	signed := tencentURL("", "1400000001", "C2C.CallbackAfterSendMsg", testToken, now)
	q := signed[strings.Index(signed, "?")+1:]
	withCommand := func(cmd string) string {
		return strings.Replace(signed, "CallbackCommand=C2C.CallbackAfterSendMsg", "CallbackCommand="+cmd, 1)
	}
	for _, c := range []struct {
		name, target string
		status       int
	}{
		{"signed, plain", signed, 200},
		{"raw control byte in the query", withCommand("C2C.X\x01"), 400},
		{"raw DEL in the path", "/openim/prod/cmd\x7f", 400},
		{"command with an encoded CR LF", withCommand("C2C.X%0D%0AX-Injected:%201"), 400},
		{"command with an encoded NUL", withCommand("C2C.X%00"), 400},
		{"OpenIM command with an encoded LF", "/openim/prod/callbackAfter%0ASendSingleMsgCommand", 400},
		{"encoded SdkAppid first", "/tencent?Sdk%41ppid=1400000999&" + q, 400},
		{"'?' trick with two SdkAppids", "/tencent?x=1?SdkAppid=1400000999&" + q, 400},
		{"encoded CallbackCommand", "/tencent?Callback%43ommand=Group.X&" + q, 400},
		{"console URL's own ?SdkAppid, values agree", "/tencent?SdkAppid=1400000001?" + q, 200},
	} {
		req := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: r\r\nContent-Length: 2\r\n\r\n{}", c.target)
		status, body := rawExchange(t, hostOf(f.url), req)
		if status != c.status {
			t.Errorf("%s: %d %s, want %d", c.name, status, body, c.status)
		}
		if status != 200 {
			m := envelope(t, body)
			if m["ActionStatus"] != "FAIL" && m["errCode"] != float64(5400) {
				t.Errorf("%s: not the provider's error envelope: %s", c.name, body)
			}
		}
		if got := f.sink.take(); (len(got) > 0) != (c.status == 200) {
			t.Errorf("%s: %d copies stored", c.name, len(got))
		}
	}
}

// TestStoreFailureSaysOnlyTheKind: the 503 envelope names the kind of failure, never the
// error text (paths, system messages), which OpenIM shows to the sender.
func TestStoreFailureSaysOnlyTheKind(t *testing.T) {
	var logs logLines
	f := newFixture(t, routesYAML("http://127.0.0.1:1"), logs.attach)
	f.sink.err = errors.New("writing: truncate /var/lib/callback-router/spool/spool.db: file too large")
	status, body, _ := post(t, tencentURL(f.url, "1400000001", "C2C.CallbackAfterSendMsg", testToken, now), []byte(`{}`), nil)
	if status != http.StatusServiceUnavailable {
		t.Fatalf("got %d %s", status, body)
	}
	if info, _ := envelope(t, body)["ErrorInfo"].(string); strings.Contains(info, "spool.db") || !strings.Contains(info, "storage unavailable") {
		t.Errorf("ErrorInfo %q: want the kind of failure only", info)
	}
	if !logs.has("Failed to store Async copies", "spool.db") {
		t.Error("the error itself is not in the log")
	}
}

// TestForwardedForFailsClosed: with trusted proxies, an X-Forwarded-For whose walk meets a
// malformed entry or more than MaxXForwardedForHops entries gives no client address (403),
// never the proxy's own, even when sourceCIDRs would admit the proxy.
func TestForwardedForFailsClosed(t *testing.T) {
	f := newFixture(t, `
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackRoute
metadata: {name: office, namespace: ns}
spec:
  provider: TencentIM
  appID: "3"
  commands: ["*"]
  backend: {url: "http://127.0.0.1:1"}
  verify: {sourceCIDRs: ["198.51.100.0/24", "10.1.0.0/16"]}
`, func(o *Options) { o.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")} })
	target := "/tencent?SdkAppid=3&CallbackCommand=C2C.X"
	hops := func(n int) string { return strings.TrimSuffix(strings.Repeat("10.1.0.7, ", n), ", ") }
	for _, c := range []struct {
		name, xff string
		status    int
	}{
		{"client behind the proxy", "198.51.100.9", 200},
		{"garbage", "garbage", 403},
		{"ip:port", "198.51.100.9:4711", 403},
		{"empty entry last", "198.51.100.9, ", 403},
		{"empty entry first", ", 10.1.0.7", 403},
		{"16 entries, the client the leftmost", "198.51.100.9, " + hops(15), 200},
		{"17 entries", "198.51.100.9, " + hops(16), 403},
		{"only trusted proxies", hops(3), 200},
	} {
		status, body := f.do(t, "10.1.2.3:5000", target, map[string]string{"X-Forwarded-For": c.xff}, []byte(`{}`))
		if status != c.status {
			t.Errorf("%s (X-Forwarded-For %q): %d %s, want %d", c.name, c.xff, status, body, c.status)
		}
	}
	// An empty X-Forwarded-For header is a malformed entry too.
	status, body := rawExchangeMem(t, f, "10.1.2.3:5000", "POST "+target+" HTTP/1.1\r\nHost: r\r\nX-Forwarded-For:\r\nContent-Length: 2\r\n\r\n{}")
	if status != 403 {
		t.Errorf("empty X-Forwarded-For: %d %s, want 403", status, body)
	}
}

// rawExchangeMem is rawExchange on the fixture's in-memory listener, from peer.
func rawExchangeMem(t *testing.T, f *fixture, peer, req string) (int, []byte) {
	t.Helper()
	c, err := f.mem.DialWithLocalAddr(net.TCPAddrFromAddrPort(netip.MustParseAddrPort(peer)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go func() { _, _ = io.WriteString(c, req) }()
	var resp fasthttp.Response
	if err := resp.Read(bufio.NewReader(c)); err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	return resp.StatusCode(), append([]byte(nil), resp.Body()...)
}
