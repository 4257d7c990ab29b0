// Command spool measures the durable spool's acknowledgement path: how many callbacks
// per second Enqueue acknowledges, and at what latency, with fsync on (durable) and off
// (in-memory: NoSync, the page cache only), in one run on one machine. Deliveries run at
// the same time to a loopback backend, as in a receiver, so their commits compete with the
// enqueues for the same fsyncs (and, here, the backend competes for the same CPUs).
//
// Two kinds of load:
//   - closed loop (-concurrency 32,128): N enqueuers, each enqueuing again as soon as it
//     is acknowledged: the maximum throughput, with latency >= N / throughput;
//   - open loop (-rate 5000): callbacks arrive on a fixed schedule, as an IM platform
//     sends them, whatever the spool's speed; latency is measured from each callback's
//     scheduled arrival, so a stall shows in full (no coordinated omission).
//
// Modes (-modes): the embedded spool durable ("durable": fsync per commit) and
// in-memory ("nosync"), and the JetStream spool on a NATS cluster run in this process on
// loopback (nats-server/v2, file storage, sync_interval always): one server, stream
// replicas 1 ("js-r1"), and three servers, replicas 3 ("js-r3"). An acknowledgement is
// Enqueue returning nil: an fsync'd commit, or JetStream's PubAck.
//
// Every case is bounded by -duration and -max. The delivery cases (order.go) then time the
// delivery of a stored backlog, unordered against ordered by conversation. The result is
// markdown tables:
//
//	go run ./hack/bench/spool [-duration 5s] [-concurrency 32,128] [-rate 5000] [-deliver=true] [-modes durable,nosync,js-r1,js-r3]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr/funcr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/callback-router/callback-router/api/v1alpha1"
	"github.com/callback-router/callback-router/internal/natstest"
	"github.com/callback-router/callback-router/webhook/callback"
	"github.com/callback-router/callback-router/webhook/spool"
	"github.com/callback-router/callback-router/webhook/spool/jsspool"
)

// sampleBody is testdata/tencent-c2c-after-send.json; its MsgKey is replaced per callback.
const sampleBody = `{"CallbackCommand":"C2C.CallbackAfterSendMsg","From_Account":"jared","To_Account":"Jonh","MsgSeq":48374,"MsgRandom":2837546,"MsgTime":1557481126,"MsgKey":"%d_2837546_1557481126","OnlineOnlyFlag":1,"SendMsgResult":0,"ErrorInfo":"send msg succeed","UnreadMsgNum":7,"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"red packet"}}],"CloudCustomData":"your cloud custom data"}`

// silent drops the spool's logs, which would otherwise go to controller-runtime's
// unset global logger.
var silent = funcr.New(func(prefix, args string) {}, funcr.Options{})

// maxOpenLoopInFlight bounds the goroutines of an open-loop case: past it, arrivals wait
// (and their waiting counts in their latency).
const maxOpenLoopInFlight = 4096

// load is one case's offered load: concurrency enqueuers in a closed loop, or rate
// arrivals per second in an open loop.
type load struct {
	concurrency int
	rate        int
}

func (l load) String() string {
	if l.rate > 0 {
		return fmt.Sprintf("open loop, %d/s", l.rate)
	}
	return fmt.Sprintf("%d enqueuers", l.concurrency)
}

// result is one case's figures.
type result struct {
	mode      string
	load      load
	acks      int
	errors    int
	elapsed   time.Duration
	p50, p99  time.Duration
	commits   float64
	delivered float64
	// commitP99 is the upper bound of the histogram bucket holding the 99th percentile commit.
	commitP99 time.Duration
	// logical is the spool's size as checked against MaxBytes; file the bbolt file's.
	logical, file int64
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "spool bench:", err)
		os.Exit(1)
	}
}

func parseInts(s, name string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("bad -%s %q", name, s)
		}
		out = append(out, n)
	}
	return out, nil
}

func run() error {
	duration := flag.Duration("duration", 5*time.Second, "how long each case enqueues")
	maxAcks := flag.Int("max", 2_000_000, "stop a case after this many acknowledgements")
	conc := flag.String("concurrency", "32,128", "closed-loop cases: comma-separated numbers of concurrent enqueuers")
	rates := flag.String("rate", "5000", "open-loop cases: comma-separated arrival rates per second (empty: none)")
	perRoute := flag.Int("per-route", spool.DefaultMaxConcurrencyPerRoute, "Options.MaxConcurrencyPerRoute: concurrent deliveries")
	deliver := flag.Bool("deliver", true, "deliver to a loopback backend while enqueuing, as a receiver does")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	dir := flag.String("dir", "", "where to create the spools (default: a temp dir, removed afterwards)")
	modeList := flag.String("modes", "durable,nosync,js-r1,js-r3", "spools to measure: durable, nosync, js-r1, js-r3")
	flag.Parse()
	modes := strings.Split(*modeList, ",")

	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	var loads []load
	cs, err := parseInts(*conc, "concurrency")
	if err != nil {
		return err
	}
	for _, n := range cs {
		loads = append(loads, load{concurrency: n})
	}
	rs, err := parseInts(*rates, "rate")
	if err != nil {
		return err
	}
	for _, r := range rs {
		loads = append(loads, load{rate: r})
	}
	base := *dir
	if base == "" {
		d, err := os.MkdirTemp("", "spool-bench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		base = d
	}

	url := ""
	if *deliver {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
		})}
		go func() { _ = srv.Serve(l) }()
		defer srv.Close()
		url = "http://" + l.Addr().String() + "/im"
	}

	clusters := map[string]*natstest.Cluster{}
	defer func() {
		for _, c := range clusters {
			c.Stop()
		}
	}()
	for _, m := range modes {
		n := map[string]int{modeJSR1: 1, modeJSR3: 3}[m]
		if n == 0 {
			continue
		}
		c, err := natstest.Start(n, filepath.Join(base, m), "", "")
		if err != nil {
			return err
		}
		clusters[m] = c
	}
	var results []result
	for i, l := range loads {
		for _, m := range modes {
			r, err := runCase(fmt.Sprintf("%s/%d-%s", base, i, m), m, clusters[m], i, l, *duration, *maxAcks, url, *perRoute)
			if err != nil {
				return err
			}
			results = append(results, r)
		}
	}
	fmt.Printf("Spool acknowledgement path, %d CPUs, %s per case, deliveries to a loopback backend in the same process: %t (%d per route)\n\n",
		runtime.NumCPU(), *duration, *deliver, *perRoute)
	fmt.Println("| mode | load | acks/s | p50 ack | p99 ack | fsync'd commits/s | commit p99 <= | acks per commit | delivered/s | errors | spool MiB (file) |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|---|")
	for _, r := range results {
		secs := r.elapsed.Seconds()
		perCommit := 0.0
		if r.commits > 0 {
			perCommit = float64(r.acks) / r.commits
		}
		commits := fmt.Sprintf("%.0f", r.commits/secs)
		switch {
		case strings.HasPrefix(r.mode, "JetStream"):
			commits, perCommit = "(server side)", 0
		case r.mode != modeDurable:
			commits = "(no fsync) " + commits
		}
		fmt.Printf("| %s | %s | %.0f | %s | %s | %s | %s | %.1f | %.0f | %d | %.1f (%.1f) |\n", r.mode, r.load,
			float64(r.acks)/secs, ms(r.p50), ms(r.p99), commits, ms(r.commitP99), perCommit, r.delivered/secs, r.errors,
			float64(r.logical)/(1<<20), float64(r.file)/(1<<20))
	}
	if e := firstErr.Load(); e != nil {
		fmt.Printf("\nFirst Enqueue error: %s\n", e)
	}
	return runOrderCases(base, *perRoute)
}

func newCallback(i int64) *callback.Callback {
	body := []byte(fmt.Sprintf(sampleBody, i))
	return &callback.Callback{
		ID:       callback.ComputeID(v1alpha1.ProviderTencentIM, "C2C.CallbackAfterSendMsg", body),
		Provider: v1alpha1.ProviderTencentIM, AppID: "1400000001", Command: "C2C.CallbackAfterSendMsg",
		RawQuery:   "SdkAppid=1400000001&CallbackCommand=C2C.CallbackAfterSendMsg&contenttype=json",
		Body:       body,
		ReceivedAt: time.Now(),
	}
}

func runCase(dir, mode string, nc *natstest.Cluster, caseNo int, l load, duration time.Duration, maxAcks int, url string, perRoute int) (result, error) {
	reg := prometheus.NewRegistry()
	var s spool.Queue
	var embedded *spool.Spool
	switch mode {
	case modeDurable, modeNoSync:
		sp, err := spool.Open(dir, spool.Options{NoSync: mode == modeNoSync, Registerer: reg, Logger: silent, MaxConcurrencyPerRoute: perRoute})
		if err != nil {
			return result{}, err
		}
		s, embedded = sp, sp
	case modeJSR1, modeJSR3:
		sp, err := jsspool.Open(context.Background(), jsspool.Options{URL: nc.URL(), Stream: fmt.Sprintf("BENCH%d", caseNo),
			Replicas: len(nc.Servers), Registerer: reg, Logger: silent, MaxConcurrencyPerRoute: perRoute})
		if err != nil {
			return result{}, err
		}
		s = sp
	default:
		return result{}, fmt.Errorf("unknown mode %q", mode)
	}
	defer s.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var targets []callback.Target
	if url != "" {
		targets = []callback.Target{{Route: "bench/archive", URL: url, Timeout: 5 * time.Second,
			MaxAttempts: 3, InitialBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond}}
		go func() { _ = s.Run(ctx) }()
	} else {
		// Without deliveries the callbacks stay pending; the target is never contacted.
		targets = []callback.Target{{Route: "bench/archive", URL: "http://127.0.0.1:1/unused"}}
	}

	var errs atomic.Int64
	var mu sync.Mutex
	var all []time.Duration
	record := func(own []time.Duration) {
		mu.Lock()
		all = append(all, own...)
		mu.Unlock()
	}
	start := time.Now()
	deadline := start.Add(duration)
	if l.rate > 0 {
		openLoop(ctx, s, targets, l.rate, deadline, maxAcks, &errs, record)
	} else {
		closedLoop(ctx, s, targets, l.concurrency, deadline, maxAcks, &errs, record)
	}
	elapsed := time.Since(start)
	cancel()

	var commits, delivered float64
	var commitP99 time.Duration
	mfs, err := reg.Gather()
	if err != nil {
		return result{}, err
	}
	for _, mf := range mfs {
		switch mf.GetName() {
		case "callback_router_spool_commit_seconds":
			h := mf.GetMetric()[0].GetHistogram()
			commits = float64(h.GetSampleCount())
			for _, b := range h.GetBucket() {
				if float64(b.GetCumulativeCount()) >= 0.99*commits {
					commitP99 = time.Duration(b.GetUpperBound() * float64(time.Second))
					break
				}
			}
		case "callback_router_deliveries_total":
			for _, m := range mf.GetMetric() {
				delivered += m.GetCounter().GetValue()
			}
		}
	}
	var logical int64
	if embedded != nil {
		logical = embedded.Bytes()
	}
	if err := s.Close(); err != nil {
		return result{}, err
	}
	var file int64
	if fi, err := os.Stat(filepath.Join(dir, spool.FileName)); err == nil {
		file = fi.Size()
	}
	slices.Sort(all)
	r := result{mode: map[string]string{modeDurable: "durable", modeNoSync: "in-memory (NoSync)",
		modeJSR1: "JetStream R1", modeJSR3: "JetStream R3 (3 servers)"}[mode], load: l, acks: len(all), errors: int(errs.Load()), elapsed: elapsed,
		logical: logical, file: file, commits: commits, delivered: delivered, commitP99: commitP99}
	if len(all) > 0 {
		r.p50, r.p99 = all[len(all)/2], all[len(all)*99/100]
	}
	return r, nil
}

// closedLoop runs n enqueuers until the deadline; each records its own latencies.
func closedLoop(ctx context.Context, s spool.Queue, targets []callback.Target, n int, deadline time.Time, maxAcks int,
	errs *atomic.Int64, record func([]time.Duration)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			own := make([]time.Duration, 0, 1<<14)
			defer func() { record(own) }()
			for time.Now().Before(deadline) {
				i := next.Add(1)
				if i > int64(maxAcks) {
					return
				}
				cb := newCallback(i)
				t0 := time.Now()
				if err := s.Enqueue(ctx, cb, targets); err != nil {
					noteErr(err)
					errs.Add(1)
					if errors.Is(err, spool.ErrClosed) {
						return
					}
					continue
				}
				own = append(own, time.Since(t0))
			}
		})
	}
	wg.Wait()
}

// openLoop starts one enqueue per 1/rate second until the deadline, whatever the spool's
// speed, and measures each from its scheduled arrival.
func openLoop(ctx context.Context, s spool.Queue, targets []callback.Target, rate int, deadline time.Time, maxAcks int,
	errs *atomic.Int64, record func([]time.Duration)) {
	sem := make(chan struct{}, maxOpenLoopInFlight)
	lat := make(chan time.Duration, maxOpenLoopInFlight)
	collected := make(chan struct{})
	go func() {
		own := make([]time.Duration, 0, 1<<16)
		for d := range lat {
			own = append(own, d)
		}
		record(own)
		close(collected)
	}()
	var wg sync.WaitGroup
	interval := time.Second / time.Duration(rate)
	start := time.Now()
	for i := int64(1); i <= int64(maxAcks); i++ {
		due := start.Add(time.Duration(i-1) * interval)
		if !due.Before(deadline) {
			break
		}
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := s.Enqueue(ctx, newCallback(i), targets); err != nil {
				noteErr(err)
				errs.Add(1)
				return
			}
			lat <- time.Since(due)
		})
	}
	wg.Wait()
	close(lat)
	<-collected
}

// Modes of -modes.
const (
	modeDurable = "durable"
	modeNoSync  = "nosync"
	modeJSR1    = "js-r1"
	modeJSR3    = "js-r3"
)

// firstErr keeps the first Enqueue error of the run, printed under the table.
var firstErr atomic.Value

func noteErr(err error) { firstErr.CompareAndSwap(nil, err.Error()) }

func ms(d time.Duration) string {
	return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000)
}
