package cli

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/callback-router/callback-router/controllers"
	"github.com/callback-router/callback-router/controllers/dataplane"
)

// Manager settings that are not flags.
const (
	// LeaderElectionID is the Lease name the manager replicas compete for.
	LeaderElectionID = "callback-router-manager.callback-router.dev"
	// managerShutdownTimeout bounds the wait for the controllers to stop on SIGTERM.
	managerShutdownTimeout = 30 * time.Second
)

func init() {
	register("manager", "run the operator: reconcile CallbackApps and CallbackRoutes into routing tables, and CallbackReceivers into their data planes", runManager)
}

// managerFlags are the manager's command-line settings. Everything about one receiver
// (replicas, resources, Service, spool, trusted proxies) is in its CallbackReceiver.
type managerFlags struct {
	kubeconfig         string
	metricsAddr        string
	probeAddr          string
	leaderElect        bool
	receiverNamespaces string
	opts               controllers.ManagerOptions
	zap                zap.Options
}

// envOr returns the environment variable name, or def when it is unset or empty.
func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// bind registers the flags on fs. The names are a contract with the Helm chart and the
// kustomize manifests: add flags, never rename them.
func (f *managerFlags) bind(fs *flag.FlagSet) {
	fs.StringVar(&f.kubeconfig, "kubeconfig", "", "Path to a kubeconfig; default: in-cluster config, then $KUBECONFIG, then ~/.kube/config.")
	fs.StringVar(&f.metricsAddr, "metrics-bind-address", ":8080", "Address of the manager's Prometheus /metrics endpoint; \"0\" disables it.")
	fs.StringVar(&f.probeAddr, "health-probe-bind-address", ":8081", "Address of the /healthz and /readyz endpoints.")
	fs.BoolVar(&f.leaderElect, "leader-elect", false, "Elect a leader among manager replicas (a Lease in --receiver-namespace), so only one reconciles.")
	fs.IntVar(&f.opts.StatusWorkers, "status-workers", controllers.DefaultStatusWorkers, "Status patches sent at once.")
	fs.DurationVar(&f.opts.DrainSettle, "receiver-drain-settle", dataplane.DefaultDrainSettle,
		"How long a receiver pod a scale-down removes must have been out of the Service before an empty spool counts as drained.")
	fs.DurationVar(&f.opts.PendingInterval, "receiver-pending-interval", dataplane.DefaultPendingInterval,
		"How often the receiver pods' pending deliveries are read (from their /metrics) into the CallbackReceivers' status.pending when nothing drains.")
	fs.StringVar(&f.opts.Namespace, "receiver-namespace", envOr("POD_NAMESPACE", controllers.DefaultNamespace),
		"The manager's namespace: its leader-election Lease, the --installed-receivers ConfigMap, and the default receiver namespace (default: $POD_NAMESPACE, else "+controllers.DefaultNamespace+").")
	fs.StringVar(&f.receiverNamespaces, "receiver-namespaces", "",
		"Comma-separated namespaces whose CallbackReceivers the manager runs (their Deployments, Services, RBAC and routing tables live there); default: --receiver-namespace.")
	fs.StringVar(&f.opts.DefaultImage, "receiver-image", os.Getenv("RECEIVER_IMAGE"), "Container image of the receivers (default: $RECEIVER_IMAGE; the manager's own image).")
	fs.StringVar(&f.opts.InstalledReceivers, "installed-receivers", "",
		"Name of a ConfigMap in --receiver-namespace whose key "+dataplane.InstalledReceiversKey+" holds CallbackReceiver manifests to apply (and to delete once removed from it); the Helm chart and config/default install the default receiver this way. Empty: none.")
	f.zap.BindFlags(fs)
}

// options completes and validates the manager options.
func (f *managerFlags) options() (controllers.ManagerOptions, error) {
	o := f.opts
	o.ReceiverNamespaces = controllers.ParseList(f.receiverNamespaces)
	if len(o.ReceiverNamespaces) == 0 {
		o.ReceiverNamespaces = []string{o.Namespace}
	}
	if err := o.Validate(); err != nil {
		return o, fmt.Errorf("invalid manager settings: %w", err)
	}
	return o, nil
}

// restConfig loads --kubeconfig, or what ctrl.GetConfig finds. Like ctrl.GetConfig, it
// turns off client-go's client-side rate limit (5 requests/s by default), which would
// make thousands of route status writes take minutes; the API server's priority and
// fairness limits the manager instead.
func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig == "" {
		return ctrl.GetConfig()
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, err
	}
	if cfg.QPS == 0 {
		cfg.QPS = -1
	}
	return cfg, nil
}

func runManager(args []string) error {
	fs := newFlagSet("manager", "[flags]")
	f := &managerFlags{}
	f.bind(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("manager: unexpected arguments %s", strings.Join(fs.Args(), " "))
	}
	o, err := f.options()
	if err != nil {
		return err
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&f.zap)))
	log := ctrl.Log.WithName("manager")

	cfg, err := restConfig(f.kubeconfig)
	if err != nil {
		return fmt.Errorf("loading kubeconfig: %w", err)
	}
	scheme, err := controllers.NewScheme()
	if err != nil {
		return err
	}
	shutdown := managerShutdownTimeout
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                        scheme,
		Cache:                         controllers.NewCacheOptions(o),
		Metrics:                       metricsserver.Options{BindAddress: f.metricsAddr},
		HealthProbeBindAddress:        f.probeAddr,
		LeaderElection:                f.leaderElect,
		LeaderElectionID:              LeaderElectionID,
		LeaderElectionNamespace:       o.Namespace,
		LeaderElectionReleaseOnCancel: true,
		GracefulShutdownTimeout:       &shutdown,
	})
	if err != nil {
		return fmt.Errorf("creating manager: %w", err)
	}
	ctx := ctrl.SetupSignalHandler()
	if err := controllers.Setup(ctx, mgr, o); err != nil {
		return err
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return fmt.Errorf("adding health check: %w", err)
	}
	if err := mgr.AddReadyzCheck("ping", healthz.Ping); err != nil {
		return fmt.Errorf("adding ready check: %w", err)
	}
	log.Info("Starting manager", "namespace", o.Namespace, "receiverNamespaces", o.ReceiverNamespaces,
		"receiverImage", o.DefaultImage, "installedReceivers", o.InstalledReceivers, "leaderElect", f.leaderElect)
	if err := mgr.Start(ctx); err != nil {
		return fmt.Errorf("running manager: %w", err)
	}
	return nil
}
