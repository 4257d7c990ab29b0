package spool

import (
	"context"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/callback-router/callback-router/api/v1alpha1"
)

// DeadLetter is a delivery whose attempts ran out, or that a backend refused in a way
// retrying cannot fix. It keeps the callback until it is redriven or purged.
type DeadLetter struct {
	// Key identifies this dead letter in the spool (sequence number and target index).
	Key string `json:"key"`
	// ID is the callback's X-Callback-Id.
	ID       string            `json:"id"`
	Provider v1alpha1.Provider `json:"provider"`
	AppID    string            `json:"appID"`
	Command  string            `json:"command"`
	// Route is the route's namespace/name; URL the backend it was sent to.
	Route string `json:"route"`
	URL   string `json:"url"`
	// Attempts is the number of attempts made.
	Attempts int `json:"attempts"`
	// LastError says why the last attempt failed.
	LastError  string    `json:"lastError"`
	ReceivedAt time.Time `json:"receivedAt"`
	DeadAt     time.Time `json:"deadAt"`
	// BodyBytes is the size of the stored callback body.
	BodyBytes int `json:"bodyBytes"`
}

// Filter selects dead letters; empty fields match everything.
type Filter struct {
	// Route is a route's namespace/name.
	Route string
	// ID is a callback's X-Callback-Id.
	ID string
}

func (f Filter) match(dl *DeadLetter) bool {
	return (f.Route == "" || f.Route == dl.Route) && (f.ID == "" || f.ID == dl.ID)
}

// deadLetter builds the DeadLetter of one dead record.
func deadLetter(tx *bolt.Tx, k, v []byte) (*DeadLetter, *delivery, error) {
	seq, idx, ok := parseDeliveryKey(k)
	if !ok {
		return nil, nil, fmt.Errorf("%w: dead key %x", errCorrupt, k)
	}
	d, err := decodeDelivery(v)
	if err != nil {
		return nil, nil, fmt.Errorf("decoding dead letter %x: %w", k, err)
	}
	dl := &DeadLetter{
		Key:       fmt.Sprintf("%d.%d", seq, idx),
		Route:     d.Target.Route,
		URL:       d.Target.URL,
		Attempts:  d.Attempts,
		LastError: d.LastError,
		DeadAt:    d.DeadAt,
	}
	if cbv := tx.Bucket(bucketCallbacks).Get(seqKey(seq)); cbv != nil {
		cb, err := decodeCallback(cbv)
		if err != nil {
			return nil, nil, fmt.Errorf("decoding callback %d: %w", seq, err)
		}
		dl.ID, dl.Provider, dl.AppID, dl.Command = cb.ID, cb.Provider, cb.AppID, cb.Command
		dl.ReceivedAt, dl.BodyBytes = cb.ReceivedAt, len(cb.Body)
	}
	return dl, d, nil
}

// DeadLetters lists the dead letters that match f, oldest acknowledgement first.
func (s *Spool) DeadLetters(f Filter) ([]DeadLetter, error) {
	var out []DeadLetter
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketDead).ForEach(func(k, v []byte) error {
			dl, _, err := deadLetter(tx, k, v)
			if err != nil {
				return err
			}
			if f.match(dl) {
				out = append(out, *dl)
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("listing dead letters: %w", err)
	}
	return out, nil
}

// Redrive moves the dead letters that match f back to pending, with their attempt count
// reset, due at once. It returns how many it moved. On a running spool they are
// delivered right away; otherwise when a receiver next runs on the directory.
func (s *Spool) Redrive(ctx context.Context, f Filter) (int, error) {
	n, err := s.purge(ctx, f.match, false)
	if err != nil {
		return 0, fmt.Errorf("redriving dead letters: %w", err)
	}
	return n, nil
}

// PurgeDeadLetters deletes the dead letters that match f for good, freeing their space.
func (s *Spool) PurgeDeadLetters(ctx context.Context, f Filter) (int, error) {
	n, err := s.purge(ctx, f.match, true)
	if err != nil {
		return 0, fmt.Errorf("purging dead letters: %w", err)
	}
	return n, nil
}

// purge removes the matching dead letters: deleted for good, or redriven to pending.
func (s *Spool) purge(ctx context.Context, match func(*DeadLetter) bool, drop bool, record ...func(w *txWriter, n int) error) (int, error) {
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
			var keys [][]byte
			var dels []*delivery
			var recv []time.Time
			err := w.tx.Bucket(bucketDead).ForEach(func(k, v []byte) error {
				dl, d, err := deadLetter(w.tx, k, v)
				if err != nil {
					return err
				}
				if match(dl) {
					keys = append(keys, append([]byte(nil), k...))
					dels, recv = append(dels, d), append(recv, dl.ReceivedAt)
				}
				return nil
			})
			if err != nil {
				return err
			}
			for i, k := range keys {
				if err := w.del(bucketDead, k); err != nil {
					return err
				}
				seq, idx, _ := parseDeliveryKey(k)
				if drop {
					if err := w.dropCallbackIfUnused(seq); err != nil {
						return err
					}
					done = append(done, moved{seq: seq, idx: idx})
					continue
				}
				d := dels[i]
				d.Attempts, d.NextAt, d.DeadAt = 0, time.Now(), time.Time{}
				d.Target.Replay = true // sent with X-Callback-Replay: true
				if err := w.put(bucketPending, k, encodeDelivery(d)); err != nil {
					return err
				}
				done = append(done, moved{seq: seq, idx: idx, d: d, receivedAt: recv[i]})
			}
			for _, rec := range record {
				if err := rec(w, len(done)); err != nil {
					return err
				}
			}
			return nil
		},
		after: func() {
			if drop {
				return
			}
			for _, m := range done {
				s.addPending(m.seq, m.idx, m.d, m.receivedAt)
			}
		},
	}
	if err := s.submit(ctx, o); err != nil {
		return 0, err
	}
	return len(done), nil
}
