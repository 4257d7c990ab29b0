package tablestore

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/callback-router/callback-router/webhook/routing"
)

// MarshalSnapshot is the stored form of a snapshot: its JSON, deterministic for the same
// input, so an unchanged table hashes the same and is not rewritten.
func MarshalSnapshot(s *routing.Snapshot) ([]byte, error) {
	b, err := json.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("marshalling routing snapshot: %w", err)
	}
	return b, nil
}

// WriteSnapshot stores a compiled routing snapshot; see Write.
func (w *Writer) WriteSnapshot(ctx context.Context, s *routing.Snapshot) (WriteResult, error) {
	b, err := MarshalSnapshot(s)
	if err != nil {
		return WriteResult{}, err
	}
	return w.Write(ctx, b)
}

// Watch watches the table name in namespace (see WatchBytes) and calls onTable with each
// new complete snapshot. The receiver builds a routing.Table from it and swaps it in; a
// snapshot that does not decode is logged and skipped, keeping the last good table.
func Watch(ctx context.Context, cfg *rest.Config, namespace, name string, startTimeout time.Duration, onTable func(*routing.Snapshot)) error {
	log := ctrllog.FromContext(ctx).WithValues("namespace", namespace, "table", name)
	return WatchBytes(ctx, cfg, namespace, name, startTimeout, func(data []byte, sum string) {
		s := &routing.Snapshot{}
		if err := json.Unmarshal(data, s); err != nil {
			log.Error(err, "Ignored a table that does not decode; keeping the last good one", "sha256", sum)
			return
		}
		log.Info("Loaded routing table", "routes", len(s.Routes), "sha256", sum)
		onTable(s)
	})
}

// ReadSnapshot reads and decodes the stored snapshot; see Read.
func ReadSnapshot(ctx context.Context, r client.Reader, namespace, name string) (*routing.Snapshot, error) {
	b, err := Read(ctx, r, namespace, name)
	if err != nil {
		return nil, err
	}
	s := &routing.Snapshot{}
	if err := json.Unmarshal(b, s); err != nil {
		return nil, fmt.Errorf("decoding routing snapshot: %w", err)
	}
	return s, nil
}
