package jsspool

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/callback-router/callback-router/internal/natstest"
	"github.com/callback-router/callback-router/webhook/callback"
	"github.com/callback-router/callback-router/webhook/delivery"
	"github.com/callback-router/callback-router/webhook/spool"
)

func TestMain(m *testing.M) {
	natstest.RunChildIfAsked()
	os.Exit(m.Run())
}

var quiet = funcr.New(func(prefix, args string) {}, funcr.Options{})

// hit is one request a backend got.
type hit struct {
	id, route, attempt, body string
	at                       time.Time
}

// backend records requests and answers with answer(hit number for this callback ID).
type backend struct {
	mu     sync.Mutex
	hits   []hit
	answer func(w http.ResponseWriter, n int)
	srv    *httptest.Server
}

func newBackend(t *testing.T, answer func(w http.ResponseWriter, n int)) *backend {
	b := &backend{answer: answer}
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		h := hit{id: r.Header.Get(callback.HeaderID), route: r.Header.Get(callback.HeaderRoute),
			attempt: r.Header.Get(callback.HeaderAttempt), body: string(body), at: time.Now()}
		b.mu.Lock()
		b.hits = append(b.hits, h)
		n := 0
		for _, x := range b.hits {
			if x.id == h.id && x.route == h.route {
				n++
			}
		}
		answer := b.answer
		b.mu.Unlock()
		if answer != nil {
			answer(w, n)
		}
	}))
	t.Cleanup(b.srv.Close)
	return b
}

func (b *backend) setAnswer(f func(w http.ResponseWriter, n int)) {
	b.mu.Lock()
	b.answer = f
	b.mu.Unlock()
}

func (b *backend) snapshot() []hit {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]hit(nil), b.hits...)
}

func (b *backend) waitFor(t *testing.T, what string, timeout time.Duration, cond func([]hit) bool) []hit {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		h := b.snapshot()
		if cond(h) {
			return h
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s; backend got %d requests", timeout, what, len(h))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func startNATS(t *testing.T, n int, user, pass string) *natstest.Cluster {
	t.Helper()
	c, err := natstest.Start(n, t.TempDir(), user, pass)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	return c
}

func openSpool(t *testing.T, o Options) *Spool {
	t.Helper()
	if o.Logger.GetSink() == nil {
		o.Logger = quiet
	}
	if o.DiscoverInterval == 0 {
		o.DiscoverInterval = 200 * time.Millisecond
	}
	s, err := Open(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func run(t *testing.T, s *Spool) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, spool.ErrClosed) {
			t.Errorf("Run: %v", err)
		}
	})
}

func cb(i int) *callback.Callback {
	return &callback.Callback{
		ID: fmt.Sprintf("msg-%d", i), Provider: "TencentIM", AppID: "1400000001", Command: "C2C.CallbackAfterSendMsg",
		RawQuery: "SdkAppid=1400000001&CallbackCommand=C2C.CallbackAfterSendMsg",
		Body:     fmt.Appendf(nil, `{"MsgKey":"msg-%d"}`, i),
	}
}

func target(route, url string) callback.Target {
	return callback.Target{Route: route, URL: url, Timeout: 2 * time.Second, MaxAttempts: 3,
		InitialBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond}
}

// TestEnqueueDeliverDedupe: every copy is delivered once with the callback's body and
// headers, on a 3-server R3 stream; the same callback enqueued again (the IM platform
// retrying) is a duplicate JetStream drops, so it is not delivered again.
func TestEnqueueDeliverDedupe(t *testing.T) {
	nc := startNATS(t, 3, "", "")
	be := newBackend(t, nil)
	s := openSpool(t, Options{URL: nc.URL(), Replicas: 3})
	run(t, s)
	routes := []callback.Target{target("chat/archive", be.srv.URL+"/a"), target("chat/analytics.v2", be.srv.URL+"/b")}
	const n = 40
	for i := range n {
		if err := s.Enqueue(context.Background(), cb(i), routes); err != nil {
			t.Fatal(err)
		}
	}
	be.waitFor(t, "every copy", 20*time.Second, func(h []hit) bool { return len(h) >= 2*n })
	// Again, same IDs: duplicates within the window.
	for i := range n {
		if err := s.Enqueue(context.Background(), cb(i), routes); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(500 * time.Millisecond)
	hits := be.snapshot()
	if len(hits) != 2*n {
		t.Fatalf("backend got %d requests, want %d (each copy once)", len(hits), 2*n)
	}
	seen := map[string]bool{}
	for _, h := range hits {
		k := h.id + " " + h.route
		if seen[k] {
			t.Errorf("delivered twice: %s", k)
		}
		seen[k] = true
		if want := fmt.Sprintf(`{"MsgKey":"%s"}`, h.id); h.body != want || h.attempt != "1" {
			t.Errorf("%s: body %q attempt %s, want %q attempt 1", k, h.body, h.attempt, want)
		}
	}
}

// TestRetryDeadLetterRedrive: a 429 with Retry-After postpones the next attempt by at
// least that long; a backend that keeps failing uses the route's attempts and the copy
// becomes a dead letter in JetStream; it is listed, redriven (attempts from 1 again)
// and delivered; another is purged.
func TestRetryDeadLetterRedrive(t *testing.T) {
	nc := startNATS(t, 1, "", "")
	be := newBackend(t, func(w http.ResponseWriter, n int) {
		if n == 1 {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = io.WriteString(w, "backend down")
	})
	// No circuit breaker: six failures in a row would open it, and the redrive below
	// would wait for its cool-down (TestCircuitBreakerHoldsWithoutBurningAttempts).
	s := openSpool(t, Options{URL: nc.URL(), Replicas: 1, Delivery: delivery.Options{BreakerFailures: -1}})
	run(t, s)
	tg := target("chat/archive", be.srv.URL)
	for i := range 2 {
		if err := s.Enqueue(context.Background(), cb(i), []callback.Target{tg}); err != nil {
			t.Fatal(err)
		}
	}
	hits := be.waitFor(t, "3 attempts of each", 15*time.Second, func(h []hit) bool { return len(h) >= 6 })
	var first, second time.Time
	for _, h := range hits {
		if h.id == "msg-0" && h.attempt == "1" {
			first = h.at
		}
		if h.id == "msg-0" && h.attempt == "2" {
			second = h.at
		}
	}
	if gap := second.Sub(first); first.IsZero() || gap < 900*time.Millisecond {
		t.Errorf("attempt 2 came %s after attempt 1; Retry-After asked for 1s", gap)
	}
	checkDeadLetters(t, s)

	be.setAnswer(func(w http.ResponseWriter, n int) {})
	before := len(be.snapshot())
	if n, err := s.Redrive(context.Background(), spool.Filter{ID: "msg-0"}); err != nil || n != 1 {
		t.Fatalf("Redrive = %d, %v; want 1", n, err)
	}
	hits = be.waitFor(t, "the redriven copy", 10*time.Second, func(h []hit) bool { return len(h) > before })
	if h := hits[len(hits)-1]; h.id != "msg-0" || h.attempt != "1" {
		t.Errorf("redriven delivery %+v, want msg-0 attempt 1", h)
	}
	if n, err := s.PurgeDeadLetters(context.Background(), spool.Filter{ID: "msg-1"}); err != nil || n != 1 {
		t.Fatalf("Purge = %d, %v; want 1", n, err)
	}
	if got, err := s.DeadLetters(spool.Filter{}); err != nil || len(got) != 0 {
		t.Errorf("dead letters after redrive and purge: %+v, %v", got, err)
	}
}

// TestUnhappyOpen: unreachable servers, wrong credentials, a missing stream the spool
// may not create, and a stream on memory storage are each refused with a clear error.
func TestUnhappyOpen(t *testing.T) {
	port, err := natstest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	_, err = Open(context.Background(), Options{URL: "nats://127.0.0.1:" + strconv.Itoa(port), Logger: quiet})
	if err == nil || !strings.Contains(err.Error(), "connecting to NATS at nats://127.0.0.1:") {
		t.Errorf("unreachable: %v", err)
	}

	nc := startNATS(t, 1, "receiver", "s3cret")
	wrong := strings.ReplaceAll(nc.URL(), "s3cret", "wrong")
	_, err = Open(context.Background(), Options{URL: wrong, Replicas: 1, Logger: quiet})
	if err == nil || !strings.Contains(strings.ToLower(err.Error()), "authorization violation") || strings.Contains(err.Error(), "wrong") {
		t.Errorf("wrong credentials: %v (want an authorization error, password redacted)", err)
	}

	_, err = Open(context.Background(), Options{URL: nc.URL(), Replicas: 1, NoCreate: true, Logger: quiet})
	if err == nil || !strings.Contains(err.Error(), "stream CALLBACKS does not exist") {
		t.Errorf("missing stream with NoCreate: %v", err)
	}

	conn, err := nats.Connect(nc.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	js, _ := jetstream.New(conn)
	if _, err := js.CreateStream(context.Background(), jetstream.StreamConfig{Name: "MEM", Subjects: []string{"MEM.q.>"},
		Storage: jetstream.MemoryStorage, Retention: jetstream.WorkQueuePolicy}); err != nil {
		t.Fatal(err)
	}
	_, err = Open(context.Background(), Options{URL: nc.URL(), Stream: "MEM", Replicas: 1, Logger: quiet})
	if err == nil || !strings.Contains(err.Error(), "needs file storage") {
		t.Errorf("memory stream: %v", err)
	}
	if _, err := Open(context.Background(), Options{URL: nc.URL(), Stream: "a.b", Logger: quiet}); err == nil {
		t.Error("a stream name with a dot was accepted")
	}
}

// TestEnqueueWhileNATSDown: once the servers are gone, Enqueue fails at once (the
// receiver answers 503) rather than acknowledging what nothing stored.
func TestEnqueueWhileNATSDown(t *testing.T) {
	nc := startNATS(t, 1, "", "")
	be := newBackend(t, nil)
	s := openSpool(t, Options{URL: nc.URL(), Replicas: 1})
	tg := []callback.Target{target("chat/archive", be.srv.URL)}
	if err := s.Enqueue(context.Background(), cb(1), tg); err != nil {
		t.Fatal(err)
	}
	nc.Stop()
	start := time.Now()
	err := s.Enqueue(context.Background(), cb(2), tg)
	if err == nil {
		t.Fatal("Enqueue with NATS down returned nil")
	}
	if d := time.Since(start); d > DefaultPublishTimeout+time.Second {
		t.Errorf("Enqueue took %s to fail", d)
	}
	t.Logf("Enqueue with NATS down: %v", err)
}

// checkDeadLetters waits for TestRetryDeadLetterRedrive's two dead letters and checks
// their fields and the filters.
func checkDeadLetters(t *testing.T, s *Spool) {
	t.Helper()
	var dls []spool.DeadLetter
	deadline := time.Now().Add(10 * time.Second)
	for len(dls) < 2 && time.Now().Before(deadline) {
		var err error
		if dls, err = s.DeadLetters(spool.Filter{}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(dls) != 2 {
		t.Fatalf("got %d dead letters, want 2", len(dls))
	}
	for _, dl := range dls {
		if dl.Route != "chat/archive" || dl.Attempts != 3 || !strings.Contains(dl.LastError, "HTTP 500: backend down") ||
			dl.AppID != "1400000001" || dl.Command != "C2C.CallbackAfterSendMsg" || dl.BodyBytes == 0 || dl.DeadAt.IsZero() {
			t.Errorf("dead letter %+v", dl)
		}
	}
	if got, _ := s.DeadLetters(spool.Filter{ID: "msg-1"}); len(got) != 1 || got[0].ID != "msg-1" {
		t.Errorf("filter by ID: %+v", got)
	}
	if got, _ := s.DeadLetters(spool.Filter{Route: "other/route"}); len(got) != 0 {
		t.Errorf("filter by another route: %+v", got)
	}
}
