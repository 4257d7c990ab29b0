package spool

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// labelRoute is the label naming a route (namespace/name).
const labelRoute = "route"

// metrics are the spool's Prometheus metrics. Depth and oldest age are computed when
// scraped from the in-memory index, so the delivery path pays nothing for them.
type metrics struct {
	s *Spool

	depthDesc     *prometheus.Desc
	oldestDesc    *prometheus.Desc
	bytesDesc     *prometheus.Desc
	heldDesc      *prometheus.Desc
	deliveries    *prometheus.CounterVec
	retries       *prometheus.CounterVec
	deadLetters   *prometheus.CounterVec
	enqueued      *prometheus.CounterVec
	commitErrors  prometheus.Counter
	commitSeconds prometheus.Histogram
	batchSize     prometheus.Histogram

	registerer prometheus.Registerer
	registered []prometheus.Collector
}

func newMetrics(s *Spool) *metrics {
	return &metrics{
		s: s,
		depthDesc: prometheus.NewDesc("callback_router_spool_depth",
			"Pending Async deliveries (waiting or in flight) per route.", []string{labelRoute}, nil),
		oldestDesc: prometheus.NewDesc("callback_router_spool_oldest_age_seconds",
			"Age of the oldest pending Async delivery per route, since the callback was received.", []string{labelRoute}, nil),
		heldDesc: prometheus.NewDesc("callback_router_spool_held_by_breaker",
			"Pending Async deliveries per route that are due but held back by their backend's open circuit breaker.", []string{labelRoute}, nil),
		bytesDesc: prometheus.NewDesc("callback_router_spool_bytes",
			"Logical size of the spool (payloads, pending deliveries, dead letters), checked against its maximum.", nil, nil),
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "callback_router_deliveries_total",
			Help: "Async delivery attempts by route and outcome (delivered, retry, dead_letter).",
		}, []string{labelRoute, "outcome"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "callback_router_delivery_retries_total",
			Help: "Async delivery retries scheduled, by route.",
		}, []string{labelRoute}),
		deadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "callback_router_dead_letters_total",
			Help: "Async deliveries moved to the dead-letter store, by route.",
		}, []string{labelRoute}),
		enqueued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "callback_router_spool_enqueued_total",
			Help: "Callbacks offered to the spool, by result (stored, full, error).",
		}, []string{"result"}),
		commitErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "callback_router_spool_commit_errors_total",
			Help: "Spool transactions that failed to commit (disk full, I/O error).",
		}),
		commitSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "callback_router_spool_commit_seconds",
			Help:    "Duration of one spool commit, fsync included.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "callback_router_spool_commit_batch_size",
			Help:    "Writes carried by one spool commit (one fsync).",
			Buckets: prometheus.ExponentialBuckets(1, 2, 11),
		}),
	}
}

// Describe implements prometheus.Collector for the scrape-time gauges.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.depthDesc
	ch <- m.oldestDesc
	ch <- m.bytesDesc
	ch <- m.heldDesc
}

// Collect implements prometheus.Collector for the scrape-time gauges.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	m.s.mu.Lock()
	queues := make([]*routeQueue, 0, len(m.s.routes))
	for _, q := range m.s.routes {
		queues = append(queues, q)
	}
	m.s.mu.Unlock()
	now := time.Now()
	for _, q := range queues {
		depth, oldest, held := q.stats()
		age := 0.0
		if depth > 0 && !oldest.IsZero() {
			age = now.Sub(oldest).Seconds()
		}
		ch <- prometheus.MustNewConstMetric(m.depthDesc, prometheus.GaugeValue, float64(depth), q.name)
		ch <- prometheus.MustNewConstMetric(m.oldestDesc, prometheus.GaugeValue, age, q.name)
		ch <- prometheus.MustNewConstMetric(m.heldDesc, prometheus.GaugeValue, float64(held), q.name)
	}
	ch <- prometheus.MustNewConstMetric(m.bytesDesc, prometheus.GaugeValue, float64(m.s.usedBytes.Load()))
}

func (m *metrics) register(r prometheus.Registerer) error {
	cs := []prometheus.Collector{m, m.s.breakers, m.deliveries, m.retries, m.deadLetters, m.enqueued,
		m.commitErrors, m.commitSeconds, m.batchSize}
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			for _, done := range m.registered {
				r.Unregister(done)
			}
			m.registered = nil
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return errors.New("another spool's metrics are already registered")
			}
			return err
		}
		m.registered = append(m.registered, c)
	}
	m.registerer = r
	return nil
}

// unregister removes the metrics on Close, so a spool reopened in the same process can
// register again.
func (m *metrics) unregister() {
	for _, c := range m.registered {
		m.registerer.Unregister(c)
	}
	m.registered = nil
}
