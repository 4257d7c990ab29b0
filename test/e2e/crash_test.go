// Package e2e runs the callback-router binary as a real process against real loopback
// backends.
package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
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

// crashRoutes fans every C2C after-send callback out to two Async routes of one backend.
const crashRoutes = `---
apiVersion: v1
kind: Secret
metadata: {name: tencent-im, namespace: chat}
stringData: {token: %[1]s}
---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackApp
metadata: {name: chat-prod, namespace: chat}
spec:
  provider: TencentIM
  appID: "%[2]s"
  receiverRef: {name: default}
  verify: {tokenSecretRef: {name: tencent-im}}
---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackRoute
metadata: {name: archive, namespace: chat}
spec:
  appRef: {name: chat-prod}
  commands: [C2C.CallbackAfterSendMsg]
  mode: Async
  backend: {url: "%[3]s", path: /archive, timeout: 2s}
  retry: {maxAttempts: 100, initialBackoff: 50ms, maxBackoff: 500ms}
---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackRoute
metadata: {name: analytics, namespace: chat}
spec:
  appRef: {name: chat-prod}
  commands: ["C2C.*"]
  mode: Async
  backend: {url: "%[3]s", path: /analytics, timeout: 2s}
  retry: {maxAttempts: 100, initialBackoff: 50ms, maxBackoff: 500ms}
`

var routeNames = []string{"chat/archive", "chat/analytics"}

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
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	return addr
}

// receiverProc is a running `callback-router receiver`.
type receiverProc struct {
	cmd  *exec.Cmd
	logs *syncBuffer
	addr string
}

func startReceiver(t *testing.T, bin, routes, spoolDir string) *receiverProc {
	t.Helper()
	return startReceiverWith(t, nil, bin, routes, spoolDir)
}

// startReceiverWith starts the receiver through the command prefix (e.g. a shell setting
// limits; nil for none), with extra flags, and waits for /readyz.
func startReceiverWith(t *testing.T, prefix []string, bin, routes, spoolDir string, extra ...string) *receiverProc {
	t.Helper()
	p := &receiverProc{addr: freeAddr(t), logs: &syncBuffer{max: 1 << 20}}
	argv := append(append(append([]string(nil), prefix...), bin, "receiver", "--routes", routes, "--listen", p.addr, "--spool-dir", spoolDir, "--drain-delay", "0s"), extra...)
	p.cmd = exec.Command(argv[0], argv[1:]...)
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
			_ = p.cmd.Wait()
		}
		if t.Failed() {
			t.Logf("receiver logs (%s):\n%s", p.addr, p.logs.String())
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + p.addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("receiver on %s not ready after 30s: %v\n%s", p.addr, err, p.logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// signedURL is the URL Tencent IM would call, signed with crashToken.
func signedURL(addr string) string {
	rt := strconv.FormatInt(time.Now().Unix(), 10)
	sum := sha256.Sum256([]byte(crashToken + rt))
	return fmt.Sprintf("http://%s/tencent?SdkAppid=%s&CallbackCommand=%s&contenttype=json&ClientIP=127.0.0.1&OptPlatform=RESTAPI&Sign=%s&RequestTime=%s",
		addr, crashAppID, c2cCommand, hex.EncodeToString(sum[:]), rt)
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
	if err := os.WriteFile(routes, fmt.Appendf(nil, crashRoutes, crashToken, crashAppID, "http://"+backendAddr), 0o600); err != nil {
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
				resp, err := client.Post(signedURL(rcv.addr), "application/json", bytes.NewReader(b))
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
							_ = rcv.cmd.Process.Signal(syscall.SIGKILL)
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
	err = rcv.cmd.Wait()
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
	type hit struct{ route, id string }
	var hmu sync.Mutex
	hits := map[hit]int{}
	total := 0
	bl, err := net.Listen("tcp", backendAddr)
	if err != nil {
		t.Fatalf("backend re-listening on %s: %v", backendAddr, err)
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		hmu.Lock()
		hits[hit{r.Header.Get(callback.HeaderRoute), r.Header.Get(callback.HeaderID)}]++
		total++
		hmu.Unlock()
	})}
	go func() { _ = srv.Serve(bl) }()
	t.Cleanup(func() { _ = srv.Close() })

	rcv2 := startReceiver(t, bin, routes, spoolDir)
	missing := func() int {
		hmu.Lock()
		defer hmu.Unlock()
		n := 0
		for id := range acked {
			for _, r := range routeNames {
				if hits[hit{r, id}] == 0 {
					n++
				}
			}
		}
		return n
	}
	deadline := time.Now().Add(crashDeliverTimeout)
	for missing() > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := missing(); n > 0 {
		t.Fatalf("%d of %d acknowledged deliveries lost across kill -9", n, len(acked)*len(routeNames))
	}

	// A graceful stop of the second receiver exits cleanly.
	if err := rcv2.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := rcv2.cmd.Wait(); err != nil {
		t.Errorf("receiver after SIGTERM: %v", err)
	}
	hmu.Lock()
	defer hmu.Unlock()
	dups, unacked := 0, 0
	for h, n := range hits {
		dups += n - 1
		if !acked[h.id] {
			unacked++
		}
	}
	t.Logf("backend got %d requests for %d acknowledged callbacks x %d routes: %d duplicates; %d deliveries of callbacks stored but whose OK the kill cut off",
		total, len(acked), len(routeNames), dups, unacked)
}

// syncBuffer is a goroutine-safe buffer that keeps the first max bytes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
	max int
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if room := b.max - b.buf.Len(); room > 0 {
		b.buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

var _ io.Writer = (*syncBuffer)(nil)
