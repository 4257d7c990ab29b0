package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/types"

	"github.com/callback-router/callback-router/api/v1alpha1"
	"github.com/callback-router/callback-router/controllers"
	"github.com/callback-router/callback-router/controllers/dataplane"
	"github.com/callback-router/callback-router/internal/testenv"
	"github.com/callback-router/callback-router/webhook/callback"
	"github.com/callback-router/callback-router/webhook/samples"
)

// Bounds of the end-to-end test.
const (
	// testTimeout bounds the whole test.
	testTimeout = 3 * time.Minute
	// deliveryWait is how long one callback may take to reach the backend once accepted.
	deliveryWait = 5 * time.Second
	// absentWait is how long the test waits to conclude a callback was not delivered.
	absentWait = 3 * time.Second
	// maxProbes bounds every send loop.
	maxProbes = 600
	// receiverNamespace is where the manager puts the receiver and its table.
	receiverNamespace = "callback-router-system"
	// exampleBackend is the backend URL in examples/routes.yaml, replaced by the test's.
	exampleBackend = "http://127.0.0.1:9000"
	// exampleToken is the Tencent IM token in examples/routes.yaml.
	exampleToken = "quickstart-token"
	// exampleApp is the SDKAppID in examples/routes.yaml.
	exampleApp = "1400000001"
)

var cluster *Cluster

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "callback-router-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if cluster, err = StartCluster(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() {
		if err := cluster.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stopping envtest:", err)
		}
	}()
	return m.Run()
}

// stopOnCleanup stops p when the test ends and prints its log if the test failed.
func stopOnCleanup(t *testing.T, name string, p *Process) {
	t.Cleanup(func() {
		if err := p.Stop(); err != nil {
			t.Logf("%s stop: %v", name, err)
		}
		if t.Failed() {
			t.Logf("%s log:\n%s", name, p.Tail())
		}
	})
}

func TestApplyRouteDeliversSignedCallback(t *testing.T) {
	g := NewWithT(t)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()

	backend := NewBackend()
	defer backend.Close()

	mgr, err := cluster.StartManager(ctx, receiverNamespace, "--leader-elect")
	g.Expect(err).NotTo(HaveOccurred())
	stopOnCleanup(t, "manager", mgr)

	d, err := cluster.WaitForStatefulSet(ctx, receiverNamespace, dataplane.ObjectName(controllers.DefaultReceiverName))
	g.Expect(err).NotTo(HaveOccurred(), "manager log:\n%s", mgr.Tail())
	g.Expect(d.Spec.Template.Spec.Containers[0].Image).To(Equal(ReceiverImage))
	g.Expect(d.Spec.Template.Spec.Containers[0].Args).To(ContainElements("--namespace", receiverNamespace, "--table", controllers.DefaultReceiverName))

	rx, err := cluster.StartReceiver(d, t.TempDir())
	g.Expect(err).NotTo(HaveOccurred())
	stopOnCleanup(t, "receiver", rx.Process)
	g.Expect(rx.WaitReady(ctx)).To(Succeed(), "the receiver loads the (empty) table the manager writes at start")
	// The manager's arguments put /metrics on a port of its own, never on the callback port.
	g.Expect(rx.MetricsURL).NotTo(BeEmpty(), "the manager did not set --metrics-listen")
	for base, want := range map[string]int{rx.URL: http.StatusNotFound, rx.MetricsURL: http.StatusOK} {
		resp, err := http.Get(base + "/metrics")
		g.Expect(err).NotTo(HaveOccurred())
		_ = resp.Body.Close()
		g.Expect(resp.StatusCode).To(Equal(want), "GET %s/metrics", base)
	}

	// kubectl apply of the example manifests (they create the teams' labelled namespaces;
	// the platform team's exists already), pointed at the loopback backend.
	g.Expect(cluster.EnsureNamespace(ctx, "im-platform")).To(Succeed())
	example, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "examples", "routes.yaml"))
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(string(example)).To(ContainSubstring(exampleBackend))
	manifests := []byte(strings.NewReplacer(exampleBackend, backend.URL,
		"receiverRef: {name: default, namespace: callback-router-system}",
		"receiverRef: {name: "+controllers.DefaultReceiverName+", namespace: "+receiverNamespace+"}").Replace(string(example)))
	g.Expect(string(manifests)).To(ContainSubstring(controllers.DefaultReceiverName))
	sample, ok := samples.Get("tencent-c2c-after-send")
	g.Expect(ok).To(BeTrue())

	applied := time.Now()
	_, err = cluster.KubectlRun(ctx, manifests, "apply", "-f", "-")
	g.Expect(err).NotTo(HaveOccurred())

	// Signed callbacks, each marked with its own probe number in the query (forwarded
	// verbatim), until one is accepted and arrives.
	var got Delivery
	delivered := false
	for i := 0; i < maxProbes && !delivered; i++ {
		probe := fmt.Sprintf("probe=%d", i)
		status, _, err := SendTencent(ctx, rx.URL, exampleApp, sample.Command, exampleToken, probe, sample.Body)
		g.Expect(err).NotTo(HaveOccurred())
		if status != http.StatusOK {
			g.Expect(status).To(Equal(http.StatusNotFound), "before the table has the app, its callbacks are unknown")
			time.Sleep(20 * time.Millisecond)
			continue
		}
		wctx, wcancel := context.WithTimeout(ctx, deliveryWait)
		got, err = backend.WaitFor(wctx, func(d Delivery) bool { return strings.HasSuffix(d.RawQuery, "&"+probe) })
		wcancel()
		delivered = err == nil
	}
	g.Expect(delivered).To(BeTrue(), "a signed callback reached the backend")
	t.Logf("apply to first delivered callback: %s", got.At.Sub(applied).Round(time.Millisecond))

	g.Expect(got.Path).To(Equal("/archive"))
	g.Expect(got.Body).To(Equal(sample.Body), "the body is forwarded byte for byte")
	g.Expect(got.Header.Get(callback.HeaderRoute)).To(Equal("chat/archive-messages"))
	g.Expect(got.Header.Get(callback.HeaderProvider)).To(Equal(string(v1alpha1.ProviderTencentIM)))
	g.Expect(got.Header.Get(callback.HeaderApp)).To(Equal(exampleApp))
	g.Expect(got.Header.Get(callback.HeaderCommand)).To(Equal(sample.Command))
	g.Expect(got.Header.Get(callback.HeaderID)).To(Equal(callback.ComputeID(v1alpha1.ProviderTencentIM, sample.Command, sample.Body)))
	g.Expect(got.RawQuery).To(ContainSubstring("SdkAppid="+exampleApp), "the platform's query is forwarded")
	g.Expect(got.RawQuery).NotTo(ContainSubstring("Sign="), "but not its credentials (the app does not set verify.forwardSignature)")

	// A forged signature is refused in Tencent's envelope.
	status, body, err := SendTencent(ctx, rx.URL, exampleApp, sample.Command, "wrong-token", "", sample.Body)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(status).To(Equal(http.StatusUnauthorized))
	g.Expect(string(body)).To(ContainSubstring(`"ActionStatus":"FAIL"`))

	// The route's status says it is live and where the IM console must point.
	route := &v1alpha1.CallbackRoute{}
	g.Eventually(func(g Gomega) {
		g.Expect(cluster.Client.Get(ctx, types.NamespacedName{Namespace: "chat", Name: "archive-messages"}, route)).To(Succeed())
		g.Expect(meta.IsStatusConditionTrue(route.Status.Conditions, v1alpha1.ConditionReady)).To(BeTrue())
	}, deliveryWait, 50*time.Millisecond).Should(Succeed())
	g.Expect(route.Status.URL).To(Equal("/tencent?SdkAppid=" + exampleApp))

	// Deleting the route stops its callbacks.
	_, err = cluster.KubectlRun(ctx, nil, "delete", "callbackroute", "archive-messages", "-n", "chat")
	g.Expect(err).NotTo(HaveOccurred())
	deleted := time.Now()
	stopped := false
	for i := 0; i < maxProbes && !stopped; i++ {
		probe := fmt.Sprintf("after-delete=%d", i)
		status, _, err := SendTencent(ctx, rx.URL, exampleApp, sample.Command, exampleToken, probe, sample.Body)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(status).To(Equal(http.StatusOK), "the app still has other routes: acknowledged, nothing routed")
		wctx, wcancel := context.WithTimeout(ctx, absentWait)
		_, err = backend.WaitFor(wctx, func(d Delivery) bool { return strings.HasSuffix(d.RawQuery, "&"+probe) })
		wcancel()
		stopped = err != nil
	}
	g.Expect(stopped).To(BeTrue(), "callbacks stop after the route is deleted")
	t.Logf("delete to callbacks stopped: at most %s", time.Since(deleted).Round(time.Millisecond))
	before := len(backend.Deliveries())
	for i := range 3 {
		_, _, err := SendTencent(ctx, rx.URL, exampleApp, sample.Command, exampleToken, fmt.Sprintf("gone=%d", i), sample.Body)
		g.Expect(err).NotTo(HaveOccurred())
	}
	g.Consistently(func() int { return len(backend.Deliveries()) }, absentWait, 100*time.Millisecond).Should(Equal(before))

	// The app's status counts its routes and says where to point the IM console.
	app := &v1alpha1.CallbackApp{}
	g.Eventually(func(g Gomega) {
		g.Expect(cluster.Client.Get(ctx, types.NamespacedName{Namespace: "im-platform", Name: "chat-prod"}, app)).To(Succeed())
		g.Expect(app.Status.AttachedRoutes).To(BeEquivalentTo(2)) // moderation and push-analytics remain
	}, deliveryWait, 50*time.Millisecond).Should(Succeed())
	g.Expect(app.Status.URL).To(Equal("/tencent?SdkAppid=" + exampleApp))

	// Deleting the app makes it unknown (its routes are AppNotFound): 404 in Tencent's envelope.
	_, err = cluster.KubectlRun(ctx, nil, "delete", "callbackapp", "chat-prod", "-n", "im-platform")
	g.Expect(err).NotTo(HaveOccurred())
	g.Eventually(func() int {
		status, _, _ := SendTencent(ctx, rx.URL, exampleApp, sample.Command, exampleToken, "", sample.Body)
		return status
	}, deliveryWait, 50*time.Millisecond).Should(Equal(http.StatusNotFound))
}

func TestServiceBackedRouteStatus(t *testing.T) {
	g := NewWithT(t)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	mgr, err := cluster.StartManager(ctx, receiverNamespace)
	g.Expect(err).NotTo(HaveOccurred())
	stopOnCleanup(t, "manager", mgr)

	g.Expect(cluster.EnsureNamespace(ctx, "svc-team")).To(Succeed())
	manifests := `
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackApp
metadata: {name: svc-team, namespace: svc-team}
spec:
  provider: OpenIM
  appID: svc-team
  receiverRef: {name: ` + controllers.DefaultReceiverName + `, namespace: ` + receiverNamespace + `}
---
apiVersion: v1
kind: Service
metadata: {name: archiver, namespace: svc-team}
spec:
  ports: [{name: http, port: 8080}]
---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackRoute
metadata: {name: to-service, namespace: svc-team}
spec:
  appRef: {name: svc-team}
  commands: ["*"]
  backend: {service: {name: archiver, port: 8080}, path: /im}
---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackRoute
metadata: {name: to-missing-service, namespace: svc-team}
spec:
  appRef: {name: svc-team}
  commands: ["*"]
  backend: {service: {name: nowhere, port: 80}}
`
	_, err = cluster.KubectlRun(ctx, []byte(manifests), "apply", "-f", "-")
	g.Expect(err).NotTo(HaveOccurred())
	g.Eventually(func(g Gomega) {
		out, err := cluster.KubectlRun(ctx, nil, "get", "callbackroutes", "-n", "svc-team",
			"-o", `jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="Ready")].status}/{.status.conditions[?(@.type=="ResolvedRefs")].reason}{"\n"}{end}`)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(strings.Fields(string(out))).To(ConsistOf("to-missing-service=False/BackendNotFound", "to-service=True/ResolvedRefs"))
	}, deliveryWait*4, 100*time.Millisecond).Should(Succeed(), "manager log:\n%s", mgr.Tail())
}

// TestReceiverKeepsServingWithoutAPIServer cuts the receiver off the API server (its
// connections go through a proxy that is then closed): it stays ready and keeps
// delivering with its last table, then picks up changes again once reconnected.
func TestReceiverKeepsServingWithoutAPIServer(t *testing.T) {
	g := NewWithT(t)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	backend := NewBackend()
	defer backend.Close()

	mgr, err := cluster.StartManager(ctx, receiverNamespace)
	g.Expect(err).NotTo(HaveOccurred())
	stopOnCleanup(t, "manager", mgr)
	d, err := cluster.WaitForStatefulSet(ctx, receiverNamespace, dataplane.ObjectName(controllers.DefaultReceiverName))
	g.Expect(err).NotTo(HaveOccurred())
	api, err := cluster.APIServerHostPort()
	g.Expect(err).NotTo(HaveOccurred())
	proxy, err := StartTCPProxy(api)
	g.Expect(err).NotTo(HaveOccurred())
	defer proxy.Cut()
	kubeconfig, err := cluster.KubeconfigVia(proxy.Addr())
	g.Expect(err).NotTo(HaveOccurred())
	rx, err := cluster.StartReceiverWithKubeconfig(d, t.TempDir(), kubeconfig)
	g.Expect(err).NotTo(HaveOccurred())
	stopOnCleanup(t, "receiver", rx.Process)
	g.Expect(rx.WaitReady(ctx)).To(Succeed())

	const app = "1400000777"
	g.Expect(cluster.EnsureNamespace(ctx, "outage")).To(Succeed())
	manifests := fmt.Sprintf(`
apiVersion: v1
kind: Secret
metadata: {name: tencent-im, namespace: outage}
stringData: {token: %[1]s}
---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackApp
metadata: {name: outage, namespace: outage}
spec:
  provider: TencentIM
  appID: "%[2]s"
  receiverRef: {name: %[4]s, namespace: %[5]s}
  verify: {tokenSecretRef: {name: tencent-im}}
  backendURLs: ["%[3]s"]
---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackRoute
metadata: {name: archive, namespace: outage}
spec:
  appRef: {name: outage}
  commands: ["*"]
  backend: {url: "%[3]s"}
`, exampleToken, app, backend.URL, controllers.DefaultReceiverName, receiverNamespace)
	_, err = cluster.KubectlRun(ctx, []byte(manifests), "apply", "-f", "-")
	g.Expect(err).NotTo(HaveOccurred())
	t.Cleanup(func() {
		_, _ = cluster.KubectlRun(context.Background(), []byte(manifests), "delete", "--ignore-not-found", "-f", "-")
	})
	sample, _ := samples.Get("tencent-c2c-after-send")
	send := func(probe string) int {
		status, _, err := SendTencent(ctx, rx.URL, app, sample.Command, exampleToken, probe, sample.Body)
		g.Expect(err).NotTo(HaveOccurred())
		return status
	}
	g.Eventually(func() int { return send("before") }, deliveryWait*2, 20*time.Millisecond).Should(Equal(http.StatusOK))

	// The API server becomes unreachable for the receiver.
	proxy.Cut()
	time.Sleep(2 * time.Second) // the watch breaks and the informer starts retrying

	resp, err := http.Get(rx.URL + "/readyz")
	g.Expect(err).NotTo(HaveOccurred())
	resp.Body.Close()
	g.Expect(resp.StatusCode).To(Equal(http.StatusOK), "still ready with the last good table")
	g.Expect(send("during-outage")).To(Equal(http.StatusOK))
	wctx, wcancel := context.WithTimeout(ctx, deliveryWait)
	defer wcancel()
	_, err = backend.WaitFor(wctx, func(d Delivery) bool { return strings.HasSuffix(d.RawQuery, "&during-outage") })
	g.Expect(err).NotTo(HaveOccurred(), "delivered while the API server is unreachable")
	exited, _ := rx.Exited()
	g.Expect(exited).To(BeFalse())
}
