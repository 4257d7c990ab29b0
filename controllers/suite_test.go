package controllers

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/callback-router/callback-router/api/v1alpha1"
	"github.com/callback-router/callback-router/internal/testenv"
)

// Test timeouts.
const (
	// waitTimeout bounds each wait for the manager to react.
	waitTimeout = 20 * time.Second
	// pollInterval is how often a wait re-checks.
	pollInterval = 50 * time.Millisecond
)

var (
	cfg    *rest.Config
	scheme *runtime.Scheme
	// k8s is an uncached client: tests observe the API server, not the manager's cache.
	k8s client.Client
	// secondReceiverNamespace is another receiver namespace of the manager under test.
	secondReceiverNamespace = "im-internal"
	// opts names the CallbackReceiver the tests' apps bind to.
	opts = struct{ Namespace, Name string }{Namespace: DefaultNamespace, Name: DefaultReceiverName}
	// mgrOpts are the settings of the manager under test.
	mgrOpts = ManagerOptions{
		Namespace:          DefaultNamespace,
		ReceiverNamespaces: []string{DefaultNamespace, secondReceiverNamespace},
		DefaultImage:       "registry.example/callback-router:test",
	}
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
	if scheme, err = NewScheme(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if k8s, err = client.New(cfg, client.Options{Scheme: scheme}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, ns := range mgrOpts.ReceiverNamespaces {
		if err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	// The receiver the tests' apps bind to: apps of every namespace may.
	if err := k8s.Create(ctx, &v1alpha1.CallbackReceiver{
		ObjectMeta: metav1.ObjectMeta{Namespace: opts.Namespace, Name: opts.Name},
		Spec: v1alpha1.CallbackReceiverSpec{AllowedApps: &v1alpha1.AllowedApps{
			Namespaces: v1alpha1.Namespaces{From: v1alpha1.NamespacesFromAll}}},
	}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctrl.SetLogger(zap.New(zap.UseDevMode(true), zap.WriteTo(os.Stderr), zap.Level(zapLevel())))
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 scheme,
		Cache:                  NewCacheOptions(mgrOpts),
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := Setup(ctx, mgr, mgrOpts); err != nil {
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

// zapLevel keeps test output short unless CONTROLLERS_TEST_VERBOSE is set.
func zapLevel() zapcore.Level {
	if os.Getenv("CONTROLLERS_TEST_VERBOSE") != "" {
		return zapcore.DebugLevel
	}
	return zapcore.ErrorLevel
}

func newNamespace(t *testing.T, labels ...string) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "team-", Labels: map[string]string{}}}
	for i := 0; i+1 < len(labels); i += 2 {
		ns.Labels[labels[i]] = labels[i+1]
	}
	NewWithT(t).Expect(k8s.Create(context.Background(), ns)).To(Succeed())
	return ns.Name
}
