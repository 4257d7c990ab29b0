package spool

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/go-logr/logr"

	"github.com/callback-router/callback-router/webhook/callback"
)

// BenchmarkEnqueue measures one acknowledgement (Enqueue of a sample callback with one
// target) from b.RunParallel's goroutines, durable and NoSync. Run with -cpu and
// -benchtime; hack/bench/spool gives the throughput and p99 figures.
func BenchmarkEnqueue(b *testing.B) {
	for _, mode := range []struct {
		name   string
		noSync bool
	}{{"durable", false}, {"nosync", true}} {
		b.Run(mode.name, func(b *testing.B) {
			s, err := Open(b.TempDir(), Options{NoSync: mode.noSync, Logger: logr.Discard()})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			targets := []callback.Target{target("bench/r", "http://127.0.0.1:1/unused", 3)}
			cbs := make([]*callback.Callback, 1024)
			for i := range cbs {
				cbs[i] = sampleCallback(b, i)
			}
			var n atomic.Int64
			b.SetParallelism(16) // 16 x GOMAXPROCS concurrent enqueuers, like a busy receiver
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := s.Enqueue(context.Background(), cbs[n.Add(1)%int64(len(cbs))], targets); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
