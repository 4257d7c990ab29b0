package spool

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// ReplayRecord is what the spool remembers of a replay run by ReplayOnce.
type ReplayRecord struct {
	ReplayResult
	// At is when the replay ran.
	At time.Time `json:"at"`
}

// ReplayOnce runs the replay identified by id (a CallbackReplay's UID) unless this spool
// has already run it, and returns its result either way. The record of the run is
// written in the replay's own transaction, so a crash cannot make a spool run a replay
// twice or forget one it ran.
func (s *Spool) ReplayOnce(ctx context.Context, id string, req ReplayRequest) (ReplayResult, error) {
	if id == "" {
		return ReplayResult{}, errors.New("replay: an ID is required")
	}
	if rec, ok, err := s.ReplayDone(id); err != nil || ok {
		return rec.ReplayResult, err
	}
	var at time.Time
	res, err := s.replay(ctx, req, func(w *txWriter, n int) error {
		at = time.Now()
		v, err := json.Marshal(ReplayRecord{ReplayResult: ReplayResult{Matched: n, Replayed: n}, At: at})
		if err != nil {
			return err
		}
		// Not through w.put: the record is bookkeeping, not spool bytes.
		return w.tx.Bucket(bucketReplays).Put([]byte(id), v)
	})
	if err != nil {
		return ReplayResult{}, err
	}
	return res, nil
}

// ReplayDone returns the record of replay id, if this spool ran it.
func (s *Spool) ReplayDone(id string) (ReplayRecord, bool, error) {
	var rec ReplayRecord
	found := false
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketReplays).Get([]byte(id))
		if v == nil {
			return nil
		}
		found = true
		if err := json.Unmarshal(v, &rec); err != nil {
			return fmt.Errorf("decoding the record of replay %s: %w", id, err)
		}
		return nil
	})
	return rec, found, err
}
