package receiver

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"
)

// BenchmarkSyncCallback measures the receiver's own cost per Sync callback: parsing,
// verification, routing, forwarding to a real loopback backend and answering. The
// handler is called directly, so the client side of HTTP is not counted.
func BenchmarkSyncCallback(b *testing.B) {
	be := newBackend(b, func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write(tencentOK) })
	be.handle = func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write(tencentOK) }
	f := newFixture(b, strings.ReplaceAll(syncRouteYAML, "BACKEND", be.URL), nil)
	body := loadSamples(b)[1].body
	u := tencentURL("", "1", "C2C.CallbackBeforeSendMsg", testToken, now)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		w := newRecorder()
		for pb.Next() {
			req, _ := http.NewRequest(http.MethodPost, u, bytes.NewReader(body))
			req.RemoteAddr = "127.0.0.1:1"
			w.status = 0
			w.body.Reset()
			clear(w.hdr)
			f.h.ServeHTTP(w, req)
			if w.status != 200 {
				b.Fatalf("status %d %s", w.status, w.body.String())
			}
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
	b.ReportAllocs()
	for b.Loop() {
		req, _ := http.NewRequest(http.MethodPost, u, bytes.NewReader(body))
		w := newRecorder()
		f.h.ServeHTTP(w, req)
		if w.status != 200 {
			b.Fatalf("status %d", w.status)
		}
	}
	_ = io.Discard
}
