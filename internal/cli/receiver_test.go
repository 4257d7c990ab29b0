package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/callback-router/callback-router/internal/testenv"
)

func binary(t *testing.T) string { return testenv.Binary(t) }

func TestMain(m *testing.M) {
	code := m.Run()
	testenv.RemoveBinary()
	os.Exit(code)
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

const cliRoutes = `
apiVersion: v1
kind: Secret
metadata: {name: tok, namespace: im}
stringData: {token: cli-token}
---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackApp
metadata: {name: chat, namespace: im}
spec:
  provider: TencentIM
  appID: "1400000001"
  receiverRef: {name: default}
  verify: {tokenSecretRef: {name: tok}}
  allowedRoutes: [{namespaces: {from: All}}]
---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackApp
metadata: {name: openim, namespace: im}
spec:
  provider: OpenIM
  appID: prod
  receiverRef: {name: default}
  allowedRoutes: [{namespaces: {from: All}}]
---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackRoute
metadata: {name: moderation, namespace: chat}
spec:
  appRef: {name: chat, namespace: im}
  commands: [C2C.CallbackBeforeSendMsg]
  mode: Sync
  backend: {url: BACKEND, path: /moderate}
---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackRoute
metadata: {name: archive, namespace: chat}
spec:
  appRef: {name: chat, namespace: im}
  commands: ["C2C.*"]
  backend: {url: BACKEND, path: /archive}
`

// TestReceiverProcess runs the real binary: the receiver on a routes file, `send` with a
// signed sample, a Sync answer and an Async delivery through the spool to a loopback
// backend, a SIGHUP reload, and a graceful SIGTERM.
//
//nolint:gocyclo // one end-to-end scenario told in order; the branches are its waits and checks
func TestReceiverProcess(t *testing.T) {
	bin := binary(t)
	var mu sync.Mutex
	got := map[string][]http.Header{}
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got[r.URL.Path] = append(got[r.URL.Path], r.Header.Clone())
		mu.Unlock()
		_, _ = io.WriteString(w, `{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"","answeredBy":"`+r.URL.Path+`"}`)
	}))
	defer be.Close()
	dir := t.TempDir()
	routes := filepath.Join(dir, "routes.yaml")
	if err := os.WriteFile(routes, []byte(strings.ReplaceAll(cliRoutes, "BACKEND", be.URL)), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	var logs bytes.Buffer
	cmd := exec.Command(bin, "receiver", "--routes", routes, "--listen", addr, "--spool-dir", filepath.Join(dir, "spool"), "--drain-delay", "500ms")
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		select {
		case <-exited: //nolint:errcheck // checked after SIGTERM below, or the test has already failed
		default:
			_ = cmd.Process.Kill()
			<-exited //nolint:errcheck // killed: the exit status is "signal: killed"
		}
		if t.Failed() {
			t.Logf("receiver logs:\n%s", logs.String())
		}
	}()
	ready := func() int {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for deadline := time.Now().Add(20 * time.Second); ready() != 200; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("receiver not ready")
		}
	}
	send := func(args ...string) (string, error) {
		out, err := exec.Command(bin, append([]string{"send", "--url", "http://" + addr}, args...)...).CombinedOutput()
		return string(out), err
	}
	out, err := send("--token", "cli-token", "--command", "C2C.CallbackBeforeSendMsg")
	if err != nil || !strings.Contains(out, "200 OK") || !strings.Contains(out, `"answeredBy":"/moderate"`) {
		t.Errorf("Sync send: %v\n%s", err, out)
	}
	out, err = send("--token", "wrong", "--command", "C2C.CallbackAfterSendMsg")
	if err == nil || !strings.Contains(out, "401") || !strings.Contains(out, `"ActionStatus":"FAIL"`) {
		t.Errorf("forged send: %v\n%s", err, out)
	}
	out, err = send("--token", "cli-token", "--sample", "tencent-c2c-after-send")
	if err != nil || !strings.Contains(out, `{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":""}`) {
		t.Errorf("Async send: %v\n%s", err, out)
	}
	waitFor := func(path string, n int) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			mu.Lock()
			c := len(got[path])
			mu.Unlock()
			if c >= n {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s got %d requests, want %d", path, c, n)
			}
		}
	}
	// The Sync callback also matched C2C.* of the Async route: two archive copies.
	waitFor("/archive", 2)
	mu.Lock()
	h := got["/archive"][len(got["/archive"])-1]
	mu.Unlock()
	if h.Get("X-Callback-Id") != "C2C.CallbackAfterSendMsg:48374_2837546_1557481126" || h.Get("X-Callback-Route") != "chat/archive" {
		t.Errorf("delivered headers %v", h)
	}

	// SIGHUP reloads the file: a new OpenIM route answers.
	more := strings.ReplaceAll(cliRoutes, "BACKEND", be.URL) + `---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackRoute
metadata: {name: openim, namespace: chat}
spec: {appRef: {name: openim, namespace: im}, commands: ["*"], mode: Sync, backend: {url: ` + be.URL + `, path: /openim}}
`
	if err := os.WriteFile(routes, []byte(more), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		out, err = send("--provider", "OpenIM")
		if err == nil && strings.Contains(out, `"answeredBy":"/openim"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("route not live after SIGHUP: %v %s", err, out)
		}
	}

	// SIGTERM: readiness drops at once, the process exits cleanly after the drain delay.
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(400 * time.Millisecond); ready() != 503; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Error("readyz did not turn 503 while draining")
			break
		}
	}
	select {
	case err := <-exited:
		exited <- err
		if err != nil {
			t.Errorf("receiver exited with %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("receiver did not exit after SIGTERM")
	}
	if !strings.Contains(logs.String(), `"msg":"Rejected callback"`) || !strings.Contains(logs.String(), `"reason":"bad_sign"`) {
		t.Error("no log line for the rejected callback")
	}
}

func TestReceiverFlagErrors(t *testing.T) {
	for _, args := range [][]string{
		{"--routes", "x.yaml", "--sync-budget", "2s"},
		{"--routes", "x.yaml", "--max-body-bytes", "0"},
		{"--routes", "x.yaml", "--trusted-proxies", "10.0.0.0/40"},
		{"--routes", "x.yaml", "--openim-timeout", "16s"},
		{"--routes", "x.yaml", "--openim-timeout", "500ms"},
	} {
		if err := runReceiver(append(args, "--spool-dir", t.TempDir())); err == nil {
			t.Errorf("%v accepted", args)
		}
	}
}

func TestBuildSendRequest(t *testing.T) {
	now := time.Unix(1669872112, 0)
	req, err := buildSendRequest(t.Context(), &sendOptions{url: "http://127.0.0.1:8080", provider: "TencentIM", token: "xxxxyyyy", command: "Group.CallbackBeforeSendMsg"}, now)
	if err != nil {
		t.Fatal(err)
	}
	q := req.URL.Query()
	if req.URL.Path != "/tencent" || q.Get("SdkAppid") != DefaultSendTencentApp || q.Get("CallbackCommand") != "Group.CallbackBeforeSendMsg" ||
		q.Get("RequestTime") != "1669872112" || q.Get("Sign") != "17773bc39a671d7b9aa835458704d2a6db81360a5940292b587d6d760d484061" {
		t.Errorf("url %s", req.URL)
	}
	var body map[string]any
	b, _ := io.ReadAll(req.Body)
	if err := json.Unmarshal(b, &body); err != nil || body["CallbackCommand"] != "Group.CallbackBeforeSendMsg" {
		t.Errorf("body command not rewritten: %s", b)
	}

	req, err = buildSendRequest(t.Context(), &sendOptions{url: "http://h:1/base", provider: "OpenIM", basicAuth: "u:p:q"}, now)
	if err != nil {
		t.Fatal(err)
	}
	if req.URL.Path != "/base/callbackAfterSendSingleMsgCommand" {
		t.Errorf("path %s", req.URL.Path)
	}
	if u, p, ok := req.BasicAuth(); !ok || u != "u" || p != "p:q" {
		t.Errorf("basic auth %q %q", u, p)
	}

	req, err = buildSendRequest(t.Context(), &sendOptions{url: "http://h:1", provider: "TencentIM", sample: "tencent-push-offline-push", command: "Push.Future"}, now)
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(req.Body)
	if bytes.Count(b, []byte(`"CallbackCommand":"Push.Future"`)) < 2 || req.URL.Query().Get("Sign") != "" {
		t.Errorf("push events not rewritten or signed without a token: %s %s", b, req.URL)
	}
	for _, bad := range []sendOptions{{url: "http://h", provider: "Slack"}, {url: "http://h", provider: "OpenIM", sample: "tencent-c2c-after-send"}, {url: "nohost", provider: "TencentIM"}} {
		if _, err := buildSendRequest(t.Context(), &bad, now); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

// TestReceiverKill9 acknowledges Async callbacks while the backend fails, kills the
// receiver with SIGKILL, restarts it on the same spool directory with the backend
// healthy, and checks that every acknowledged callback is delivered.
func TestReceiverKill9(t *testing.T) {
	bin := binary(t)
	var mu sync.Mutex
	healthy := false
	delivered := map[string]bool{}
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if !healthy {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		delivered[r.Header.Get("X-Callback-Id")] = true
	}))
	defer be.Close()
	dir := t.TempDir()
	routes := filepath.Join(dir, "routes.yaml")
	yaml := strings.ReplaceAll(`
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackApp
metadata: {name: prod, namespace: chat}
spec: {provider: OpenIM, appID: prod, receiverRef: {name: default}}
---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackRoute
metadata: {name: archive, namespace: chat}
spec:
  appRef: {name: prod}
  commands: ["*"]
  backend: {url: BACKEND, timeout: 1s}
  retry: {maxAttempts: 100, initialBackoff: 50ms, maxBackoff: 200ms}
`, "BACKEND", be.URL)
	if err := os.WriteFile(routes, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	start := func() (*exec.Cmd, chan error) {
		cmd := exec.Command(bin, "receiver", "--routes", routes, "--listen", addr, "--spool-dir", filepath.Join(dir, "spool"), "--drain-delay", "0s")
		cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			if resp, err := http.Get("http://" + addr + "/readyz"); err == nil {
				resp.Body.Close()
				if resp.StatusCode == 200 {
					break
				}
			}
			if time.Now().After(deadline) {
				t.Fatal("receiver not ready")
			}
		}
		return cmd, done
	}
	cmd, done := start()
	const n = 30
	client := &http.Client{Timeout: 5 * time.Second}
	for i := range n {
		body := fmt.Sprintf(`{"callbackCommand":"callbackAfterSendSingleMsgCommand","serverMsgID":"m%d"}`, i)
		resp, err := client.Post("http://"+addr+"/openim/prod/callbackAfterSendSingleMsgCommand", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("callback %d answered %d", i, resp.StatusCode)
		}
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-done //nolint:errcheck // killed: the exit status is "signal: killed"
	mu.Lock()
	healthy = true
	mu.Unlock()
	cmd, done = start()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		if err := <-done; err != nil {
			t.Errorf("receiver exited with %v after SIGTERM", err)
		}
	}()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		mu.Lock()
		got := len(delivered)
		mu.Unlock()
		if got == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d acknowledged callbacks delivered after kill -9 and restart", got, n)
		}
	}
	for i := range n {
		if id := fmt.Sprintf("callbackAfterSendSingleMsgCommand:m%d", i); !delivered[id] {
			t.Errorf("%s not delivered", id)
		}
	}
}

// TestSendFromCallbackApp: `send --routes FILE --callback-app NS/NAME` sends as the app's
// IM platform, with its credentials from the file's Secrets.
func TestSendFromCallbackApp(t *testing.T) {
	routes := filepath.Join(testenv.RepoRoot(), "examples", "routes.yaml")
	for _, tc := range []struct {
		app                               string
		provider, appID, token, basicAuth string
	}{
		{"im-platform/chat-prod", "TencentIM", "1400000001", "quickstart-token", ""},
		{"im-platform/openim-prod", "OpenIM", "prod", "", "openim:openim-pass"},
	} {
		o := sendOptions{routes: routes, callbackApp: tc.app}
		if err := o.fromCallbackApp(); err != nil {
			t.Fatal(err)
		}
		if o.provider != tc.provider || o.app != tc.appID || o.token != tc.token || o.basicAuth != tc.basicAuth {
			t.Errorf("%s: got %+v", tc.app, o)
		}
	}
	o := sendOptions{routes: routes, callbackApp: "im-platform/chat-prod", token: "given"}
	if err := o.fromCallbackApp(); err != nil || o.token != "given" {
		t.Errorf("--token given: %v %q", err, o.token)
	}
	for _, bad := range []sendOptions{{routes: routes, callbackApp: "nowhere/none"}, {callbackApp: "im-platform/chat-prod"}} {
		if err := bad.fromCallbackApp(); err == nil {
			t.Errorf("%+v: no error", bad)
		}
	}
}
