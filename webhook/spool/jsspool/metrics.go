package jsspool

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the JetStream spool's counters, under the embedded spool's names so that
// dashboards and alerts work with either. Depth and age are JetStream's own (the
// consumers' num_pending and num_ack_pending, from the NATS server's monitoring).
type metrics struct {
	deliveries  *prometheus.CounterVec
	retries     *prometheus.CounterVec
	deadLetters *prometheus.CounterVec
	enqueued    *prometheus.CounterVec
	breakers    prometheus.Collector

	registerer prometheus.Registerer
	registered []prometheus.Collector
}

// labelRoute is the label naming a route (namespace/name), as in the embedded spool.
const labelRoute = "route"

func newMetrics() *metrics {
	return &metrics{
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
			Help: "Callbacks offered to the spool, by result (stored, error).",
		}, []string{"result"}),
	}
}

func (m *metrics) register(r prometheus.Registerer) error {
	m.registerer = r
	for _, c := range []prometheus.Collector{m.deliveries, m.retries, m.deadLetters, m.enqueued, m.breakers} {
		if err := r.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				m.unregister()
				return err
			}
		}
		m.registered = append(m.registered, c)
	}
	return nil
}

func (m *metrics) unregister() {
	for _, c := range m.registered {
		m.registerer.Unregister(c)
	}
	m.registered = nil
}
