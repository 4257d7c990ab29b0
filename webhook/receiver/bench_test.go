package receiver

import (
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// memClient is a keep-alive fasthttp client of the fixture's in-memory listener.
func (f *fixture) memClient() *fasthttp.HostClient {
	return &fasthttp.HostClient{
		Addr:                   "receiver",
		Dial:                   func(string) (net.Conn, error) { return f.mem.Dial() },
		DisablePathNormalizing: true,
		MaxConns:               1024,
	}
}

// benchPost sends body to target through c and fails unless the answer is 200.
func benchPost(b *testing.B, c *fasthttp.HostClient, target string, body []byte) {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.Header.SetMethod(http.MethodPost)
	req.SetRequestURI("http://receiver" + target)
	req.SetBodyRaw(body)
	if err := c.DoTimeout(req, resp, 5*time.Second); err != nil {
		b.Fatal(err)
	}
	if resp.StatusCode() != 200 {
		b.Fatalf("status %d %s", resp.StatusCode(), resp.Body())
	}
}

// BenchmarkSyncCallback measures a Sync callback through the receiver's own server on
// fasthttp's in-memory listener: parsing, verification, routing, forwarding to a real
// loopback backend and answering. The client's cost is counted too (it is small: no
// sockets on the client side).
func BenchmarkSyncCallback(b *testing.B) {
	be := newBackend(b, func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write(tencentOK) })
	f := newFixture(b, strings.ReplaceAll(syncRouteYAML, "BACKEND", be.URL), nil)
	body := loadSamples(b)[1].body
	u := tencentURL("", "1", "C2C.CallbackBeforeSendMsg", testToken, now)
	c := f.memClient()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			benchPost(b, c, u, body)
		}
	})
	be.mu.Lock()
	be.requests = nil
	be.mu.Unlock()
}

// BenchmarkAckOnly measures a callback that is verified and acknowledged with nothing to
// forward: the parsing, verification and lookup path alone.
func BenchmarkAckOnly(b *testing.B) {
	f := newFixture(b, strings.ReplaceAll(syncRouteYAML, "BACKEND", "http://127.0.0.1:1"), nil)
	body := loadSamples(b)[1].body
	u := tencentURL("", "1", "Sns.Unrouted", testToken, now)
	c := f.memClient()
	b.ReportAllocs()
	for b.Loop() {
		benchPost(b, c, u, body)
	}
}
