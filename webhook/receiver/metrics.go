package receiver

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Outcomes of a callback, the outcome label of callback_router_requests_total.
const (
	OutcomeAcknowledged     = "acknowledged"       // 200 OK envelope: Async copies stored, or nothing routed
	OutcomeSyncAnswered     = "sync_answered"      // the Sync backend's answer was passed back
	OutcomeSyncFailedAllow  = "sync_failed_allow"  // Sync backend failed, failurePolicy Allow
	OutcomeSyncFailedReject = "sync_failed_reject" // Sync backend failed, failurePolicy Reject
	OutcomeNotFound         = "not_found"          // no route for the provider and app
	OutcomeUnauthorized     = "unauthorized"       // failed every route's Sign or Basic auth check
	OutcomeForbidden        = "forbidden"          // failed every route's sourceCIDRs check
	OutcomeBadRequest       = "bad_request"        // malformed URL or body not JSON
	OutcomeTooLarge         = "too_large"          // body over the limit
	OutcomeUnavailable      = "unavailable"        // not ready, or an Async copy could not be stored
)

// Label values used when the real value would let an unverified caller grow the label set.
const (
	labelOther = "_other"
)

// Label names shared by several metrics.
const (
	labelProvider = "provider"
	labelApp      = "app"
)

// Metrics are the receiver's Prometheus collectors.
type Metrics struct {
	requests    *prometheus.CounterVec
	verifyFails *prometheus.CounterVec
	backend     *prometheus.HistogramVec
	asyncCopies *prometheus.CounterVec
	generation  prometheus.Gauge
	routes      prometheus.Gauge
	// bodyBudgetWaits counts verified callbacks answered 503 because the in-flight body
	// budget stayed full for BodyBudgetWait.
	bodyBudgetWaits prometheus.Counter
	// filterErrors counts callbacks on which a route's filter failed at run time (they
	// do not reach the route), by route; filteredOut those a filter kept from a route.
	filterErrors *prometheus.CounterVec
	filteredOut  *prometheus.CounterVec
	requestCache sync.Map // requestKey -> prometheus.Counter
	backendCache sync.Map // backendKey -> prometheus.Observer
	asyncCache   sync.Map // appLabels -> prometheus.Counter
}

type requestKey struct{ provider, app, command, outcome string }
type backendKey struct{ provider, app, result string }
type appLabels struct{ provider, app string }

// NewMetrics creates the collectors and registers them with reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "callback_router_requests_total",
			Help: "Callbacks received, by provider, app, command and outcome.",
		}, []string{labelProvider, labelApp, "command", "outcome"}),
		verifyFails: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "callback_router_verification_failures_total",
			Help: "Callbacks rejected because they failed every matching route's checks, by reason.",
		}, []string{labelProvider, "reason"}),
		backend: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "callback_router_backend_request_duration_seconds",
			Help:    "Latency of Sync backend requests, by provider, app and result (ok or error).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 1.5, 2, 5, 15},
		}, []string{labelProvider, labelApp, "result"}),
		asyncCopies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "callback_router_async_copies_total",
			Help: "Async copies handed to the durable spool, by provider and app.",
		}, []string{labelProvider, labelApp}),
		generation: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "callback_router_table_generation",
			Help: "Number of routing tables loaded since start; 0 until the first one.",
		}),
		routes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "callback_router_table_routes",
			Help: "Routes in the live routing table.",
		}),
		bodyBudgetWaits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "callback_router_body_budget_exhausted_total",
			Help: "Verified callbacks answered 503 because the in-flight body budget (--max-inflight-body-bytes) stayed full.",
		}),
		filterErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "callback_router_filter_errors_total",
			Help: "Callbacks on which a route's CEL filter failed at run time (missing field, wrong type, cost limit); they did not reach the route. By route (namespace/name).",
		}, []string{"route"}),
		filteredOut: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "callback_router_filtered_total",
			Help: "Callbacks that matched a route's commands but not its filter (errors included), by provider and app.",
		}, []string{labelProvider, labelApp}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.verifyFails, m.backend, m.asyncCopies, m.generation, m.routes, m.bodyBudgetWaits, m.filterErrors, m.filteredOut} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// registerReady registers callback_router_receiver_ready, read from ready when scraped.
func (m *Metrics) registerReady(reg prometheus.Registerer, ready func() bool) error {
	return reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "callback_router_receiver_ready",
		Help: "1 while /readyz answers 200 (a routing table is loaded and the receiver is not draining), else 0.",
	}, func() float64 {
		if ready() {
			return 1
		}
		return 0
	}))
}

// request counts one callback. The counter of each label set is cached: WithLabelValues
// hashes every label on each call, a sync.Map lookup of a comparable key does not allocate.
func (m *Metrics) request(provider, app, command, outcome string) {
	k := requestKey{provider, app, command, outcome}
	c, ok := m.requestCache.Load(k)
	if !ok {
		c, _ = m.requestCache.LoadOrStore(k, m.requests.WithLabelValues(provider, app, command, outcome))
	}
	c.(prometheus.Counter).Inc()
}

func (m *Metrics) backendObserve(provider, app, result string, seconds float64) {
	k := backendKey{provider, app, result}
	o, ok := m.backendCache.Load(k)
	if !ok {
		o, _ = m.backendCache.LoadOrStore(k, m.backend.WithLabelValues(provider, app, result))
	}
	o.(prometheus.Observer).Observe(seconds)
}

func (m *Metrics) asyncCopiesAdd(provider, app string, n int) {
	k := appLabels{provider, app}
	c, ok := m.asyncCache.Load(k)
	if !ok {
		c, _ = m.asyncCache.LoadOrStore(k, m.asyncCopies.WithLabelValues(provider, app))
	}
	c.(prometheus.Counter).Add(float64(n))
}
