// Package spool is the durable queue behind Async routes: the receiver stores a callback
// here (fsync'd, concurrent enqueues sharing one commit) before it answers OK, and the
// spool then delivers it to every Async route that matched, each route independently,
// with retries, until the backend accepts it or its attempts run out and it becomes a
// dead letter. The store is a bbolt file in the spool directory; an in-memory index of
// due deliveries per route is rebuilt from it on Open, so a restart after a crash
// resumes every acknowledged, undelivered callback.
package spool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/callback-router/callback-router/api/v1alpha1"
	"github.com/callback-router/callback-router/webhook/callback"
	dctl "github.com/callback-router/callback-router/webhook/delivery"
)

// Errors returned by the spool. The receiver answers 503 for any Enqueue error.
var (
	// ErrClosed is returned by Enqueue and the other writers after Close.
	ErrClosed = errors.New("spool is closed")
	// ErrFull is returned by Enqueue when storing would exceed Options.MaxBytes.
	ErrFull = errors.New("spool is full")
	// ErrInUse is returned by Open when another process holds the spool, usually a
	// running receiver.
	ErrInUse = errors.New("spool is in use by a running receiver")
)

var (
	bucketCallbacks = []byte("callbacks")
	bucketPending   = []byte("pending")
	bucketDead      = []byte("dead")
	// bucketDelivered keeps delivered deliveries for Options.DeliveredRetention (replay).
	bucketDelivered = []byte("delivered")
	// bucketReplays records the replays run by ID (ReplayOnce): ID -> ReplayRecord JSON.
	bucketReplays = []byte("replays")
)

// Spool is a durable, fan-out delivery queue. It is safe for concurrent use.
type Spool struct {
	db      *bolt.DB
	opts    Options
	log     logr.Logger
	deadLog logr.Logger // Options.DeadLetterLogger, else log
	client  httpDoer
	metrics *metrics
	// breakers holds one circuit breaker per backend URL.
	breakers *dctl.Breakers

	lastSeq   atomic.Uint64
	usedBytes atomic.Int64

	// ops carries every write to the single committer goroutine, which packs the ops
	// waiting at that moment into one transaction: one fsync for all of them.
	ops           chan *op
	committerDone chan struct{}
	// writers counts goroutines that may still send on ops; Close waits for them
	// before closing the channel.
	writers sync.WaitGroup

	mu      sync.Mutex
	closed  bool
	routes  map[string]*routeQueue
	targets map[callback.Target]*callback.Target
	// runCtx is set while Run runs; dispatchers of routes created meanwhile use it.
	runCtx    context.Context
	runCancel context.CancelFunc
	// running counts dispatchers and delivery workers.
	running sync.WaitGroup
}

// Open opens (creating if needed) the spool in dir and rebuilds the index of pending
// deliveries. Deliveries start when Run is called.
func Open(dir string, opts Options) (*Spool, error) {
	opts = opts.withDefaults()
	if err := os.MkdirAll(dir, 0o700); err != nil { //nolint:gosec // the operator chooses the spool dir (--spool-dir)
		return nil, fmt.Errorf("creating spool dir: %w", err)
	}
	log := opts.Logger
	if log.GetSink() == nil {
		log = ctrllog.Log.WithName("spool")
	}
	path := filepath.Join(dir, FileName)
	empty, err := checkFile(path)
	if err != nil {
		return nil, fmt.Errorf("opening spool %s: %w", dir, err)
	}
	if empty {
		log.Info("Spool file was empty (0 bytes): starting a new spool in it; if it held acknowledged callbacks, they were lost before this start",
			"file", path)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:         opts.LockTimeout,
		NoSync:          opts.NoSync,
		NoGrowSync:      opts.NoSync,
		NoFreelistSync:  true,
		FreelistType:    bolt.FreelistMapType,
		InitialMmapSize: initialMmapSize,
	})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("opening spool %s: %w", dir, ErrInUse)
	}
	if err != nil {
		return nil, fmt.Errorf("opening spool %s: %w", dir, err)
	}
	s := &Spool{
		db:            db,
		opts:          opts,
		log:           log,
		deadLog:       opts.DeadLetterLogger,
		ops:           make(chan *op, opts.MaxBatchSize),
		committerDone: make(chan struct{}),
		routes:        map[string]*routeQueue{},
		targets:       map[callback.Target]*callback.Target{},
	}
	if s.deadLog.GetSink() == nil {
		s.deadLog = log
	}
	if opts.HTTPClient != nil {
		s.client = opts.HTTPClient
	} else {
		s.client = newHTTPClient(opts.MaxConcurrencyPerRoute)
	}
	s.breakers = dctl.NewBreakers(opts.Delivery, s.unpark)
	s.metrics = newMetrics(s)
	if err := s.load(); err != nil {
		_ = db.Close()
		return nil, err
	}
	if opts.Registerer != nil {
		if err := s.metrics.register(opts.Registerer); err != nil {
			_ = db.Close()
			return nil, fmt.Errorf("registering spool metrics: %w", err)
		}
	}
	go s.commitLoop()
	return s, nil
}

// load creates the buckets, finds the last sequence number, sums the stored bytes and
// rebuilds the in-memory index of pending deliveries.
func (s *Spool) load() error {
	var pending int
	err := s.db.Update(func(tx *bolt.Tx) error {
		if _, err := tx.CreateBucketIfNotExists(bucketReplays); err != nil {
			return fmt.Errorf("creating bucket %s: %w", bucketReplays, err)
		}
		for _, name := range [][]byte{bucketCallbacks, bucketPending, bucketDead, bucketDelivered} {
			b, err := tx.CreateBucketIfNotExists(name)
			if err != nil {
				return fmt.Errorf("creating bucket %s: %w", name, err)
			}
			var used int64
			if err := b.ForEach(func(k, v []byte) error {
				used += int64(len(k) + len(v))
				return nil
			}); err != nil {
				return err
			}
			s.usedBytes.Add(used)
		}
		cbs := tx.Bucket(bucketCallbacks)
		if k, _ := cbs.Cursor().Last(); len(k) == 8 {
			s.lastSeq.Store(bytesToSeq(k))
		}
		return tx.Bucket(bucketPending).ForEach(func(k, v []byte) error {
			seq, idx, ok := parseDeliveryKey(k)
			if !ok {
				return fmt.Errorf("%w: pending key %x", errCorrupt, k)
			}
			d, err := decodeDelivery(v)
			if err != nil {
				return fmt.Errorf("decoding pending delivery %x: %w", k, err)
			}
			var receivedAt time.Time
			if cbv := cbs.Get(seqKey(seq)); cbv != nil {
				receivedAt = callbackReceivedAt(cbv)
			}
			s.addPending(seq, idx, d, receivedAt)
			pending++
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("loading spool: %w", err)
	}
	s.log.Info("Opened spool", "pending", pending, "bytes", s.usedBytes.Load(), "sync", !s.opts.NoSync)
	return nil
}

func bytesToSeq(k []byte) uint64 {
	var seq uint64
	for _, c := range k[:8] {
		seq = seq<<8 | uint64(c)
	}
	return seq
}

// callbackReceivedAt reads only the ReceivedAt field of a callback record.
func callbackReceivedAt(b []byte) time.Time {
	r := reader{b: b}
	r.version(callbackRecordV1, callbackRecordV2, callbackRecordV3)
	for range 5 { // ID, Provider, AppID, Command, RawQuery
		n := r.uvarint()
		if r.err != nil || n > uint64(len(r.b)) {
			return time.Time{}
		}
		r.b = r.b[n:]
	}
	return nanoTime(r.varint())
}

// op is one write handed to the committer.
type op struct {
	// grow is the number of bytes the op adds, checked against MaxBytes before it runs.
	grow int64
	// apply runs inside the batch's transaction. It may run twice (alone, after the
	// batch failed), so it must not keep state across runs except what it resets.
	apply func(w *txWriter) error
	// after runs in the committer once the op is committed, before done is signalled.
	after func()
	// finish, if set, runs in the committer with the op's outcome (nil: committed).
	finish func(error)
	// done, if set, receives the op's outcome.
	done chan error
}

// report tells o's submitter how it went.
func (o *op) report(err error) {
	if err == nil && o.after != nil {
		o.after()
	}
	if o.finish != nil {
		o.finish(err)
	}
	if o.done != nil {
		o.done <- err
	}
}

// txWriter wraps a transaction and counts how many bytes it adds or frees.
type txWriter struct {
	tx    *bolt.Tx
	delta int64
}

func (w *txWriter) put(bucket, k, v []byte) error {
	b := w.tx.Bucket(bucket)
	// Keys are appended in increasing order, so pages split full rather than half full
	// (bbolt's default), which keeps the file close to the logical size.
	b.FillPercent = fillPercent
	if old := b.Get(k); old != nil {
		w.delta -= int64(len(k) + len(old))
	}
	if err := b.Put(k, v); err != nil {
		return err
	}
	w.delta += int64(len(k) + len(v))
	return nil
}

func (w *txWriter) del(bucket, k []byte) error {
	b := w.tx.Bucket(bucket)
	old := b.Get(k)
	if old == nil {
		return nil
	}
	if err := b.Delete(k); err != nil {
		return err
	}
	w.delta -= int64(len(k) + len(old))
	return nil
}

// dropCallbackIfUnused deletes the payload of seq once no pending delivery or dead
// letter refers to it.
func (w *txWriter) dropCallbackIfUnused(seq uint64) error {
	prefix := seqKey(seq)
	for _, name := range [][]byte{bucketPending, bucketDead, bucketDelivered} {
		if k, _ := w.tx.Bucket(name).Cursor().Seek(prefix); k != nil && bytes.HasPrefix(k, prefix) {
			return nil
		}
	}
	return w.del(bucketCallbacks, prefix)
}

// submit hands o to the committer and waits for its commit.
func (s *Spool) submit(ctx context.Context, o *op) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	s.writers.Add(1)
	s.mu.Unlock()
	o.done = make(chan error, 1)
	select {
	case s.ops <- o:
		s.writers.Done()
	case <-ctx.Done():
		s.writers.Done()
		return fmt.Errorf("waiting for the spool: %w", ctx.Err())
	}
	select {
	case err := <-o.done:
		return err
	case <-ctx.Done():
		// The op may still commit: the callback is then delivered although the caller
		// was told it failed. That is a duplicate at worst, never a loss.
		return fmt.Errorf("waiting for the spool commit: %w", ctx.Err())
	}
}

// submitAsync hands o to the committer without waiting: the delivery path records
// results this way, so a worker slot is free again as soon as the backend has answered,
// and o.finish sees the outcome. It is only used while Close waits for the workers, so
// the channel is still open.
func (s *Spool) submitAsync(o *op) {
	s.writers.Add(1)
	s.ops <- o
	s.writers.Done()
}

// commitLoop is the single writer: it takes every op waiting, commits them in one
// transaction (one fsync), and reports to each. While one commit syncs, the next batch
// gathers: group commit without an artificial delay.
func (s *Spool) commitLoop() {
	defer close(s.committerDone)
	batch := make([]*op, 0, s.opts.MaxBatchSize)
	for first := range s.ops {
		batch = append(batch[:0], first)
	gather:
		for len(batch) < s.opts.MaxBatchSize {
			select {
			case o, ok := <-s.ops:
				if !ok {
					break gather
				}
				batch = append(batch, o)
			default:
				break gather
			}
		}
		s.commit(batch)
	}
}

func (s *Spool) commit(batch []*op) {
	// Refuse what would overflow MaxBytes before the transaction, so one big callback
	// never fails the others.
	runnable := batch[:0:0]
	projected := s.usedBytes.Load()
	for _, o := range batch {
		if o.grow > 0 && s.opts.MaxBytes > 0 && projected+o.grow > s.opts.MaxBytes {
			o.report(ErrFull)
			continue
		}
		projected += o.grow
		runnable = append(runnable, o)
	}
	if len(runnable) == 0 {
		return
	}
	start := time.Now()
	err := s.runTx(runnable)
	s.metrics.commitSeconds.Observe(time.Since(start).Seconds())
	s.metrics.batchSize.Observe(float64(len(runnable)))
	if err == nil || len(runnable) == 1 {
		for _, o := range runnable {
			o.report(err)
		}
		return
	}
	// One op may have failed the whole batch: run each alone so the others still land.
	for _, o := range runnable {
		o.report(s.runTx([]*op{o}))
	}
}

func (s *Spool) runTx(ops []*op) error {
	var delta int64
	err := s.db.Update(func(tx *bolt.Tx) error {
		w := &txWriter{tx: tx}
		for _, o := range ops {
			if err := o.apply(w); err != nil {
				return err
			}
		}
		delta = w.delta
		return nil
	})
	if err != nil {
		s.metrics.commitErrors.Inc()
		return fmt.Errorf("committing to the spool: %w", err)
	}
	s.usedBytes.Add(delta)
	return nil
}

// normalizeTarget fills in the route defaults, so the stored copy is complete.
func normalizeTarget(t callback.Target) callback.Target {
	if t.Timeout <= 0 {
		t.Timeout = v1alpha1.DefaultAsyncTimeout
	}
	if t.MaxAttempts <= 0 {
		t.MaxAttempts = v1alpha1.DefaultMaxAttempts
	}
	if t.InitialBackoff <= 0 {
		t.InitialBackoff = v1alpha1.DefaultInitialBackoff
	}
	if t.MaxBackoff <= 0 {
		t.MaxBackoff = v1alpha1.DefaultMaxBackoff
	}
	if t.InitialBackoff > t.MaxBackoff {
		t.InitialBackoff = t.MaxBackoff
	}
	return t
}

// Enqueue stores cb with one pending delivery per target and returns nil only once that
// is committed to disk (fsync'd, unless Options.NoSync); concurrent calls share one
// commit. Any error means nothing may be promised to the IM platform: answer 503.
// After Close it returns ErrClosed; past Options.MaxBytes, ErrFull.
func (s *Spool) Enqueue(ctx context.Context, cb *callback.Callback, targets []callback.Target) error {
	if len(targets) == 0 {
		return nil
	}
	if len(targets) > math.MaxUint16 {
		return fmt.Errorf("enqueueing callback %s: %d targets, at most %d", cb.ID, len(targets), math.MaxUint16)
	}
	receivedAt := cb.ReceivedAt
	if receivedAt.IsZero() {
		c := *cb
		c.ReceivedAt = time.Now()
		cb, receivedAt = &c, c.ReceivedAt
	}
	seq := s.lastSeq.Add(1)
	cbKey, cbVal := seqKey(seq), encodeCallback(cb)
	grow := int64(len(cbKey) + len(cbVal))
	now := time.Now()
	ds := make([]*delivery, len(targets))
	vals := make([][]byte, len(targets))
	for i, t := range targets {
		ds[i] = &delivery{Target: normalizeTarget(t), NextAt: now}
		if t.Ordered {
			ds[i].OrderKey = cb.OrderKey
		}
		vals[i] = encodeDelivery(ds[i])
		grow += int64(keyLen + len(vals[i]))
	}
	o := &op{
		grow: grow,
		apply: func(w *txWriter) error {
			if err := w.put(bucketCallbacks, cbKey, cbVal); err != nil {
				return err
			}
			for i, v := range vals {
				if err := w.put(bucketPending, deliveryKey(seq, uint16(i)), v); err != nil {
					return err
				}
			}
			return nil
		},
		after: func() {
			for i, d := range ds {
				s.addPending(seq, uint16(i), d, receivedAt)
			}
		},
	}
	if err := s.submit(ctx, o); err != nil {
		result := "error"
		if errors.Is(err, ErrFull) {
			result = "full"
		}
		s.metrics.enqueued.WithLabelValues(result).Inc()
		return fmt.Errorf("enqueueing callback %s: %w", cb.ID, err)
	}
	s.metrics.enqueued.WithLabelValues("stored").Inc()
	return nil
}

// Run delivers pending deliveries, starting with those found on Open, until ctx is done
// or the spool is closed, then waits for in-flight deliveries to record their results.
// An attempt cut short by shutdown is not counted: the delivery stays pending.
func (s *Spool) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	if s.runCtx != nil {
		s.mu.Unlock()
		return errors.New("spool is already running")
	}
	runCtx, cancel := context.WithCancel(ctx)
	s.runCtx, s.runCancel = runCtx, cancel
	for _, q := range s.routes {
		s.startDispatcher(runCtx, q)
	}
	s.mu.Unlock()
	defer cancel()

	var sweep <-chan time.Time
	if s.opts.DeadLetterRetention > 0 || s.opts.DeliveredRetention > 0 {
		t := time.NewTicker(s.opts.RetentionSweepInterval)
		defer t.Stop()
		sweep = t.C
	}
	for done := false; !done; {
		select {
		case <-runCtx.Done():
			done = true
		case <-sweep:
			s.sweepDelivered(runCtx)
			if s.opts.DeadLetterRetention <= 0 {
				continue
			}
			cutoff := time.Now().Add(-s.opts.DeadLetterRetention)
			n, err := s.purge(runCtx, func(dl *DeadLetter) bool { return dl.DeadAt.Before(cutoff) }, true)
			if err != nil && runCtx.Err() == nil {
				s.log.Error(err, "Failed to remove expired dead letters")
			} else if n > 0 {
				s.log.Info("Removed expired dead letters", "count", n, "retention", s.opts.DeadLetterRetention.String())
			}
		}
	}
	s.mu.Lock()
	if s.runCtx == runCtx {
		s.runCtx, s.runCancel = nil, nil
	}
	s.mu.Unlock()
	s.running.Wait()
	return nil
}

// Close stops deliveries, waits for in-flight ones to record their results and for every
// pending write to commit, and closes the store. Enqueue after Close returns ErrClosed.
func (s *Spool) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	if s.runCancel != nil {
		s.runCancel()
	}
	s.runCtx, s.runCancel = nil, nil
	s.mu.Unlock()
	s.running.Wait()
	s.writers.Wait()
	close(s.ops)
	<-s.committerDone
	s.metrics.unregister()
	s.logPendingAtClose()
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("closing spool: %w", err)
	}
	return nil
}

// logPendingAtClose says how many deliveries the spool still holds when it closes: they are
// delivered by the next receiver that opens this directory, and lost if the directory
// does not outlive this process (an emptyDir whose pod is deleted). A shutdown is the
// one moment that loss can still be seen, so it is never silent.
func (s *Spool) logPendingAtClose() {
	var pending int
	err := s.db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket(bucketPending); b != nil {
			pending = b.Stats().KeyN
		}
		return nil
	})
	switch {
	case err != nil:
		s.log.Error(err, "Failed to count the deliveries left in the spool at close")
	case pending > 0:
		s.log.Info("Closed spool with deliveries pending: they resume when a receiver opens this directory again",
			"pending", pending, "path", s.db.Path())
	default:
		s.log.Info("Closed spool with nothing pending", "path", s.db.Path())
	}
}

// Bytes is the spool's current logical size, the figure checked against MaxBytes.
func (s *Spool) Bytes() int64 { return s.usedBytes.Load() }
