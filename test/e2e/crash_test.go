// Package e2e runs the callback-router binary as a real process against real loopback
// backends.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/callback-router/callback-router/api/v1alpha1"
	"github.com/callback-router/callback-router/internal/testenv"
	"github.com/callback-router/callback-router/webhook/callback"
)

// Bounds of the crash test.
const (
	// crashKillAfter is how many 200 OKs the receiver must give before it is killed.
	crashKillAfter = 400
	// crashPosters is the number of concurrent senders (the IM platform's connections).
	crashPosters = 16
	// crashMaxPosts bounds the posts should the kill never come.
	crashMaxPosts = 5000
	// crashDeliverTimeout bounds waiting for every acknowledged callback after the restart.
	crashDeliverTimeout = 90 * time.Second
	// crashToken is the Tencent IM callback token of the test routes.
	crashToken = "e2e-crash-token"
	crashAppID = "1400000001"
	c2cCommand = "C2C.CallbackAfterSendMsg"
)

// routeNames are the routes of testenv.FanOutRoutes, the test routes.
var routeNames = testenv.FanOutRouteNames

// buildBinary builds callback-router from the repository root into a temp dir.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin, err := testenv.BuildBinary(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// freeAddr returns a loopback address nothing listens on.
func freeAddr(t *testing.T) string { return testenv.FreeAddr(t) }

// startReceiver starts the receiver on spoolDir and waits for /readyz.
func startReceiver(t *testing.T, bin, routes, spoolDir string) *testenv.ReceiverProc {
	t.Helper()
	return startReceiverWith(t, nil, bin, routes, spoolDir)
}

// startReceiverWith starts the receiver through the command prefix (e.g. a shell setting
// limits; nil for none), with extra flags, and waits for /readyz.
func startReceiverWith(t *testing.T, prefix []string, bin, routes, spoolDir string, extra ...string) *testenv.ReceiverProc {
	t.Helper()
	return testenv.StartReceiver(t, prefix, bin, routes, append([]string{"--spool-dir", spoolDir}, extra...)...)
}

// signedURL is the URL Tencent IM would call, signed with crashToken.
func signedURL(addr string) string {
	return testenv.SignedTencentURL(addr, crashToken, crashAppID, c2cCommand)
}

// TestReceiverCrashKill9 is the durability promise through the real binary: while the
// backend is down the receiver acknowledges hundreds of signed Tencent callbacks, each
// fanned out to two Async routes; it is killed with SIGKILL mid-stream; the backend comes
// up; a new receiver on the same --spool-dir must deliver every acknowledged callback to
// both routes. Duplicates are allowed (at-least-once) and counted; losses fail the test.
func TestReceiverCrashKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildBinary(t)
	sample, err := os.ReadFile(filepath.Join("testdata", "tencent-c2c-after-send.json"))
	if err != nil {
		t.Fatal(err)
	}
	var body map[string]any
	if err := json.Unmarshal(sample, &body); err != nil {
		t.Fatal(err)
	}

	work := t.TempDir()
	spoolDir := filepath.Join(work, "spool")
	backendAddr := freeAddr(t) // down until after the crash
	routes := filepath.Join(work, "routes.yaml")
	if err := os.WriteFile(routes, fmt.Appendf(nil, testenv.FanOutRoutes, crashToken, crashAppID, "http://"+backendAddr), 0o600); err != nil {
		t.Fatal(err)
	}

	// Each callback is the sample with its own MsgKey, so its own X-Callback-Id.
	var bodyMu sync.Mutex
	makeBody := func(i int64) []byte {
		bodyMu.Lock()
		defer bodyMu.Unlock()
		body["MsgKey"] = fmt.Sprintf("e2e_%d", i)
		b, err := json.Marshal(body)
		if err != nil {
			panic(err)
		}
		return b
	}

	// Phase 1: acknowledge callbacks with the backend down, then kill -9 mid-stream.
	rcv := startReceiver(t, bin, routes, spoolDir)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: crashPosters}}
	var (
		mu        sync.Mutex
		acked     = map[string]bool{}
		other     = map[int]int{} // non-200 answers by status (0: no answer)
		next      atomic.Int64
		killOnce  sync.Once
		killed    = make(chan struct{})
		wg        sync.WaitGroup
		sendUntil = time.Now().Add(60 * time.Second)
	)
	for range crashPosters {
		wg.Go(func() {
			for time.Now().Before(sendUntil) {
				select {
				case <-killed:
					return
				default:
				}
				i := next.Add(1)
				if i > crashMaxPosts {
					return
				}
				b := makeBody(i)
				resp, err := client.Post(signedURL(rcv.Addr), "application/json", bytes.NewReader(b))
				if err != nil {
					mu.Lock()
					other[0]++
					mu.Unlock()
					continue
				}
				answer, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				mu.Lock()
				if resp.StatusCode == http.StatusOK && bytes.Contains(answer, []byte(`"ActionStatus":"OK"`)) {
					acked[callback.ComputeID(v1alpha1.ProviderTencentIM, c2cCommand, b)] = true
					if len(acked) >= crashKillAfter {
						killOnce.Do(func() {
							_ = rcv.Cmd.Process.Signal(syscall.SIGKILL)
							close(killed)
						})
					}
				} else {
					other[resp.StatusCode]++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	err = rcv.Cmd.Wait()
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) || !exitErr.Sys().(syscall.WaitStatus).Signaled() {
		t.Fatalf("receiver was not killed by SIGKILL: %v (acked %d, other answers %v)", err, len(acked), other)
	}
	t.Logf("receiver acknowledged %d callbacks before kill -9; other answers by status (0 = connection error): %v", len(acked), other)
	for status := range other {
		if status != 0 {
			t.Errorf("receiver answered %d before the kill; want only 200 OKs", status)
		}
	}

	// Phase 2: the backend comes up, a new receiver resumes from the same spool.
	backend := serveDeliveries(t, backendAddr)
	rcv2 := startReceiver(t, bin, routes, spoolDir)
	backend.waitDelivered(t, acked, " across kill -9")

	// A graceful stop of the second receiver exits cleanly.
	if err := rcv2.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := rcv2.Cmd.Wait(); err != nil {
		t.Errorf("receiver after SIGTERM: %v", err)
	}
	backend.mu.Lock()
	defer backend.mu.Unlock()
	dups, unacked := 0, 0
	for h, n := range backend.hits {
		dups += n - 1
		if !acked[h.id] {
			unacked++
		}
	}
	t.Logf("backend got %d requests for %d acknowledged callbacks x %d routes: %d duplicates; %d deliveries of callbacks stored but whose OK the kill cut off",
		backend.total, len(acked), len(routeNames), dups, unacked)
}

// deliveryKey is one delivery: a route and a callback ID.
type deliveryKey struct{ route, id string }

// deliveryBackend is a loopback backend that counts deliveries per route and callback ID.
type deliveryBackend struct {
	mu    sync.Mutex
	hits  map[deliveryKey]int
	total int
}

// serveDeliveries starts a deliveryBackend on addr until the test's end.
func serveDeliveries(t *testing.T, addr string) *deliveryBackend {
	t.Helper()
	b := &deliveryBackend{hits: map[deliveryKey]int{}}
	bl, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("backend listening on %s: %v", addr, err)
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		b.mu.Lock()
		b.hits[deliveryKey{r.Header.Get(callback.HeaderRoute), r.Header.Get(callback.HeaderID)}]++
		b.total++
		b.mu.Unlock()
	})}
	go func() { _ = srv.Serve(bl) }()
	t.Cleanup(func() { _ = srv.Close() })
	return b
}

// missing counts the deliveries of acknowledged callbacks, on every route of routeNames,
// the backend has not received.
func (b *deliveryBackend) missing(acked map[string]bool) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for id := range acked {
		for _, r := range routeNames {
			if b.hits[deliveryKey{r, id}] == 0 {
				n++
			}
		}
	}
	return n
}

// waitDelivered waits up to crashDeliverTimeout until the backend has received every
// acknowledged callback on every route of routeNames, and fails t with how many it has
// not ("... lost" followed by after, e.g. " across kill -9").
func (b *deliveryBackend) waitDelivered(t *testing.T, acked map[string]bool, after string) {
	t.Helper()
	deadline := time.Now().Add(crashDeliverTimeout)
	for b.missing(acked) > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := b.missing(acked); n > 0 {
		t.Fatalf("%d of %d acknowledged deliveries lost%s", n, len(acked)*len(routeNames), after)
	}
}
