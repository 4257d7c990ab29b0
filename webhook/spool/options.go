package spool

import (
	"flag"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	dctl "github.com/callback-router/callback-router/webhook/delivery"
)

// Defaults of the Options fields. Each is the value used when the field is left zero.
const (
	// DefaultMaxBytes caps the logical size of the spool (payloads, pending deliveries and
	// dead letters). Past it Enqueue returns ErrFull and the receiver answers 503. The
	// bbolt file itself is larger (page overhead; freed pages are reused, never returned
	// to the filesystem), so this is half the chart's default 1Gi spool volume.
	DefaultMaxBytes int64 = 512 << 20
	// DefaultMaxBatchSize is how many writes (enqueues and delivery results) one commit,
	// and so one fsync, may carry.
	DefaultMaxBatchSize = 1024
	// DefaultMaxConcurrencyPerRoute bounds the in-flight deliveries of one route.
	DefaultMaxConcurrencyPerRoute = 16
	// DefaultLockTimeout is how long Open waits for the spool's file lock, held by a
	// running receiver, before returning ErrInUse.
	DefaultLockTimeout = time.Second
	// DefaultMaxRetryAfter caps how long a backend's Retry-After may postpone a retry.
	DefaultMaxRetryAfter = time.Hour
	// DefaultRetentionSweepInterval is how often dead letters older than
	// Options.DeadLetterRetention are removed, when a retention is set.
	DefaultRetentionSweepInterval = time.Minute
	// DefaultDialTimeout bounds a TCP connect to a backend (inside the attempt's timeout).
	DefaultDialTimeout = 5 * time.Second
	// DefaultIdleConnTimeout closes keep-alive connections to backends idle this long.
	DefaultIdleConnTimeout = 90 * time.Second
)

// Fixed limits of the delivery path.
const (
	// MaxErrorBodyBytes is how much of a failed backend answer is kept in a dead letter's
	// LastError and in the log.
	MaxErrorBodyBytes = 256
	// MaxDrainBytes is how much of a backend answer is read (and discarded) so that the
	// connection can be reused; a longer answer closes the connection instead.
	MaxDrainBytes = 64 << 10
	// initialMmapSize is the address space bbolt maps up front (not disk space): growing
	// the map makes a commit wait for every open read transaction, so starting large
	// keeps those stalls off the acknowledgement path for the first 256 MiB.
	initialMmapSize = 256 << 20
	// fillPercent is how full bbolt fills a page before splitting it: high, because the
	// spool's keys are always appended in order.
	fillPercent = 0.9
)

// FileName is the bbolt file inside a spool directory.
const FileName = "spool.db"

// DefaultDir is the spool directory used when none is given: a directory under the OS
// temp dir. Production receivers should set --spool-dir to a persistent volume.
func DefaultDir() string {
	return filepath.Join(os.TempDir(), "callback-router-spool")
}

// Options tune a Spool. The zero value is a durable spool with the defaults above.
type Options struct {
	// NoSync skips fsync on commit: acknowledgements are then only as durable as the OS
	// page cache (a process crash loses nothing, a machine crash may). Used to compare the
	// durable figures against; never set it in production.
	NoSync bool
	// MaxBytes caps the spool's logical size; see DefaultMaxBytes. Negative: no cap.
	MaxBytes int64
	// MaxBatchSize caps the writes per commit; see DefaultMaxBatchSize.
	MaxBatchSize int
	// MaxConcurrencyPerRoute caps in-flight deliveries per route; see DefaultMaxConcurrencyPerRoute.
	MaxConcurrencyPerRoute int
	// LockTimeout is how long Open waits for the file lock; see DefaultLockTimeout.
	LockTimeout time.Duration
	// MaxRetryAfter caps a backend's Retry-After; see DefaultMaxRetryAfter.
	MaxRetryAfter time.Duration
	// DeadLetterRetention removes dead letters this long after they died. Zero keeps them
	// until they are redriven or purged with `callback-router deadletters`.
	DeadLetterRetention time.Duration
	// DeliveredRetention keeps each delivered callback (payload and delivery) this long,
	// so that it can be replayed (Replay, the admin API, CallbackReplay). Zero (the
	// default) deletes a callback as soon as its last delivery succeeds.
	DeliveredRetention time.Duration
	// RetentionSweepInterval; see DefaultRetentionSweepInterval.
	RetentionSweepInterval time.Duration
	// Registerer, when set, receives the spool's metrics (names prefixed callback_router_).
	Registerer prometheus.Registerer
	// Logger; the zero value (which logr.Discard() also is) uses controller-runtime's
	// global logger named "spool". For silence pass a logger whose sink drops everything.
	Logger logr.Logger
	// DeadLetterLogger logs the "Dead-lettered callback" line, one per dead letter,
	// which must never be dropped: give it a logger that does not sample (the
	// receiver's production logger samples repeated messages). Zero: Logger.
	DeadLetterLogger logr.Logger
	// Delivery configures the circuit breaker per backend URL (--breaker-failures,
	// --breaker-cooldown).
	Delivery dctl.Options
	// HTTPClient sends deliveries; nil uses a keep-alive client tuned for
	// MaxConcurrencyPerRoute that does not follow redirects. Its Timeout should be zero:
	// each attempt is bounded by its route's timeout.
	HTTPClient *http.Client
	// Tracer records a span per delivery attempt, under the trace stored with the
	// callback; nil records none (the stored traceparent is still sent).
	Tracer trace.Tracer
}

// BindFlags binds the spool's operational limits to fs as flags, defaulting to the
// Default* constants, for the receiver's command line. --spool-dir stays the receiver's.
func (o *Options) BindFlags(fs *flag.FlagSet) {
	fs.Int64Var(&o.MaxBytes, "spool-max-bytes", DefaultMaxBytes,
		"cap on the spool's logical size (payloads, pending deliveries, dead letters); past it Async callbacks are answered 503; negative: no cap")
	fs.IntVar(&o.MaxConcurrencyPerRoute, "spool-max-concurrency-per-route", DefaultMaxConcurrencyPerRoute,
		"in-flight Async deliveries per route")
	fs.IntVar(&o.MaxBatchSize, "spool-max-batch", DefaultMaxBatchSize,
		"writes per spool commit (one fsync)")
	fs.DurationVar(&o.MaxRetryAfter, "spool-max-retry-after", DefaultMaxRetryAfter,
		"cap on how long a backend's Retry-After may postpone a retry")
	fs.DurationVar(&o.DeliveredRetention, "retention", 0,
		"keep delivered callbacks this long for replay (admin API, CallbackReplay); they count against --spool-max-bytes (default 0: off)")
	fs.DurationVar(&o.DeadLetterRetention, "dead-letter-retention", 0,
		"remove dead letters this long after they died; 0 keeps them until redriven or purged")
	fs.DurationVar(&o.LockTimeout, "spool-lock-timeout", DefaultLockTimeout,
		"how long to wait for the spool's file lock (held by another receiver) at start")
	o.Delivery.BindFlags(fs)
}

func (o Options) withDefaults() Options {
	if o.MaxBytes == 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	if o.MaxBatchSize <= 0 {
		o.MaxBatchSize = DefaultMaxBatchSize
	}
	if o.MaxConcurrencyPerRoute <= 0 {
		o.MaxConcurrencyPerRoute = DefaultMaxConcurrencyPerRoute
	}
	if o.LockTimeout <= 0 {
		o.LockTimeout = DefaultLockTimeout
	}
	if o.MaxRetryAfter <= 0 {
		o.MaxRetryAfter = DefaultMaxRetryAfter
	}
	if o.RetentionSweepInterval <= 0 {
		o.RetentionSweepInterval = DefaultRetentionSweepInterval
	}
	return o
}
