// Package replays carries out, on a receiver pod, the CallbackReplays the manager
// publishes in the pod's routing table (routing.Snapshot.Replays), and exposes each one's
// result on the pod's /metrics, where the manager reads it to write the CallbackReplay's
// status.
//
// Each replay runs once per spool (spool.ReplayOnce records its UID in the replay's own
// transaction). Results are exposed only for the replays in the current table, so the
// metrics' cardinality follows the replays in progress.
package replays

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/callback-router/callback-router/webhook/routing"
	"github.com/callback-router/callback-router/webhook/spool"
)

// Metric names (the manager parses them: controllers.ParseReplayMetrics).
const (
	// MetricMatched is how many deliveries a replay selected on this pod.
	MetricMatched = "callback_router_replay_matched"
	// MetricReplayed is how many it queued for delivery again on this pod.
	MetricReplayed = "callback_router_replay_replayed"
	// MetricErrors is 1 while the last attempt of a replay failed on this pod (it is retried).
	MetricErrors = "callback_router_replay_errors"
	// LabelReplay is the replay's UID.
	LabelReplay = "replay"
)

// DefaultRetryInterval is how long a pod waits before retrying a replay that failed (a
// full spool, a closing spool).
const DefaultRetryInterval = 10 * time.Second

// Spool is what a Runner needs of the spool.
type Spool interface {
	ReplayOnce(ctx context.Context, id string, req spool.ReplayRequest) (spool.ReplayResult, error)
}

// Unsupported is the Spool of a queue that cannot run replays (the JetStream spool keeps
// no delivered callbacks and no replay records): every replay fails with an error that
// says so, shown per pod in the CallbackReplay's status.
func Unsupported(where string) Spool { return unsupported(where) }

type unsupported string

func (u unsupported) ReplayOnce(context.Context, string, spool.ReplayRequest) (spool.ReplayResult, error) {
	return spool.ReplayResult{}, fmt.Errorf("the spool at %s does not carry out CallbackReplays: use `callback-router deadletters redrive --spool-url`", string(u))
}

// Runner runs the replays of the latest table.
type Runner struct {
	spool    Spool
	log      logr.Logger
	retry    time.Duration
	matched  *prometheus.GaugeVec
	replayed *prometheus.GaugeVec
	errors   *prometheus.GaugeVec

	mu      sync.Mutex
	latest  []routing.Replay
	wake    chan struct{}
	exposed map[string]bool // UIDs with series: true once the replay ran
}

// New registers the replay metrics with reg and returns a Runner; retry 0 is DefaultRetryInterval.
func New(sp Spool, reg prometheus.Registerer, log logr.Logger, retry time.Duration) (*Runner, error) {
	if retry <= 0 {
		retry = DefaultRetryInterval
	}
	r := &Runner{
		spool: sp, log: log, retry: retry, wake: make(chan struct{}, 1), exposed: map[string]bool{},
		matched: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: MetricMatched,
			Help: "Deliveries a CallbackReplay (by UID) selected in this pod's spool; present once the pod ran it."}, []string{LabelReplay}),
		replayed: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: MetricReplayed,
			Help: "Deliveries a CallbackReplay (by UID) queued again in this pod's spool; present once the pod ran it."}, []string{LabelReplay}),
		errors: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: MetricErrors,
			Help: "1 while the last attempt of a CallbackReplay (by UID) failed on this pod; it is retried."}, []string{LabelReplay}),
	}
	for _, c := range []prometheus.Collector{r.matched, r.replayed, r.errors} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// Set hands the replays of a new table to the Runner; it never blocks.
func (r *Runner) Set(list []routing.Replay) {
	r.mu.Lock()
	r.latest = list
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Run runs replays until ctx ends.
func (r *Runner) Run(ctx context.Context) {
	t := time.NewTimer(r.retry)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.wake:
		case <-t.C:
		}
		failed := r.pass(ctx)
		if !t.Stop() {
			select {
			case <-t.C:
			default:
			}
		}
		if failed {
			t.Reset(r.retry)
		}
	}
}

// pass runs (or reads the record of) each replay of the latest table and drops the series
// of replays no longer in it. It reports whether any failed.
func (r *Runner) pass(ctx context.Context) bool {
	r.mu.Lock()
	list := r.latest
	r.mu.Unlock()
	keep := make(map[string]bool, len(list))
	failed := false
	for _, x := range list {
		keep[x.UID] = true
		req := spool.ReplayRequest{Route: x.Route, Source: x.Source, IDs: x.IDs, From: x.From, To: x.To}
		res, err := r.spool.ReplayOnce(ctx, x.UID, req)
		if err != nil {
			if ctx.Err() != nil {
				return false
			}
			failed = true
			r.errors.WithLabelValues(x.UID).Set(1)
			if _, ok := r.exposed[x.UID]; !ok {
				r.exposed[x.UID] = false
			}
			r.log.Error(err, "Replay failed; retrying", "replay", x.Namespace+"/"+x.Name, "uid", x.UID, "retryIn", r.retry)
			continue
		}
		r.errors.WithLabelValues(x.UID).Set(0)
		if !r.exposed[x.UID] {
			r.log.Info("Replay ran", "replay", x.Namespace+"/"+x.Name, "uid", x.UID, "route", x.Route,
				"source", x.Source, "matched", res.Matched, "replayed", res.Replayed)
		}
		r.matched.WithLabelValues(x.UID).Set(float64(res.Matched))
		r.replayed.WithLabelValues(x.UID).Set(float64(res.Replayed))
		r.exposed[x.UID] = true
	}
	for uid := range r.exposed {
		if !keep[uid] {
			for _, g := range []*prometheus.GaugeVec{r.matched, r.replayed, r.errors} {
				g.DeleteLabelValues(uid)
			}
			delete(r.exposed, uid)
		}
	}
	return failed
}
