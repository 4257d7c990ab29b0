package spool

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/callback-router/callback-router/webhook/callback"
)

// Environment of the crash helper process.
const (
	crashHelperEnv = "CALLBACK_ROUTER_SPOOL_CRASH_HELPER"
	crashDirEnv    = "CALLBACK_ROUTER_SPOOL_CRASH_DIR"
	crashURLEnv    = "CALLBACK_ROUTER_SPOOL_CRASH_URL"
)

// Bounds of the crash test.
const (
	// crashKillAfter is how many acknowledgements the parent waits for before kill -9.
	crashKillAfter = 500
	// crashHelperMax bounds the helper's enqueues should the kill never come.
	crashHelperMax = 20000
	// crashHelperTime bounds the helper's run should the kill never come.
	crashHelperTime = 60 * time.Second
	// crashHelperWriters is the number of concurrent enqueuers in the helper.
	crashHelperWriters = 32
)

// crashRoutes are the two Async routes every crash-test callback fans out to.
var crashRoutes = []string{"chat/archive", "chat/analytics"}

// TestHelperProcess is not a test: TestCrashKill9 runs the test binary again with
// crashHelperEnv set, and this acts as a receiver. It opens the spool, runs deliveries
// against a backend that is down, enqueues callbacks from many goroutines and prints
// "ACK <id>" for each one Enqueue acknowledged, until it is killed.
func TestHelperProcess(t *testing.T) {
	if os.Getenv(crashHelperEnv) != "1" {
		t.Skip("helper process of TestCrashKill9")
	}
	s, err := Open(os.Getenv(crashDirEnv), Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), crashHelperTime)
	defer cancel()
	go func() { _ = s.Run(ctx) }()
	url := os.Getenv(crashURLEnv)
	var targets []callback.Target
	for _, r := range crashRoutes {
		tgt := target(r, url+"/"+r, 1_000_000)
		tgt.InitialBackoff, tgt.MaxBackoff = 20*time.Millisecond, 200*time.Millisecond
		targets = append(targets, tgt)
	}
	var next atomic.Int64
	var out sync.Mutex
	var wg sync.WaitGroup
	for range crashHelperWriters {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := next.Add(1)
				if i > crashHelperMax {
					return
				}
				cb := sampleCallback(t, int(i))
				if err := s.Enqueue(ctx, cb, targets); err != nil {
					fmt.Fprintln(os.Stderr, "enqueue:", err)
					continue
				}
				out.Lock()
				fmt.Fprintf(os.Stdout, "ACK %s\n", cb.ID) // one write(2): whole line or nothing
				out.Unlock()
			}
		})
	}
	wg.Wait()
	_ = s.Close()
	os.Exit(0)
}

// TestCrashKill9 is the durability promise end to end at the spool level: a real child
// process acknowledges hundreds of callbacks while the backend is down, is killed with
// SIGKILL mid-stream, then the backend comes up, the spool is reopened on the same
// directory, and every acknowledged callback must reach both routes. Duplicates are
// allowed (at-least-once) and counted; a loss fails the test. The second case keeps the
// backend up all along, so the kill lands among deliveries whose results are being
// committed.
func TestCrashKill9(t *testing.T) {
	t.Run("backend down until after the crash", func(t *testing.T) { crashKill9(t, false) })
	t.Run("backend up, kill during deliveries", func(t *testing.T) { crashKill9(t, true) })
}

// hitRecorder is a loopback backend counting requests by route and callback ID.
type hitRecorder struct {
	mu       sync.Mutex
	hits     map[[2]string]int
	requests int
}

func startRecorder(t *testing.T, addr string) *hitRecorder {
	t.Helper()
	h := &hitRecorder{hits: map[[2]string]int{}}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listening on %s: %v", addr, err)
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		h.mu.Lock()
		h.hits[[2]string{r.Header.Get(callback.HeaderRoute), r.Header.Get(callback.HeaderID)}]++
		h.requests++
		h.mu.Unlock()
	})}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return h
}

func crashKill9(t *testing.T, backendUp bool) {
	dir := t.TempDir()
	// Reserve a loopback port and leave it closed: the backend is down.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	var rec *hitRecorder
	if backendUp {
		rec = startRecorder(t, addr)
	}

	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashHelperEnv+"=1", crashDirEnv+"="+dir, crashURLEnv+"=http://"+addr)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &limitedWriter{w: &stderr, n: 64 << 10}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killTimer := time.AfterFunc(2*crashHelperTime, func() { _ = cmd.Process.Kill() })
	defer killTimer.Stop()

	acked := map[string]bool{}
	r := bufio.NewReader(stdout)
	killed := false
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			if !errors.Is(err, io.EOF) {
				t.Fatalf("reading helper output: %v", err)
			}
			break // a partial last line is not an acknowledgement
		}
		id, ok := strings.CutPrefix(strings.TrimSuffix(line, "\n"), "ACK ")
		if !ok {
			t.Fatalf("unexpected helper output %q", line)
		}
		acked[id] = true
		if !killed && len(acked) >= crashKillAfter {
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			killed = true
		}
	}
	err = cmd.Wait()
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) || !exitErr.Sys().(syscall.WaitStatus).Signaled() {
		t.Fatalf("helper was not killed by SIGKILL: %v\nstderr:\n%s", err, stderr.String())
	}
	t.Logf("helper acknowledged %d callbacks before kill -9", len(acked))

	if !backendUp {
		// Bring the backend up on the address the spooled targets name.
		rec = startRecorder(t, addr)
	}
	rec.mu.Lock()
	before := rec.requests
	rec.mu.Unlock()

	s, reg := openSpool(t, dir, Options{})
	run(t, s)
	missing := func() int {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		n := 0
		for id := range acked {
			for _, route := range crashRoutes {
				if rec.hits[[2]string{route, id}] == 0 {
					n++
				}
			}
		}
		return n
	}
	deadline := time.Now().Add(60 * time.Second)
	for missing() > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := missing(); n > 0 {
		t.Fatalf("%d acknowledged deliveries lost after kill -9 (of %d)", n, len(acked)*len(crashRoutes))
	}
	eventually(t, 30*time.Second, "the spool to drain", func() bool {
		return metricValue(t, reg, "callback_router_spool_depth", map[string]string{"route": crashRoutes[0]}) == 0 &&
			metricValue(t, reg, "callback_router_spool_depth", map[string]string{"route": crashRoutes[1]}) == 0
	})
	rec.mu.Lock()
	defer rec.mu.Unlock()
	unacked, dups := 0, 0
	for h, n := range rec.hits {
		if !acked[h[1]] {
			unacked++ // stored but killed before it could print ACK: delivered anyway
		}
		dups += n - 1
	}
	t.Logf("backend got %d requests (%d before the restart) for %d acknowledged callbacks x %d routes: %d duplicates, %d deliveries of callbacks stored but not yet acknowledged at the kill",
		rec.requests, before, len(acked), len(crashRoutes), dups, unacked)
	if dls, err := s.DeadLetters(Filter{}); err != nil || len(dls) != 0 {
		t.Errorf("dead letters after recovery: %d, %v", len(dls), err)
	}
}

// limitedWriter keeps the first n bytes written to it.
type limitedWriter struct {
	w io.Writer
	n int
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	if l.n > 0 {
		k := min(len(p), l.n)
		_, _ = l.w.Write(p[:k])
		l.n -= k
	}
	return len(p), nil
}
