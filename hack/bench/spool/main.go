// Command spool measures the durable spool's acknowledgement path: how many callbacks
// per second Enqueue acknowledges, and at what latency, with fsync on (durable) and off
// (in-memory: NoSync, the page cache only), at a few levels of concurrent enqueuers, in
// one run on one machine. Deliveries run at the same time to a loopback backend, as in a
// receiver, so their commits compete with the enqueues for the same fsyncs.
//
// Every case is bounded by -duration and -max. The result is a markdown table:
//
//	go run ./hack/bench/spool [-duration 3s] [-concurrency 32,128] [-deliver=true]
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

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/callback-router/callback-router/api/v1alpha1"
	"github.com/callback-router/callback-router/webhook/callback"
	"github.com/callback-router/callback-router/webhook/spool"
)

// sampleBody is testdata/tencent-c2c-after-send.json; its MsgKey is replaced per callback.
const sampleBody = `{"CallbackCommand":"C2C.CallbackAfterSendMsg","From_Account":"jared","To_Account":"Jonh","MsgSeq":48374,"MsgRandom":2837546,"MsgTime":1557481126,"MsgKey":"%d_2837546_1557481126","OnlineOnlyFlag":1,"SendMsgResult":0,"ErrorInfo":"send msg succeed","UnreadMsgNum":7,"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"red packet"}}],"CloudCustomData":"your cloud custom data"}`

// result is one case's figures.
type result struct {
	mode      string
	enqueuers int
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

func run() error {
	duration := flag.Duration("duration", 3*time.Second, "how long each case enqueues")
	maxAcks := flag.Int("max", 2_000_000, "stop a case after this many acknowledgements")
	conc := flag.String("concurrency", "32,128", "comma-separated numbers of concurrent enqueuers")
	perRoute := flag.Int("per-route", spool.DefaultMaxConcurrencyPerRoute, "Options.MaxConcurrencyPerRoute: concurrent deliveries")
	deliver := flag.Bool("deliver", true, "deliver to a loopback backend while enqueuing, as a receiver does")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	dir := flag.String("dir", "", "where to create the spools (default: a temp dir, removed afterwards)")
	flag.Parse()

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
	var levels []int
	for _, f := range strings.Split(*conc, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return fmt.Errorf("bad -concurrency %q", *conc)
		}
		levels = append(levels, n)
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

	var results []result
	for _, n := range levels {
		for _, noSync := range []bool{false, true} {
			r, err := runCase(fmt.Sprintf("%s/%d-%t", base, n, noSync), noSync, n, *duration, *maxAcks, url, *perRoute)
			if err != nil {
				return err
			}
			results = append(results, r)
		}
	}
	fmt.Printf("Spool acknowledgement path, %d CPUs, %s per case, deliveries to a loopback backend: %t (%d per route)\n\n",
		runtime.NumCPU(), *duration, *deliver, *perRoute)
	fmt.Println("| mode | enqueuers | acks/s | p50 ack | p99 ack | fsync'd commits/s | commit p99 <= | acks per commit | delivered/s | errors | spool MiB (file) |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|---|")
	for _, r := range results {
		secs := r.elapsed.Seconds()
		perCommit := 0.0
		if r.commits > 0 {
			perCommit = float64(r.acks) / r.commits
		}
		commits := fmt.Sprintf("%.0f", r.commits/secs)
		if r.mode != "durable" {
			commits = "(no fsync) " + commits
		}
		fmt.Printf("| %s | %d | %.0f | %s | %s | %s | %s | %.1f | %.0f | %d | %.1f (%.1f) |\n", r.mode, r.enqueuers,
			float64(r.acks)/secs, ms(r.p50), ms(r.p99), commits, ms(r.commitP99), perCommit, r.delivered/secs, r.errors,
			float64(r.logical)/(1<<20), float64(r.file)/(1<<20))
	}
	return nil
}

func runCase(dir string, noSync bool, enqueuers int, duration time.Duration, maxAcks int, url string, perRoute int) (result, error) {
	reg := prometheus.NewRegistry()
	s, err := spool.Open(dir, spool.Options{NoSync: noSync, Registerer: reg, Logger: logr.Discard(), MaxConcurrencyPerRoute: perRoute})
	if err != nil {
		return result{}, err
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

	var next, errs atomic.Int64
	lat := make([][]time.Duration, enqueuers)
	deadline := time.Now().Add(duration)
	start := time.Now()
	var wg sync.WaitGroup
	for w := range enqueuers {
		wg.Go(func() {
			own := make([]time.Duration, 0, 1<<14)
			for time.Now().Before(deadline) {
				i := next.Add(1)
				if i > int64(maxAcks) {
					break
				}
				body := []byte(fmt.Sprintf(sampleBody, i))
				cb := &callback.Callback{
					ID:       callback.ComputeID(v1alpha1.ProviderTencentIM, "C2C.CallbackAfterSendMsg", body),
					Provider: v1alpha1.ProviderTencentIM, AppID: "1400000001", Command: "C2C.CallbackAfterSendMsg",
					RawQuery:   "SdkAppid=1400000001&CallbackCommand=C2C.CallbackAfterSendMsg&contenttype=json",
					Body:       body,
					ReceivedAt: time.Now(),
				}
				t0 := time.Now()
				if err := s.Enqueue(ctx, cb, targets); err != nil {
					errs.Add(1)
					if errors.Is(err, spool.ErrClosed) {
						break
					}
					continue
				}
				own = append(own, time.Since(t0))
			}
			lat[w] = own
		})
	}
	wg.Wait()
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
	logical := s.Bytes()
	if err := s.Close(); err != nil {
		return result{}, err
	}
	var file int64
	if fi, err := os.Stat(filepath.Join(dir, "spool.db")); err == nil {
		file = fi.Size()
	}
	all := slices.Concat(lat...)
	slices.Sort(all)
	r := result{mode: "durable", enqueuers: enqueuers, acks: len(all), errors: int(errs.Load()), elapsed: elapsed,
		logical: logical, file: file, commits: commits, delivered: delivered, commitP99: commitP99}
	if noSync {
		r.mode = "in-memory (NoSync)"
	}
	if len(all) > 0 {
		r.p50, r.p99 = all[len(all)/2], all[len(all)*99/100]
	}
	return r, nil
}

func ms(d time.Duration) string {
	return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000)
}
