// Package jetstream runs the callback-router binary as real receiver processes on a
// JetStream spool: a 3-server NATS cluster (github.com/nats-io/nats-server/v2, each
// server a child process of the test binary, file storage in temp dirs, sync always) on
// loopback, signed Tencent IM callbacks, kill -9 of a receiver and of a NATS server.
package jetstream

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/callback-router/callback-router/api/v1alpha1"
	"github.com/callback-router/callback-router/internal/natstest"
	"github.com/callback-router/callback-router/internal/testenv"
	"github.com/callback-router/callback-router/webhook/callback"
)

func TestMain(m *testing.M) {
	natstest.RunChildIfAsked()
	os.Exit(m.Run())
}

// Bounds of the tests.
const (
	// posters is the number of concurrent senders (the IM platform's connections).
	posters = 16
	// killReceiverAfter, killNATSAfter and stopAfter are the numbers of 200 OKs at
	// which receiver A is killed, one NATS server is killed, and the load stops.
	killReceiverAfter = 300
	killNATSAfter     = 600
	stopAfter         = 1000
	// maxPosts bounds the posts should the OKs never come.
	maxPosts = 20000
	// loadTimeout bounds the load phase; deliverTimeout the wait for every delivery.
	loadTimeout    = 90 * time.Second
	deliverTimeout = 90 * time.Second
	// ackWait is the receivers' --spool-ack-wait: how soon a delivery a killed receiver
	// held goes to the other.
	ackWait = "2s"

	token      = "jetstream-e2e-token"
	appID      = "1400000001"
	c2cCommand = "C2C.CallbackAfterSendMsg"
)

// routeNames are the routes of testenv.FanOutRoutes, the test routes.
var routeNames = testenv.FanOutRouteNames

func freeAddr(t *testing.T) string { return testenv.FreeAddr(t) }

func receiverCmd(bin, routes, addr string, extra ...string) *exec.Cmd {
	return testenv.ReceiverCmd(nil, bin, routes, addr, extra...)
}

func startReceiver(t *testing.T, bin, routes string, extra ...string) *testenv.ReceiverProc {
	t.Helper()
	return testenv.StartReceiver(t, nil, bin, routes, extra...)
}

// signedURL is the URL Tencent IM would call, signed with token.
func signedURL(addr string) string {
	return testenv.SignedTencentURL(addr, token, appID, c2cCommand)
}

func body(i int64) []byte {
	return fmt.Appendf(nil, `{"CallbackCommand":"C2C.CallbackAfterSendMsg","From_Account":"jared","To_Account":"Jonh","MsgSeq":%d,"MsgRandom":2837546,"MsgTime":1557481126,"MsgKey":"js_%d","MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"hi"}}]}`, i, i)
}

type hitKey struct{ route, id string }

// recorder is the loopback backend: it counts deliveries per (route, callback ID).
type recorder struct {
	mu    sync.Mutex
	hits  map[hitKey]int
	total int
}

func startRecorder(t *testing.T) (*recorder, string) {
	r := &recorder{hits: map[hitKey]int{}}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		_, _ = io.Copy(io.Discard, req.Body)
		r.mu.Lock()
		r.hits[hitKey{req.Header.Get(callback.HeaderRoute), req.Header.Get(callback.HeaderID)}]++
		r.total++
		r.mu.Unlock()
	})}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return r, "http://" + l.Addr().String()
}

func (r *recorder) missing(acked map[string]bool) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for id := range acked {
		for _, rt := range routeNames {
			if r.hits[hitKey{rt, id}] == 0 {
				n++
			}
		}
	}
	return n
}

func setup(t *testing.T, backendURL string) (bin, routes string) {
	t.Helper()
	bin, err := testenv.BuildBinary(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	routes = filepath.Join(t.TempDir(), "routes.yaml")
	if err := os.WriteFile(routes, fmt.Appendf(nil, testenv.FanOutRoutes, token, appID, backendURL), 0o600); err != nil {
		t.Fatal(err)
	}
	return bin, routes
}

func startNATS(t *testing.T, n int) *natstest.Cluster {
	t.Helper()
	c, err := natstest.StartProcesses(os.Args[0], n, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	return c
}

// TestKill9ReceiverAndNATSServer is the JetStream durability promise through the real
// binary: two receivers share an R3 stream on a 3-server cluster; signed callbacks are
// posted to both (each fanned out to two Async routes of a live backend); receiver A is
// killed with SIGKILL mid-load, then one NATS server; the load goes on through B. Every
// callback acknowledged with 200 OK must reach both routes. Duplicates are allowed
// (at-least-once), counted and attributed.
func TestKill9ReceiverAndNATSServer(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs a NATS cluster")
	}
	rec, backendURL := startRecorder(t)
	bin, routes := setup(t, backendURL)
	nc := startNATS(t, 3)
	args := []string{"--spool-url", nc.URL(), "--spool-replicas", "3", "--spool-ack-wait", ackWait}
	a := startReceiver(t, bin, routes, args...)
	b := startReceiver(t, bin, routes, args...)

	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: posters}}
	var (
		mu         sync.Mutex
		acked      = map[string]bool{}
		other      = map[string]int{} // non-200 answers, by receiver and status (0: no answer)
		next       atomic.Int64
		aDead      atomic.Bool
		killA      sync.Once
		killN      sync.Once
		killedNATS = -1
		wg         sync.WaitGroup
		until      = time.Now().Add(loadTimeout)
	)
	for p := range posters {
		wg.Go(func() {
			for time.Now().Before(until) {
				i := next.Add(1)
				mu.Lock()
				done := len(acked) >= stopAfter
				mu.Unlock()
				if done || i > maxPosts {
					return
				}
				rcv, name := b, "B"
				if p%2 == 0 && !aDead.Load() {
					rcv, name = a, "A"
				}
				bd := body(i)
				resp, err := client.Post(signedURL(rcv.Addr), "application/json", bytes.NewReader(bd))
				if err != nil {
					mu.Lock()
					other[name+" 0"]++
					mu.Unlock()
					continue
				}
				answer, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				mu.Lock()
				if resp.StatusCode == http.StatusOK && bytes.Contains(answer, []byte(`"ActionStatus":"OK"`)) {
					acked[callback.ComputeID(v1alpha1.ProviderTencentIM, c2cCommand, bd)] = true
					n := len(acked)
					if n >= killReceiverAfter {
						killA.Do(func() {
							aDead.Store(true)
							_ = a.Cmd.Process.Signal(syscall.SIGKILL)
						})
					}
					if n >= killNATSAfter {
						killN.Do(func() {
							// The server receiver B is connected to is the interesting one, but
							// that is the client's choice; kill the second server.
							killedNATS = 1
							if err := nc.Servers[1].Kill(); err != nil {
								t.Error(err)
							}
						})
					}
				} else {
					other[fmt.Sprintf("%s %d", name, resp.StatusCode)]++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	err := a.Cmd.Wait()
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) || !exitErr.Sys().(syscall.WaitStatus).Signaled() {
		t.Fatalf("receiver A was not killed by SIGKILL: %v", err)
	}
	if killedNATS < 0 || len(acked) < stopAfter {
		t.Fatalf("load ended early: %d acknowledged, NATS server killed: %v; other answers %v", len(acked), killedNATS >= 0, other)
	}
	t.Logf("acknowledged %d callbacks; receiver A killed after %d, NATS server n%d after %d; other answers (receiver, status; 0 = no answer): %v",
		len(acked), killReceiverAfter, killedNATS+1, killNATSAfter, other)

	deadline := time.Now().Add(deliverTimeout)
	for rec.missing(acked) > 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if n := rec.missing(acked); n > 0 {
		t.Fatalf("%d of %d acknowledged deliveries lost", n, len(acked)*len(routeNames))
	}
	// Let late redeliveries (ack wait) land before counting duplicates.
	time.Sleep(3 * time.Second)
	rec.mu.Lock()
	dups, dupKeys, unacked := 0, 0, 0
	for h, n := range rec.hits {
		if n > 1 {
			dups += n - 1
			dupKeys++
		}
		if !acked[h.id] {
			unacked++
		}
	}
	total := rec.total
	rec.mu.Unlock()
	// Where duplicates come from: a delivery that reached the backend but whose Ack did
	// not reach JetStream, because receiver A died between the two (at most A's
	// in-flight deliveries: 2 routes x --spool-max-concurrency-per-route) or because the
	// NATS server that carried the Ack died; JetStream redelivers those after the ack
	// wait. Nothing else redelivers, so the count is bounded by what was in flight.
	bound := 2 * len(routeNames) * 16
	t.Logf("backend got %d requests for %d acknowledged callbacks x %d routes: %d duplicates over %d deliveries (bound %d); %d deliveries of callbacks stored but not acknowledged (OK cut off by the kill)",
		total, len(acked), len(routeNames), dups, dupKeys, bound, unacked)
	if dupKeys > bound {
		t.Errorf("%d deliveries were duplicated, more than the %d that can have been in flight when a process died", dupKeys, bound)
	}
	if err := b.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := b.Cmd.Wait(); err != nil {
		t.Errorf("receiver B after SIGTERM: %v", err)
	}
}

// TestNATSDownAnswers503: with every NATS server gone, a signed callback for Async
// routes is answered 503 in Tencent's envelope, never a false OK; once NATS is back the
// receiver acknowledges and delivers again.
func TestNATSDownAnswers503(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs NATS")
	}
	rec, backendURL := startRecorder(t)
	bin, routes := setup(t, backendURL)
	nc := startNATS(t, 1)
	r := startReceiver(t, bin, routes, "--spool-url", nc.URL(), "--spool-replicas", "1")
	post := func(i int64) (int, string) {
		resp, err := http.Post(signedURL(r.Addr), "application/json", bytes.NewReader(body(i)))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, answer := post(1); code != http.StatusOK {
		t.Fatalf("with NATS up: %d %s", code, answer)
	}
	if err := nc.Servers[0].Kill(); err != nil {
		t.Fatal(err)
	}
	code, answer := post(2)
	if code != http.StatusServiceUnavailable || !strings.Contains(answer, `"ActionStatus":"FAIL"`) {
		t.Fatalf("with NATS down: %d %s; want 503 and a FAIL envelope", code, answer)
	}
	t.Logf("with NATS down: %d %s", code, answer)
	if err := nc.Servers[0].Restart(os.Args[0]); err != nil {
		t.Fatal(err)
	}
	acked := map[string]bool{callback.ComputeID(v1alpha1.ProviderTencentIM, c2cCommand, body(1)): true}
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, answer = post(3)
		if code == http.StatusOK {
			acked[callback.ComputeID(v1alpha1.ProviderTencentIM, c2cCommand, body(3))] = true
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("NATS back, receiver still answers %d %s", code, answer)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for rec.missing(acked) > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := rec.missing(acked); n > 0 {
		t.Fatalf("%d acknowledged deliveries missing", n)
	}
}

// TestReceiverRefusesToStart: wrong credentials and a missing stream with
// --spool-no-create stop the receiver at start with a clear message (and no listener).
func TestReceiverRefusesToStart(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs NATS")
	}
	_, backendURL := startRecorder(t)
	bin, routes := setup(t, backendURL)
	c, err := natstest.Start(1, t.TempDir(), "receiver", "s3cret")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	for _, tc := range []struct {
		name, url string
		extra     []string
		want      string
	}{
		{"wrong password", strings.ReplaceAll(c.URL(), "s3cret", "wrong"), nil, "Authorization Violation"},
		{"missing stream", c.URL(), []string{"--spool-no-create"}, "stream CALLBACKS does not exist and --spool-no-create is set"},
		{"both spools", c.URL(), []string{"--spool-dir", t.TempDir()}, "--spool-dir and --spool-url are exclusive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := receiverCmd(bin, routes, freeAddr(t), append([]string{"--spool-url", tc.url, "--spool-replicas", "1"}, tc.extra...)...)
			out, err := cmd.CombinedOutput()
			if err == nil || !strings.Contains(string(out), tc.want) {
				t.Fatalf("receiver: %v\n%s\nwant an exit with %q", err, out, tc.want)
			}
			if strings.Contains(string(out), "wrong") && tc.name == "wrong password" {
				t.Errorf("the password shows in the output:\n%s", out)
			}
		})
	}
}
