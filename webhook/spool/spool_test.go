package spool

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/callback-router/callback-router/webhook/callback"
	dctl "github.com/callback-router/callback-router/webhook/delivery"
)

func TestFanOutDeliversToEveryRouteIndependently(t *testing.T) {
	const n = 20
	release := make(chan struct{})
	fast := newBackend(t, nil)
	slow := newBackend(t, func(r *http.Request, _ int) int {
		select { // hold every request until the test lets go
		case <-release:
		case <-r.Context().Done():
		}
		return http.StatusOK
	})
	dead := newBackend(t, func(*http.Request, int) int { return http.StatusServiceUnavailable })

	// The dead backend's breaker is off: this test counts its retries (the breaker's
	// own tests are in breaker_test.go).
	s, reg := openSpool(t, t.TempDir(), Options{MaxConcurrencyPerRoute: 4, Delivery: dctl.Options{BreakerFailures: -1}})
	run(t, s)
	targets := []callback.Target{
		target("chat/fast", fast.URL+"/im", 5),
		target("chat/slow", slow.URL+"/im", 5),
		target("chat/dead", dead.URL+"/im", 1000),
	}
	cbs := make(map[string]*callback.Callback)
	for i := range n {
		cb := sampleCallback(t, i)
		cbs[cb.ID] = cb
		if err := s.Enqueue(context.Background(), cb, targets); err != nil {
			t.Fatalf("Enqueue: %v", err)
		}
	}

	// The fast route gets everything while the slow one is stuck and the dead one fails.
	eventually(t, 10*time.Second, "the fast route to get every callback", func() bool { return fast.count() == n })
	if got := slow.count(); got > 4 {
		t.Errorf("slow backend saw %d concurrent requests, want at most MaxConcurrencyPerRoute=4", got)
	}
	for _, r := range fast.requests() {
		cb, ok := cbs[r.id]
		if !ok {
			t.Fatalf("unknown X-Callback-Id %q", r.id)
		}
		if !bytes.Equal(r.body, cb.Body) {
			t.Errorf("body of %s changed in transit", r.id)
		}
		if r.query != cb.RawQuery || r.route != "chat/fast" || r.attempt != "1" || r.contentType != "application/json" {
			t.Errorf("request %s: query %q route %q attempt %q content type %q", r.id, r.query, r.route, r.attempt, r.contentType)
		}
	}
	close(release)
	eventually(t, 10*time.Second, "the slow route to catch up", func() bool { return slow.count() == n })
	eventually(t, 10*time.Second, "dead-route retries", func() bool {
		return metricValue(t, reg, "callback_router_delivery_retries_total", map[string]string{"route": "chat/dead"}) >= 2*n
	})
	if got := metricValue(t, reg, "callback_router_spool_depth", map[string]string{"route": "chat/fast"}); got != 0 {
		t.Errorf("fast route depth = %v, want 0", got)
	}
	if got := metricValue(t, reg, "callback_router_spool_depth", map[string]string{"route": "chat/dead"}); got != n {
		t.Errorf("dead route depth = %v, want %d", got, n)
	}
	if got := metricValue(t, reg, "callback_router_spool_oldest_age_seconds", map[string]string{"route": "chat/dead"}); got <= 0 {
		t.Errorf("dead route oldest age = %v, want > 0", got)
	}
	if got := metricValue(t, reg, "callback_router_deliveries_total", map[string]string{"route": "chat/fast", "outcome": OutcomeDelivered}); got != n {
		t.Errorf("fast route delivered = %v, want %d", got, n)
	}
}

func TestRetriesKeepIDAndCountAttempts(t *testing.T) {
	b := newBackend(t, func(_ *http.Request, n int) int {
		if n < 3 {
			return http.StatusBadGateway
		}
		return http.StatusNoContent
	})
	s, reg := openSpool(t, t.TempDir(), Options{})
	run(t, s)
	cb := sampleCallback(t, 1)
	if err := s.Enqueue(context.Background(), cb, []callback.Target{target("ns/r", b.URL, 5)}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "three attempts", func() bool { return b.count() == 3 })
	eventually(t, 5*time.Second, "the payload to be freed", func() bool { return s.Bytes() == 0 })
	for i, r := range b.requests() {
		if r.id != cb.ID {
			t.Errorf("attempt %d: X-Callback-Id %q, want %q", i+1, r.id, cb.ID)
		}
		if want := string(rune('1' + i)); r.attempt != want {
			t.Errorf("attempt %d: X-Callback-Attempt %q", i+1, r.attempt)
		}
	}
	if got := metricValue(t, reg, "callback_router_delivery_retries_total", map[string]string{"route": "ns/r"}); got != 2 {
		t.Errorf("retries = %v, want 2", got)
	}
	time.Sleep(50 * time.Millisecond)
	if got := b.count(); got != 3 {
		t.Errorf("backend got %d requests after success, want 3", got)
	}
}

func TestRetryClassification(t *testing.T) {
	tests := map[string]struct {
		// status the backend answers on the first attempt (then 200)
		status int
		// whether a second attempt must follow
		retried bool
	}{
		"400 is dead-lettered at once":   {status: http.StatusBadRequest},
		"401 is dead-lettered at once":   {status: http.StatusUnauthorized},
		"404 is dead-lettered at once":   {status: http.StatusNotFound},
		"redirect is not followed":       {status: http.StatusFound},
		"408 is retried":                 {status: http.StatusRequestTimeout, retried: true},
		"429 is retried":                 {status: http.StatusTooManyRequests, retried: true},
		"500 is retried":                 {status: http.StatusInternalServerError, retried: true},
		"503 is retried":                 {status: http.StatusServiceUnavailable, retried: true},
		"2xx other than 200 is accepted": {status: http.StatusAccepted},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			b := newBackend(t, func(r *http.Request, n int) int {
				if n == 1 {
					return tc.status
				}
				return http.StatusOK
			})
			s, reg := openSpool(t, t.TempDir(), Options{})
			run(t, s)
			if err := s.Enqueue(context.Background(), sampleCallback(t, 1), []callback.Target{target("ns/r", b.URL, 5)}); err != nil {
				t.Fatal(err)
			}
			eventually(t, 5*time.Second, "the spool to settle", func() bool {
				dl, _ := s.DeadLetters(Filter{})
				return len(dl) == 1 || metricValue(t, reg, "callback_router_deliveries_total",
					map[string]string{"outcome": OutcomeDelivered}) == 1
			})
			time.Sleep(30 * time.Millisecond) // a wrong retry would come within 20ms
			wantCount, wantDead := 1, 0
			if tc.retried {
				wantCount = 2
			} else if tc.status >= 300 {
				wantDead = 1
			}
			if got := b.count(); got != wantCount {
				t.Errorf("backend got %d attempts, want %d", got, wantCount)
			}
			dl, err := s.DeadLetters(Filter{})
			if err != nil {
				t.Fatal(err)
			}
			if len(dl) != wantDead {
				t.Fatalf("dead letters = %d, want %d", len(dl), wantDead)
			}
			if wantDead == 1 && dl[0].Attempts != 1 {
				t.Errorf("dead letter attempts = %d, want 1", dl[0].Attempts)
			}
		})
	}
}

func TestConnectionErrorsAndTimeoutsAreRetried(t *testing.T) {
	// A port with nothing listening: connection refused.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := "http://" + l.Addr().String()
	_ = l.Close()
	hang := newBackend(t, func(r *http.Request, _ int) int {
		<-r.Context().Done() // never answers in time
		return http.StatusOK
	})

	s, _ := openSpool(t, t.TempDir(), Options{})
	run(t, s)
	slowTarget := target("ns/hang", hang.URL, 2)
	slowTarget.Timeout = 50 * time.Millisecond
	if err := s.Enqueue(context.Background(), sampleCallback(t, 1),
		[]callback.Target{target("ns/refused", refused, 3), slowTarget}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "both routes to dead-letter", func() bool {
		dl, _ := s.DeadLetters(Filter{})
		return len(dl) == 2
	})
	byRoute := map[string]DeadLetter{}
	dls, _ := s.DeadLetters(Filter{})
	for _, dl := range dls {
		byRoute[dl.Route] = dl
	}
	if dl := byRoute["ns/refused"]; dl.Attempts != 3 || dl.LastError == "" {
		t.Errorf("refused: %+v, want 3 attempts and an error", dl)
	}
	if dl := byRoute["ns/hang"]; dl.Attempts != 2 || dl.LastError != "timed out after 50ms" {
		t.Errorf("hang: attempts %d, error %q", dl.Attempts, dl.LastError)
	}
	if got := hang.count(); got != 2 {
		t.Errorf("hanging backend got %d attempts, want 2", got)
	}
}

func TestRetryAfterIsHonoured(t *testing.T) {
	// The backend answers 429 with Retry-After: 1; the route's own backoff is 5-20ms.
	b := newBackendW(t, func(w http.ResponseWriter, _ *http.Request, n int) int {
		if n == 1 {
			w.Header().Set("Retry-After", "1")
			return http.StatusTooManyRequests
		}
		return http.StatusOK
	})
	s, _ := openSpool(t, t.TempDir(), Options{})
	run(t, s)
	if err := s.Enqueue(context.Background(), sampleCallback(t, 1), []callback.Target{target("ns/r", b.URL, 5)}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the retry", func() bool { return b.count() == 2 })
	got := b.requests()
	if gap := got[1].at.Sub(got[0].at); gap < 950*time.Millisecond {
		t.Errorf("retried after %s, want at least Retry-After (1s)", gap)
	}
}

func TestDeadLetterAndRedrive(t *testing.T) {
	var healthy atomic.Bool
	b := newBackend(t, func(*http.Request, int) int {
		if healthy.Load() {
			return http.StatusOK
		}
		return http.StatusInternalServerError
	})
	// No breaker: the callbacks must use up their attempts here.
	s, reg := openSpool(t, t.TempDir(), Options{Delivery: dctl.Options{BreakerFailures: -1}})
	run(t, s)
	cb1, cb2 := sampleCallback(t, 1), sampleCallback(t, 2)
	for _, cb := range []*callback.Callback{cb1, cb2} {
		if err := s.Enqueue(context.Background(), cb, []callback.Target{target("ns/r", b.URL, 3)}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 5*time.Second, "two dead letters", func() bool {
		dl, _ := s.DeadLetters(Filter{})
		return len(dl) == 2
	})
	// The metrics follow the committed write (the in-memory queue is updated when the
	// write's group commit finishes), so a scrape may briefly lag the store: wait for them.
	eventually(t, 5*time.Second, "the dead letters counted and out of the depth", func() bool {
		return metricValue(t, reg, "callback_router_dead_letters_total", map[string]string{"route": "ns/r"}) == 2 &&
			metricValue(t, reg, "callback_router_spool_depth", map[string]string{"route": "ns/r"}) == 0
	})
	dls, err := s.DeadLetters(Filter{ID: cb1.ID})
	if err != nil {
		t.Fatal(err)
	}
	if len(dls) != 1 {
		t.Fatalf("filter by ID: %d dead letters", len(dls))
	}
	dl := dls[0]
	if dl.Attempts != 3 || dl.Route != "ns/r" || dl.Command != c2cCommand || dl.BodyBytes != len(cb1.Body) ||
		dl.LastError != `HTTP 500: {"ok":false}` || dl.DeadAt.IsZero() {
		t.Errorf("dead letter = %+v", dl)
	}
	if got := metricValue(t, reg, "callback_router_dead_letters_total", map[string]string{"route": "ns/r"}); got != 2 {
		t.Errorf("dead_letters_total = %v, want 2", got)
	}
	if got := metricValue(t, reg, "callback_router_spool_depth", map[string]string{"route": "ns/r"}); got != 0 {
		t.Errorf("depth = %v, want 0 (dead letters are not pending)", got)
	}
	if s.Bytes() == 0 {
		t.Error("dead letters must keep their payload")
	}

	healthy.Store(true)
	before := b.count()
	n, err := s.Redrive(context.Background(), Filter{ID: cb1.ID})
	if err != nil || n != 1 {
		t.Fatalf("Redrive = %d, %v; want 1", n, err)
	}
	eventually(t, 5*time.Second, "the redriven callback", func() bool { return b.count() == before+1 })
	last := b.requests()[before]
	if last.id != cb1.ID || last.attempt != "1" {
		t.Errorf("redriven request: id %q attempt %q", last.id, last.attempt)
	}
	if dls, _ := s.DeadLetters(Filter{}); len(dls) != 1 || dls[0].ID != cb2.ID {
		t.Errorf("after redrive: %+v, want only %s", dls, cb2.ID)
	}
	n, err = s.PurgeDeadLetters(context.Background(), Filter{Route: "ns/r"})
	if err != nil || n != 1 {
		t.Fatalf("Purge = %d, %v; want 1", n, err)
	}
	eventually(t, 5*time.Second, "an empty spool", func() bool { return s.Bytes() == 0 })
}

func TestRestartResumesPendingAndAttemptCount(t *testing.T) {
	dir := t.TempDir()
	b := newBackend(t, func(_ *http.Request, n int) int {
		if n <= 2 {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})
	tgt := target("ns/r", b.URL, 10)
	tgt.InitialBackoff, tgt.MaxBackoff = 200*time.Millisecond, 200*time.Millisecond

	s, reg := openSpool(t, dir, Options{})
	// Enqueued before Run: kept until a Run delivers it.
	cb := sampleCallback(t, 1)
	if err := s.Enqueue(context.Background(), cb, []callback.Target{tgt}); err != nil {
		t.Fatal(err)
	}
	stop := run(t, s)
	eventually(t, 5*time.Second, "the first failed attempt", func() bool {
		return metricValue(t, reg, "callback_router_delivery_retries_total", map[string]string{"route": "ns/r"}) == 1
	})
	stop() // Close below commits the recorded failure
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Enqueue(context.Background(), cb, []callback.Target{tgt}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Enqueue after Close = %v, want ErrClosed", err)
	}

	s2, _ := openSpool(t, dir, Options{})
	run(t, s2)
	eventually(t, 5*time.Second, "delivery after restart", func() bool { return b.count() == 3 })
	reqs := b.requests()
	for i, want := range []string{"1", "2", "3"} {
		if reqs[i].attempt != want || reqs[i].id != cb.ID {
			t.Errorf("request %d: attempt %q id %q, want attempt %s", i, reqs[i].attempt, reqs[i].id, want)
		}
	}
	eventually(t, 5*time.Second, "the payload to be freed", func() bool { return s2.Bytes() == 0 })
}

func TestMaxBytes(t *testing.T) {
	cb := sampleCallback(t, 1)
	tgt := target("ns/r", "http://127.0.0.1:1/unused", 3)
	one := int64(8 + len(encodeCallback(cb)) + keyLen + len(encodeDelivery(&delivery{Target: normalizeTarget(tgt), NextAt: time.Now()})))
	s, reg := openSpool(t, t.TempDir(), Options{MaxBytes: 3*one + one/2})
	for i := range 3 {
		if err := s.Enqueue(context.Background(), sampleCallback(t, 1), []callback.Target{tgt}); err != nil {
			t.Fatalf("Enqueue %d: %v", i, err)
		}
	}
	err := s.Enqueue(context.Background(), cb, []callback.Target{tgt})
	if !errors.Is(err, ErrFull) {
		t.Fatalf("Enqueue past MaxBytes = %v, want ErrFull", err)
	}
	if got := s.Bytes(); got != 3*one {
		t.Errorf("Bytes = %d, want %d", got, 3*one)
	}
	if got := metricValue(t, reg, "callback_router_spool_enqueued_total", map[string]string{"result": "full"}); got != 1 {
		t.Errorf("enqueued{full} = %v, want 1", got)
	}
	// A smaller callback that still fits is accepted.
	small := *cb
	small.Body = []byte(`{}`)
	if err := s.Enqueue(context.Background(), &small, []callback.Target{tgt}); err != nil {
		t.Errorf("a callback that fits: %v", err)
	}
}

func TestOpenErrors(t *testing.T) {
	t.Run("a file in place of the directory", func(t *testing.T) {
		f := filepath.Join(t.TempDir(), "file")
		if err := os.WriteFile(f, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := Open(f, Options{}); err == nil {
			t.Fatal("Open on a file succeeded")
		}
	})
	t.Run("a spool held by another opener", func(t *testing.T) {
		dir := t.TempDir()
		openSpool(t, dir, Options{})
		start := time.Now()
		_, err := Open(dir, Options{LockTimeout: 100 * time.Millisecond})
		if !errors.Is(err, ErrInUse) {
			t.Fatalf("second Open = %v, want ErrInUse", err)
		}
		if time.Since(start) > 2*time.Second {
			t.Errorf("second Open took %s, want about LockTimeout", time.Since(start))
		}
	})
	t.Run("metrics registered twice", func(t *testing.T) {
		s, reg := openSpool(t, t.TempDir(), Options{})
		_, err := Open(t.TempDir(), Options{Registerer: reg})
		if err == nil {
			t.Fatal("second spool on one registry succeeded")
		}
		_ = s.Close()
		s3, err := Open(t.TempDir(), Options{Registerer: reg})
		if err != nil {
			t.Fatalf("Open after Close freed the metrics: %v", err)
		}
		_ = s3.Close()
	})
}

func TestEnqueueWithoutTargetsAndRunAfterClose(t *testing.T) {
	s, _ := openSpool(t, t.TempDir(), Options{})
	if err := s.Enqueue(context.Background(), sampleCallback(t, 1), nil); err != nil {
		t.Errorf("Enqueue with no targets: %v", err)
	}
	if s.Bytes() != 0 {
		t.Errorf("nothing routed, yet Bytes = %d", s.Bytes())
	}
	_ = s.Close()
	if err := s.Run(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Run after Close = %v, want ErrClosed", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestConcurrencyPerRouteIsBounded(t *testing.T) {
	const limit, n = 3, 30
	var inFlight, peak atomic.Int32
	b := newBackend(t, func(*http.Request, int) int {
		cur := inFlight.Add(1)
		defer inFlight.Add(-1)
		for {
			p := peak.Load()
			if cur <= p || peak.CompareAndSwap(p, cur) {
				break
			}
		}
		time.Sleep(50 * time.Millisecond) // long enough for the dispatcher to fill every slot
		return http.StatusOK
	})
	s, _ := openSpool(t, t.TempDir(), Options{MaxConcurrencyPerRoute: limit})
	for i := range n {
		if err := s.Enqueue(context.Background(), sampleCallback(t, i), []callback.Target{target("ns/r", b.URL, 3)}); err != nil {
			t.Fatal(err)
		}
	}
	run(t, s)
	eventually(t, 10*time.Second, "every delivery", func() bool { return b.count() == n })
	if got := peak.Load(); got != limit {
		t.Errorf("peak concurrency = %d, want %d", got, limit)
	}
}

func TestBackoff(t *testing.T) {
	tgt := &callback.Target{InitialBackoff: time.Second, MaxBackoff: 30 * time.Second}
	for n, want := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second, 5: 16 * time.Second, 6: 30 * time.Second, 200: 30 * time.Second} {
		for range 50 {
			got := backoff(tgt, n, 0, time.Hour)
			if got < want/2 || got > want {
				t.Fatalf("backoff(attempt %d) = %s, want in [%s, %s]", n, got, want/2, want)
			}
		}
	}
	if got := backoff(tgt, 1, 10*time.Minute, 5*time.Minute); got != 5*time.Minute {
		t.Errorf("Retry-After past the cap: %s, want 5m", got)
	}
	if got := backoff(tgt, 1, 10*time.Second, time.Hour); got != 10*time.Second {
		t.Errorf("Retry-After 10s: %s", got)
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for v, want := range map[string]time.Duration{
		"": 0, "3": 3 * time.Second, "-1": 0, "soon": 0,
		now.Add(90 * time.Second).Format(http.TimeFormat): 90 * time.Second,
		now.Add(-time.Minute).Format(http.TimeFormat):     0,
	} {
		if got := parseRetryAfter(v, now); got != want {
			t.Errorf("parseRetryAfter(%q) = %s, want %s", v, got, want)
		}
	}
}

func TestBindFlags(t *testing.T) {
	var o Options
	fs := flag.NewFlagSet("receiver", flag.ContinueOnError)
	o.BindFlags(fs)
	if o.MaxBytes != DefaultMaxBytes || o.MaxConcurrencyPerRoute != DefaultMaxConcurrencyPerRoute || o.DeadLetterRetention != 0 {
		t.Errorf("defaults: %+v", o)
	}
	err := fs.Parse([]string{"--spool-max-bytes", "1048576", "--spool-max-concurrency-per-route", "4",
		"--spool-max-batch", "64", "--spool-max-retry-after", "10m", "--dead-letter-retention", "168h", "--spool-lock-timeout", "5s"})
	if err != nil {
		t.Fatal(err)
	}
	want := Options{MaxBytes: 1 << 20, MaxConcurrencyPerRoute: 4, MaxBatchSize: 64, MaxRetryAfter: 10 * time.Minute,
		DeadLetterRetention: 168 * time.Hour, LockTimeout: 5 * time.Second}
	if o.MaxBytes != want.MaxBytes || o.MaxConcurrencyPerRoute != want.MaxConcurrencyPerRoute || o.MaxBatchSize != want.MaxBatchSize ||
		o.MaxRetryAfter != want.MaxRetryAfter || o.DeadLetterRetention != want.DeadLetterRetention || o.LockTimeout != want.LockTimeout {
		t.Errorf("parsed %+v, want %+v", o, want)
	}
}

func TestDeadLetterRetention(t *testing.T) {
	b := newBackend(t, func(*http.Request, int) int { return http.StatusBadRequest })
	s, _ := openSpool(t, t.TempDir(), Options{DeadLetterRetention: 100 * time.Millisecond, RetentionSweepInterval: 20 * time.Millisecond})
	run(t, s)
	if err := s.Enqueue(context.Background(), sampleCallback(t, 1), []callback.Target{target("ns/r", b.URL, 3)}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "a dead letter", func() bool {
		dl, _ := s.DeadLetters(Filter{})
		return len(dl) == 1
	})
	eventually(t, 5*time.Second, "the retention sweep", func() bool {
		dl, _ := s.DeadLetters(Filter{})
		return len(dl) == 0 && s.Bytes() == 0
	})
}
