package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/callback-router/callback-router/api/v1alpha1"
	"github.com/callback-router/callback-router/webhook/callback"
	"github.com/callback-router/callback-router/webhook/spool"
)

// runDeadLettersCmd runs the subcommand through the dispatcher and returns its output.
func runDeadLettersCmd(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	old := deadLettersOut
	deadLettersOut = &out
	t.Cleanup(func() { deadLettersOut = old })
	err := Run(append([]string{"deadletters"}, args...))
	return out.String(), err
}

// runSpool runs s until stop is called; stop returns Run's error.
func runSpool(s *spool.Spool) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	return func() error {
		cancel()
		return <-done
	}
}

// deadLetterTwo stores one callback per route in a new spool in dir and runs it until
// the backend's 400 has dead-lettered both, and returns the running spool, its stop func
// and the callbacks' IDs by route.
func deadLetterTwo(t *testing.T, dir, url string) (*spool.Spool, func() error, map[string]string) {
	t.Helper()
	s, err := spool.Open(dir, spool.Options{Logger: logr.Discard()})
	if err != nil {
		t.Fatal(err)
	}
	stop := runSpool(s)
	ids := map[string]string{}
	for i, route := range []string{"chat/archive", "chat/analytics"} {
		body := []byte(`{"CallbackCommand":"C2C.CallbackAfterSendMsg","MsgKey":"k` + string(rune('0'+i)) + `"}`)
		cb := &callback.Callback{
			ID: callback.ComputeID(v1alpha1.ProviderTencentIM, "C2C.CallbackAfterSendMsg", body), Provider: v1alpha1.ProviderTencentIM,
			AppID: "1400000001", Command: "C2C.CallbackAfterSendMsg", Body: body, ReceivedAt: time.Now(),
		}
		ids[route] = cb.ID
		if err := s.Enqueue(context.Background(), cb, []callback.Target{{Route: route, URL: url, MaxAttempts: 5}}); err != nil {
			t.Fatal(err)
		}
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if dls, _ := s.DeadLetters(spool.Filter{}); len(dls) == 2 {
			return s, stop, ids
		}
		if time.Now().After(deadline) {
			t.Fatal("callbacks were not dead-lettered")
		}
	}
}

// checkList checks the table and JSON listings of the two dead letters of deadLetterTwo.
func checkList(t *testing.T, dir string, ids map[string]string) {
	t.Helper()
	out, err := runDeadLettersCmd(t, "list", "--spool-dir", dir)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out, "KEY") || !strings.Contains(out, "chat/archive") || !strings.Contains(out, ids["chat/analytics"]) ||
		!strings.Contains(out, `HTTP 400: {"error":"unknown user"}`) {
		t.Errorf("table output:\n%s", out)
	}

	out, err = runDeadLettersCmd(t, "--spool-dir", dir, "list", "--route", "chat/archive", "--output", "json")
	if err != nil {
		t.Fatal(err)
	}
	var dls []spool.DeadLetter
	if err := json.Unmarshal([]byte(out), &dls); err != nil {
		t.Fatalf("json output %q: %v", out, err)
	}
	if len(dls) != 1 || dls[0].ID != ids["chat/archive"] || dls[0].Attempts != 1 || dls[0].Route != "chat/archive" {
		t.Errorf("json list filtered by route: %+v", dls)
	}
}

func TestDeadLettersCommand(t *testing.T) {
	var accept atomic.Bool
	var delivered atomic.Int32
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !accept.Load() {
			w.WriteHeader(http.StatusBadRequest) // not retryable: dead-lettered at once
			_, _ = w.Write([]byte(`{"error":"unknown user"}`))
			return
		}
		delivered.Add(1)
	}))
	defer backend.Close()

	dir := t.TempDir()
	s, stop, ids := deadLetterTwo(t, dir, backend.URL)
	// While the "receiver" holds the spool, the command refuses clearly.
	_, err := runDeadLettersCmd(t, "list", "--spool-dir", dir, "--lock-timeout", "100ms")
	if err == nil || !strings.Contains(err.Error(), "spool is in use by a running receiver") {
		t.Fatalf("list on a busy spool: %v", err)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	checkList(t, dir, ids)

	if _, err := runDeadLettersCmd(t, "purge", "--spool-dir", dir); err == nil {
		t.Error("purge without a filter or --all succeeded")
	}
	if _, err := runDeadLettersCmd(t, "explode", "--spool-dir", dir); err == nil {
		t.Error("unknown action accepted")
	}
	if _, err := runDeadLettersCmd(t, "list", "--spool-dir", t.TempDir()); err == nil || !strings.Contains(err.Error(), "no spool in") {
		t.Errorf("list on a directory without a spool: %v", err)
	}

	out, err := runDeadLettersCmd(t, "redrive", "--spool-dir", dir, "--id", ids["chat/archive"])
	if err != nil || !strings.Contains(out, "Redrove 1 dead letters") {
		t.Fatalf("redrive: %q, %v", out, err)
	}
	out, err = runDeadLettersCmd(t, "purge", "--spool-dir", dir, "--route", "chat/analytics")
	if err != nil || !strings.Contains(out, "Purged 1 dead letters") {
		t.Fatalf("purge: %q, %v", out, err)
	}
	out, err = runDeadLettersCmd(t, "list", "--spool-dir", dir, "--output", "json")
	if err != nil || strings.TrimSpace(out) != "[]" {
		t.Fatalf("list after redrive and purge: %q, %v", out, err)
	}

	// The next receiver on the directory delivers the redriven callback.
	accept.Store(true)
	s2, err := spool.Open(dir, spool.Options{Logger: logr.Discard()})
	if err != nil {
		t.Fatal(err)
	}
	stop2 := runSpool(s2)
	for deadline := time.Now().Add(5 * time.Second); delivered.Load() < 1; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("redriven callback was not delivered")
		}
	}
	if err := stop2(); err != nil {
		t.Fatal(err)
	}
	if err := s2.Close(); err != nil {
		t.Fatal(err)
	}
	if got := delivered.Load(); got != 1 {
		t.Errorf("delivered %d callbacks, want 1 (the purged one must not come back)", got)
	}
}
