package controllers

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/callback-router/callback-router/api/v1alpha1"
)

// StatusScrapeTimeout bounds reading the objects (from the manager's cache) for one scrape.
const StatusScrapeTimeout = 5 * time.Second

// Labels of the status metrics. The object's namespace is object_namespace, not
// namespace: Prometheus' target labels already have a namespace (the manager pod's).
const (
	labelKind            = "kind"
	labelObjectNamespace = "object_namespace"
	labelObjectName      = "object_name"
)

// StatusCollector exports the status of every CallbackReceiver, CallbackApp and
// CallbackRoute as metrics, read when scraped (as kube-state-metrics does for built-in
// kinds), so that alerts and dashboards see conditions: callback_router_status_condition
// (1 per condition, with its type, status and reason), and per receiver
// callback_router_receiver_replicas and callback_router_receiver_ready_replicas.
type StatusCollector struct {
	reader    atomic.Pointer[client.Reader]
	condition *prometheus.Desc
	replicas  *prometheus.Desc
	ready     *prometheus.Desc
	errors    prometheus.Counter
}

// NewStatusCollector returns a collector reading objects from r.
func NewStatusCollector(r client.Reader) *StatusCollector {
	c := &StatusCollector{
		condition: prometheus.NewDesc("callback_router_status_condition",
			"Conditions of CallbackReceivers, CallbackApps and CallbackRoutes: 1 per condition, with its type, status and reason.",
			[]string{labelKind, labelObjectNamespace, labelObjectName, "type", "status", "reason"}, nil),
		replicas: prometheus.NewDesc("callback_router_receiver_replicas",
			"Receiver pods of a CallbackReceiver (status.replicas).", []string{labelObjectNamespace, labelObjectName}, nil),
		ready: prometheus.NewDesc("callback_router_receiver_ready_replicas",
			"Receiver pods of a CallbackReceiver ready to serve (status.readyReplicas).", []string{labelObjectNamespace, labelObjectName}, nil),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "callback_router_status_scrape_errors_total",
			Help: "Scrapes of the status metrics that could not list the objects.",
		}),
	}
	c.reader.Store(&r)
	return c
}

// sharedStatus is the collector on controller-runtime's registry (the manager's
// /metrics); Setup points it at the current manager's cache.
var sharedStatus atomic.Pointer[StatusCollector]

// RegisterStatusMetrics serves the status metrics of mgr's objects on the manager's
// /metrics. Calling it again (another manager in the same process, as tests do) re-points
// the registered collector at the new manager's cache.
func RegisterStatusMetrics(mgr ctrl.Manager) error {
	if c := sharedStatus.Load(); c != nil {
		r := client.Reader(mgr.GetCache())
		c.reader.Store(&r)
		return nil
	}
	c := NewStatusCollector(mgr.GetCache())
	if err := metrics.Registry.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if !errors.As(err, &are) {
			return err
		}
	}
	sharedStatus.Store(c)
	return nil
}

// Describe implements prometheus.Collector.
func (c *StatusCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.condition
	ch <- c.replicas
	ch <- c.ready
	c.errors.Describe(ch)
}

// Collect implements prometheus.Collector.
func (c *StatusCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), StatusScrapeTimeout)
	defer cancel()
	r := *c.reader.Load()
	conds := func(kind string, o metav1.Object, cs []metav1.Condition) {
		for _, cd := range cs {
			ch <- prometheus.MustNewConstMetric(c.condition, prometheus.GaugeValue, 1,
				kind, o.GetNamespace(), o.GetName(), cd.Type, string(cd.Status), cd.Reason)
		}
	}
	var recvs v1alpha1.CallbackReceiverList
	if err := r.List(ctx, &recvs); err != nil {
		c.errors.Inc()
	}
	for i := range recvs.Items {
		o := &recvs.Items[i]
		conds("CallbackReceiver", o, o.Status.Conditions)
		ch <- prometheus.MustNewConstMetric(c.replicas, prometheus.GaugeValue, float64(o.Status.Replicas), o.Namespace, o.Name)
		ch <- prometheus.MustNewConstMetric(c.ready, prometheus.GaugeValue, float64(o.Status.ReadyReplicas), o.Namespace, o.Name)
	}
	var apps v1alpha1.CallbackAppList
	if err := r.List(ctx, &apps); err != nil {
		c.errors.Inc()
	}
	for i := range apps.Items {
		conds("CallbackApp", &apps.Items[i], apps.Items[i].Status.Conditions)
	}
	var routes v1alpha1.CallbackRouteList
	if err := r.List(ctx, &routes); err != nil {
		c.errors.Inc()
	}
	for i := range routes.Items {
		conds("CallbackRoute", &routes.Items[i], routes.Items[i].Status.Conditions)
	}
	c.errors.Collect(ch)
}
