package cli

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/callback-router/callback-router/api/v1alpha1"
	"github.com/callback-router/callback-router/webhook/callback"
	"github.com/callback-router/callback-router/webhook/samples"
	"github.com/callback-router/callback-router/webhook/spool"
)

// lockedBuffer is a bytes.Buffer safe for a process's output and the test to share.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startReceiver runs the real binary's receiver with args on a free loopback address and
// returns the process, its address and its output; the process is killed at cleanup.
func startReceiver(t *testing.T, args ...string) (*exec.Cmd, string, *lockedBuffer) {
	t.Helper()
	addr := freeAddr(t)
	logs := &lockedBuffer{}
	cmd := exec.Command(binary(t), append([]string{"receiver", "--listen", addr}, args...)...)
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("receiver output:\n%s", logs.String())
		}
	})
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
	return cmd, addr, logs
}

// rssBytes is the resident set size of process pid, from /proc.
func rssBytes(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Skipf("no /proc here: %v", err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) == 3 && f[0] == "VmRSS:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmRSS in /proc status")
	return 0
}

// TestReceiverMemoryUnderUnsignedFlood: 1,000 unsigned connections that each declare a
// 1 MiB body (half send only their head, half also 64 KiB of it) keep the real receiver
// process under 128 MiB RSS, while signed callbacks keep being answered by their Sync
// backend. Before, bodies were buffered as declared before anything was verified: 200
// such connections took RSS from 29 to 232 MiB.
func TestReceiverMemoryUnderUnsignedFlood(t *testing.T) {
	const (
		conns    = 1000
		limitRSS = 128 << 20
	)
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, `{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"","answeredBy":"backend"}`)
	}))
	defer be.Close()
	dir := t.TempDir()
	routes := filepath.Join(dir, "routes.yaml")
	if err := os.WriteFile(routes, []byte(strings.ReplaceAll(cliRoutes, "BACKEND", be.URL)), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd, addr, _ := startReceiver(t, "--routes", routes, "--spool-dir", filepath.Join(dir, "spool"))
	base := rssBytes(t, cmd.Process.Pid)

	head := "POST /tencent?SdkAppid=1400000001&CallbackCommand=C2C.CallbackBeforeSendMsg HTTP/1.1\r\n" +
		"Host: receiver\r\nContent-Type: application/json\r\nContent-Length: 1048576\r\n\r\n"
	chunk := bytes.Repeat([]byte("x"), 64<<10)
	var open []net.Conn
	defer func() {
		for _, c := range open {
			_ = c.Close()
		}
	}()
	for i := range conns {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		open = append(open, c)
		_ = c.SetWriteDeadline(time.Now().Add(2 * time.Second))
		if _, err := io.WriteString(c, head); err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		if i%2 == 1 {
			_, _ = c.Write(chunk) // refused after the head: the write may fail, that is fine
		}
	}
	time.Sleep(500 * time.Millisecond) // let the receiver take in what was sent

	// Signed callbacks are still answered by their backend, while the flood is held open.
	peak := rssBytes(t, cmd.Process.Pid)
	for i := range 20 {
		out, err := exec.Command(binary(t), "send", "--url", "http://"+addr, "--token", "cli-token",
			"--command", "C2C.CallbackBeforeSendMsg").CombinedOutput()
		if err != nil || !strings.Contains(string(out), `"answeredBy":"backend"`) {
			t.Fatalf("signed callback %d during the flood: %v\n%s", i, err, out)
		}
		peak = max(peak, rssBytes(t, cmd.Process.Pid))
	}
	// The unsigned ones were refused (the ones that sent part of their body have their
	// answer by now), never routed.
	refused := 0
	for i := 1; i < conns; i += 2 {
		_ = open[i].SetReadDeadline(time.Now().Add(2 * time.Second))
		line, _ := bufio.NewReader(open[i]).ReadString('\n')
		if strings.HasPrefix(line, "HTTP/1.1 401") {
			refused++
		}
	}
	if refused < conns/2*9/10 {
		t.Errorf("%d of %d unsigned callbacks with a body answered 401", refused, conns/2)
	}
	t.Logf("receiver RSS: %.1f MiB before, %.1f MiB at most with %d unsigned connections declaring 1 MiB bodies open (limit %d MiB)",
		float64(base)/(1<<20), float64(peak)/(1<<20), conns, limitRSS>>20)
	if peak >= limitRSS {
		t.Errorf("receiver RSS %.1f MiB, want under %d MiB", float64(peak)/(1<<20), limitRSS>>20)
	}
}

// TestReceiverRefusesTruncatedSpool: the real binary started on a spool.db that lost its
// tail exits with an error naming the file, instead of dying of SIGBUS on every start.
func TestReceiverRefusesTruncatedSpool(t *testing.T) {
	dir := t.TempDir()
	spoolDir := filepath.Join(dir, "spool")
	sp, err := spool.Open(spoolDir, spool.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	s, _ := samples.Get("tencent-c2c-after-send")
	for i := range 600 {
		cb := &callback.Callback{ID: strconv.Itoa(i), Provider: v1alpha1.ProviderTencentIM, AppID: "1400000001",
			Command: s.Command, Body: s.Body, ReceivedAt: time.Now()}
		if err := sp.Enqueue(context.Background(), cb, []callback.Target{{Route: "chat/archive", URL: "http://127.0.0.1:1",
			Timeout: time.Second, MaxAttempts: 3, InitialBackoff: time.Second, MaxBackoff: time.Second}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(spoolDir, spool.FileName)
	if err := os.Truncate(file, 64<<10); err != nil {
		t.Fatal(err)
	}
	routes := filepath.Join(dir, "routes.yaml")
	if err := os.WriteFile(routes, []byte(strings.ReplaceAll(cliRoutes, "BACKEND", "http://127.0.0.1:1")), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, binary(t), "receiver", "--routes", routes, "--listen", freeAddr(t),
		"--spool-dir", spoolDir).CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("the receiver kept running on a truncated spool:\n%s", out)
	}
	if err == nil || !strings.Contains(string(out), file) || !strings.Contains(string(out), "truncated") || strings.Contains(string(out), "SIGBUS") {
		t.Errorf("want a clean refusal naming %s; exit %v, output:\n%s", file, err, out)
	}
}

// TestDeadLettersAllLogged: a burst of 1,000 dead letters gives 1,000 "Dead-lettered
// callback" lines with the receiver's production logger (JSON, sampling on), which
// otherwise keeps only the first 100 of a message per second and every 100th after.
func TestDeadLettersAllLogged(t *testing.T) {
	const n = 1000
	var out lockedBuffer
	zopts := zap.Options{DestWriter: &out, Level: zapcore.InfoLevel}
	log, unsampled := newLoggers(&zopts)

	// The production logger drops most of such a burst: the reason for the unsampled one.
	for i := range n {
		log.Info("Burst line", "i", i)
	}
	if c := strings.Count(out.String(), "Burst line"); c >= n {
		t.Fatalf("the sampled logger kept all %d lines; the test shows nothing", c)
	}

	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusBadRequest) // not retryable: dead at once
	}))
	defer be.Close()
	sp, err := spool.Open(t.TempDir(), spool.Options{NoSync: true, Logger: log.WithName("spool"), DeadLetterLogger: unsampled.WithName("spool")})
	if err != nil {
		t.Fatal(err)
	}
	s, _ := samples.Get("tencent-c2c-after-send")
	tg := []callback.Target{{Route: "chat/archive", URL: be.URL, Timeout: 5 * time.Second, MaxAttempts: 1,
		InitialBackoff: time.Second, MaxBackoff: time.Second}}
	for i := range n {
		cb := &callback.Callback{ID: strconv.Itoa(i), Provider: v1alpha1.ProviderTencentIM, AppID: "1400000001",
			Command: s.Command, Body: s.Body, ReceivedAt: time.Now()}
		if err := sp.Enqueue(context.Background(), cb, tg); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sp.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
		_ = sp.Close()
	}()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		c := strings.Count(out.String(), "Dead-lettered callback")
		if c == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d dead letters logged", c, n)
		}
	}
}
