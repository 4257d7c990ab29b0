// Package install proves that the Helm chart (charts/callback-router) and the kustomize
// installation (config/default) install cleanly into a real kube-apiserver (envtest), and
// that what they install works: the manager's RBAC allows what the manager does and no
// more, the pods meet the restricted Pod Security Standard, and the CRD is kept on
// uninstall. The helm and kustomize binaries come from the HELM and KUSTOMIZE environment
// variables (the Makefile sets them from hack/tool.sh), the control plane from
// KUBEBUILDER_ASSETS.
package install

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
)

// Limits of the tests, named so that a slow machine is a one-line change.
const (
	// commandTimeout bounds one helm or kustomize invocation.
	commandTimeout = 2 * time.Minute
	// establishTimeout bounds the wait for an applied CRD to become Established.
	establishTimeout = 30 * time.Second
	// fieldOwner is the server-side apply field manager of objects the tests apply.
	fieldOwner = "callback-router-install-test"
	// kubeVersion is the Kubernetes version `helm template` renders for: the envtest
	// kube-apiserver's, pinned by hack/tools/kubernetes/go.mod.
	kubeVersion = "v1.36.3"
)

// Paths inside the checkout.
var (
	repoRoot        = findRepoRoot()
	chartDir        = filepath.Join(repoRoot, "charts", "callback-router")
	productionValue = filepath.Join(chartDir, "ci", "production-values.yaml")
	crdBasesDir     = filepath.Join(repoRoot, "config", "crd", "bases")
	rbacRoleFile    = filepath.Join(repoRoot, "config", "rbac", "role.yaml")
	serviceMonitorC = filepath.Join("testdata", "servicemonitor-crd.yaml")
)

func init() {
	// envtest logs through controller-runtime's logger; the tests report what matters.
	logf.SetLogger(logr.Discard())
}

func findRepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// tool returns the path of a binary named by an environment variable, failing the test
// with the way to get it when the variable is unset.
func tool(t *testing.T, env string) string {
	t.Helper()
	p := os.Getenv(env)
	if p == "" {
		t.Fatalf("%s is not set: run 'make test', or export %s=\"$(hack/tool.sh %s)\"",
			env, env, strings.ToLower(env))
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%s=%s: %v", env, p, err)
	}
	return p
}

// run runs a command with a timeout and returns its stdout; a non-zero exit fails the
// test with stderr unless allowFail, in which case the error is returned.
func run(t *testing.T, env []string, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %w\n%s", filepath.Base(name), strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

// mustRun is run that fails the test on error.
func mustRun(t *testing.T, env []string, name string, args ...string) string {
	t.Helper()
	out, err := run(t, env, name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// helmEnv keeps helm's cache, config and data out of the user's home.
func helmEnv(t *testing.T) []string {
	dir := t.TempDir()
	return []string{
		"HELM_CACHE_HOME=" + filepath.Join(dir, "cache"),
		"HELM_CONFIG_HOME=" + filepath.Join(dir, "config"),
		"HELM_DATA_HOME=" + filepath.Join(dir, "data"),
	}
}

// warnings collects the API server's warnings (for example Pod Security warnings on a
// Deployment whose pods would be rejected).
type warnings struct {
	mu   sync.Mutex
	msgs []string
}

// HandleWarningHeader implements rest.WarningHandler.
func (w *warnings) HandleWarningHeader(_ int, _ string, text string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.msgs = append(w.msgs, text)
}

func (w *warnings) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	m := w.msgs
	w.msgs = nil
	return m
}

// cluster is one envtest control plane, started for one test and stopped with it.
type cluster struct {
	cfg        *rest.Config
	c          client.Client
	kubeconfig string
	warn       *warnings
	env        *envtest.Environment
}

// startCluster starts kube-apiserver and etcd with no CRDs: the installation under test
// brings its own.
func startCluster(t *testing.T) *cluster {
	t.Helper()
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		t.Fatal("KUBEBUILDER_ASSETS is not set: run 'make test', or export KUBEBUILDER_ASSETS=\"$(hack/envtest-assets.sh)\"")
	}
	env := &envtest.Environment{BinaryAssetsDirectory: assets}
	if _, err := env.Start(); err != nil {
		t.Fatalf("starting envtest from %s: %v", assets, err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("stopping envtest: %v", err)
		}
	})
	admin, err := env.AddUser(envtest.User{Name: "install-test-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		t.Fatalf("adding an admin user: %v", err)
	}
	kc, err := admin.KubeConfig()
	if err != nil {
		t.Fatalf("writing a kubeconfig: %v", err)
	}
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, kc, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := rest.CopyConfig(admin.Config())
	// The RBAC checks send a few hundred SubjectAccessReviews; client-side throttling
	// would only slow them down against a private API server.
	cfg.QPS, cfg.Burst = 1000, 1000
	w := &warnings{}
	cfg.WarningHandler = w
	c, err := client.New(cfg, client.Options{})
	if err != nil {
		t.Fatalf("creating a client: %v", err)
	}
	if err := apiextensionsv1.AddToScheme(c.Scheme()); err != nil {
		t.Fatal(err)
	}
	return &cluster{cfg: cfg, c: c, kubeconfig: kubeconfig, warn: w, env: env}
}

// decode splits multi-document YAML into objects, skipping empty documents.
func decode(t *testing.T, manifests string) []*unstructured.Unstructured {
	t.Helper()
	d := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(manifests), 4096)
	var objs []*unstructured.Unstructured
	for {
		u := &unstructured.Unstructured{}
		if err := d.Decode(&u.Object); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			t.Fatalf("decoding manifests: %v", err)
		}
		if len(u.Object) == 0 {
			continue
		}
		objs = append(objs, u)
	}
	if len(objs) == 0 {
		t.Fatal("no objects in the manifests")
	}
	return objs
}

// byKind returns the objects of one kind.
func byKind(objs []*unstructured.Unstructured, kind string) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() == kind {
			out = append(out, o)
		}
	}
	return out
}

// one returns the single object of a kind, failing the test otherwise.
func one(t *testing.T, objs []*unstructured.Unstructured, kind string) *unstructured.Unstructured {
	t.Helper()
	got := byKind(objs, kind)
	if len(got) != 1 {
		t.Fatalf("want exactly one %s, got %d", kind, len(got))
	}
	return got[0]
}

// applyAll server-side applies objects the way `kubectl apply --server-side` does:
// Namespaces first, then CRDs (waiting until they are Established), then the rest.
// Every object must be accepted by the API server.
func (cl *cluster) applyAll(t *testing.T, objs []*unstructured.Unstructured) {
	t.Helper()
	ctx := context.Background()
	rank := func(o *unstructured.Unstructured) int {
		switch o.GetKind() {
		case "Namespace":
			return 0
		case "CustomResourceDefinition":
			return 1
		default:
			return 2
		}
	}
	for pass := 0; pass <= 2; pass++ {
		for _, o := range objs {
			if rank(o) != pass {
				continue
			}
			if err := cl.c.Apply(ctx, client.ApplyConfigurationFromUnstructured(o.DeepCopy()),
				client.FieldOwner(fieldOwner), client.ForceOwnership); err != nil {
				t.Fatalf("API server rejected %s %s/%s: %v", o.GetKind(), o.GetNamespace(), o.GetName(), err)
			}
			if o.GetKind() == "CustomResourceDefinition" {
				cl.waitEstablished(t, o.GetName())
			}
		}
	}
	// Every object must now be readable as applied.
	for _, o := range objs {
		got := &unstructured.Unstructured{}
		got.SetGroupVersionKind(o.GroupVersionKind())
		if err := cl.c.Get(ctx, client.ObjectKeyFromObject(o), got); err != nil {
			t.Fatalf("reading back %s %s/%s: %v", o.GetKind(), o.GetNamespace(), o.GetName(), err)
		}
	}
}

// waitEstablished waits until a CRD is served.
func (cl *cluster) waitEstablished(t *testing.T, name string) {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, establishTimeout, true,
		func(ctx context.Context) (bool, error) {
			crd := &apiextensionsv1.CustomResourceDefinition{}
			if err := cl.c.Get(ctx, client.ObjectKey{Name: name}, crd); err != nil {
				return false, client.IgnoreNotFound(err)
			}
			for _, c := range crd.Status.Conditions {
				if c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue {
					return true, nil
				}
			}
			return false, nil
		})
	if err != nil {
		t.Fatalf("CRD %s not Established: %v", name, err)
	}
	// The REST mapping of a new CRD reaches the client's discovery cache lazily.
	cl.resetMapper(t)
}

// resetMapper builds a fresh client so that newly established kinds are known.
func (cl *cluster) resetMapper(t *testing.T) {
	t.Helper()
	c, err := client.New(cl.cfg, client.Options{Scheme: cl.c.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	cl.c = c
}

// exists reports whether an object exists.
func (cl *cluster) exists(t *testing.T, apiVersion, kind, namespace, name string) bool {
	t.Helper()
	u := &unstructured.Unstructured{}
	u.SetAPIVersion(apiVersion)
	u.SetKind(kind)
	err := cl.c.Get(context.Background(), client.ObjectKey{Namespace: namespace, Name: name}, u)
	switch {
	case err == nil:
		return true
	case apierrors.IsNotFound(err):
		return false
	default:
		t.Fatalf("reading %s %s/%s: %v", kind, namespace, name, err)
		return false
	}
}
