package spool

import (
	"context"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/callback-router/callback-router/webhook/callback"
)

// Replay sources: where Replay finds the deliveries to send again.
const (
	// SourceDeadLetters replays dead letters (a redrive marked as a replay).
	SourceDeadLetters = "DeadLetters"
	// SourceDelivered replays delivered callbacks kept by Options.DeliveredRetention.
	SourceDelivered = "Delivered"
)

// ReplayRequest selects what to replay. Route is required; IDs, when given, select by
// X-Callback-Id, else From/To (the callback's receive time, From inclusive, To
// exclusive, zero: unbounded) do.
type ReplayRequest struct {
	Route  string    `json:"route"`
	Source string    `json:"source"`
	IDs    []string  `json:"ids,omitempty"`
	From   time.Time `json:"from,omitzero"`
	To     time.Time `json:"to,omitzero"`
}

// ReplayResult counts what a replay found and queued.
type ReplayResult struct {
	// Matched is the number of deliveries the request selected.
	Matched int `json:"matched"`
	// Replayed is how many of them were queued for delivery again (all of them, unless
	// the request failed part-way, when it is 0: a replay is one transaction).
	Replayed int `json:"replayed"`
}

// Validate checks a request.
func (r *ReplayRequest) Validate() error {
	switch {
	case r.Route == "":
		return errors.New("replay: route is required")
	case r.Source != SourceDeadLetters && r.Source != SourceDelivered:
		return fmt.Errorf("replay: source must be %s or %s, not %q", SourceDeadLetters, SourceDelivered, r.Source)
	case len(r.IDs) > 0 && (!r.From.IsZero() || !r.To.IsZero()):
		return errors.New("replay: give callback IDs or a time range, not both")
	case !r.From.IsZero() && !r.To.IsZero() && !r.From.Before(r.To):
		return errors.New("replay: from must be before to")
	}
	return nil
}

func (r *ReplayRequest) match(route, id string, receivedAt time.Time) bool {
	if route != r.Route {
		return false
	}
	if len(r.IDs) > 0 {
		for _, x := range r.IDs {
			if x == id {
				return true
			}
		}
		return false
	}
	return (r.From.IsZero() || !receivedAt.Before(r.From)) && (r.To.IsZero() || receivedAt.Before(r.To))
}

// Replay queues the selected deliveries again, due at once, with their attempt count
// reset and marked as replays (X-Callback-Replay: true, the original X-Callback-Id and
// traceparent). Dead letters leave the dead-letter store; delivered callbacks leave the
// retained set (and come back to it, with a new retention window, once delivered).
func (s *Spool) Replay(ctx context.Context, req ReplayRequest) (ReplayResult, error) {
	return s.replay(ctx, req, nil)
}

// replay is Replay; record, when set, runs in the replay's transaction with the count.
func (s *Spool) replay(ctx context.Context, req ReplayRequest, record func(w *txWriter, n int) error) (ReplayResult, error) {
	if err := req.Validate(); err != nil {
		return ReplayResult{}, err
	}
	var recs []func(w *txWriter, n int) error
	if record != nil {
		recs = append(recs, record)
	}
	if req.Source == SourceDeadLetters {
		n, err := s.purge(ctx, func(dl *DeadLetter) bool { return req.match(dl.Route, dl.ID, dl.ReceivedAt) }, false, recs...)
		if err != nil {
			return ReplayResult{}, fmt.Errorf("replaying dead letters: %w", err)
		}
		return ReplayResult{Matched: n, Replayed: n}, nil
	}
	type moved struct {
		seq        uint64
		idx        uint16
		d          *delivery
		receivedAt time.Time
	}
	var done []moved
	o := &op{
		apply: func(w *txWriter) error {
			done = done[:0]
			type sel struct {
				k  []byte
				d  *delivery
				at time.Time
			}
			var sels []sel
			err := w.tx.Bucket(bucketDelivered).ForEach(func(k, v []byte) error {
				d, err := decodeDelivery(v)
				if err != nil {
					return fmt.Errorf("decoding delivered %x: %w", k, err)
				}
				if d.Target.Route != req.Route {
					return nil
				}
				seq, _, ok := parseDeliveryKey(k)
				if !ok {
					return fmt.Errorf("%w: delivered key %x", errCorrupt, k)
				}
				cbv := w.tx.Bucket(bucketCallbacks).Get(seqKey(seq))
				if cbv == nil {
					return nil
				}
				cb, err := decodeCallback(cbv)
				if err != nil {
					return err
				}
				if req.match(d.Target.Route, cb.ID, cb.ReceivedAt) {
					sels = append(sels, sel{append([]byte(nil), k...), d, cb.ReceivedAt})
				}
				return nil
			})
			if err != nil {
				return err
			}
			for _, x := range sels {
				if err := w.del(bucketDelivered, x.k); err != nil {
					return err
				}
				d := x.d
				d.Attempts, d.NextAt, d.DeadAt, d.LastError = 0, time.Now(), time.Time{}, ""
				d.Target.Replay = true
				if err := w.put(bucketPending, x.k, encodeDelivery(d)); err != nil {
					return err
				}
				seq, idx, _ := parseDeliveryKey(x.k)
				done = append(done, moved{seq, idx, d, x.at})
			}
			for _, rec := range recs {
				if err := rec(w, len(done)); err != nil {
					return err
				}
			}
			return nil
		},
		after: func() {
			for _, m := range done {
				s.addPending(m.seq, m.idx, m.d, m.receivedAt)
			}
		},
	}
	if err := s.submit(ctx, o); err != nil {
		return ReplayResult{}, fmt.Errorf("replaying delivered callbacks: %w", err)
	}
	return ReplayResult{Matched: len(done), Replayed: len(done)}, nil
}

// retainDelivered keeps a delivered delivery for Options.DeliveredRetention, in the
// same transaction that removes it from pending; the payload stays while it is kept.
func (s *Spool) retainDelivered(w *txWriter, key []byte, t *callback.Target, attempts int, orderKey string) error {
	if s.opts.DeliveredRetention <= 0 {
		return nil
	}
	tg := *t
	tg.Replay = false
	// The order key goes with it: a replay of an ordered route is ordered too.
	return w.put(bucketDelivered, key, encodeDelivery(&delivery{Target: tg, Attempts: attempts, DeadAt: time.Now(), OrderKey: orderKey}))
}

// Delivered lists the retained delivered deliveries of a route ("" for all), oldest
// acknowledgement first: what a replay from SourceDelivered can select.
func (s *Spool) Delivered(route string) ([]DeadLetter, error) {
	var out []DeadLetter
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketDelivered).ForEach(func(k, v []byte) error {
			dl, _, err := deadLetter(tx, k, v)
			if err != nil {
				return err
			}
			if route == "" || dl.Route == route {
				out = append(out, *dl)
			}
			return nil
		})
	})
	return out, err
}

// sweepDelivered deletes retained deliveries older than Options.DeliveredRetention.
func (s *Spool) sweepDelivered(ctx context.Context) {
	if s.opts.DeliveredRetention <= 0 {
		return
	}
	cutoff := time.Now().Add(-s.opts.DeliveredRetention)
	n := 0
	o := &op{apply: func(w *txWriter) error {
		n = 0
		var keys [][]byte
		err := w.tx.Bucket(bucketDelivered).ForEach(func(k, v []byte) error {
			d, err := decodeDelivery(v)
			if err != nil {
				return err
			}
			if d.DeadAt.Before(cutoff) {
				keys = append(keys, append([]byte(nil), k...))
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range keys {
			if err := w.del(bucketDelivered, k); err != nil {
				return err
			}
			seq, _, _ := parseDeliveryKey(k)
			if err := w.dropCallbackIfUnused(seq); err != nil {
				return err
			}
			n++
		}
		return nil
	}}
	if err := s.submit(ctx, o); err != nil {
		if ctx.Err() == nil {
			s.log.Error(err, "Failed to remove expired delivered callbacks")
		}
		return
	}
	if n > 0 {
		s.log.Info("Removed expired delivered callbacks", "count", n, "retention", s.opts.DeliveredRetention.String())
	}
}
