package spool

import (
	"container/heap"
	"context"
	"sync"
	"time"

	"github.com/callback-router/callback-router/webhook/callback"
)

// item is one pending delivery in the in-memory index.
type item struct {
	seq        uint64
	idx        uint16
	target     *callback.Target
	attempts   int
	nextAt     time.Time
	receivedAt time.Time
	// heapIndex is the item's place in its route's heap, -1 while it is being delivered.
	heapIndex int
}

type itemKey struct {
	seq uint64
	idx uint16
}

// itemHeap orders a route's waiting deliveries by due time, then by acknowledgement order.
type itemHeap []*item

func (h itemHeap) Len() int { return len(h) }
func (h itemHeap) Less(i, j int) bool {
	if !h[i].nextAt.Equal(h[j].nextAt) {
		return h[i].nextAt.Before(h[j].nextAt)
	}
	return h[i].seq < h[j].seq
}
func (h itemHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].heapIndex, h[j].heapIndex = i, j
}
func (h *itemHeap) Push(x any) {
	it := x.(*item)
	it.heapIndex = len(*h)
	*h = append(*h, it)
}
func (h *itemHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	it.heapIndex = -1
	return it
}

// routeQueue is one route's pending deliveries and its worker slots. Routes progress
// independently: each has its own dispatcher and its own concurrency bound, so a dead
// backend only ever holds its own route's slots.
type routeQueue struct {
	name string
	// sem holds one token per in-flight delivery (capacity MaxConcurrencyPerRoute).
	sem chan struct{}
	// wake is signalled when an item is pushed, so the dispatcher re-reads the heap top.
	wake chan struct{}

	mu    sync.Mutex
	heap  itemHeap
	items map[itemKey]*item // every pending delivery, waiting or in flight
}

func newRouteQueue(name string, concurrency int) *routeQueue {
	return &routeQueue{
		name:  name,
		sem:   make(chan struct{}, concurrency),
		wake:  make(chan struct{}, 1),
		items: map[itemKey]*item{},
	}
}

// push adds or re-adds it to the heap and wakes the dispatcher.
func (q *routeQueue) push(it *item) {
	q.mu.Lock()
	q.items[itemKey{it.seq, it.idx}] = it
	heap.Push(&q.heap, it)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// remove forgets a delivery that was delivered or dead-lettered.
func (q *routeQueue) remove(it *item) {
	q.mu.Lock()
	delete(q.items, itemKey{it.seq, it.idx})
	if it.heapIndex >= 0 {
		heap.Remove(&q.heap, it.heapIndex)
	}
	q.mu.Unlock()
}

// popDue returns the first due item, or how long until one is due (-1: none waiting).
func (q *routeQueue) popDue(now time.Time) (*item, time.Duration) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.heap) == 0 {
		return nil, -1
	}
	if wait := q.heap[0].nextAt.Sub(now); wait > 0 {
		return nil, wait
	}
	return heap.Pop(&q.heap).(*item), 0
}

// stats returns the number of pending deliveries and the receive time of the oldest.
func (q *routeQueue) stats() (depth int, oldest time.Time) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, it := range q.items {
		if oldest.IsZero() || (!it.receivedAt.IsZero() && it.receivedAt.Before(oldest)) {
			oldest = it.receivedAt
		}
	}
	return len(q.items), oldest
}

// addPending puts a stored delivery into the index, creating its route's queue (and
// starting its dispatcher when Run is running).
func (s *Spool) addPending(seq uint64, idx uint16, d *delivery, receivedAt time.Time) {
	s.mu.Lock()
	t, ok := s.targets[d.Target]
	if !ok {
		tc := d.Target
		t = &tc
		s.targets[tc] = t
	}
	q, ok := s.routes[t.Route]
	if !ok {
		q = newRouteQueue(t.Route, s.opts.MaxConcurrencyPerRoute)
		s.routes[t.Route] = q
		// Start the route's dead-letter counter at 0, so that rate() and increase() see
		// its first dead letter (a series born at 1 shows no increase).
		s.metrics.deadLetters.WithLabelValues(t.Route)
		if s.runCtx != nil {
			s.startDispatcher(s.runCtx, q)
		}
	}
	s.mu.Unlock()
	q.push(&item{seq: seq, idx: idx, target: t, attempts: d.Attempts, nextAt: d.NextAt, receivedAt: receivedAt})
}

// startDispatcher must be called with s.mu held.
func (s *Spool) startDispatcher(ctx context.Context, q *routeQueue) {
	s.running.Add(1)
	go func() {
		defer s.running.Done()
		s.dispatch(ctx, q)
	}()
}

// dispatch hands q's due deliveries to workers, at most cap(q.sem) at a time.
func (s *Spool) dispatch(ctx context.Context, q *routeQueue) {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case q.sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		var it *item
		for it == nil {
			var wait time.Duration
			it, wait = q.popDue(time.Now())
			if it != nil {
				break
			}
			var fire <-chan time.Time
			if wait > 0 {
				timer.Reset(wait)
				fire = timer.C
			}
			select {
			case <-q.wake:
			case <-fire:
			case <-ctx.Done():
				<-q.sem
				return
			}
			timer.Stop()
		}
		s.running.Add(1)
		go func() {
			defer s.running.Done()
			defer func() { <-q.sem }()
			s.deliver(ctx, q, it)
		}()
	}
}
