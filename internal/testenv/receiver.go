package testenv

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"
)

// FanOutRoutes is a routes file (format it with the Tencent IM token, the app ID and the
// backend URL, in that order) that fans every C2C after-send callback out to two Async
// routes of one backend, FanOutRouteNames. The crash tests of the file spool (test/e2e)
// and of the JetStream spool (test/jetstream) share it.
const FanOutRoutes = `---
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

// FanOutRouteNames are the routes of FanOutRoutes, as namespace/name.
var FanOutRouteNames = []string{"chat/archive", "chat/analytics"}

// FreeAddr returns a loopback address nothing listens on.
func FreeAddr(t testing.TB) string {
	t.Helper()
	l, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	return addr
}

// SyncBuffer is a goroutine-safe buffer that keeps the first Max bytes written to it.
type SyncBuffer struct {
	Max int

	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if room := b.Max - b.buf.Len(); room > 0 {
		b.buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

var _ io.Writer = (*SyncBuffer)(nil)

// Bounds of StartReceiver.
const (
	// ReceiverLogBytes is how much of a started receiver's output is kept.
	ReceiverLogBytes = 1 << 20
	// ReceiverReadyTimeout bounds waiting for a started receiver's /readyz.
	ReceiverReadyTimeout = 30 * time.Second
)

// ReceiverCmd is `bin receiver --routes routes --listen addr --drain-delay 0s extra...`,
// run through the command prefix (e.g. a shell setting limits; nil for none).
func ReceiverCmd(prefix []string, bin, routes, addr string, extra ...string) *exec.Cmd {
	argv := append(append(append([]string(nil), prefix...), bin, "receiver", "--routes", routes, "--listen", addr, "--drain-delay", "0s"), extra...)
	return exec.CommandContext(context.Background(), argv[0], argv[1:]...) //nolint:gosec // the test's own binary and arguments
}

// ReceiverProc is a running `callback-router receiver`.
type ReceiverProc struct {
	Cmd  *exec.Cmd
	Logs *SyncBuffer
	Addr string
}

// StartReceiver starts ReceiverCmd on a free loopback address and waits for /readyz. At
// the test's end it kills the receiver if still running, and logs its output if the test
// failed.
func StartReceiver(t testing.TB, prefix []string, bin, routes string, extra ...string) *ReceiverProc {
	t.Helper()
	p := &ReceiverProc{Addr: FreeAddr(t), Logs: &SyncBuffer{Max: ReceiverLogBytes}}
	p.Cmd = ReceiverCmd(prefix, bin, routes, p.Addr, extra...)
	p.Cmd.Stdout, p.Cmd.Stderr = p.Logs, p.Logs
	if err := p.Cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if p.Cmd.ProcessState == nil {
			_ = p.Cmd.Process.Kill()
			_ = p.Cmd.Wait()
		}
		if t.Failed() {
			t.Logf("receiver logs (%s):\n%s", p.Addr, p.Logs.String())
		}
	})
	deadline := time.Now().Add(ReceiverReadyTimeout)
	for {
		req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, "http://"+p.Addr+"/readyz", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("receiver on %s not ready after %s: %v\n%s", p.Addr, ReceiverReadyTimeout, err, p.Logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// SignedTencentURL is the URL Tencent IM would call on the receiver at addr for command,
// signed with token.
func SignedTencentURL(addr, token, appID, command string) string {
	rt := strconv.FormatInt(time.Now().Unix(), 10)
	sum := sha256.Sum256([]byte(token + rt))
	return fmt.Sprintf("http://%s/tencent?SdkAppid=%s&CallbackCommand=%s&contenttype=json&ClientIP=127.0.0.1&OptPlatform=RESTAPI&Sign=%s&RequestTime=%s",
		addr, appID, command, hex.EncodeToString(sum[:]), rt)
}
