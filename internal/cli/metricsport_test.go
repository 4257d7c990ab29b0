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

	corev1 "k8s.io/api/core/v1"

	"github.com/callback-router/callback-router/controllers"
)

// TestReceiverMetricsNotOnCallbackPort runs the real binary with the listen flags the
// manager gives the receiver pods (controllers.ReceiverArgs): /metrics must answer on the
// metrics port only, never on the callback port, which may be public. The Services the
// manager applies follow: the callback Service carries only the callback port, and the
// metrics port is on a ClusterIP Service of its own, even when the callback Service is a
// LoadBalancer.
func TestReceiverMetricsNotOnCallbackPort(t *testing.T) {
	o := controllers.DefaultReceiverOptions()
	o.Image = "registry.example/callback-router:test"
	o.ServiceType = corev1.ServiceTypeLoadBalancer
	callbackPort, _ := strconv.Atoi(strings.Split(freeAddr(t), ":")[1])
	metricsPort, _ := strconv.Atoi(strings.Split(freeAddr(t), ":")[1])
	o.Port, o.MetricsPort = int32(callbackPort), int32(metricsPort)
	o.OpenIMTimeout = 3 * time.Second // passed on as --openim-timeout, which the process below accepts
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}

	svc := controllers.DesiredService(&o)
	if len(svc.Spec.Ports) != 1 || *svc.Spec.Ports[0].Port != o.Port {
		t.Errorf("callback Service ports %+v, want only the callback port", svc.Spec.Ports)
	}
	msvc := controllers.DesiredMetricsService(&o)
	if *msvc.Spec.Type != corev1.ServiceTypeClusterIP || len(msvc.Spec.Ports) != 1 || *msvc.Spec.Ports[0].Port != o.MetricsPort ||
		*msvc.Name != controllers.ReceiverMetricsServiceName(&o) {
		t.Errorf("metrics Service %s: type %v, ports %+v; want ClusterIP with the metrics port", *msvc.Name, *msvc.Spec.Type, msvc.Spec.Ports)
	}
	if c := controllers.DesiredDeployment(&o).Spec.Template.Spec.Containers[0]; len(c.Ports) != 2 {
		t.Errorf("receiver container ports %+v, want the callback and the metrics port", c.Ports)
	}
	same := o
	same.MetricsPort = same.Port
	if err := same.Validate(); err == nil {
		t.Error("a metrics port equal to the callback port was accepted")
	}

	// The manager's receiver arguments, with the in-cluster table replaced by a routes
	// file and the listeners bound to loopback.
	dir := t.TempDir()
	routes := filepath.Join(dir, "routes.yaml")
	if err := os.WriteFile(routes, []byte(strings.ReplaceAll(cliRoutes, "BACKEND", "http://127.0.0.1:1")), 0o600); err != nil {
		t.Fatal(err)
	}
	var args []string
	in := controllers.ReceiverArgs(&o)
	for i := 0; i < len(in); i++ {
		switch a := in[i]; a {
		case "--namespace", "--table":
			i++
		case "--spool-dir":
			args = append(args, a, filepath.Join(dir, "spool"))
			i++
		case "--listen", "--metrics-listen":
			args = append(args, a, "127.0.0.1"+in[i+1])
			i++
		default:
			args = append(args, a)
		}
	}
	if !strings.Contains(strings.Join(in, " "), "--metrics-listen :"+strconv.Itoa(metricsPort)) {
		t.Fatalf("the manager does not set the receiver's --metrics-listen: %v", in)
	}
	if !strings.Contains(strings.Join(in, " "), "--openim-timeout 3s") {
		t.Errorf("the manager does not pass --openim-timeout: %v", in)
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

	get := func(port int) (int, string, error) {
		resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(port) + "/metrics")
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), nil
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		status, body, err := get(metricsPort)
		if err == nil && status == http.StatusOK && strings.Contains(body, "callback_router_table_routes") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no metrics on the metrics port: %d %v\n%s", status, err, out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	status, body, err := get(callbackPort)
	if err != nil || status != http.StatusNotFound || strings.Contains(body, "callback_router_") {
		t.Errorf("GET /metrics on the callback port: %d %v %.80q, want 404 without metrics", status, err, body)
	}
}
