package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Bounds of the end-to-end test.
const (
	// e2eBuildTimeout bounds building callback-router.
	e2eBuildTimeout = 5 * time.Minute
	// e2eWaitTimeout bounds each wait for the receiver or a delivery.
	e2eWaitTimeout = 20 * time.Second
)

// flaky fails the first delivery of every callback with 503, then hands over to the
// archive, recording the X-Callback-Id and X-Callback-Attempt of every request.
type flaky struct {
	next http.Handler
	mu   sync.Mutex
	seen map[string][]string
}

func (f *flaky) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id := r.Header.Get("X-Callback-Id")
	f.mu.Lock()
	f.seen[id] = append(f.seen[id], r.Header.Get("X-Callback-Attempt"))
	first := len(f.seen[id]) == 1
	f.mu.Unlock()
	if first {
		http.Error(w, "warming up", http.StatusServiceUnavailable)
		return
	}
	f.next.ServeHTTP(w, r)
}

func (f *flaky) attempts(id string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.seen[id]...)
}

// TestThroughTheReceiver runs the real callback-router receiver (standalone mode) in front
// of the archiver and sends it the same signed Tencent callback twice, as Tencent's "retry
// on timeout" can. The receiver acknowledges both, retries the archiver's first 503, and
// the archiver stores the message once, keyed by its MsgKey (the X-Callback-Id).
func TestThroughTheReceiver(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the receiver")
	}
	root, err := filepath.Abs(filepath.Join("..", "..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "callback-router")
	ctx, cancel := context.WithTimeout(context.Background(), e2eBuildTimeout)
	defer cancel()
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, ".")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	dir := t.TempDir()
	backend := &flaky{next: &Archive{Dir: dir}, seen: map[string][]string{}}
	srv := httptest.NewServer(backend)
	defer srv.Close()

	routes := filepath.Join(t.TempDir(), "routes.yaml")
	if err := os.WriteFile(routes, []byte(fmt.Sprintf(`apiVersion: v1
kind: Secret
metadata: {name: tencent-im, namespace: chat}
stringData: {token: xxxxyyyy}
---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackApp
metadata: {name: chat-prod, namespace: chat}
spec:
  provider: TencentIM
  appID: "1400000001"
  receiverRef: {name: default}
  verify: {tokenSecretRef: {name: tencent-im}}
---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackRoute
metadata: {name: archive-messages, namespace: chat}
spec:
  appRef: {name: chat-prod}
  commands: [C2C.CallbackAfterSendMsg]
  mode: Async
  backend: {url: %q, path: /archive, timeout: 2s}
  retry: {maxAttempts: 5, initialBackoff: 50ms, maxBackoff: 200ms}
`, srv.URL)), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	recv := exec.Command(bin, "receiver", "--routes", routes, "--listen", addr, "--spool-dir", t.TempDir(),
		"--drain-delay", "10ms")
	var logs bytes.Buffer
	recv.Stdout, recv.Stderr = &logs, &logs
	if err := recv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = recv.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- recv.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Logf("receiver exited: %v", err)
			}
		case <-time.After(e2eWaitTimeout):
			_ = recv.Process.Kill()
			err := <-done
			t.Errorf("receiver did not stop within %s of SIGTERM (killed: %v)", e2eWaitTimeout, err)
		}
		if t.Failed() {
			t.Logf("receiver log:\n%s", logs.String())
		}
	}()
	waitFor(t, "receiver ready", func() bool {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})

	body, err := os.ReadFile("testdata/tencent-c2c-after-send.json")
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		now := strconv.FormatInt(time.Now().Unix(), 10)
		sum := sha256.Sum256([]byte("xxxxyyyy" + now))
		url := "http://" + addr + "/tencent?SdkAppid=1400000001&CallbackCommand=C2C.CallbackAfterSendMsg" +
			"&contenttype=json&ClientIP=127.0.0.1&OptPlatform=RESTAPI&RequestTime=" + now + "&Sign=" + hex.EncodeToString(sum[:])
		resp, err := http.Post(url, "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("receiver answered %d to callback %d", resp.StatusCode, i+1)
		}
	}

	// The id is the command plus the message's MsgKey: the same for both copies and
	// across the retry.
	const id = "C2C.CallbackAfterSendMsg:48374_2837546_1557481126"
	// Copy 1 attempt 1 (503), copy 2 attempt 1, copy 1 attempt 2, in some order.
	waitFor(t, "both copies delivered", func() bool { return len(backend.attempts(id)) >= 3 })
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 1 {
		t.Fatalf("%d files archived for one message sent twice, want 1 (attempts %v)", len(files), backend.attempts(id))
	}
	got := backend.attempts(id)
	slices.Sort(got)
	if !slices.Equal(got, []string{"1", "1", "2"}) {
		t.Errorf("X-Callback-Attempt values %v, want two first attempts and one retry after the 503", got)
	}
	backend.mu.Lock()
	if len(backend.seen) != 1 {
		t.Errorf("deliveries carried %d different X-Callback-Ids, want 1: %v", len(backend.seen), backend.seen)
	}
	backend.mu.Unlock()
}

// waitFor polls cond until it holds or e2eWaitTimeout passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(e2eWaitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
