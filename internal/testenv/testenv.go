// Package testenv starts a real kube-apiserver and etcd (controller-runtime envtest) with
// the project's CRDs installed, for tests in any package.
package testenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// RepoRoot is the root of the checkout, found from this file's location.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// Start starts kube-apiserver and etcd from KUBEBUILDER_ASSETS with the CRDs in
// config/crd/bases installed. Stop it with env.Stop().
func Start() (*envtest.Environment, *rest.Config, error) {
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		return nil, nil, fmt.Errorf("KUBEBUILDER_ASSETS is not set: run the tests with 'make test', " +
			"or export KUBEBUILDER_ASSETS=$(hack/envtest-assets.sh)")
	}
	env := &envtest.Environment{
		BinaryAssetsDirectory: assets,
		CRDDirectoryPaths:     []string{filepath.Join(RepoRoot(), "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
	cfg, err := env.Start()
	if err != nil {
		return nil, nil, fmt.Errorf("starting envtest (kube-apiserver and etcd from %s): %w", assets, err)
	}
	return env, cfg, nil
}

// BuildBinary builds the callback-router binary of this checkout into dir, as `make build`
// does (CGO_ENABLED=0, so the build cache is shared with it), and returns its path. Tests
// that run the real binary as a process (crash tests, e2e, install tests) use it.
func BuildBinary(ctx context.Context, dir string) (string, error) {
	bin := filepath.Join(dir, "callback-router")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", bin, ".") //nolint:gosec // builds this checkout into a directory the test chose
	cmd.Dir = RepoRoot()
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building callback-router: %w\n%s", err, out)
	}
	return bin, nil
}

// BuildTimeout bounds building the binary for Binary.
const BuildTimeout = 5 * time.Minute

var (
	binaryOnce sync.Once
	binaryPath string
	binaryErr  error
)

// Binary builds the callback-router binary once per test process (see BuildBinary) into a
// temporary directory and returns its path; it fails t if the build fails. A package that
// uses it removes the directory with RemoveBinary at the end of its TestMain.
func Binary(t testing.TB) string {
	t.Helper()
	binaryOnce.Do(func() {
		dir, err := os.MkdirTemp("", "callback-router-test-bin-")
		if err != nil {
			binaryErr = err
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), BuildTimeout)
		defer cancel()
		binaryPath, binaryErr = BuildBinary(ctx, dir)
	})
	if binaryErr != nil {
		t.Fatal(binaryErr)
	}
	return binaryPath
}

// RemoveBinary deletes what Binary built, if anything.
func RemoveBinary() {
	if binaryPath != "" {
		_ = os.RemoveAll(filepath.Dir(binaryPath))
	}
}
