package monitoring

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/callback-router/callback-router/api/v1alpha1"
	"github.com/callback-router/callback-router/controllers"
	"github.com/callback-router/callback-router/internal/testenv"
	"github.com/callback-router/callback-router/webhook/callback"
	"github.com/callback-router/callback-router/webhook/samples"
)

// managerMetrics are served by the manager (from the objects' status), not by receivers.
var managerMetrics = map[string]bool{
	"callback_router_status_condition":        true,
	"callback_router_receiver_ready_replicas": true,
	"callback_router_receiver_replicas":       true,
}

var metricName = regexp.MustCompile(`\bcallback_router_[a-z0-9_]+`)

// usedMetrics returns every callback_router_* metric the alerts and the dashboard use, by
// the family name a registry reports (a histogram's _bucket, _sum and _count are its family).
func usedMetrics(t *testing.T) map[string][]string {
	t.Helper()
	used := map[string][]string{}
	add := func(where, expr string) {
		for _, n := range metricName.FindAllString(expr, -1) {
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				if strings.HasSuffix(n, "_seconds"+suffix) || strings.HasSuffix(n, "_size"+suffix) {
					n = strings.TrimSuffix(n, suffix)
				}
			}
			used[n] = append(used[n], where)
		}
	}
	for _, g := range chartRules(t).Groups {
		for _, r := range g.Rules {
			add("alert "+r.Alert, r.Expr)
		}
	}
	add("dashboard", string(chartDashboard(t)))
	return used
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestReceiverMetricsExist runs the real receiver binary on loopback with Sync and Async
// routes, sends it callbacks that are answered, fall back, dead-letter and fail
// verification, scrapes its /metrics, and checks that every receiver metric the alerts and
// the dashboard use is there.
func TestReceiverMetricsExist(t *testing.T) {
	used := usedMetrics(t)
	families := exerciseReceiver(t)
	names := make([]string, 0, len(used))
	for n := range used {
		names = append(names, n)
	}
	sort.Strings(names)
	checked := 0
	for _, n := range names {
		if managerMetrics[n] {
			continue
		}
		checked++
		if families[n] == nil {
			t.Errorf("%s (used by %s) is not served by the receiver", n, strings.Join(used[n], ", "))
		}
	}
	t.Logf("%d receiver metrics used by the alerts and the dashboard, all served", checked)
}

// exerciseReceiver runs the receiver binary, sends it callbacks of every outcome the
// alerts look at, and returns its metrics.
func exerciseReceiver(t *testing.T) map[string]*dto.MetricFamily {
	bin := testenv.Binary(t)
	var slowCalls atomic.Int32
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/slow":
			slowCalls.Add(1)
			time.Sleep(400 * time.Millisecond) // past the route's 100ms timeout
		case "/reject":
			w.WriteHeader(http.StatusBadRequest) // final: the copy is dead-lettered
			return
		}
		_, _ = io.WriteString(w, `{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":""}`)
	}))
	defer be.Close()
	dir := t.TempDir()
	routes := filepath.Join(dir, "routes.yaml")
	if err := os.WriteFile(routes, []byte(strings.ReplaceAll(metricsRoutes, "BACKEND", be.URL)), 0o600); err != nil {
		t.Fatal(err)
	}
	addr, maddr := freeAddr(t), freeAddr(t)
	var logs bytes.Buffer
	cmd := exec.Command(bin, "receiver", "--routes", routes, "--listen", addr, "--metrics-listen", maddr,
		"--spool-dir", filepath.Join(dir, "spool"), "--drain-delay", "0s")
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("receiver logs:\n%s", logs.String())
		}
	}()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if resp, err := http.Get("http://" + addr + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("receiver not ready")
		}
	}
	send := func(command, token string, want int) {
		t.Helper()
		s, _ := samples.ForCommand("TencentIM", command)
		rt := fmt.Sprint(time.Now().Unix())
		u := fmt.Sprintf("http://%s/tencent?SdkAppid=1400000001&CallbackCommand=%s&contenttype=json&RequestTime=%s&Sign=%s",
			addr, command, rt, callback.TencentSign(token, rt))
		resp, err := http.Post(u, "application/json", bytes.NewReader(s.Body))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("%s: %d %s, want %d", command, resp.StatusCode, body, want)
		}
	}
	send("C2C.CallbackBeforeSendMsg", "metrics-token", http.StatusOK)   // Sync, answered
	send("Group.CallbackBeforeSendMsg", "metrics-token", http.StatusOK) // Sync, times out: failurePolicy Allow
	send("C2C.CallbackAfterSendMsg", "metrics-token", http.StatusOK)    // Async, dead-lettered
	send("C2C.CallbackAfterSendMsg", "wrong-token", http.StatusUnauthorized)
	if slowCalls.Load() != 1 {
		t.Fatalf("slow backend called %d times", slowCalls.Load())
	}

	var families map[string]*dto.MetricFamily
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		families = scrape(t, "http://"+maddr+"/metrics")
		if f := families["callback_router_dead_letters_total"]; f != nil && f.Metric[0].GetCounter().GetValue() == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the Async copy was not dead-lettered")
		}
	}
	// The label values the alerts select on are the ones the receiver produces.
	outcomes := map[string]bool{}
	for _, m := range families["callback_router_requests_total"].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "outcome" {
				outcomes[l.GetValue()] = true
			}
		}
	}
	for _, o := range []string{"sync_answered", "sync_failed_allow", "acknowledged", "unauthorized"} {
		if !outcomes[o] {
			t.Errorf("no callback_router_requests_total{outcome=%q}; got %v", o, outcomes)
		}
	}
	if v := families["callback_router_receiver_ready"].GetMetric()[0].GetGauge().GetValue(); v != 1 {
		t.Errorf("callback_router_receiver_ready %v on a ready receiver", v)
	}
	return families
}

func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return families
}

const metricsRoutes = `
apiVersion: v1
kind: Secret
metadata: {name: tok, namespace: im}
stringData: {token: metrics-token}
---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackApp
metadata: {name: chat, namespace: im}
spec:
  provider: TencentIM
  appID: "1400000001"
  receiverRef: {name: default}
  verify: {tokenSecretRef: {name: tok}}
---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackRoute
metadata: {name: moderation, namespace: im}
spec:
  appRef: {name: chat}
  commands: [C2C.CallbackBeforeSendMsg]
  mode: Sync
  backend: {url: BACKEND, path: /moderate}
---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackRoute
metadata: {name: group-moderation, namespace: im}
spec:
  appRef: {name: chat}
  commands: [Group.CallbackBeforeSendMsg]
  mode: Sync
  backend: {url: BACKEND, path: /slow, timeout: 100ms}
---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackRoute
metadata: {name: archive, namespace: im}
spec:
  appRef: {name: chat}
  commands: [C2C.CallbackAfterSendMsg]
  backend: {url: BACKEND, path: /reject}
  retry: {maxAttempts: 1}
`

// TestManagerMetricsExist serves the manager's status metrics from objects in a real API
// server and checks that every manager metric the alerts and the dashboard use is there,
// with the labels they select on.
func TestManagerMetricsExist(t *testing.T) {
	used := usedMetrics(t)
	env, cfg, err := testenv.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = env.Stop() }()
	scheme, err := controllers.NewScheme()
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ns := "callback-router-system"
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	recv := &v1alpha1.CallbackReceiver{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "default"}}
	app := &v1alpha1.CallbackApp{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "chat-prod"}, Spec: v1alpha1.CallbackAppSpec{
		Provider: v1alpha1.ProviderTencentIM, AppID: "1400000001", ReceiverRef: v1alpha1.ObjectReference{Name: "default"}}}
	for _, o := range []client.Object{recv, app} {
		if err := c.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	now := metav1.Now()
	recv.Status.Replicas, recv.Status.ReadyReplicas = 3, 2
	recv.Status.Conditions = []metav1.Condition{
		{Type: v1alpha1.ConditionReady, Status: metav1.ConditionFalse, Reason: v1alpha1.ReasonUnavailable, Message: "2 of 3", LastTransitionTime: now},
		{Type: v1alpha1.ConditionProgressing, Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonDraining, Message: "12 pending", LastTransitionTime: now},
	}
	app.Status.Conditions = []metav1.Condition{{Type: v1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonRouted, Message: "ok", LastTransitionTime: now}}
	for _, o := range []client.Object{recv, app} {
		if err := c.Status().Update(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(controllers.NewStatusCollector(c))
	gathered, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	families := map[string]*dto.MetricFamily{}
	for _, f := range gathered {
		families[f.GetName()] = f
	}
	for n := range managerMetrics {
		if len(used[n]) == 0 {
			t.Errorf("%s is listed as a manager metric but nothing uses it", n)
		}
		if families[n] == nil {
			t.Errorf("%s (used by %s) is not served by the manager", n, strings.Join(used[n], ", "))
		}
	}
	// The series CallbackRouterDrainStuck and CallbackReceiverNotReady select.
	want := map[string]map[string]string{
		"drain":     {"kind": "CallbackReceiver", "object_namespace": ns, "object_name": "default", "type": "Progressing", "status": "True", "reason": "Draining"},
		"not ready": {"kind": "CallbackReceiver", "type": "Ready", "status": "False", "reason": "Unavailable"},
		"app":       {"kind": "CallbackApp", "object_name": "chat-prod", "type": "Ready", "status": "True"},
	}
	for name, labels := range want {
		found := false
		for _, m := range families["callback_router_status_condition"].GetMetric() {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			match := m.GetGauge().GetValue() == 1
			for k, v := range labels {
				match = match && got[k] == v
			}
			found = found || match
		}
		if !found {
			t.Errorf("no callback_router_status_condition series for %s (%v)", name, labels)
		}
	}
	if v := families["callback_router_receiver_ready_replicas"].GetMetric()[0].GetGauge().GetValue(); v != 2 {
		t.Errorf("ready replicas %v, want 2", v)
	}
}
