package spool

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/callback-router/callback-router/api/v1alpha1"
	"github.com/callback-router/callback-router/webhook/callback"
	dctl "github.com/callback-router/callback-router/webhook/delivery"
)

// conversationCallback is a Tencent C2C callback of the conversation between from and
// "peer", the n-th of it (MsgSeq n), with its conversation key computed as the
// receiver's door does.
func conversationCallback(from string, n int) *callback.Callback {
	body := fmt.Appendf(nil, `{"CallbackCommand":%q,"From_Account":%q,"To_Account":"peer","MsgSeq":%d,"MsgRandom":1,"MsgTime":1557481126,"MsgKey":"%s_%d","MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"hi"}}]}`,
		c2cCommand, from, n, from, n)
	cb := &callback.Callback{
		ID:       callback.ComputeID(v1alpha1.ProviderTencentIM, c2cCommand, body),
		Provider: v1alpha1.ProviderTencentIM, AppID: "1400000001", Command: c2cCommand,
		RawQuery: "SdkAppid=1400000001&CallbackCommand=" + c2cCommand, Body: body, ReceivedAt: time.Now(),
	}
	cb.OrderKey = callback.ConversationKey(cb.Provider, cb.Body)
	return cb
}

// seen is one request at an ordering backend: the sender (the conversation) and MsgSeq.
type seen struct {
	from    string
	seq     int
	attempt string
}

// orderBackend is a loopback backend that records the conversation and sequence of each
// request in arrival order and tracks how many requests of one conversation overlap.
type orderBackend struct {
	URL         string
	srv         *http.Server
	mu          sync.Mutex
	got         []seen
	inflight    map[string]int
	maxPerKey   int
	inflightAll int
	maxAll      int
	// hold, if set, returns how long to hold a request and the status to answer.
	hold func(s seen, n int) (time.Duration, int)
}

func newOrderBackend(t testing.TB, addr string, hold func(s seen, n int) (time.Duration, int)) *orderBackend {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	b := &orderBackend{inflight: map[string]int{}, hold: hold}
	b.URL = "http://" + l.Addr().String()
	b.srv = &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var m struct {
			From string `json:"From_Account"`
			Seq  int    `json:"MsgSeq"`
		}
		_ = json.Unmarshal(body, &m)
		s := seen{from: m.From, seq: m.Seq, attempt: r.Header.Get(callback.HeaderAttempt)}
		b.mu.Lock()
		b.got = append(b.got, s)
		n := len(b.got)
		b.inflight[s.from]++
		b.maxPerKey = max(b.maxPerKey, b.inflight[s.from])
		b.inflightAll++
		b.maxAll = max(b.maxAll, b.inflightAll)
		b.mu.Unlock()
		d, code := time.Duration(0), http.StatusOK
		if b.hold != nil {
			d, code = b.hold(s, n)
		}
		if d > 0 {
			select {
			case <-time.After(d):
			case <-r.Context().Done():
			}
		}
		b.mu.Lock()
		b.inflight[s.from]--
		b.inflightAll--
		b.mu.Unlock()
		w.WriteHeader(code)
	})}
	go func() { _ = b.srv.Serve(l) }()
	t.Cleanup(func() { _ = b.srv.Close() })
	return b
}

func (b *orderBackend) requests() []seen {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]seen(nil), b.got...)
}

// byKey returns the MsgSeq of every request, per conversation, in arrival order.
func byKey(got []seen) map[string][]int {
	out := map[string][]int{}
	for _, s := range got {
		out[s.from] = append(out[s.from], s.seq)
	}
	return out
}

func orderedTarget(route, url string) callback.Target {
	t := target(route, url, 100)
	t.Ordered = true
	return t
}

// enqueueConversations enqueues perKey callbacks for each of keys conversations, one
// goroutine per conversation, each waiting for its previous callback's acknowledgement
// (so the arrival order within a conversation is defined), conversations in parallel.
func enqueueConversations(t *testing.T, s *Spool, tgt callback.Target, keys []string, perKey int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, len(keys))
	for _, k := range keys {
		wg.Go(func() {
			for i := 1; i <= perKey; i++ {
				if err := s.Enqueue(context.Background(), conversationCallback(k, i), []callback.Target{tgt}); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// TestOrderedDeliverySlowKey: under concurrent load, each conversation's callbacks reach
// the backend one at a time and in arrival order, while a slow conversation (every
// request held 150ms) does not hold up the others: they are all delivered while the
// slow one is still at its beginning.
func TestOrderedDeliverySlowKey(t *testing.T) {
	const keys, perKey = 20, 15
	const slowHold = 150 * time.Millisecond
	b := newOrderBackend(t, "", func(s seen, _ int) (time.Duration, int) {
		if s.from == "slow" {
			return slowHold, http.StatusOK
		}
		return time.Millisecond, http.StatusOK
	})
	s, reg := openSpool(t, t.TempDir(), Options{MaxConcurrencyPerRoute: 8})
	run(t, s)
	names := []string{"slow"}
	for i := range keys - 1 {
		names = append(names, "user"+strconv.Itoa(i))
	}
	tgt := orderedTarget("chat/ordered", b.URL+"/im")
	enqueueConversations(t, s, tgt, names, perKey)

	others := func() int {
		n := 0
		for _, x := range b.requests() {
			if x.from != "slow" {
				n++
			}
		}
		return n
	}
	eventually(t, 20*time.Second, "every fast conversation delivered", func() bool { return others() == (keys-1)*perKey })
	slowDone := byKey(b.requests())["slow"]
	if len(slowDone) > perKey/2 {
		t.Errorf("the slow conversation had %d of %d delivered when the others were done: they waited for it", len(slowDone), perKey)
	}
	eventually(t, 20*time.Second, "the slow conversation", func() bool { return len(byKey(b.requests())["slow"]) == perKey })
	for k, seqs := range byKey(b.requests()) {
		for i, seq := range seqs {
			if seq != i+1 {
				t.Fatalf("conversation %s reached the backend in the order %v, want 1..%d", k, seqs, perKey)
			}
		}
	}
	b.mu.Lock()
	maxPerKey, maxAll := b.maxPerKey, b.maxAll
	b.mu.Unlock()
	if maxPerKey != 1 {
		t.Errorf("up to %d requests of one conversation overlapped at the backend, want 1", maxPerKey)
	}
	if maxAll < 2 {
		t.Errorf("at most %d requests in flight at once: conversations were not delivered in parallel", maxAll)
	}
	t.Logf("%d conversations x %d: at most %d requests in flight at once, 1 per conversation", keys, perKey, maxAll)
	eventually(t, 5*time.Second, "the queue to drain", func() bool {
		return metricValue(t, reg, "callback_router_spool_depth", map[string]string{"route": "chat/ordered"}) == 0
	})
}

// TestOrderedHeadOfLineFailure: a conversation whose first callback fails three times
// holds back its own later callbacks (each retried with its backoff) and no other
// conversation's; callbacks without a conversation (a push batch) are not ordered.
func TestOrderedHeadOfLineFailure(t *testing.T) {
	var failures atomic.Int32
	b := newOrderBackend(t, "", func(s seen, _ int) (time.Duration, int) {
		if s.from == "stuck" && s.seq == 1 && failures.Add(1) <= 3 {
			return 0, http.StatusServiceUnavailable
		}
		return 0, http.StatusOK
	})
	s, _ := openSpool(t, t.TempDir(), Options{Delivery: dctl.Options{BreakerFailures: -1}})
	run(t, s)
	tgt := orderedTarget("chat/ordered", b.URL+"/im")
	tgt.InitialBackoff, tgt.MaxBackoff = 100*time.Millisecond, 100*time.Millisecond
	enqueueConversations(t, s, tgt, []string{"stuck", "free"}, 5)
	eventually(t, 10*time.Second, "every callback delivered", func() bool { return len(b.requests()) == 10+3 })

	got := b.requests()
	var stuck []string
	freeDoneAt, stuckOKAt := -1, -1
	for i, x := range got {
		switch x.from {
		case "stuck":
			stuck = append(stuck, fmt.Sprintf("%d#%s", x.seq, x.attempt))
			if x.seq == 1 && x.attempt == "4" {
				stuckOKAt = i
			}
		case "free":
			if x.seq == 5 {
				freeDoneAt = i
			}
		}
	}
	want := "1#1 1#2 1#3 1#4 2#1 3#1 4#1 5#1"
	if strings.Join(stuck, " ") != want {
		t.Errorf("the stuck conversation reached the backend as %v, want %s", stuck, want)
	}
	if freeDoneAt < 0 || stuckOKAt < 0 || freeDoneAt > stuckOKAt {
		t.Errorf("the free conversation finished at request %d, after the stuck head succeeded (%d): it was held back", freeDoneAt, stuckOKAt)
	}
}

// TestUnkeyedCallbacksOfAnOrderedRoute: callbacks without a conversation are delivered
// in parallel, not in one lane.
func TestUnkeyedCallbacksOfAnOrderedRoute(t *testing.T) {
	b := newOrderBackend(t, "", func(seen, int) (time.Duration, int) { return 100 * time.Millisecond, http.StatusOK })
	s, _ := openSpool(t, t.TempDir(), Options{})
	run(t, s)
	tgt := orderedTarget("chat/ordered", b.URL+"/im")
	for i := range 8 {
		cb := sampleCallback(t, i)
		cb.Body = fmt.Appendf(nil, `{"Events":[{"CallbackCommand":"Push.OfflinePush","PushID":"p%d"}]}`, i)
		cb.OrderKey = callback.ConversationKey(cb.Provider, cb.Body)
		if cb.OrderKey != "" {
			t.Fatalf("a push batch got the conversation key %q", cb.OrderKey)
		}
		if err := s.Enqueue(context.Background(), cb, []callback.Target{tgt}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 10*time.Second, "8 deliveries", func() bool { return len(b.requests()) == 8 })
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.maxAll < 2 {
		t.Errorf("callbacks without a conversation went one at a time (max %d in flight)", b.maxAll)
	}
}

// Environment of the ordered crash helper.
const (
	orderHelperEnv = "CALLBACK_ROUTER_SPOOL_ORDER_HELPER"
	orderKeys      = 8
	orderPerKey    = 40
)

// TestOrderHelperProcess is not a test: TestOrderedRestartKill9 runs the test binary
// again with orderHelperEnv set, and this acts as a receiver that enqueues orderPerKey
// callbacks for each of orderKeys conversations to an ordered route, delivering as it
// goes, and prints "ACK <key> <n>" per acknowledgement until it is killed.
func TestOrderHelperProcess(t *testing.T) {
	if os.Getenv(orderHelperEnv) != "1" {
		t.Skip("helper process of TestOrderedRestartKill9")
	}
	s, err := Open(os.Getenv(crashDirEnv), Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), crashHelperTime)
	defer cancel()
	go func() { _ = s.Run(ctx) }()
	tgt := orderedTarget("chat/ordered", os.Getenv(crashURLEnv)+"/im")
	var out sync.Mutex
	var wg sync.WaitGroup
	for k := range orderKeys {
		wg.Go(func() {
			key := "user" + strconv.Itoa(k)
			for i := 1; i <= orderPerKey && ctx.Err() == nil; i++ {
				if err := s.Enqueue(ctx, conversationCallback(key, i), []callback.Target{tgt}); err != nil {
					fmt.Fprintln(os.Stderr, "enqueue:", err)
					os.Exit(3)
				}
				out.Lock()
				fmt.Fprintf(os.Stdout, "ACK %s %d\n", key, i)
				out.Unlock()
			}
		})
	}
	wg.Wait()
	<-ctx.Done()
	os.Exit(0)
}

// TestOrderedRestartKill9: order survives a crash. A child process enqueues ordered
// callbacks of 8 conversations and delivers them to a slow loopback backend (20ms per
// request); it is killed with SIGKILL mid-stream; the spool is reopened on the same
// directory and finishes. Per conversation the backend must see 1, 2, ..., n with at
// most one repeat of the callback in flight at the kill (at-least-once), never a later
// callback before an earlier one.
func TestOrderedRestartKill9(t *testing.T) {
	dir := t.TempDir()
	b := newOrderBackend(t, "", func(seen, int) (time.Duration, int) { return 20 * time.Millisecond, http.StatusOK })
	cmd := exec.Command(os.Args[0], "-test.run=^TestOrderHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), orderHelperEnv+"=1", crashDirEnv+"="+dir, crashURLEnv+"="+b.URL)
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
	acked := map[string]int{}
	var total atomic.Int64
	// Kill once half are acknowledged and the backend has delivered some of them,
	// mid-stream. Watched apart from the reading loop: the helper may print every ACK
	// before the backend has seen 40 deliveries, and then print nothing more.
	watchDone := make(chan struct{})
	defer close(watchDone)
	go func() {
		for {
			select {
			case <-watchDone:
				return
			case <-time.After(2 * time.Millisecond):
			}
			if total.Load() >= orderKeys*orderPerKey/2 && len(b.requests()) >= 40 {
				_ = cmd.Process.Signal(syscall.SIGKILL)
				return
			}
		}
	}()
	r := bufio.NewReader(stdout)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			break
		}
		f := strings.Fields(line)
		if len(f) != 3 || f[0] != "ACK" {
			t.Fatalf("unexpected helper output %q", line)
		}
		n, _ := strconv.Atoi(f[2])
		acked[f[1]] = max(acked[f[1]], n)
		total.Add(1)
	}
	err = cmd.Wait()
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) || !exitErr.Sys().(syscall.WaitStatus).Signaled() {
		t.Fatalf("helper was not killed by SIGKILL (acknowledged %d, backend got %d): %v\nstderr:\n%s", total.Load(), len(b.requests()), err, stderr.String())
	}
	before := len(b.requests())
	s, _ := openSpool(t, dir, Options{})
	run(t, s)
	done := func() bool {
		k := byKey(b.requests())
		for key, n := range acked {
			seqs := k[key]
			if len(seqs) == 0 || seqs[len(seqs)-1] < n {
				return false
			}
		}
		return true
	}
	eventually(t, 60*time.Second, "every acknowledged callback delivered", done)
	repeats := 0
	for key, seqs := range byKey(b.requests()) {
		if seqs[0] != 1 {
			t.Fatalf("conversation %s started at %d: %v", key, seqs[0], seqs)
		}
		for i := 1; i < len(seqs); i++ {
			switch seqs[i] {
			case seqs[i-1]:
				repeats++
			case seqs[i-1] + 1:
			default:
				t.Fatalf("conversation %s reached the backend out of order across the kill: %v", key, seqs)
			}
		}
	}
	t.Logf("killed after %d acknowledgements and %d deliveries; after the restart %d more, %d repeats of a callback in flight at the kill",
		total.Load(), before, len(b.requests())-before, repeats)
	if repeats > orderKeys {
		t.Errorf("%d repeats: more than one per conversation", repeats)
	}
}
