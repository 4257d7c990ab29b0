package cli

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/callback-router/callback-router/controllers"
	"github.com/callback-router/callback-router/webhook/receiver"
)

// Manager settings that are not flags.
const (
	// LeaderElectionID is the Lease name the manager replicas compete for.
	LeaderElectionID = "callback-router-manager.callback-router.dev"
	// managerShutdownTimeout bounds the wait for the controllers to stop on SIGTERM.
	managerShutdownTimeout = 30 * time.Second
)

func init() {
	register("manager", "run the operator: reconcile CallbackRoutes into the routing table and the receiver", runManager)
}

// managerFlags are the manager's command-line settings.
type managerFlags struct {
	kubeconfig      string
	metricsAddr     string
	probeAddr       string
	leaderElect     bool
	statusWorkers   int
	receiver        controllers.ReceiverOptions
	serviceType     string
	trustedProxies  string
	zap             zap.Options
	replicas        int
	receiverPortInt int
	metricsPortInt  int
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
	d := controllers.DefaultReceiverOptions()
	fs.StringVar(&f.kubeconfig, "kubeconfig", "", "Path to a kubeconfig; default: in-cluster config, then $KUBECONFIG, then ~/.kube/config.")
	fs.StringVar(&f.metricsAddr, "metrics-bind-address", ":8080", "Address of the manager's Prometheus /metrics endpoint; \"0\" disables it.")
	fs.StringVar(&f.probeAddr, "health-probe-bind-address", ":8081", "Address of the /healthz and /readyz endpoints.")
	fs.BoolVar(&f.leaderElect, "leader-elect", false, "Elect a leader among manager replicas (a Lease in the receiver namespace), so only one reconciles.")
	fs.IntVar(&f.statusWorkers, "status-workers", controllers.DefaultStatusWorkers, "Route status patches sent at once.")
	fs.StringVar(&f.receiver.Namespace, "receiver-namespace", envOr("POD_NAMESPACE", d.Namespace),
		"Namespace of the receiver's Deployment, Service, ServiceAccount, Role, RoleBinding and table Secrets (default: $POD_NAMESPACE, else "+d.Namespace+").")
	fs.StringVar(&f.receiver.Name, "receiver-name", d.Name, "Name of the receiver's Deployment, Service, ServiceAccount, Role and RoleBinding, and prefix of its table Secrets.")
	fs.StringVar(&f.receiver.Image, "receiver-image", os.Getenv("RECEIVER_IMAGE"), "Container image of the receiver (default: $RECEIVER_IMAGE; the manager's own image).")
	fs.IntVar(&f.replicas, "receiver-replicas", int(d.Replicas), "Receiver replicas, when --receiver-manage-replicas is true.")
	fs.BoolVar(&f.receiver.ManageReplicas, "receiver-manage-replicas", d.ManageReplicas, "Set the receiver Deployment's replicas; false leaves them to an autoscaler (HPA).")
	fs.StringVar(&f.receiver.CPURequest, "receiver-cpu-request", d.CPURequest, "Receiver container CPU request; empty for none.")
	fs.StringVar(&f.receiver.MemoryRequest, "receiver-memory-request", d.MemoryRequest, "Receiver container memory request; empty for none.")
	fs.StringVar(&f.receiver.CPULimit, "receiver-cpu-limit", d.CPULimit, "Receiver container CPU limit; empty for none.")
	fs.StringVar(&f.receiver.MemoryLimit, "receiver-memory-limit", d.MemoryLimit, "Receiver container memory limit; empty for none.")
	fs.StringVar(&f.receiver.SpoolSize, "receiver-spool-size", d.SpoolSize, "Size limit of the receiver's spool emptyDir volume.")
	fs.StringVar(&f.serviceType, "receiver-service-type", string(d.ServiceType), "Type of the receiver Service: ClusterIP, NodePort or LoadBalancer.")
	fs.IntVar(&f.receiverPortInt, "receiver-port", int(d.Port), "Receiver callback port (callbacks and health probes), and the Service port.")
	fs.IntVar(&f.metricsPortInt, "receiver-metrics-port", int(d.MetricsPort), "Receiver metrics port (its --metrics-listen; never the callback port), exposed by the ClusterIP Service <receiver-name>-metrics.")
	fs.DurationVar(&f.receiver.OpenIMTimeout, "receiver-openim-timeout", 0, "The receiver's --openim-timeout: OpenIM's webhooks.yml timeout (0: the receiver's default, 5s).")
	fs.StringVar(&f.trustedProxies, "receiver-trusted-proxies", "", "Comma-separated CIDRs whose X-Forwarded-For the receiver trusts (its --trusted-proxies); default none.")
	f.zap.BindFlags(fs)
}

// options completes and validates the receiver options.
func (f *managerFlags) options() (controllers.ReceiverOptions, error) {
	o := f.receiver
	o.Replicas = int32(f.replicas)
	o.Port = int32(f.receiverPortInt)
	o.MetricsPort = int32(f.metricsPortInt)
	if o.OpenIMTimeout > 0 {
		if err := receiver.ValidateOpenIMTimeout(o.OpenIMTimeout); err != nil {
			return o, fmt.Errorf("--receiver-openim-timeout: %w", err)
		}
	}
	o.ServiceType = corev1.ServiceType(f.serviceType)
	o.TrustedProxies = controllers.ParseCIDRList(f.trustedProxies)
	if f.replicas < 0 || f.replicas > 10000 {
		return o, fmt.Errorf("--receiver-replicas %d is out of range", f.replicas)
	}
	if err := o.Validate(); err != nil {
		return o, fmt.Errorf("invalid receiver settings: %w", err)
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
	if err := controllers.Setup(ctx, mgr, o, f.statusWorkers); err != nil {
		return err
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return fmt.Errorf("adding health check: %w", err)
	}
	if err := mgr.AddReadyzCheck("ping", healthz.Ping); err != nil {
		return fmt.Errorf("adding ready check: %w", err)
	}
	log.Info("Starting manager", "receiverNamespace", o.Namespace, "receiverName", o.Name,
		"receiverImage", o.Image, "leaderElect", f.leaderElect)
	if err := mgr.Start(ctx); err != nil {
		return fmt.Errorf("running manager: %w", err)
	}
	return nil
}
