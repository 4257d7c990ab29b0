package cli

import (
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/callback-router/callback-router/api/v1alpha1"
	"github.com/callback-router/callback-router/controllers/dataplane"
)

// TestReceiverMetricsNotOnCallbackPort runs the real binary with the listen flags the
// manager gives a CallbackReceiver's pods (dataplane.ReceiverArgs): /metrics must answer
// on the metrics listener only, never on the callback port, which may be public.
func TestReceiverMetricsNotOnCallbackPort(t *testing.T) {
	callbackPort, _ := strconv.Atoi(strings.Split(freeAddr(t), ":")[1])
	r := &v1alpha1.CallbackReceiver{
		ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: "callback-router-system"},
		Spec:       v1alpha1.CallbackReceiverSpec{Service: &v1alpha1.ReceiverService{Port: int32(callbackPort)}},
	}
	s, err := dataplane.ResolveReceiver(r, "registry.example/callback-router:test")
	if err != nil {
		t.Fatal(err)
	}
	in := dataplane.ReceiverArgs(s)
	if !strings.Contains(strings.Join(in, " "), "--metrics-listen :"+strconv.Itoa(dataplane.MetricsPort)) {
		t.Fatalf("the manager does not set the receiver's --metrics-listen: %v", in)
	}

	// The manager's arguments, with the in-cluster table replaced by a routes file, the
	// listeners bound to loopback and the metrics port a free one.
	dir := t.TempDir()
	routes := filepath.Join(dir, "routes.yaml")
	if err := os.WriteFile(routes, []byte(strings.ReplaceAll(cliRoutes, "BACKEND", "http://127.0.0.1:1")), 0o600); err != nil {
		t.Fatal(err)
	}
	metricsAddr := freeAddr(t)
	var args []string
	for i := 0; i < len(in); i++ {
		switch a := in[i]; a {
		case "--namespace", "--table":
			i++
		case "--spool-dir":
			args = append(args, a, filepath.Join(dir, "spool"))
			i++
		case "--listen":
			args = append(args, a, "127.0.0.1"+in[i+1])
			i++
		case "--metrics-listen":
			args = append(args, a, metricsAddr)
			i++
		case "--admin-listen": // a fixed loopback port in a pod; any free one here
			args = append(args, a, freeAddr(t))
			i++
		default:
			args = append(args, a)
		}
	}
	cmd := exec.Command(binary(t), append(args, "--routes", routes, "--drain-delay", "0s")...)
	var out lockedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()

	get := func(addr string) (int, string, error) {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), nil
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		status, body, err := get(metricsAddr)
		if err == nil && status == http.StatusOK && strings.Contains(body, "callback_router_table_routes") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no metrics on the metrics listener: %d %v\n%s", status, err, out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	status, body, err := get("127.0.0.1:" + strconv.Itoa(callbackPort))
	if err != nil || status != http.StatusNotFound || strings.Contains(body, "callback_router_") {
		t.Errorf("GET /metrics on the callback port: %d %v %.80q, want 404 without metrics", status, err, body)
	}
}
