// Package jsspool is the JetStream spool: acknowledged Async callbacks are stored in a
// NATS JetStream stream of an existing NATS cluster instead of a file on the pod, so
// receiver pods keep no state and every acknowledged callback survives the loss of any
// receiver and of a minority of NATS servers.
//
// Layout, for a stream named S (--spool-stream, default CALLBACKS):
//   - stream S, work-queue retention, file storage, subjects "S.q.>": one message per
//     (callback, route) on subject "S.q.<route token>.u", its body the callback
//     body, the callback and the route's delivery settings in headers. Its Nats-Msg-Id is
//     the callback's ID and the route, so a callback the IM platform sends twice, to the
//     same receiver or another, is stored once within the stream's duplicate window;
//   - one durable pull consumer per route ("S_<route token>", filter "S.q.<route token>.u",
//     explicit acks, MaxAckPending = the route's concurrency) that every receiver pulls
//     from: the route's retry policy is applied with NakWithDelay (backoff with jitter,
//     Retry-After), attempts are counted by JetStream (NumDelivered);
//   - stream S_DEAD, limits retention, subjects "S.dead.>": dead letters, listed, redriven
//     and purged by `callback-router deadletters --spool-url`.
//
// "Acknowledged" means JetStream's PubAck: the stream's replicas have the message. It
// means "on a majority's disks" only if the NATS servers sync every write
// (sync_interval: always); see docs/delivery.md.
package jsspool

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/callback-router/callback-router/webhook/callback"
	"github.com/callback-router/callback-router/webhook/delivery"
	"github.com/callback-router/callback-router/webhook/spool"
)

// Defaults of the Options fields, used when a field is left zero.
const (
	// DefaultStream is the name of the stream of pending deliveries; dead letters are in
	// DefaultStream+DeadSuffix.
	DefaultStream = "CALLBACKS"
	// DeadSuffix is appended to the stream name for the dead-letter stream.
	DeadSuffix = "_DEAD"
	// DefaultReplicas is how many NATS servers hold each message of a stream the
	// receiver creates (the CallbackReceiver's spool.jetStream.replicas default).
	DefaultReplicas = 3
	// DefaultDuplicateWindow is how long JetStream remembers a message ID: a callback
	// stored again within it (the IM platform retrying, another receiver) is stored once.
	DefaultDuplicateWindow = 2 * time.Minute
	// DefaultPublishTimeout bounds waiting for JetStream's PubAck for one copy; past it
	// the callback is answered 503.
	DefaultPublishTimeout = 2 * time.Second
	// DefaultAckWait is how long JetStream waits for a receiver's answer about a
	// delivery before giving it to another receiver (a receiver that died mid-delivery).
	// Longer attempts tell JetStream they are still in progress.
	DefaultAckWait = 30 * time.Second
	// DefaultDiscoverInterval is how often a receiver looks for routes' consumers it does
	// not pull from yet (created by another receiver, or before this one started).
	DefaultDiscoverInterval = 10 * time.Second
	// DefaultConnectTimeout bounds connecting to one NATS server.
	DefaultConnectTimeout = 5 * time.Second
	// DefaultRequestTimeout bounds JetStream API requests (stream and consumer lookups,
	// dead-letter operations).
	DefaultRequestTimeout = 10 * time.Second
)

// Consumer metadata keys.
const (
	metaRoute     = "callback-router/route"
	metaPartition = "callback-router/partition"
)

// DefaultPartitions is the number of ordering partitions of a route with ordering:
// conversations are hashed to them, each delivered one copy at a time.
const DefaultPartitions = 16

// pullExpiry is how long one pull request of a receiver waits at the server; a pull
// lost on the way (a NATS server gone) is noticed and renewed within about half of it
// (the client's missed-heartbeat check).
const pullExpiry = 5 * time.Second

// leaderPoll is how often a receiver checks whether a new consumer has its leader.
const leaderPoll = 100 * time.Millisecond

// unorderedPartition is the last subject token of a route's unordered copies:
// "S.q.<route token>.u". Copies of a route with ordering take "p<n>", each partition
// with a consumer of its own and MaxAckPending 1, so that the consumer of the unordered
// copies filters on "u" only.
const unorderedPartition = "u"

// ErrUnavailable is returned by Enqueue while the receiver is not connected to NATS.
var ErrUnavailable = errors.New("NATS is not connected")

// Options tune a JetStream spool.
type Options struct {
	// URL lists the NATS servers: nats://[user:password@]HOST:PORT[,HOST:PORT...].
	URL string
	// CredsFile is a NATS credentials file (JWT and seed), if the servers want one.
	CredsFile string
	// Stream names the stream of pending deliveries; see DefaultStream.
	Stream string
	// Replicas of the streams the spool creates; see DefaultReplicas.
	Replicas int
	// NoCreate refuses to start when the streams do not exist, instead of creating them.
	NoCreate bool
	// DuplicateWindow of the streams the spool creates; see DefaultDuplicateWindow.
	DuplicateWindow time.Duration
	// PublishTimeout; see DefaultPublishTimeout.
	PublishTimeout time.Duration
	// AckWait; see DefaultAckWait.
	AckWait time.Duration
	// DiscoverInterval; see DefaultDiscoverInterval.
	DiscoverInterval time.Duration
	// MaxConcurrencyPerRoute is the route's in-flight deliveries, all receivers together
	// (the consumer's MaxAckPending); see spool.DefaultMaxConcurrencyPerRoute.
	MaxConcurrencyPerRoute int
	// Partitions of a route with ordering; see DefaultPartitions. Every receiver of a
	// stream must use the same number, and changing it while ordered copies are pending
	// may deliver a conversation's copies out of order once.
	Partitions int
	// MaxRetryAfter caps a backend's Retry-After; see spool.DefaultMaxRetryAfter.
	MaxRetryAfter time.Duration
	// Delivery is the circuit breakers' settings (delivery.Options), as for the embedded
	// spool; the breakers live in each receiver's memory.
	Delivery delivery.Options
	// DeadLetterRetention is the dead-letter stream's MaxAge when the spool creates it
	// (zero: kept until redriven or purged).
	DeadLetterRetention time.Duration
	// Registerer, when set, receives the spool's metrics (the embedded spool's names).
	Registerer prometheus.Registerer
	// Logger and DeadLetterLogger as in spool.Options.
	Logger           logr.Logger
	DeadLetterLogger logr.Logger
	// HTTPClient sends deliveries; nil: spool.NewHTTPClient.
	HTTPClient *http.Client
}

// BindFlags binds the JetStream settings to fs (the receiver's and deadletters'
// command lines); --spool-url itself is the caller's.
func (o *Options) BindFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.CredsFile, "spool-creds", "", "JetStream spool: NATS credentials file (user JWT and seed)")
	fs.StringVar(&o.Stream, "spool-stream", DefaultStream, "JetStream spool: stream of pending deliveries (dead letters in <stream>"+DeadSuffix+")")
	fs.IntVar(&o.Replicas, "spool-replicas", DefaultReplicas, "JetStream spool: replicas of the streams the receiver creates")
	fs.BoolVar(&o.NoCreate, "spool-no-create", false, "JetStream spool: refuse to start when the streams do not exist instead of creating them")
	fs.DurationVar(&o.DuplicateWindow, "spool-duplicate-window", DefaultDuplicateWindow, "JetStream spool: duplicate window of the streams the receiver creates")
	fs.DurationVar(&o.PublishTimeout, "spool-publish-timeout", DefaultPublishTimeout, "JetStream spool: bound on waiting for JetStream's PubAck; past it the callback is answered 503")
	fs.IntVar(&o.Partitions, "spool-partitions", DefaultPartitions, "JetStream spool: ordering partitions of a route with ordering (the same on every receiver of the stream)")
	fs.DurationVar(&o.AckWait, "spool-ack-wait", DefaultAckWait, "JetStream spool: a delivery a receiver neither finished nor extended for this long goes to another receiver")
}

func (o Options) withDefaults() Options {
	if o.Stream == "" {
		o.Stream = DefaultStream
	}
	if o.Replicas <= 0 {
		o.Replicas = DefaultReplicas
	}
	if o.DuplicateWindow <= 0 {
		o.DuplicateWindow = DefaultDuplicateWindow
	}
	if o.PublishTimeout <= 0 {
		o.PublishTimeout = DefaultPublishTimeout
	}
	if o.AckWait <= 0 {
		o.AckWait = DefaultAckWait
	}
	if o.DiscoverInterval <= 0 {
		o.DiscoverInterval = DefaultDiscoverInterval
	}
	if o.MaxConcurrencyPerRoute <= 0 {
		o.MaxConcurrencyPerRoute = spool.DefaultMaxConcurrencyPerRoute
	}
	if o.MaxRetryAfter <= 0 {
		o.MaxRetryAfter = spool.DefaultMaxRetryAfter
	}
	if o.Partitions <= 0 {
		o.Partitions = DefaultPartitions
	}
	return o
}

// Spool is a JetStream-backed spool.Queue. It is safe for concurrent use.
type Spool struct {
	opts    Options
	log     logr.Logger
	deadLog logr.Logger
	nc      *nats.Conn
	js      jetstream.JetStream
	client  *http.Client
	metrics *metrics
	// breakers holds one circuit breaker per backend URL (this receiver's view).
	breakers *delivery.Breakers
	// closedCh is closed when a breaker closes, waking deliveries held for it.
	breakerMu sync.Mutex
	closedCh  chan struct{}

	qSubj, deadSubj string

	createMu sync.Mutex // serialises consumer creation

	mu     sync.Mutex
	closed bool
	routes map[string]*routeConsumer // by lane (route token.partition): consumers known to exist
	// limiters hold each route's delivery.maxPerSecond, per receiver.
	limiters sync.Map // route -> *delivery.Limiter
	runCtx   context.Context
	cancel   context.CancelFunc
	running  sync.WaitGroup
}

var _ spool.Queue = (*Spool)(nil)

// Redact returns u with any password replaced, for logs and errors.
func Redact(u string) string {
	parts := strings.Split(u, ",")
	for i, p := range parts {
		if pu, err := url.Parse(strings.TrimSpace(p)); err == nil && pu.User != nil {
			if _, ok := pu.User.Password(); ok {
				pu.User = url.UserPassword(pu.User.Username(), "xxxxx")
				parts[i] = pu.String()
			}
		}
	}
	return strings.Join(parts, ",")
}

func validName(s string) bool {
	return s != "" && !strings.ContainsAny(s, ".*> \t\r\n/\\")
}

// Open connects to NATS and checks (or creates) the streams. It fails with a clear error
// when NATS is unreachable, the credentials are refused, or the streams are missing
// (with NoCreate) or not set up for the spool (memory storage, another retention).
func Open(ctx context.Context, opts Options) (*Spool, error) {
	opts = opts.withDefaults()
	if !validName(opts.Stream) {
		return nil, fmt.Errorf("JetStream spool: stream name %q may not be empty or contain '.', '*', '>', '/' or spaces", opts.Stream)
	}
	log := opts.Logger
	if log.GetSink() == nil {
		log = ctrllog.Log.WithName("spool")
	}
	s := &Spool{
		opts:     opts,
		log:      log,
		deadLog:  opts.DeadLetterLogger,
		qSubj:    opts.Stream + ".q.",
		deadSubj: opts.Stream + ".dead.",
		routes:   map[string]*routeConsumer{},
		client:   opts.HTTPClient,
	}
	if s.deadLog.GetSink() == nil {
		s.deadLog = log
	}
	if s.client == nil {
		s.client = spool.NewHTTPClient(opts.MaxConcurrencyPerRoute)
	}
	nopts := []nats.Option{
		nats.Name("callback-router"),
		nats.Timeout(DefaultConnectTimeout),
		nats.MaxReconnects(-1),
		// No buffering while disconnected: a publish then fails at once (503) instead of
		// waiting in memory for a reconnection that a crash would lose.
		nats.ReconnectBufSize(-1),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			log.Info("Disconnected from NATS: Async callbacks are answered 503 until reconnected", "error", fmt.Sprint(err))
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) { log.Info("Reconnected to NATS", "server", nc.ConnectedUrlRedacted()) }),
	}
	if opts.CredsFile != "" {
		nopts = append(nopts, nats.UserCredentials(opts.CredsFile))
	}
	nc, err := nats.Connect(opts.URL, nopts...)
	if err != nil {
		return nil, fmt.Errorf("JetStream spool: connecting to NATS at %s: %w", Redact(opts.URL), err)
	}
	s.nc = nc
	s.js, err = jetstream.New(nc, jetstream.WithDefaultTimeout(DefaultRequestTimeout))
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("JetStream spool: %w", err)
	}
	if err := s.ensureStreams(ctx); err != nil {
		nc.Close()
		return nil, err
	}
	s.metrics = newMetrics()
	s.closedCh = make(chan struct{})
	s.breakers = delivery.NewBreakers(opts.Delivery, func(string) {
		s.breakerMu.Lock()
		close(s.closedCh)
		s.closedCh = make(chan struct{})
		s.breakerMu.Unlock()
	})
	s.metrics.breakers = s.breakers
	if opts.Registerer != nil {
		if err := s.metrics.register(opts.Registerer); err != nil {
			nc.Close()
			return nil, fmt.Errorf("registering spool metrics: %w", err)
		}
	}
	log.Info("Opened JetStream spool", "url", Redact(opts.URL), "stream", opts.Stream, "server", nc.ConnectedUrlRedacted())
	return s, nil
}

func (s *Spool) streamConfigs() (q, dead jetstream.StreamConfig) {
	q = jetstream.StreamConfig{
		Name:        s.opts.Stream,
		Description: "callback-router: acknowledged Async callbacks waiting for delivery",
		Subjects:    []string{s.qSubj + ">"},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    s.opts.Replicas,
		Duplicates:  s.opts.DuplicateWindow,
	}
	dead = jetstream.StreamConfig{
		Name:        s.opts.Stream + DeadSuffix,
		Description: "callback-router: dead letters",
		Subjects:    []string{s.deadSubj + ">"},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    s.opts.Replicas,
		Duplicates:  s.opts.DuplicateWindow,
		MaxAge:      s.opts.DeadLetterRetention,
	}
	return q, dead
}

// ensureStreams finds or creates both streams and refuses ones that are not set up for
// the spool.
func (s *Spool) ensureStreams(ctx context.Context) error {
	q, dead := s.streamConfigs()
	for _, cfg := range []jetstream.StreamConfig{q, dead} {
		st, err := s.js.Stream(ctx, cfg.Name)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			if s.opts.NoCreate {
				return fmt.Errorf("JetStream spool: stream %s does not exist and --spool-no-create is set: create it (file storage, subjects %q, %s retention) or let the receiver create it",
					cfg.Name, cfg.Subjects[0], cfg.Retention)
			}
			st, err = s.js.CreateStream(ctx, cfg)
			if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) { // another receiver won the race
				st, err = s.js.Stream(ctx, cfg.Name)
			}
			if err == nil {
				s.log.Info("Created JetStream stream", "stream", cfg.Name, "replicas", cfg.Replicas, "storage", "file")
			}
		}
		if err != nil {
			return fmt.Errorf("JetStream spool: stream %s: %w", cfg.Name, err)
		}
		got := st.CachedInfo().Config
		switch {
		case got.Storage != jetstream.FileStorage:
			return fmt.Errorf("JetStream spool: stream %s uses %s storage; the spool needs file storage", cfg.Name, got.Storage)
		case got.Retention != cfg.Retention:
			return fmt.Errorf("JetStream spool: stream %s has %s retention; the spool needs %s", cfg.Name, got.Retention, cfg.Retention)
		case !hasSubject(got.Subjects, cfg.Subjects[0]):
			return fmt.Errorf("JetStream spool: stream %s does not take subjects %q (it has %q)", cfg.Name, cfg.Subjects[0], got.Subjects)
		}
	}
	return nil
}

func hasSubject(subjects []string, want string) bool {
	for _, s := range subjects {
		if s == want || s == ">" {
			return true
		}
	}
	return false
}

// routeToken is the subject token and consumer-name part of a route: a hash, since
// route names may hold dots and be longer than a consumer name may be.
func routeToken(route string) string {
	sum := sha256.Sum256([]byte(route))
	return "r" + hex.EncodeToString(sum[:12])
}

// partitionOf is the last subject token of t's copy of cb: "u" (unordered), or "p<n>",
// n = delivery.Partition(cb.OrderKey, Partitions), for a route with ordering and a
// callback with a conversation key.
func (s *Spool) partitionOf(cb *callback.Callback, t *callback.Target) string {
	if t.Ordered {
		if p := delivery.Partition(cb.OrderKey, s.opts.Partitions); p >= 0 {
			return "p" + strconv.Itoa(p)
		}
	}
	return unorderedPartition
}

// consumerName is the durable consumer of one lane of a route: S_<token> for the
// unordered copies, S_<token>_p<n> for an ordering partition.
func (s *Spool) consumerName(tok, part string) string {
	if part == unorderedPartition {
		return s.opts.Stream + "_" + tok
	}
	return s.opts.Stream + "_" + tok + "_" + part
}

// ensureConsumer creates the consumer of t's lane (route token and partition) once per
// process and starts pulling from it if the spool runs; it returns the lane's subject.
// An ordering partition's consumer has MaxAckPending 1: one copy of its keys in flight,
// in stream order, across all receivers. The unordered lane's is the route's
// delivery.maxConcurrency (else --spool-max-concurrency-per-route).
func (s *Spool) ensureConsumer(ctx context.Context, t *callback.Target, part string) (string, error) {
	tok := routeToken(t.Route)
	lane := tok + "." + part
	subject := s.qSubj + lane
	s.mu.Lock()
	known := s.routes[lane] != nil
	s.mu.Unlock()
	if known {
		return subject, nil
	}
	// One creation at a time: concurrent first callbacks of a route would otherwise each
	// update the consumer, and an update drops the pull requests waiting on it.
	s.createMu.Lock()
	defer s.createMu.Unlock()
	s.mu.Lock()
	known = s.routes[lane] != nil
	s.mu.Unlock()
	if known {
		return subject, nil
	}
	maxAckPending := 1
	if part == unorderedPartition {
		maxAckPending = s.opts.MaxConcurrencyPerRoute
		if t.MaxConcurrency > 0 {
			maxAckPending = t.MaxConcurrency
		}
	}
	cfg := jetstream.ConsumerConfig{
		Durable:       s.consumerName(tok, part),
		Description:   "callback-router deliveries of route " + t.Route + ", lane " + part,
		FilterSubject: subject,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       s.opts.AckWait,
		MaxDeliver:    -1, // attempts are the route's, counted from NumDelivered
		MaxAckPending: maxAckPending,
		Metadata:      map[string]string{metaRoute: t.Route, metaPartition: part},
	}
	// Look up before writing: every receiver comes here for every route, and an update
	// drops the pull requests the other receivers have waiting on the consumer. Only a
	// change of the settings the receiver owns is written.
	cons, err := s.js.Consumer(ctx, s.opts.Stream, cfg.Durable)
	switch {
	case errors.Is(err, jetstream.ErrConsumerNotFound):
		cons, err = s.js.CreateConsumer(ctx, s.opts.Stream, cfg)
		if errors.Is(err, jetstream.ErrConsumerExists) { // another receiver won the race
			cons, err = s.js.Consumer(ctx, s.opts.Stream, cfg.Durable)
		}
	case err == nil:
		if got := cons.CachedInfo().Config; got.AckWait != cfg.AckWait || got.MaxAckPending != cfg.MaxAckPending {
			cons, err = s.js.UpdateConsumer(ctx, s.opts.Stream, cfg)
		}
	}
	if err != nil {
		return "", fmt.Errorf("creating the consumer of route %s: %w", t.Route, err)
	}
	s.startRoute(lane, t.Route, cons)
	return subject, nil
}

// routeConsumer is a route's consumer and whether this receiver pulls from it.
type routeConsumer struct {
	route   string
	cons    jetstream.Consumer
	pulling bool
}

// startRoute records tok's consumer and, while Run runs, starts pulling it.
func (s *Spool) startRoute(tok, route string, cons jetstream.Consumer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rc := s.routes[tok]
	if rc == nil {
		rc = &routeConsumer{route: route, cons: cons}
		s.routes[tok] = rc
	}
	s.startPullLocked(rc)
}

// startPullLocked starts pulling rc if Run runs and nobody pulls it yet; s.mu held.
func (s *Spool) startPullLocked(rc *routeConsumer) {
	if s.runCtx == nil || rc.pulling {
		return
	}
	rc.pulling = true
	ctx := s.runCtx
	s.running.Add(1)
	go func() {
		defer s.running.Done()
		s.pull(ctx, rc.route, rc.cons)
	}()
}

// Enqueue publishes one message per target and returns nil only once JetStream has
// acknowledged each (PubAck). Any error is answered 503.
func (s *Spool) Enqueue(ctx context.Context, cb *callback.Callback, targets []callback.Target) error {
	if len(targets) == 0 {
		return nil
	}
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		s.metrics.enqueued.WithLabelValues("error").Inc()
		return fmt.Errorf("enqueueing callback %s: %w", cb.ID, spool.ErrClosed)
	}
	if !s.nc.IsConnected() {
		s.metrics.enqueued.WithLabelValues("error").Inc()
		return fmt.Errorf("enqueueing callback %s: %w", cb.ID, ErrUnavailable)
	}
	if cb.ReceivedAt.IsZero() {
		c := *cb
		c.ReceivedAt = time.Now()
		cb = &c
	}
	ctx, cancel := context.WithTimeout(ctx, s.opts.PublishTimeout)
	defer cancel()
	for _, t := range targets {
		t = spool.NormalizeTarget(t)
		subject, err := s.ensureConsumer(ctx, &t, s.partitionOf(cb, &t))
		if err == nil {
			m := nats.NewMsg(subject)
			m.Header = encodeHeaders(cb, &t)
			m.Data = cb.Body
			_, err = s.js.PublishMsg(ctx, m, jetstream.WithMsgID(cb.ID+" "+t.Route), jetstream.WithExpectStream(s.opts.Stream))
		}
		if err != nil {
			s.metrics.enqueued.WithLabelValues("error").Inc()
			return fmt.Errorf("enqueueing callback %s for route %s: %w", cb.ID, t.Route, err)
		}
	}
	s.metrics.enqueued.WithLabelValues("stored").Inc()
	return nil
}

// Run pulls every route's consumer known now or found later, and delivers, until ctx
// is done or the spool is closed; then it waits for deliveries in flight.
func (s *Spool) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return spool.ErrClosed
	}
	if s.runCtx != nil {
		s.mu.Unlock()
		return errors.New("spool is already running")
	}
	runCtx, cancel := context.WithCancel(ctx)
	s.runCtx, s.cancel = runCtx, cancel
	for _, rc := range s.routes { // created by Enqueue before Run
		s.startPullLocked(rc)
	}
	s.mu.Unlock()
	defer cancel()

	t := time.NewTicker(s.opts.DiscoverInterval)
	defer t.Stop()
	for {
		if err := s.discover(runCtx); err != nil && runCtx.Err() == nil {
			s.log.Error(err, "Failed to list the routes' JetStream consumers; retrying")
		}
		select {
		case <-runCtx.Done():
			s.running.Wait()
			s.mu.Lock()
			s.runCtx, s.cancel = nil, nil
			for _, rc := range s.routes {
				rc.pulling = false
			}
			s.mu.Unlock()
			return nil
		case <-t.C:
		}
	}
}

// discover starts pulling every route consumer of the stream not pulled yet.
func (s *Spool) discover(ctx context.Context) error {
	lctx, cancel := context.WithTimeout(ctx, DefaultRequestTimeout)
	defer cancel()
	st, err := s.js.Stream(lctx, s.opts.Stream)
	if err != nil {
		return err
	}
	l := st.ListConsumers(lctx)
	for info := range l.Info() {
		route, part := info.Config.Metadata[metaRoute], info.Config.Metadata[metaPartition]
		if part == "" {
			part = unorderedPartition
		}
		lane := routeToken(route) + "." + part
		if route == "" || info.Name != s.consumerName(routeToken(route), part) {
			continue
		}
		s.mu.Lock()
		known := s.routes[lane] != nil
		s.mu.Unlock()
		if known {
			continue
		}
		cons, err := st.Consumer(lctx, info.Name)
		if err != nil {
			return err
		}
		s.startRoute(lane, route, cons)
	}
	return l.Err()
}

// waitLeader returns once cons has a leader (at once for a stream without replicas).
func waitLeader(ctx context.Context, cons jetstream.Consumer) error {
	for {
		ictx, cancel := context.WithTimeout(ctx, DefaultRequestTimeout)
		info, err := cons.Info(ictx)
		cancel()
		if err == nil && (info.Cluster == nil || info.Cluster.Leader != "") {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(leaderPoll):
		}
		if err != nil {
			return err
		}
	}
}

// pull delivers route's messages, at most MaxConcurrencyPerRoute at a time from this
// receiver (and from all receivers together: the consumer's MaxAckPending).
func (s *Spool) pull(ctx context.Context, route string, cons jetstream.Consumer) {
	n := s.opts.MaxConcurrencyPerRoute
	if c := cons.CachedInfo(); c != nil && c.Config.MaxAckPending > 0 {
		n = c.Config.MaxAckPending
	}
	for ctx.Err() == nil {
		// A pull sent to a replicated consumer that has no leader yet (just created) is
		// lost, and the client would notice only at the pull's expiry: wait for one.
		if err := waitLeader(ctx, cons); err != nil {
			if ctx.Err() == nil {
				s.log.Error(err, "The route's JetStream consumer has no leader; retrying", "route", route)
			}
			continue
		}
		it, err := cons.Messages(jetstream.PullMaxMessages(n), jetstream.PullExpiry(pullExpiry))
		if err != nil {
			s.log.Error(err, "Failed to pull from the route's JetStream consumer; retrying", "route", route)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
			continue
		}
		stop := context.AfterFunc(ctx, it.Stop)
		s.pullFrom(ctx, route, it, n)
		stop()
		it.Stop()
	}
}

func (s *Spool) pullFrom(ctx context.Context, route string, it jetstream.MessagesContext, n int) {
	sem := make(chan struct{}, n)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		msg, err := it.Next()
		if err != nil {
			<-sem
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) || ctx.Err() != nil {
				return
			}
			s.log.V(1).Info("Pull from JetStream failed; continuing", "route", route, "error", err.Error())
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			s.deliver(ctx, msg)
		}()
	}
}

// Close stops deliveries, waits for those in flight to be acknowledged to JetStream,
// and closes the connection. Everything not delivered stays in the stream.
func (s *Spool) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	if s.cancel != nil {
		s.cancel()
	}
	s.mu.Unlock()
	s.running.Wait()
	s.metrics.unregister()
	err := s.nc.FlushTimeout(time.Second)
	s.nc.Close()
	if err != nil && !errors.Is(err, nats.ErrConnectionClosed) && !errors.Is(err, nats.ErrInvalidConnection) {
		return fmt.Errorf("closing the JetStream spool: flushing acknowledgements: %w", err)
	}
	return nil
}
