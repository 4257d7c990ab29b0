package delivery

import (
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// State is a circuit breaker's state.
type State int

// The states, in the order of the callback_router_circuit_breaker_state gauge's values.
const (
	// Closed: attempts go through.
	Closed State = iota
	// Open: nothing is sent until the cool-down ends.
	Open
	// HalfOpen: one probe attempt is in flight; the others wait for its outcome.
	HalfOpen
)

func (s State) String() string {
	switch s {
	case Open:
		return "open"
	case HalfOpen:
		return "half_open"
	}
	return "closed"
}

// Breaker is the circuit breaker of one backend URL. It is safe for concurrent use.
type Breaker struct {
	url      string
	failures int
	cooldown time.Duration
	onClose  func(url string)
	m        *breakerMetrics

	mu          sync.Mutex
	state       State
	consecutive int
	openUntil   time.Time
	probing     bool
}

// Allow asks whether an attempt may be sent now. ok with probe=true makes the caller the
// half-open probe: it must report the attempt's outcome with Done (or Abort it). When
// !ok, wait is how long until asking again makes sense (the end of the cool-down, or
// the cool-down again while a probe is out: a successful probe calls the Breakers'
// OnClose hook, so holders need not poll).
func (b *Breaker) Allow(now time.Time) (ok, probe bool, wait time.Duration) {
	if b == nil {
		return true, false, 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	switch b.state {
	case Closed:
		return true, false, 0
	case Open:
		if w := b.openUntil.Sub(now); w > 0 {
			return false, false, w
		}
		b.setState(HalfOpen)
		b.probing = true
		return true, true, 0
	default: // HalfOpen
		if !b.probing {
			b.probing = true
			return true, true, 0
		}
		return false, false, b.cooldown
	}
}

// Done records the outcome of an attempt Allow let through: failed means the backend
// did not answer usefully (connection error, timeout, 408, 429, 5xx); any other answer,
// a 4xx included, shows the backend is up.
func (b *Breaker) Done(probe, failed bool, now time.Time) {
	if b == nil {
		return
	}
	b.mu.Lock()
	closed := false
	if probe {
		b.probing = false
	}
	switch {
	case !failed:
		b.consecutive = 0
		if b.state != Closed && (probe || b.state == HalfOpen) {
			b.setState(Closed)
			closed = true
		}
	case probe || b.state == HalfOpen:
		b.consecutive++
		b.openUntil = now.Add(b.cooldown)
		b.setState(Open)
	default:
		b.consecutive++
		if b.state == Closed && b.consecutive >= b.failures {
			b.openUntil = now.Add(b.cooldown)
			b.setState(Open)
		}
	}
	b.mu.Unlock()
	if closed && b.onClose != nil {
		b.onClose(b.url)
	}
}

// Abort gives back a probe whose attempt was cut short (shutdown): another may probe.
func (b *Breaker) Abort(probe bool) {
	if b == nil || !probe {
		return
	}
	b.mu.Lock()
	b.probing = false
	b.mu.Unlock()
}

// State returns the breaker's state (Open until a probe is let through, even after
// the cool-down ended).
func (b *Breaker) State() State {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.state
}

// setState must be called with b.mu held.
func (b *Breaker) setState(s State) {
	if b.state == s {
		return
	}
	b.state = s
	if b.m != nil {
		b.m.transitions.WithLabelValues(b.url, s.String()).Inc()
	}
}

// Breakers holds one Breaker per backend URL and exports their states as metrics.
type Breakers struct {
	opts    Options
	m       *breakerMetrics
	mu      sync.Mutex
	byURL   map[string]*Breaker
	onClose func(url string)
}

type breakerMetrics struct {
	stateDesc   *prometheus.Desc
	transitions *prometheus.CounterVec
}

// NewBreakers returns an empty set of breakers. onClose, if set, is called (outside any
// lock) when a breaker closes after being open, so that deliveries held back for it can
// go at once.
func NewBreakers(opts Options, onClose func(url string)) *Breakers {
	return &Breakers{
		opts:    opts.WithDefaults(),
		byURL:   map[string]*Breaker{},
		onClose: onClose,
		m: &breakerMetrics{
			stateDesc: prometheus.NewDesc("callback_router_circuit_breaker_state",
				"Circuit breaker state per backend URL: 0 closed, 1 open, 2 half-open (one probe in flight).", []string{"backend"}, nil),
			transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "callback_router_circuit_breaker_transitions_total",
				Help: "Circuit breaker state changes per backend URL, by the state entered (open, half_open, closed).",
			}, []string{"backend", "state"}),
		},
	}
}

// For returns url's breaker, creating it closed; nil when breakers are disabled.
func (bs *Breakers) For(url string) *Breaker {
	if bs == nil || bs.opts.BreakerFailures < 0 {
		return nil
	}
	bs.mu.Lock()
	defer bs.mu.Unlock()
	b, ok := bs.byURL[url]
	if !ok {
		b = &Breaker{url: url, failures: bs.opts.BreakerFailures, cooldown: bs.opts.BreakerCooldown, onClose: bs.onClose, m: bs.m}
		bs.byURL[url] = b
	}
	return b
}

// States returns every breaker's state by URL.
func (bs *Breakers) States() map[string]State {
	bs.mu.Lock()
	list := make([]*Breaker, 0, len(bs.byURL))
	for _, b := range bs.byURL {
		list = append(list, b)
	}
	bs.mu.Unlock()
	out := make(map[string]State, len(list))
	for _, b := range list {
		out[b.url] = b.State()
	}
	return out
}

// Describe implements prometheus.Collector.
func (bs *Breakers) Describe(ch chan<- *prometheus.Desc) {
	ch <- bs.m.stateDesc
	bs.m.transitions.Describe(ch)
}

// Collect implements prometheus.Collector.
func (bs *Breakers) Collect(ch chan<- prometheus.Metric) {
	states := bs.States()
	urls := make([]string, 0, len(states))
	for u := range states {
		urls = append(urls, u)
	}
	sort.Strings(urls)
	for _, u := range urls {
		ch <- prometheus.MustNewConstMetric(bs.m.stateDesc, prometheus.GaugeValue, float64(states[u]), u)
	}
	bs.m.transitions.Collect(ch)
}
