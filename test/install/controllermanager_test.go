package install

import (
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Controllers of kube-controller-manager that the tests run beside envtest's API server.
const (
	// gcController deletes objects whose owners are gone (ownerReferences).
	gcController = "garbage-collector-controller"
	// aggregationController fills ClusterRoles with an aggregationRule (view, edit, admin)
	// from the ClusterRoles their label selectors match.
	aggregationController = "clusterrole-aggregation-controller"
	// gcTimeout bounds the wait for the garbage collector to delete dependents (it learns
	// of new kinds at its discovery resync, every 30 s).
	gcTimeout = 90 * time.Second
)

// startControllerManager runs the real kube-controller-manager (KUBE_CONTROLLER_MANAGER,
// built from the pinned kubernetes tools module: `hack/tool.sh kube-controller-manager`)
// against the test's API server with only the given controllers: envtest runs none, so
// without it nothing would garbage-collect owned objects or aggregate ClusterRoles. It
// serves nothing (no ports) and is stopped when the test ends.
func (cl *cluster) startControllerManager(t *testing.T, controllers ...string) {
	t.Helper()
	kcm := tool(t, "KUBE_CONTROLLER_MANAGER")
	args := []string{
		"--kubeconfig=" + cl.kubeconfig,
		"--controllers=" + strings.Join(controllers, ","),
		"--leader-elect=false",
		"--secure-port=0",
		"--use-service-account-credentials=false",
		// Pick up new kinds (the CRDs an install brings) quickly.
		"--concurrent-gc-syncs=5",
		"-v=1",
	}
	logs := &lockedBuffer{}
	cmd := exec.Command(kcm, args...)
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting kube-controller-manager: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		select {
		case err := <-done:
			t.Errorf("kube-controller-manager exited early: %v\n%s", err, logs.String())
			return
		default:
		}
		_ = cmd.Process.Kill()
		if err := <-done; err != nil && t.Failed() {
			t.Logf("kube-controller-manager stopped: %v", err)
		}
		if t.Failed() {
			t.Logf("kube-controller-manager (pid %s) log:\n%s", strconv.Itoa(cmd.Process.Pid), tail(logs.String(), 4000))
		}
	})
}

// tail returns the last n bytes of s.
func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[len(s)-n:]
}
