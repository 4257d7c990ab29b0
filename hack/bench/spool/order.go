package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/callback-router/callback-router/api/v1alpha1"
	"github.com/callback-router/callback-router/webhook/callback"
	"github.com/callback-router/callback-router/webhook/spool"
)

// The delivery cases: ordered delivery (ordering: {key: Conversation}) against unordered,
// same run, same spool settings, same backlog.
var (
	orderDeliveries = flag.Int("order-deliveries", 10000, "delivery cases: callbacks in the backlog (0: skip the delivery cases)")
	orderKeys       = flag.String("order-keys", "1000,10", "delivery cases: comma-separated numbers of conversations for the ordered cases")
	orderLatency    = flag.String("order-latency", "0,2", "delivery cases: comma-separated backend answer delays in milliseconds")
)

// orderBody is the C2C sample with the conversation (From_Account) and MsgSeq set.
const orderBody = `{"CallbackCommand":"C2C.CallbackAfterSendMsg","From_Account":"u%d","To_Account":"peer","MsgSeq":%d,"MsgRandom":2837546,"MsgTime":1557481126,"MsgKey":"%d_%d","OnlineOnlyFlag":1,"SendMsgResult":0,"ErrorInfo":"send msg succeed","UnreadMsgNum":7,"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"red packet"}}],"CloudCustomData":"your cloud custom data"}`

// orderBackend answers 200 after delay and counts, per conversation, callbacks that
// arrive with a lower MsgSeq than one already seen (an order violation).
type orderBackend struct {
	url        string
	delay      atomic.Int64
	got        atomic.Int64
	violations atomic.Int64
	mu         sync.Mutex
	last       map[string]int
	srv        *http.Server
}

func startOrderBackend() (*orderBackend, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	b := &orderBackend{url: "http://" + l.Addr().String() + "/im", last: map[string]int{}}
	b.srv = &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var m struct {
			From string `json:"From_Account"`
			Seq  int    `json:"MsgSeq"`
		}
		_ = json.Unmarshal(body, &m)
		b.mu.Lock()
		if m.Seq < b.last[m.From] {
			b.violations.Add(1)
		}
		b.last[m.From] = max(b.last[m.From], m.Seq)
		b.mu.Unlock()
		if d := time.Duration(b.delay.Load()); d > 0 {
			time.Sleep(d)
		}
		b.got.Add(1)
	})}
	go func() { _ = b.srv.Serve(l) }()
	return b, nil
}

func (b *orderBackend) reset(delay time.Duration) {
	b.mu.Lock()
	b.last = map[string]int{}
	b.mu.Unlock()
	b.got.Store(0)
	b.violations.Store(0)
	b.delay.Store(int64(delay))
}

// orderResult is one delivery case's figures.
type orderResult struct {
	name       string
	delay      time.Duration
	n          int
	elapsed    time.Duration
	violations int64
	ratio      float64
}

// runOrderCases fills a durable spool with n callbacks spread round-robin over the
// conversations, then runs it and times how long the backlog takes to reach the backend:
// unordered, ordered with each number of keys, unordered again, for each backend delay.
func runOrderCases(base string, perRoute int) error {
	n := *orderDeliveries
	if n <= 0 {
		return nil
	}
	keys, err := parseInts(*orderKeys, "order-keys")
	if err != nil {
		return err
	}
	var lat []time.Duration
	for _, f := range strings.Split(*orderLatency, ",") {
		ms, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || ms < 0 {
			return fmt.Errorf("bad -order-latency %q", *orderLatency)
		}
		lat = append(lat, time.Duration(ms)*time.Millisecond)
	}
	b, err := startOrderBackend()
	if err != nil {
		return err
	}
	defer b.srv.Close()
	var results []orderResult
	for _, d := range lat {
		// Unordered first and last, so that drift during the run (the machine's load,
		// warm-up) shows, and the ordered cases are compared with the mean of the two.
		cases := append(append([]int{0}, keys...), 0)
		first := len(results)
		for i, k := range cases {
			b.reset(d)
			elapsed, err := runOrderCase(fmt.Sprintf("%s/order-%s-%d", base, d, i), b, n, k, perRoute)
			if err != nil {
				return err
			}
			name := "unordered"
			if k > 0 {
				name = fmt.Sprintf("ordered, %d conversations", k)
			}
			results = append(results, orderResult{name: name, delay: d, n: n, elapsed: elapsed, violations: b.violations.Load()})
		}
		group := results[first:]
		base := (float64(n)/group[0].elapsed.Seconds() + float64(n)/group[len(group)-1].elapsed.Seconds()) / 2
		for i := range group {
			group[i].ratio = float64(n) / group[i].elapsed.Seconds() / base
		}
	}
	fmt.Printf("\nDelivery of a backlog of %d callbacks (durable spool, %d CPUs, %d deliveries in flight per route), conversations round-robin; order violations counted at the backend\n\n",
		n, runtime.NumCPU(), perRoute)
	fmt.Println("| route | backend delay | delivered/s | ratio to unordered (mean of both runs) | order violations |")
	fmt.Println("|---|---|---|---|---|")
	for _, r := range results {
		fmt.Printf("| %s | %s | %.0f | %.2f | %d |\n", r.name, r.delay, float64(r.n)/r.elapsed.Seconds(), r.ratio, r.violations)
	}
	return nil
}

// runOrderCase stores the backlog (each conversation's callbacks enqueued in order by one
// goroutine), starts delivery and returns how long until the backend has them all.
func runOrderCase(dir string, b *orderBackend, n, keys, perRoute int) (time.Duration, error) {
	s, err := spool.Open(dir, spool.Options{Registerer: prometheus.NewRegistry(), Logger: silent, MaxConcurrencyPerRoute: perRoute})
	if err != nil {
		return 0, err
	}
	defer s.Close()
	tgt := callback.Target{Route: "bench/ordered", URL: b.url, Timeout: 5 * time.Second,
		MaxAttempts: 3, InitialBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond, Ordered: keys > 0}
	convs := keys
	if convs == 0 {
		convs = 1000 // the unordered backlog has the same bodies as the 1,000-key one
	}
	var wg sync.WaitGroup
	var failed atomic.Int64
	for k := range convs {
		wg.Go(func() {
			for i := k; i < n; i += convs {
				body := fmt.Appendf(nil, orderBody, k, i, k, i)
				cb := &callback.Callback{
					ID:       callback.ComputeID(v1alpha1.ProviderTencentIM, "C2C.CallbackAfterSendMsg", body),
					Provider: v1alpha1.ProviderTencentIM, AppID: "1400000001", Command: "C2C.CallbackAfterSendMsg",
					RawQuery: "SdkAppid=1400000001&CallbackCommand=C2C.CallbackAfterSendMsg", Body: body, ReceivedAt: time.Now(),
				}
				cb.OrderKey = callback.ConversationKey(cb.Provider, cb.Body)
				if err := s.Enqueue(context.Background(), cb, []callback.Target{tgt}); err != nil {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if f := failed.Load(); f > 0 {
		return 0, fmt.Errorf("%d enqueues failed", f)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start := time.Now()
	go func() { _ = s.Run(ctx) }()
	for b.got.Load() < int64(n) {
		if time.Since(start) > 5*time.Minute {
			return 0, fmt.Errorf("backlog not delivered after 5 minutes (%d of %d)", b.got.Load(), n)
		}
		time.Sleep(time.Millisecond)
	}
	return time.Since(start), nil
}
