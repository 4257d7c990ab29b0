package e2e

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/types"

	"github.com/callback-router/callback-router/api/v1alpha1"
	"github.com/callback-router/callback-router/controllers"
	"github.com/callback-router/callback-router/controllers/dataplane"
	"github.com/callback-router/callback-router/webhook/samples"
)

// tenancyApp is the SDKAppID of the tenancy test's app.
const tenancyApp = "1400000555"

// TestRouteInDisallowedNamespaceNeverReceives runs the real manager and receiver: an app
// admits routes of its own namespace (Same), and Async routes of namespaces labelled
// im-callbacks=analytics. A team in another namespace attaches an Async catch-all and a
// Sync route for the app's appID and the right command: neither ever receives a callback,
// and the Sync one never answers. The analytics namespace's Async route receives its
// copies, its Sync route never answers. The admitted routes receive every callback,
// without Tencent's Sign until the app's owner sets verify.forwardSignature.
func TestRouteInDisallowedNamespaceNeverReceives(t *testing.T) {
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
	rx, err := cluster.StartReceiver(d, t.TempDir())
	g.Expect(err).NotTo(HaveOccurred())
	stopOnCleanup(t, "receiver", rx.Process)
	g.Expect(rx.WaitReady(ctx)).To(Succeed())

	for _, ns := range []string{"tenant-owner", "intruder"} {
		g.Expect(cluster.EnsureNamespace(ctx, ns)).To(Succeed())
	}
	_, err = cluster.KubectlRun(ctx, []byte("apiVersion: v1\nkind: Namespace\nmetadata: {name: tenant-analytics, labels: {im-callbacks: analytics}}\n"), "apply", "-f", "-")
	g.Expect(err).NotTo(HaveOccurred())
	manifests := fmt.Sprintf(`
apiVersion: v1
kind: Secret
metadata: {name: tencent-im, namespace: tenant-owner}
stringData: {token: %[1]s}
---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackApp
metadata: {name: chat, namespace: tenant-owner}
spec:
  provider: TencentIM
  appID: "%[2]s"
  receiverRef: {name: %[4]s, namespace: %[5]s}
  verify: {tokenSecretRef: {name: tencent-im}}
  allowedRoutes:
    - namespaces: {from: Same}
    - namespaces: {from: Selector, selector: {matchLabels: {im-callbacks: analytics}}}
      modes: [Async]
  backendURLs: ["%[3]s"]
---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackRoute
metadata: {name: archive, namespace: tenant-owner}
spec:
  appRef: {name: chat}
  commands: [C2C.CallbackAfterSendMsg]
  backend: {url: "%[3]s", path: /owner}
---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackRoute
metadata: {name: everything, namespace: intruder}
spec:
  appRef: {name: chat, namespace: tenant-owner}
  commands: ["*"]
  backend: {url: "%[3]s", path: /intruder}
---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackRoute
metadata: {name: rewrite, namespace: intruder}
spec:
  appRef: {name: chat, namespace: tenant-owner}
  commands: [C2C.CallbackBeforeSendMsg]
  mode: Sync
  failurePolicy: Reject
  backend: {url: "%[3]s", path: /intruder-sync}
---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackRoute
metadata: {name: copies, namespace: tenant-analytics}
spec:
  appRef: {name: chat, namespace: tenant-owner}
  commands: ["C2C.*"]
  backend: {url: "%[3]s", path: /analytics}
---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackRoute
metadata: {name: answer, namespace: tenant-analytics}
spec:
  appRef: {name: chat, namespace: tenant-owner}
  commands: [C2C.CallbackBeforeSendMsg]
  mode: Sync
  failurePolicy: Reject
  backend: {url: "%[3]s", path: /intruder-analytics-sync}
`, exampleToken, tenancyApp, backend.URL, controllers.DefaultReceiverName, receiverNamespace)
	_, err = cluster.KubectlRun(ctx, []byte(manifests), "apply", "-f", "-")
	g.Expect(err).NotTo(HaveOccurred())
	t.Cleanup(func() {
		_, _ = cluster.KubectlRun(context.Background(), []byte(manifests), "delete", "--ignore-not-found", "-f", "-")
	})

	// The refused routes say why they are out; `kubectl wait` sees the admitted ones Ready.
	for _, r := range []struct{ ns, name, msg string }{
		{"intruder", "everything", "namespace intruder is not allowed by CallbackApp tenant-owner/chat"},
		{"intruder", "rewrite", "namespace intruder is not allowed by CallbackApp tenant-owner/chat"},
		{"tenant-analytics", "answer", "mode Sync is not allowed for namespace tenant-analytics"},
	} {
		g.Eventually(func(g Gomega) {
			route := &v1alpha1.CallbackRoute{}
			g.Expect(cluster.Client.Get(ctx, types.NamespacedName{Namespace: r.ns, Name: r.name}, route)).To(Succeed())
			c := meta.FindStatusCondition(route.Status.Conditions, v1alpha1.ConditionAccepted)
			g.Expect(c).NotTo(BeNil())
			g.Expect(c.Reason).To(Equal(v1alpha1.ReasonNotAllowedByApp))
			g.Expect(c.Message).To(ContainSubstring(r.msg))
		}, deliveryWait*2, 50*time.Millisecond).Should(Succeed(), "manager log:\n%s", mgr.Tail())
	}
	_, err = cluster.KubectlRun(ctx, nil, "wait", "--for=condition=Ready", "--timeout=20s", "-n", "tenant-owner", "callbackroute/archive", "callbackapp/chat")
	g.Expect(err).NotTo(HaveOccurred())
	_, err = cluster.KubectlRun(ctx, nil, "wait", "--for=condition=Ready", "--timeout=20s", "-n", "tenant-analytics", "callbackroute/copies")
	g.Expect(err).NotTo(HaveOccurred())

	// The "before send" callback carries the same message body as the "after send" one.
	after, _ := samples.Get("tencent-c2c-after-send")
	// Wait until the owner's route is live, then send both commands repeatedly.
	g.Eventually(func() error {
		status, _, err := SendTencent(ctx, rx.URL, tenancyApp, after.Command, exampleToken, "warmup", after.Body)
		if err == nil && status != http.StatusOK {
			err = fmt.Errorf("status %d", status)
		}
		return err
	}, deliveryWait*2, 20*time.Millisecond).Should(Succeed())
	const n = 20
	for i := range n {
		status, _, err := SendTencent(ctx, rx.URL, tenancyApp, after.Command, exampleToken, fmt.Sprintf("after=%d", i), after.Body)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(status).To(Equal(http.StatusOK))
		status, body, err := SendTencent(ctx, rx.URL, tenancyApp, "C2C.CallbackBeforeSendMsg", exampleToken, fmt.Sprintf("before=%d", i), after.Body)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(status).To(Equal(http.StatusOK))
		g.Expect(string(body)).To(ContainSubstring(`"ActionStatus":"OK"`), "no Sync route may answer: the receiver's own OK envelope")
	}
	g.Eventually(func() int {
		c := 0
		for _, d := range backend.Deliveries() {
			if d.Path == "/owner" && strings.Contains(d.RawQuery, "after=") {
				c++
			}
		}
		return c
	}, deliveryWait*2, 50*time.Millisecond).Should(BeNumerically(">=", n), "the admitted route receives every callback")
	g.Eventually(func() int {
		c := 0
		for _, d := range backend.Deliveries() {
			if d.Path == "/analytics" && (strings.Contains(d.RawQuery, "after=") || strings.Contains(d.RawQuery, "before=")) {
				c++
			}
		}
		return c
	}, deliveryWait*2, 50*time.Millisecond).Should(BeNumerically(">=", 2*n), "the Async-only namespace gets copies of both commands")
	for _, d := range backend.Deliveries() {
		g.Expect(d.RawQuery).NotTo(ContainSubstring("Sign="), "the app does not forward the platform's signature")
	}

	// The app's owner lets its backends have Tencent's Sign and RequestTime.
	_, err = cluster.KubectlRun(ctx, nil, "patch", "callbackapp", "chat", "-n", "tenant-owner", "--type=merge",
		"-p", `{"spec":{"verify":{"forwardSignature":true}}}`)
	g.Expect(err).NotTo(HaveOccurred())
	g.Eventually(func(g Gomega) {
		probe := fmt.Sprintf("forwarded=%d", time.Now().UnixNano())
		status, _, err := SendTencent(ctx, rx.URL, tenancyApp, after.Command, exampleToken, probe, after.Body)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(status).To(Equal(http.StatusOK))
		wctx, wcancel := context.WithTimeout(ctx, deliveryWait)
		defer wcancel()
		d, err := backend.WaitFor(wctx, func(d Delivery) bool { return d.Path == "/owner" && strings.Contains(d.RawQuery, probe) })
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(d.RawQuery).To(ContainSubstring("Sign="))
		g.Expect(d.RawQuery).To(ContainSubstring("RequestTime="))
	}, deliveryWait*4, 100*time.Millisecond).Should(Succeed())

	g.Consistently(func() []string {
		var bad []string
		for _, d := range backend.Deliveries() {
			if strings.HasPrefix(d.Path, "/intruder") {
				bad = append(bad, d.Path+"?"+d.RawQuery)
			}
		}
		return bad
	}, absentWait, 100*time.Millisecond).Should(BeEmpty(), "a route the app does not admit received a callback")
}
