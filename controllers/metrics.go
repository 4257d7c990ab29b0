package controllers

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/callback-router/callback-router/webhook/tablestore"
)

// tableMetrics describe the published routing table, on the manager's /metrics.
type tableMetrics struct {
	routes        prometheus.Gauge
	shards        prometheus.Gauge
	bytes         prometheus.Gauge
	shardWrites   prometheus.Counter
	manifestWrite prometheus.Counter
}

var sharedTableMetrics = func() *tableMetrics {
	m := &tableMetrics{
		routes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "callback_router_table_routes", Help: "Routes in the published routing table."}),
		shards: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "callback_router_table_shards", Help: "Shard Secrets of the published routing table."}),
		bytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "callback_router_table_compressed_bytes", Help: "Compressed size of the published routing table."}),
		shardWrites: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "callback_router_table_shard_writes_total", Help: "Table shard Secrets written (unchanged shards are skipped)."}),
		manifestWrite: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "callback_router_table_publishes_total", Help: "Routing tables published (manifest writes)."}),
	}
	metrics.Registry.MustRegister(m.routes, m.shards, m.bytes, m.shardWrites, m.manifestWrite)
	return m
}()

func newTableMetrics() *tableMetrics { return sharedTableMetrics }

func (m *tableMetrics) observe(routes int, res tablestore.WriteResult) {
	if m == nil {
		return
	}
	m.routes.Set(float64(routes))
	m.shards.Set(float64(res.Shards))
	m.bytes.Set(float64(res.CompressedBytes))
	m.shardWrites.Add(float64(res.ShardsWritten))
	if res.ManifestWritten {
		m.manifestWrite.Inc()
	}
}
