package spool

import (
	"container/heap"
	"context"
	"sort"
	"sync"
	"time"

	"github.com/callback-router/callback-router/webhook/callback"
	dctl "github.com/callback-router/callback-router/webhook/delivery"
)

// item is one pending delivery in the in-memory index.
type item struct {
	seq        uint64
	idx        uint16
	target     *callback.Target
	attempts   int
	nextAt     time.Time
	receivedAt time.Time
	// key is the conversation of an ordered delivery ("" when unordered): only the
	// oldest pending delivery of a key (its lane's head) is ever in the heap.
	key string
	// parked: held back by its backend's open circuit breaker; nextAt is then the end of
	// the cool-down (in memory only: no attempt was made, none is counted).
	parked bool
	// heapIndex is the item's place in its route's heap, -1 while it is being delivered
	// or waits behind its lane's head.
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
// independently: each has its own dispatcher and its own limits, so a dead backend only
// ever holds its own route's slots.
//
// An ordered route keeps one lane per conversation key: the key's pending deliveries in
// acknowledgement order, of which only the head is in the heap (due, retrying or in
// flight); the next one enters the heap once the head's outcome is committed. A failing
// head therefore holds back its own key alone.
type routeQueue struct {
	name string
	// lim bounds in-flight attempts (the route's maxConcurrency, else
	// MaxConcurrencyPerRoute) and attempts started per second (maxPerSecond).
	lim *dctl.Limiter
	// limitsSeq is the seq of the stored copy whose limits lim has: the newest wins.
	limitsSeq uint64
	// wake is signalled when an item is pushed, so the dispatcher re-reads the heap top.
	wake chan struct{}

	mu    sync.Mutex
	heap  itemHeap
	items map[itemKey]*item  // every pending delivery, waiting or in flight
	lanes map[string][]*item // ordered deliveries by key, oldest (the head) first
}

func newRouteQueue(name string, concurrency int) *routeQueue {
	return &routeQueue{
		name:  name,
		lim:   dctl.NewLimiter(concurrency, 0),
		wake:  make(chan struct{}, 1),
		items: map[itemKey]*item{},
		lanes: map[string][]*item{},
	}
}

func (q *routeQueue) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// add puts a newly stored (or loaded, or redriven) delivery into the index: into the
// heap, or behind the head of its key's lane.
func (q *routeQueue) add(it *item) {
	q.mu.Lock()
	q.items[itemKey{it.seq, it.idx}] = it
	if it.key == "" {
		heap.Push(&q.heap, it)
		q.mu.Unlock()
		q.signal()
		return
	}
	lane := q.lanes[it.key]
	// Copies are committed nearly always in seq order; one that overtook another in the
	// committer goes back to its place. The head stays the head once it left the heap
	// (it is in flight): nothing can be put before an attempt already made.
	from := 0
	if len(lane) > 0 && lane[0].heapIndex < 0 {
		from = 1
	}
	i := from + sort.Search(len(lane)-from, func(j int) bool { return lane[from+j].seq > it.seq })
	lane = append(lane, nil)
	copy(lane[i+1:], lane[i:])
	lane[i] = it
	q.lanes[it.key] = lane
	if i == 0 {
		if len(lane) > 1 && lane[1].heapIndex >= 0 {
			heap.Remove(&q.heap, lane[1].heapIndex)
		}
		heap.Push(&q.heap, it)
	}
	q.mu.Unlock()
	q.signal()
}

// push re-adds a delivery taken from the heap (a retry, an attempt cut short, one held
// back by its breaker) and wakes the dispatcher.
func (q *routeQueue) push(it *item) {
	q.mu.Lock()
	heap.Push(&q.heap, it)
	q.mu.Unlock()
	q.signal()
}

// remove forgets a delivery that was delivered or dead-lettered; the next of its lane
// becomes due.
func (q *routeQueue) remove(it *item) {
	q.mu.Lock()
	delete(q.items, itemKey{it.seq, it.idx})
	if it.heapIndex >= 0 {
		heap.Remove(&q.heap, it.heapIndex)
	}
	next := false
	if it.key != "" {
		lane := q.lanes[it.key]
		for i, x := range lane {
			if x == it {
				lane = append(lane[:i], lane[i+1:]...)
				if i == 0 && len(lane) > 0 {
					heap.Push(&q.heap, lane[0])
					next = true
				}
				break
			}
		}
		if len(lane) == 0 {
			delete(q.lanes, it.key)
		} else {
			q.lanes[it.key] = lane
		}
	}
	q.mu.Unlock()
	if next {
		q.signal()
	}
}

// unpark makes the deliveries held back for url's breaker due now: the breaker closed.
func (q *routeQueue) unpark(url string, now time.Time) {
	q.mu.Lock()
	n := 0
	for _, it := range q.heap {
		if it.parked && it.target.URL == url {
			it.parked, it.nextAt = false, now
			n++
		}
	}
	if n > 0 {
		heap.Init(&q.heap)
	}
	q.mu.Unlock()
	if n > 0 {
		q.signal()
	}
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
	it := heap.Pop(&q.heap).(*item)
	it.parked = false
	return it, 0
}

// park puts it back, held by its backend's breaker until the given time (no attempt made).
func (q *routeQueue) park(it *item, until time.Time) {
	q.mu.Lock()
	it.parked, it.nextAt = true, until
	heap.Push(&q.heap, it)
	q.mu.Unlock()
	q.signal()
}

// stats returns the number of pending deliveries, the receive time of the oldest, and how
// many are held back by an open circuit breaker.
func (q *routeQueue) stats() (depth int, oldest time.Time, held int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, it := range q.items {
		if oldest.IsZero() || (!it.receivedAt.IsZero() && it.receivedAt.Before(oldest)) {
			oldest = it.receivedAt
		}
		if it.parked {
			held++
		}
	}
	return len(q.items), oldest, held
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
	if seq >= q.limitsSeq {
		// The route's limits are those of its newest copy: an edited route applies its
		// new limits from its next callback on, to the whole queue.
		q.limitsSeq = seq
		conc := t.MaxConcurrency
		if conc <= 0 {
			conc = s.opts.MaxConcurrencyPerRoute
		}
		q.lim.SetLimits(conc, t.MaxPerSecond)
	}
	s.mu.Unlock()
	it := &item{seq: seq, idx: idx, target: t, attempts: d.Attempts, nextAt: d.NextAt, receivedAt: receivedAt}
	if t.Ordered {
		it.key = d.OrderKey
	}
	q.add(it)
}

// unpark releases the deliveries held back for url's breaker, in every route.
func (s *Spool) unpark(url string) {
	s.mu.Lock()
	queues := make([]*routeQueue, 0, len(s.routes))
	for _, q := range s.routes {
		queues = append(queues, q)
	}
	s.mu.Unlock()
	now := time.Now()
	for _, q := range queues {
		q.unpark(url, now)
	}
}

// startDispatcher must be called with s.mu held.
func (s *Spool) startDispatcher(ctx context.Context, q *routeQueue) {
	s.running.Add(1)
	go func() {
		defer s.running.Done()
		s.dispatch(ctx, q)
	}()
}

// dispatch hands q's due deliveries to workers within the route's limits: a concurrency
// slot, the backend's circuit breaker (a delivery it holds back is parked until the
// cool-down ends, with no attempt made and none counted), then a rate token.
func (s *Spool) dispatch(ctx context.Context, q *routeQueue) {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		if err := q.lim.AcquireSlot(ctx); err != nil {
			return
		}
		var it *item
		var br *dctl.Breaker
		var probe bool
		for it == nil {
			now := time.Now()
			var wait time.Duration
			it, wait = q.popDue(now)
			if it != nil {
				br = s.breakers.For(it.target.URL)
				ok, p, bwait := br.Allow(now)
				if ok {
					probe = p
					break
				}
				q.park(it, now.Add(bwait))
				it = nil
				continue
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
				q.lim.Release()
				return
			}
			timer.Stop()
		}
		if err := q.lim.WaitRate(ctx); err != nil {
			br.Abort(probe)
			q.push(it)
			q.lim.Release()
			return
		}
		s.running.Add(1)
		go func() {
			defer s.running.Done()
			defer q.lim.Release()
			s.deliver(ctx, q, it, br, probe)
		}()
	}
}
