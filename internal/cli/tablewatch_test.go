package cli

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/callback-router/callback-router/internal/testenv"
)

// TestReceiverExitsWhenTableWatchCannotStart runs the real binary in in-cluster mode
// against an API server address where nothing listens (a loopback port just closed).
// The receiver must exit non-zero, naming the cause, once --table-start-timeout has
// passed, instead of staying alive and unready forever with /healthz answering OK.
func TestReceiverExitsWhenTableWatchCannotStart(t *testing.T) {
	bin := binary(t)
	dir := t.TempDir()
	apiAddr := freeAddr(t) // closed again: connections are refused
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, fmt.Appendf(nil, `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://%s", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: not-a-real-token}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`, apiAddr), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	const startTimeout = 2 * time.Second
	cmd := exec.Command(bin, "receiver", "--listen", addr, "--spool-dir", filepath.Join(dir, "spool"),
		"--namespace", "callback-router-system", "--table", "rx", "--table-start-timeout", startTimeout.String())
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	// Killing a process that already exited fails harmlessly; Wait's result is buffered.
	defer func() { _ = cmd.Process.Kill() }()

	// While it waits it serves: alive (healthz) but not ready (no table).
	healthy := false
	for time.Since(start) < startTimeout && !healthy {
		if resp, err := http.Get("http://" + addr + "/healthz"); err == nil {
			resp.Body.Close()
			healthy = resp.StatusCode == http.StatusOK
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !healthy {
		t.Error("the receiver did not serve /healthz while waiting for its table")
	}

	select {
	case err := <-exited:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() == 0 {
			t.Errorf("exit: %v, want a non-zero exit code\n%s", err, out.String())
		}
		if d := time.Since(start); d < startTimeout {
			t.Errorf("exited after %s, before --table-start-timeout %s", d, startTimeout)
		}
	case <-time.After(startTimeout + 20*time.Second):
		t.Fatalf("still running %s after --table-start-timeout %s\n%s", startTimeout+20*time.Second, startTimeout, out.String())
	}
	for _, want := range []string{"could not start watching the routing table", "connection refused"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output does not say %q:\n%s", want, out.String())
		}
	}
}

// TestReceiverTableWatchAgainstAPIServer runs the real binary in in-cluster mode against a
// real kube-apiserver (envtest): as a user with no permission to read Secrets it must exit
// non-zero after --table-start-timeout naming the refusal; as a user who may read them,
// with no table written yet, it must keep running, alive and unready, past that timeout
// (the manager has simply not written a table).
func TestReceiverTableWatchAgainstAPIServer(t *testing.T) {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		t.Skip("KUBEBUILDER_ASSETS is not set (make test sets it): needs kube-apiserver and etcd")
	}
	bin := binary(t)
	env, _, err := testenv.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Error(err)
		}
	})
	const startTimeout = 2 * time.Second
	run := func(t *testing.T, user envtest.User) (*exec.Cmd, *lockedBuffer, chan error, string) {
		u, err := env.AddUser(user, nil)
		if err != nil {
			t.Fatal(err)
		}
		kc, err := u.KubeConfig()
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		kubeconfig := filepath.Join(dir, "kubeconfig")
		if err := os.WriteFile(kubeconfig, kc, 0o600); err != nil {
			t.Fatal(err)
		}
		addr := freeAddr(t)
		cmd := exec.Command(bin, "receiver", "--listen", addr, "--spool-dir", filepath.Join(dir, "spool"),
			"--namespace", "default", "--table", "rx", "--table-start-timeout", startTimeout.String(), "--drain-delay", "0s")
		cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
		out := &lockedBuffer{}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		t.Cleanup(func() {
			_ = cmd.Process.Kill()
			if err := <-exited; err != nil {
				t.Logf("receiver ended: %v", err)
			}
		})
		return cmd, out, exited, addr
	}

	t.Run("forbidden", func(t *testing.T) {
		_, out, exited, _ := run(t, envtest.User{Name: "no-permissions"})
		select {
		case err := <-exited:
			exited <- err // for the cleanup
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() == 0 {
				t.Errorf("exit: %v, want a non-zero exit code\n%s", err, out.String())
			}
		case <-time.After(startTimeout + 20*time.Second):
			t.Fatalf("still running long after --table-start-timeout %s\n%s", startTimeout, out.String())
		}
		for _, want := range []string{"could not start watching the routing table", "forbidden"} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("output does not say %q:\n%s", want, out.String())
			}
		}
	})

	t.Run("allowed, no table yet", func(t *testing.T) {
		_, out, exited, addr := run(t, envtest.User{Name: "admin", Groups: []string{"system:masters"}})
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("exited (%v) although it may list the table Secrets\n%s", err, out.String())
		case <-time.After(startTimeout + 3*time.Second):
		}
		for path, want := range map[string]int{"/healthz": http.StatusOK, "/readyz": http.StatusServiceUnavailable} {
			resp, err := http.Get("http://" + addr + path)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != want {
				t.Errorf("%s: %d, want %d", path, resp.StatusCode, want)
			}
		}
	})
}
