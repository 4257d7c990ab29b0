package dataplane

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/callback-router/callback-router/api/v1alpha1"
	"github.com/callback-router/callback-router/internal/testenv"
)

// Test settings.
const (
	// waitTimeout bounds each wait for the manager to react.
	waitTimeout = 20 * time.Second
	// pollInterval is how often a wait re-checks.
	pollInterval = 50 * time.Millisecond
	// receiverNS is the receiver namespace of the manager under test (and its own).
	receiverNS = "callback-router-system"
	// secondNS is a second receiver namespace.
	secondNS = "im-internal"
	// installConfigMap is the installed-receivers ConfigMap the manager under test applies.
	installConfigMap = "test-receivers"
	// testImage is the manager's default receiver image.
	testImage = "registry.example/callback-router:test"
)

var (
	cfg    *rest.Config
	scheme *runtime.Scheme
	// k8s is an uncached client: tests observe the API server, not the manager's cache.
	k8s client.Client
	// kubeconfig is a cluster-admin kubeconfig file for kubectl.
	kubeconfig string
	// assets is KUBEBUILDER_ASSETS (kubectl lives there too).
	assets string
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	env, c, err := testenv.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() {
		if err := env.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stopping envtest:", err)
		}
	}()
	cfg = c
	assets = os.Getenv("KUBEBUILDER_ASSETS")
	dir, err := os.MkdirTemp("", "dataplane-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if kubeconfig, err = writeKubeconfig(env, dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	scheme = runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if k8s, err = client.New(cfg, client.Options{Scheme: scheme}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, ns := range []string{receiverNS, secondNS} {
		if err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	ctrl.SetLogger(zap.New(zap.UseDevMode(true), zap.WriteTo(os.Stderr), zap.Level(zapLevel())))
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	recorder := mgr.GetEventRecorder("callback-router")
	if err := (&ReceiverReconciler{Client: mgr.GetClient(), Namespaces: []string{receiverNS, secondNS},
		DefaultImage: testImage, Recorder: recorder}).SetupWithManager(mgr); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := (&InstallReconciler{Client: mgr.GetClient(), Namespace: receiverNS, Name: installConfigMap,
		Recorder: recorder}).SetupWithManager(mgr); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	code := m.Run()
	cancel()
	if err := <-done; err != nil {
		fmt.Fprintln(os.Stderr, "manager:", err)
		return 1
	}
	return code
}

// writeKubeconfig writes a cluster-admin kubeconfig for kubectl into dir.
func writeKubeconfig(env *envtest.Environment, dir string) (string, error) {
	admin, err := env.AddUser(envtest.User{Name: "dataplane-test-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return "", fmt.Errorf("adding an admin user: %w", err)
	}
	kc, err := admin.KubeConfig()
	if err != nil {
		return "", fmt.Errorf("writing a kubeconfig: %w", err)
	}
	p := filepath.Join(dir, "kubeconfig")
	return p, os.WriteFile(p, kc, 0o600)
}

// zapLevel keeps test output short unless CONTROLLERS_TEST_VERBOSE is set.
func zapLevel() zapcore.Level {
	if os.Getenv("CONTROLLERS_TEST_VERBOSE") != "" {
		return zapcore.DebugLevel
	}
	return zapcore.ErrorLevel
}

// newNamespace creates a namespace the manager does not run receivers in.
func newNamespace(t *testing.T) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "team-"}}
	NewWithT(t).Expect(k8s.Create(context.Background(), ns)).To(Succeed())
	return ns.Name
}
