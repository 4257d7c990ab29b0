package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/zapr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	uzap "go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sync/errgroup"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/callback-router/callback-router/controllers"
	"github.com/callback-router/callback-router/controllers/dataplane"
	"github.com/callback-router/callback-router/webhook/admin"
	"github.com/callback-router/callback-router/webhook/receiver"
	"github.com/callback-router/callback-router/webhook/replays"
	"github.com/callback-router/callback-router/webhook/routing"
	"github.com/callback-router/callback-router/webhook/spool"
	"github.com/callback-router/callback-router/webhook/spool/jsspool"
	"github.com/callback-router/callback-router/webhook/tablestore"
	"github.com/callback-router/callback-router/webhook/tracing"
)

func init() {
	register("receiver", "run the data plane: verify, route and deliver IM callbacks", runReceiver)
}

// receiverFlags are the receiver's command-line settings; docs/receiver.md documents each.
type receiverFlags struct {
	routes         string
	listen         string
	metricsListen  string
	spoolDir       string
	spoolURL       string
	spoolDirSet    bool
	trustedProxies string
	maxBodyBytes   int64
	maxInflight    int64
	syncBudget     time.Duration
	openIMTimeout  time.Duration
	server         receiver.ServerConfig
	drainDelay     time.Duration
	pprofListen    string
	namespace      string
	table          string
	tableStart     time.Duration
	spool          spool.Options
	jetStream      jsspool.Options
	otlpEndpoint   string
	adminListen    string
}

func (f *receiverFlags) bind(fs *flag.FlagSet) {
	fs.StringVar(&f.routes, "routes", "", "standalone mode: a multi-document YAML of CallbackApp, CallbackRoute, Secret (and Namespace) manifests (SIGHUP reloads it)")
	fs.StringVar(&f.listen, "listen", ":8080", "address of the callback endpoints, /healthz and /readyz (and /metrics without --metrics-listen)")
	fs.StringVar(&f.metricsListen, "metrics-listen", "", "address to serve /metrics on instead of --listen")
	fs.StringVar(&f.spoolDir, "spool-dir", spool.DefaultDir(), "directory of the durable queue of acknowledged Async callbacks")
	fs.StringVar(&f.spoolURL, "spool-url", "", "NATS servers (nats://[user:password@]HOST:PORT[,HOST:PORT...]) of a JetStream cluster to spool Async callbacks in instead of --spool-dir; the receiver then keeps no state")
	fs.StringVar(&f.trustedProxies, "trusted-proxies", "", "comma-separated CIDRs of proxies whose X-Forwarded-For is believed for sourceCIDRs checks (default: none, X-Forwarded-For ignored)")
	fs.Int64Var(&f.maxBodyBytes, "max-body-bytes", receiver.DefaultMaxBodyBytes, "largest callback body accepted; larger is answered 413")
	fs.Int64Var(&f.maxInflight, "max-inflight-body-bytes", receiver.DefaultMaxInflightBodyBytes,
		"bound on callback bodies held in memory at once, all connections together; a verified callback that finds no room within "+
			receiver.BodyBudgetWait.String()+" is answered 503")
	fs.IntVar(&f.server.MaxConnections, "max-connections", receiver.DefaultMaxConnections,
		"bound on connections the callback listener serves at once; more are answered 503 and closed")
	fs.DurationVar(&f.syncBudget, "sync-budget", receiver.DefaultSyncBudget, "overall deadline of a Tencent IM Sync answer, from arrival (Tencent waits 2s)")
	fs.DurationVar(&f.openIMTimeout, "openim-timeout", receiver.DefaultOpenIMTimeout, "OpenIM's webhooks.yml timeout (how long OpenIM waits for each callback); OpenIM Sync answers leave 500ms before it")
	fs.DurationVar(&f.server.ReadHeaderTimeout, "read-header-timeout", receiver.DefaultReadHeaderTimeout, "bound on reading a request's headers")
	fs.DurationVar(&f.server.ReadTimeout, "read-timeout", receiver.DefaultReadTimeout, "bound on reading a whole request")
	fs.DurationVar(&f.server.WriteTimeout, "write-timeout", receiver.DefaultWriteTimeout, "callback listener: bound on writing an answer once it is ready; metrics/pprof listeners: bound from the end of the headers to the end of the answer")
	fs.DurationVar(&f.server.IdleTimeout, "idle-timeout", receiver.DefaultIdleTimeout, "keep-alive connections idle this long are closed")
	fs.IntVar(&f.server.MaxHeaderBytes, "max-header-bytes", receiver.DefaultMaxHeaderBytes, "largest request line plus headers accepted")
	fs.DurationVar(&f.drainDelay, "drain-delay", receiver.DefaultDrainDelay, "on SIGTERM, how long /readyz answers 503 before the listener closes")
	fs.StringVar(&f.pprofListen, "pprof-listen", "", "serve net/http/pprof on this address (off by default; bind it to loopback)")
	fs.DurationVar(&f.server.ShutdownTimeout, "shutdown-timeout", receiver.DefaultShutdownTimeout, "bound on waiting for callbacks in flight at shutdown")
	fs.StringVar(&f.namespace, "namespace", envOr("POD_NAMESPACE", controllers.DefaultNamespace), "in-cluster mode: namespace of the table Secrets (default: $POD_NAMESPACE)")
	fs.StringVar(&f.table, "table", dataplane.TableName(controllers.DefaultReceiverName), "in-cluster mode: name of the table the manager writes for this receiver (<CallbackReceiver name>-receiver)")
	fs.StringVar(&f.otlpEndpoint, "otlp-endpoint", "", "export trace spans (receive, verify, filter, store, each delivery attempt) with OTLP/HTTP to this URL, e.g. http://otel-collector:4318 (off by default; every delivery carries a traceparent either way)")
	fs.StringVar(&f.adminListen, "admin-listen", "", "serve the admin API (dead letters, replay) on this address: loopback or pod-internal, never the callback port (off by default)")
	fs.DurationVar(&f.tableStart, "table-start-timeout", DefaultTableStartTimeout, "in-cluster mode: exit with an error when the table Secrets cannot be listed within this (API server unreachable, no permission), so that Kubernetes restarts the receiver")
	f.spool.BindFlags(fs)
	f.jetStream.BindFlags(fs)
}

// openSpool opens the embedded spool in --spool-dir, or the JetStream spool of
// --spool-url, with the shared limits of f.spool.
func (f *receiverFlags) openSpool(ctx context.Context) (spool.Queue, string, error) {
	if f.spoolURL == "" {
		sp, err := spool.Open(f.spoolDir, f.spool)
		if err != nil {
			return nil, "", fmt.Errorf("opening spool %s: %w", f.spoolDir, err)
		}
		return sp, f.spoolDir, nil
	}
	if f.spool.DeliveredRetention > 0 {
		return nil, "", errors.New("--retention (replay of delivered callbacks) is not supported with --spool-url in this version")
	}
	o := f.jetStream
	o.URL = f.spoolURL
	o.MaxConcurrencyPerRoute, o.MaxRetryAfter = f.spool.MaxConcurrencyPerRoute, f.spool.MaxRetryAfter
	o.DeadLetterRetention, o.Delivery = f.spool.DeadLetterRetention, f.spool.Delivery
	o.Registerer, o.Logger, o.DeadLetterLogger = f.spool.Registerer, f.spool.Logger, f.spool.DeadLetterLogger
	sp, err := jsspool.Open(ctx, o)
	if err != nil {
		return nil, "", err
	}
	return sp, jsspool.Redact(f.spoolURL), nil
}

// startTracing starts span export to endpoint ("" : none) and returns the provider (nil
// when none) and the function that flushes it at exit.
func startTracing(log logr.Logger, endpoint string) (*tracing.Provider, func(), error) {
	if endpoint == "" {
		return nil, func() {}, nil
	}
	tp, err := tracing.NewProvider(endpoint, "")
	if err != nil {
		return nil, nil, fmt.Errorf("--otlp-endpoint: %w", err)
	}
	return tp, func() {
		ctx, cancel := context.WithTimeout(context.Background(), tracing.ExportTimeout)
		defer cancel()
		if err := tp.Shutdown(ctx); err != nil {
			log.Error(err, "Failed to flush trace spans")
		}
	}, nil
}

// serveAdmin serves the admin API on --admin-listen, if set, until ctx ends.
func serveAdmin(ctx context.Context, g *errgroup.Group, f *receiverFlags, st admin.Store) error {
	if f.adminListen == "" {
		return nil
	}
	aln, err := listen(f.adminListen)
	if err != nil {
		return err
	}
	g.Go(func() error { return receiver.Serve(ctx, aln, admin.Handler(st), f.server) })
	return nil
}

// samePort reports whether two listen addresses use the same port.
func samePort(a, b string) bool {
	_, pa, errA := net.SplitHostPort(a)
	_, pb, errB := net.SplitHostPort(b)
	return errA == nil && errB == nil && pa == pb
}

func parseCIDRs(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, c := range strings.Split(s, ",") {
		c = strings.TrimSpace(c)
		if c == "" {
			continue
		}
		p, err := netip.ParsePrefix(c)
		if err != nil {
			return nil, fmt.Errorf("--trusted-proxies: %w", err)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// validate checks the flags' values and returns the parsed --trusted-proxies.
func (f *receiverFlags) validate() ([]netip.Prefix, error) {
	trusted, err := parseCIDRs(f.trustedProxies)
	if err != nil {
		return nil, err
	}
	if f.adminListen != "" && samePort(f.adminListen, f.listen) {
		return nil, fmt.Errorf("--admin-listen %s must not share the callback port of --listen %s: the admin API resends callbacks", f.adminListen, f.listen)
	}
	switch {
	case f.maxBodyBytes <= 0:
		return nil, errors.New("--max-body-bytes must be positive")
	case f.maxInflight < f.maxBodyBytes:
		return nil, fmt.Errorf("--max-inflight-body-bytes (%d) must be at least --max-body-bytes (%d)", f.maxInflight, f.maxBodyBytes)
	case f.server.MaxConnections <= 0:
		return nil, errors.New("--max-connections must be positive")
	case f.syncBudget <= 0 || f.syncBudget >= 2*time.Second:
		return nil, fmt.Errorf("--sync-budget must be positive and under Tencent's 2s, not %s", f.syncBudget)
	case f.spoolURL != "" && f.spoolDirSet:
		return nil, errors.New("--spool-dir and --spool-url are exclusive: the spool is either a directory or a JetStream stream")
	}
	if err := receiver.ValidateOpenIMTimeout(f.openIMTimeout); err != nil {
		return nil, fmt.Errorf("--openim-timeout: %w", err)
	}
	return trusted, nil
}

func runReceiver(args []string) error {
	fs := newFlagSet("receiver", "[--routes FILE] [--listen :8080] [--metrics-listen ADDR] [--spool-dir DIR | --spool-url nats://HOST:PORT[,HOST:PORT...]]")
	var f receiverFlags
	f.bind(fs)
	zopts := zap.Options{}
	zopts.BindFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	fs.Visit(func(fl *flag.Flag) { f.spoolDirSet = f.spoolDirSet || fl.Name == "spool-dir" })
	log, unsampled := newLoggers(&zopts)
	log, unsampled = log.WithName("receiver"), unsampled.WithName("receiver")
	trusted, err := f.validate()
	if err != nil {
		return err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	tp, stopTracing, err := startTracing(log, f.otlpEndpoint)
	if err != nil {
		return err
	}
	defer stopTracing()

	f.spool.Registerer, f.spool.Logger = reg, log.WithName("spool")
	f.spool.Tracer = tp.Tracer()
	f.spool.DeadLetterLogger = unsampled.WithName("spool")
	sp, spoolAt, err := f.openSpool(context.Background())
	if err != nil {
		return err
	}
	defer func() {
		if err := sp.Close(); err != nil {
			log.Error(err, "Failed to close the spool")
		}
	}()

	h, err := receiver.New(receiver.Options{
		Sink:                 sp,
		MaxBodyBytes:         f.maxBodyBytes,
		MaxInflightBodyBytes: f.maxInflight,
		SyncBudget:           f.syncBudget,
		OpenIMTimeout:        f.openIMTimeout,
		TrustedProxies:       trusted,
		Logger:               log,
		Registry:             reg,
		ServeMetrics:         f.metricsListen == "",
		Tracer:               tp.Tracer(),
	})
	if err != nil {
		return err
	}
	watchCtx, stopWatch := context.WithCancel(context.Background())
	defer stopWatch()
	var watchErr <-chan error // in-cluster mode: the watch ended with an error
	if f.routes != "" {
		if err := loadRoutes(log, h, f.routes); err != nil {
			return err
		}
	} else if watchErr, err = startInCluster(watchCtx, log, h, sp, spoolAt, reg, &f); err != nil {
		return err
	}

	ln, err := listen(f.listen)
	if err != nil {
		return err
	}
	var mln net.Listener
	if f.metricsListen != "" {
		if mln, err = listen(f.metricsListen); err != nil {
			_ = ln.Close()
			return err
		}
	}

	sigCtx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	serveCtx, stopServing := context.WithCancel(context.Background())
	defer stopServing()
	spoolCtx, stopSpool := context.WithCancel(context.Background())
	defer stopSpool()

	var g errgroup.Group
	g.Go(func() error { return receiver.ServeFast(serveCtx, ln, h, f.server) })
	if f.pprofListen != "" {
		pln, err := listen(f.pprofListen)
		if err != nil {
			return err
		}
		pmux := http.NewServeMux()
		pmux.HandleFunc("/debug/pprof/", pprof.Index)
		pmux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		g.Go(func() error { return receiver.Serve(serveCtx, pln, pmux, f.server) })
	}
	st, ok := sp.(admin.Store)
	if !ok {
		return fmt.Errorf("the spool (%T) has no admin API", sp)
	}
	if err := serveAdmin(serveCtx, &g, &f, st); err != nil {
		return err
	}
	if mln != nil {
		mux := http.NewServeMux()
		mux.Handle(receiver.PathMetrics, h.MetricsHandler())
		g.Go(func() error { return receiver.Serve(serveCtx, mln, mux, f.server) })
	}
	spoolDone := make(chan error, 1)
	go func() { spoolDone <- sp.Run(spoolCtx) }()
	log.Info("Receiver started", "listen", ln.Addr().String(), "metricsListen", f.metricsListen, "spool", spoolAt, "routes", f.routes)

	serveErr := make(chan error, 1)
	go func() { serveErr <- g.Wait() }()
	for done := false; !done; {
		select {
		case <-hup:
			if f.routes == "" {
				continue
			}
			if err := loadRoutes(log, h, f.routes); err != nil {
				log.Error(err, "Failed to reload routes; keeping the previous table")
			}
		case <-sigCtx.Done():
			done = true
		case err := <-watchErr:
			// Exit non-zero so that Kubernetes restarts the receiver: alive but never
			// ready, with /healthz answering OK, it would never be replaced.
			log.Error(err, "Cannot watch the routing table; exiting")
			stopAndWait(log, stopServing, serveErr)
			stopSpool()
			logSpoolEnd(log, <-spoolDone)
			return err
		case err := <-serveErr:
			stopSpool()
			logSpoolEnd(log, <-spoolDone)
			return err
		case err := <-spoolDone:
			stopAndWait(log, stopServing, serveErr)
			return fmt.Errorf("spool delivery loop stopped unexpectedly: %w", err)
		}
	}
	// Graceful shutdown: 1. readiness 503 so load balancers stop sending; 2. wait the drain
	// delay while still serving; 3. close the listeners and finish callbacks in flight;
	// 4. stop delivering and close the spool (acknowledged copies stay on disk).
	log.Info("Shutting down: draining", "drainDelay", f.drainDelay)
	h.SetDraining(true)
	served := false
	select {
	case <-time.After(f.drainDelay):
	case err = <-serveErr:
		served = true
	}
	stopServing()
	if !served {
		err = <-serveErr // bounded by --shutdown-timeout
	}
	stopSpool()
	logSpoolEnd(log, <-spoolDone)
	log.Info("Receiver stopped")
	return err
}

// stopAndWait stops the servers and waits for them, logging the error they ended with.
func stopAndWait(log logr.Logger, stopServing func(), serveErr <-chan error) {
	stopServing()
	if err := <-serveErr; err != nil {
		log.Error(err, "Serving ended with an error")
	}
}

// newLoggers returns the receiver's logger, built from the --zap-* flags, and the same
// logger without sampling. Outside development mode controller-runtime's zap logger
// samples (per message and second: the first 100, then every 100th), which under a burst
// drops most of a repeated line; the unsampled one is for lines that must all be kept,
// such as one per dead letter.
func newLoggers(zopts *zap.Options) (sampled, unsampled logr.Logger) {
	var base zapcore.Core
	raw := zap.NewRaw(zap.UseFlagOptions(zopts), zap.RawZapOpts(uzap.WrapCore(func(c zapcore.Core) zapcore.Core {
		base = c // before the sampler, which the defaults add after the caller's options
		return c
	})))
	keep := raw.WithOptions(uzap.WrapCore(func(zapcore.Core) zapcore.Core { return base }))
	return zapr.NewLogger(raw), zapr.NewLogger(keep)
}

// listen opens a TCP listener on addr.
func listen(addr string) (net.Listener, error) {
	ln, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", addr, err)
	}
	return ln, nil
}

// logSpoolEnd logs the error the spool's delivery loop ended with, once it was asked to
// stop.
func logSpoolEnd(log logr.Logger, err error) {
	if err != nil && !errors.Is(err, context.Canceled) {
		log.Error(err, "Spool delivery loop ended with an error")
	}
}

// loadRoutes compiles the routes file with the same compiler and rules as the manager,
// logs each app's and route's status and swaps the table in.
func loadRoutes(log logr.Logger, h *receiver.Handler, path string) error {
	m, err := routing.LoadFile(path)
	if err != nil {
		return err
	}
	for _, s := range m.Skipped {
		log.Info("Skipped a document that is not a CallbackApp, CallbackRoute, Secret or Namespace", "object", s)
	}
	out := routing.Compile(m.Input())
	for _, st := range out.Apps {
		kv := []any{"app", st.Namespace + "/" + st.Name, "url", st.URL}
		if st.Ready.True {
			log.Info("App loaded", append(kv, "routes", st.AttachedRoutes)...)
			continue
		}
		c := st.Accepted
		if c.True {
			c = st.ResolvedRefs
		}
		log.Info("App not loaded", append(kv, "reason", c.Reason, "message", c.Message)...)
	}
	for _, st := range out.Routes {
		kv := []any{"route", st.Namespace + "/" + st.Name, "app", st.App.String()}
		if u := st.UnknownCommands; st.CommandsChecked && u.True {
			log.Info("Route names unknown commands", append(kv, "reason", u.Reason, "message", u.Message)...)
		}
		for _, w := range st.Warnings {
			log.Info("Route warning", append(kv, "reason", w.Reason, "message", w.Message)...)
		}
		switch {
		case st.Routed():
			log.Info("Route loaded", kv...)
		case !st.Accepted.True:
			log.Info("Route not loaded", append(kv, "reason", st.Accepted.Reason, "message", st.Accepted.Message)...)
		case !st.ResolvedRefs.True:
			log.Info("Route not loaded", append(kv, "reason", st.ResolvedRefs.Reason, "message", st.ResolvedRefs.Message)...)
		default:
			log.Info("Route not loaded", append(kv, "reason", st.Ready.Reason, "message", st.Ready.Message)...)
		}
	}
	t, err := routing.NewTable(out.Tables[routing.StandaloneReceiver])
	if err != nil {
		return fmt.Errorf("building the routing table: %w", err)
	}
	h.SetTable(t)
	// Decoding a large file leaves tens of MiB of garbage: hand it back to the OS now
	// rather than whenever the scavenger gets to it, so RSS reflects the live table.
	debug.FreeOSMemory()
	log.Info("Routing table loaded", "apps", len(out.Tables[routing.StandaloneReceiver].Apps), "routes", t.Len(), "of", len(out.Routes))
	return nil
}

// startInCluster starts the table watch and the runner of the CallbackReplays published
// in the table. Standalone mode has no CallbackReplays (`callback-router replay --admin`
// is the way there).
func startInCluster(ctx context.Context, log logr.Logger, h *receiver.Handler, sp spool.Queue, spoolAt string,
	reg prometheus.Registerer, f *receiverFlags) (<-chan error, error) {
	rs, ok := sp.(replays.Spool)
	if !ok {
		rs = replays.Unsupported(spoolAt)
	}
	runner, err := replays.New(rs, reg, log.WithName("replay"), 0)
	if err != nil {
		return nil, fmt.Errorf("registering the replay metrics: %w", err)
	}
	go runner.Run(ctx)
	return watchTable(ctx, log, h, runner, f.namespace, f.table, f.tableStart)
}

// DefaultTableStartTimeout is --table-start-timeout: how long the receiver waits for the
// first successful list of its table Secrets before it exits with an error.
const DefaultTableStartTimeout = 60 * time.Second

// watchTable starts in-cluster mode: it watches the table Secrets the manager writes and
// swaps each new complete table in. The handler stays not ready until the first table
// loads, and keeps serving the last good table while the API server is unreachable.
// The config comes from KUBECONFIG when set, else the in-cluster service account.
// The channel receives the error the watch ended with: it could not start within
// startTimeout, or it stopped; the receiver then exits non-zero.
func watchTable(ctx context.Context, log logr.Logger, h *receiver.Handler, runner *replays.Runner, namespace, name string, startTimeout time.Duration) (<-chan error, error) {
	if startTimeout <= 0 {
		return nil, fmt.Errorf("--table-start-timeout must be positive, not %s", startTimeout)
	}
	cfg, err := ctrl.GetConfig()
	if err != nil {
		return nil, fmt.Errorf("in-cluster mode (no --routes): loading the API server config: %w", err)
	}
	log = log.WithName("table")
	errc := make(chan error, 1)
	go func() {
		err := tablestore.Watch(logr.NewContext(ctx, log), cfg, namespace, name, startTimeout, func(s *routing.Snapshot) {
			t, err := routing.NewTable(s)
			if err != nil {
				log.Error(err, "Ignored a routing table that does not build; keeping the last good one")
				return
			}
			h.SetTable(t)
			// After the table: a replayed delivery is sent with the table's routes.
			runner.Set(s.Replays)
		})
		if ctx.Err() != nil {
			return // stopping
		}
		if err == nil {
			err = errors.New("the routing table watch stopped")
		}
		errc <- fmt.Errorf("in-cluster mode, table %s/%s: %w", namespace, name, err)
	}()
	log.Info("Watching the routing table", "namespace", namespace, "table", name, "startTimeout", startTimeout)
	return errc, nil
}
