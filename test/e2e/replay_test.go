package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/callback-router/callback-router/api/v1alpha1"
	"github.com/callback-router/callback-router/controllers"
	"github.com/callback-router/callback-router/controllers/dataplane"
	"github.com/callback-router/callback-router/webhook/callback"
	"github.com/callback-router/callback-router/webhook/samples"
)

// replayApp is the SDKAppID of the replay test's app.
const replayApp = "1400000777"

// sampleMsgKey is the MsgKey of the tencent-c2c-after-send sample, from which the
// receiver derives the callback's ID.
const sampleMsgKey = "48374_2837546_1557481126"

// TestCallbackReplay runs the real manager and receiver with retention on: a team's route
// delivers three callbacks, another route's backend fails so its three become dead
// letters. CallbackReplays by time range and by ID replay the delivered ones, one from
// DeadLetters the dead letters once the backend is back: the backend receives each replay
// with X-Callback-Replay: true and the original X-Callback-Id, and the CallbackReplay's
// status says matched/replayed and Complete, per pod too. A replay of a missing route or
// of a route in another namespace is Failed with RouteNotFound.
func TestCallbackReplay(t *testing.T) {
	g := NewWithT(t)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	backend := NewBackend()
	defer backend.Close()
	// gate answers 503 while down, else passes the request to backend.
	var down atomic.Bool
	down.Store(true)
	var gateHits atomic.Int64
	target, _ := url.Parse(backend.URL)
	proxy := httputil.NewSingleHostReverseProxy(target)
	gate := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gateHits.Add(1)
		if down.Load() {
			_, _ = io.Copy(io.Discard, r.Body)
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	defer gate.Close()

	mgr, err := cluster.StartManager(ctx, receiverNamespace)
	g.Expect(err).NotTo(HaveOccurred())
	stopOnCleanup(t, "manager", mgr)
	// Retention on for the default receiver; restored when the test ends.
	recvKey := types.NamespacedName{Namespace: receiverNamespace, Name: controllers.DefaultReceiverName}
	_, err = cluster.KubectlRun(ctx, nil, "patch", "callbackreceiver", recvKey.Name, "-n", recvKey.Namespace, "--type=merge", "-p", `{"spec":{"retention":"1h"}}`)
	g.Expect(err).NotTo(HaveOccurred())
	t.Cleanup(func() {
		_, _ = cluster.KubectlRun(context.Background(), nil, "patch", "callbackreceiver", recvKey.Name, "-n", recvKey.Namespace, "--type=json", "-p", `[{"op":"remove","path":"/spec/retention"}]`)
	})
	stsName := dataplane.ObjectName(controllers.DefaultReceiverName)
	g.Eventually(func(g Gomega) {
		sts, err := cluster.WaitForStatefulSet(ctx, receiverNamespace, stsName)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(sts.Spec.Template.Spec.Containers[0].Args).To(ContainElement("--retention"))
	}, deliveryWait*2, 100*time.Millisecond).Should(Succeed())
	// The StatefulSet's pods (two by default), each its own spool, run as local processes
	// with Pod objects on 127.0.0.1: the manager reads each one's /metrics.
	pods := cluster.RunStatefulSet(receiverNamespace, stsName, t.TempDir())
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("pods:\n%s\nsync errors: %v", pods.Logs(), pods.Errors())
		}
		pods.Stop()
	})
	var rx *Receiver
	g.Eventually(func() bool {
		rx = pods.Receiver(0)
		return rx != nil && pods.Receiver(1) != nil
	}, deliveryWait*4, 50*time.Millisecond).Should(BeTrue(), "sync errors: %v", pods.Errors())
	g.Expect(rx.WaitReady(ctx)).To(Succeed())

	for _, ns := range []string{"replay-team", "replay-other"} {
		g.Expect(cluster.EnsureNamespace(ctx, ns)).To(Succeed())
	}
	manifests := fmt.Sprintf(`
apiVersion: v1
kind: Secret
metadata: {name: tencent-im, namespace: replay-team}
stringData: {token: %[1]s}
---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackApp
metadata: {name: chat, namespace: replay-team}
spec:
  provider: TencentIM
  appID: "%[2]s"
  receiverRef: {name: %[5]s, namespace: %[6]s}
  verify: {tokenSecretRef: {name: tencent-im}}
  backendURLs: ["%[3]s", "%[4]s"]
---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackRoute
metadata: {name: orders, namespace: replay-team}
spec:
  appRef: {name: chat}
  commands: [C2C.CallbackAfterSendMsg]
  backend: {url: "%[3]s", path: /orders}
---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackRoute
metadata: {name: flaky, namespace: replay-team}
spec:
  appRef: {name: chat}
  commands: [C2C.CallbackAfterSendMsg]
  backend: {url: "%[4]s", path: /flaky}
  retry: {maxAttempts: 1, initialBackoff: 100ms, maxBackoff: 100ms}
`, exampleToken, replayApp, backend.URL, gate.URL, controllers.DefaultReceiverName, receiverNamespace)
	_, err = cluster.KubectlRun(ctx, []byte(manifests), "apply", "-f", "-")
	g.Expect(err).NotTo(HaveOccurred())
	t.Cleanup(func() {
		_, _ = cluster.KubectlRun(context.Background(), []byte(manifests), "delete", "--ignore-not-found", "-f", "-")
	})
	_, err = cluster.KubectlRun(ctx, nil, "wait", "--for=condition=Ready", "--timeout=20s", "-n", "replay-team", "callbackroute/orders", "callbackroute/flaky")
	g.Expect(err).NotTo(HaveOccurred())

	// Warm up until the routes are live; the replays select by time after this.
	after, _ := samples.Get("tencent-c2c-after-send")
	g.Eventually(func(g Gomega) {
		probe := fmt.Sprintf("warmup=%d", time.Now().UnixNano())
		status, _, err := SendTencent(ctx, rx.URL, replayApp, after.Command, exampleToken, probe, after.Body)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(status).To(Equal(http.StatusOK))
		wctx, wcancel := context.WithTimeout(ctx, time.Second)
		defer wcancel()
		_, err = backend.WaitFor(wctx, func(d Delivery) bool { return d.Path == "/orders" && strings.Contains(d.RawQuery, probe) })
		g.Expect(err).NotTo(HaveOccurred())
	}, deliveryWait*4, 100*time.Millisecond).Should(Succeed())
	// Every warm-up copy for flaky has died before the window opens.
	warmups := int64(0)
	for _, d := range backend.Deliveries() {
		if d.Path == "/orders" {
			warmups++
		}
	}
	g.Eventually(func() int64 { return deadLetters(ctx, rx, "replay-team/flaky") }, deliveryWait*2, 50*time.Millisecond).Should(Equal(warmups))
	time.Sleep(10 * time.Millisecond)
	from := time.Now()

	// Each callback its own MsgKey, hence its own X-Callback-Id.
	g.Expect(string(after.Body)).To(ContainSubstring(sampleMsgKey))
	const n = 3
	for i := range n {
		body := []byte(strings.Replace(string(after.Body), sampleMsgKey, fmt.Sprintf("replay_%d_%d", i, from.UnixNano()), 1))
		status, _, err := SendTencent(ctx, rx.URL, replayApp, after.Command, exampleToken, fmt.Sprintf("n=%d", i), body)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(status).To(Equal(http.StatusOK))
	}
	var ids []string
	g.Eventually(func() []string {
		ids = nil
		for _, d := range backend.Deliveries() {
			if d.Path == "/orders" && strings.Contains(d.RawQuery, "n=") {
				ids = append(ids, d.Header.Get(callback.HeaderID))
			}
		}
		return ids
	}, deliveryWait*2, 50*time.Millisecond).Should(HaveLen(n))
	g.Expect(slices.Compact(slices.Sorted(slices.Values(ids)))).To(HaveLen(n), "distinct callback IDs: %v", ids)
	g.Eventually(func() int64 { return deadLetters(ctx, rx, "replay-team/flaky") }, deliveryWait*2, 50*time.Millisecond).Should(Equal(warmups + n))
	time.Sleep(10 * time.Millisecond)
	to := time.Now()

	replays := func(path string) []Delivery {
		var out []Delivery
		for _, d := range backend.Deliveries() {
			if d.Path == path && d.Header.Get(callback.HeaderReplay) == "true" {
				out = append(out, d)
			}
		}
		return out
	}
	create := func(ns, name, spec string) {
		y := fmt.Sprintf("apiVersion: callbacks.callback-router.dev/v1alpha1\nkind: CallbackReplay\nmetadata: {name: %s, namespace: %s}\nspec: %s\n", name, ns, spec)
		_, err := cluster.KubectlRun(ctx, []byte(y), "create", "-f", "-")
		g.Expect(err).NotTo(HaveOccurred())
		t.Cleanup(func() {
			_, _ = cluster.KubectlRun(context.Background(), nil, "delete", "--ignore-not-found", "-n", ns, "callbackreplay", name)
		})
	}
	waitComplete := func(ns, name string) *v1alpha1.CallbackReplay {
		x := &v1alpha1.CallbackReplay{}
		g.Eventually(func(g Gomega) {
			g.Expect(cluster.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, x)).To(Succeed())
			g.Expect(meta.IsStatusConditionTrue(x.Status.Conditions, v1alpha1.ConditionComplete)).To(BeTrue(), "%+v", x.Status)
		}, deliveryWait*4, 100*time.Millisecond).Should(Succeed(), "manager log:\n%s", mgr.Tail())
		g.Expect(meta.IsStatusConditionTrue(x.Status.Conditions, v1alpha1.ConditionFailed)).To(BeFalse())
		g.Expect(x.Status.ObservedGeneration).To(Equal(x.Generation))
		g.Expect(x.Status.Receiver).To(Equal(recvKey.String()))
		// Both pods ran it; the callbacks went to pod 0, pod 1's spool has none of them.
		g.Expect(x.Status.Pods).To(HaveLen(2))
		g.Expect(x.Status.Pods[0].Name).To(Equal(pods.PodName(0)))
		g.Expect(x.Status.Pods[1].Name).To(Equal(pods.PodName(1)))
		g.Expect(x.Status.Pods[0].Matched).To(Equal(x.Status.Matched))
		g.Expect(x.Status.Pods[1].Matched).To(BeZero())
		return x
	}
	rfc := func(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

	// Delivered, by time range: the three, not the warm-ups.
	create("replay-team", "by-time", fmt.Sprintf(`{routeRef: {name: orders}, source: Delivered, from: "%s", to: "%s"}`, rfc(from), rfc(to)))
	x := waitComplete("replay-team", "by-time")
	g.Expect(x.Status.Matched).To(BeEquivalentTo(n))
	g.Expect(x.Status.Replayed).To(BeEquivalentTo(n))
	g.Eventually(func() int { return len(replays("/orders")) }, deliveryWait*2, 50*time.Millisecond).Should(Equal(n))
	var got []string
	for _, d := range replays("/orders") {
		got = append(got, d.Header.Get(callback.HeaderID))
		g.Expect(d.RawQuery).To(ContainSubstring("n="))
	}
	slices.Sort(got)
	want := slices.Clone(ids)
	slices.Sort(want)
	g.Expect(got).To(Equal(want), "replays carry the original X-Callback-Id")

	// Delivered, by ID: one.
	create("replay-team", "by-id", fmt.Sprintf(`{routeRef: {name: orders}, source: Delivered, callbackIDs: ["%s"]}`, ids[1]))
	x = waitComplete("replay-team", "by-id")
	g.Expect(x.Status.Matched).To(BeEquivalentTo(1))
	g.Expect(x.Status.Replayed).To(BeEquivalentTo(1))
	g.Eventually(func() int { return len(replays("/orders")) }, deliveryWait*2, 50*time.Millisecond).Should(Equal(n + 1))
	g.Expect(replays("/orders")[n].Header.Get(callback.HeaderID)).To(Equal(ids[1]))

	// Dead letters, once the backend is back: the three in the window.
	down.Store(false)
	create("replay-team", "dead", fmt.Sprintf(`{routeRef: {name: flaky}, source: DeadLetters, from: "%s", to: "%s"}`, rfc(from), rfc(to)))
	x = waitComplete("replay-team", "dead")
	g.Expect(x.Status.Matched).To(BeEquivalentTo(n))
	g.Eventually(func() int { return len(replays("/flaky")) }, deliveryWait*2, 50*time.Millisecond).Should(Equal(n))
	var dead []string
	for _, d := range replays("/flaky") {
		dead = append(dead, d.Header.Get(callback.HeaderID))
	}
	slices.Sort(dead)
	g.Expect(dead).To(Equal(want), "a dead letter's replay carries its callback's X-Callback-Id")

	// A replay runs once: nothing more arrives.
	g.Consistently(func() int { return len(replays("/orders")) + len(replays("/flaky")) }, absentWait, 100*time.Millisecond).Should(Equal(2*n + 1))

	// A missing route, and a route of another namespace: Failed, RouteNotFound.
	create("replay-team", "missing", `{routeRef: {name: nope}}`)
	create("replay-other", "not-mine", `{routeRef: {name: orders}, source: Delivered}`)
	for _, k := range []types.NamespacedName{{Namespace: "replay-team", Name: "missing"}, {Namespace: "replay-other", Name: "not-mine"}} {
		g.Eventually(func(g Gomega) {
			x := &v1alpha1.CallbackReplay{}
			g.Expect(cluster.Client.Get(ctx, k, x)).To(Succeed())
			c := meta.FindStatusCondition(x.Status.Conditions, v1alpha1.ConditionFailed)
			g.Expect(c).NotTo(BeNil())
			g.Expect(c.Status).To(Equal(metav1.ConditionTrue))
			g.Expect(c.Reason).To(Equal(v1alpha1.ReasonRouteNotFound))
			g.Expect(c.Message).To(ContainSubstring("not found in namespace " + k.Namespace))
		}, deliveryWait*2, 100*time.Millisecond).Should(Succeed())
	}
	g.Consistently(func() int { return len(replays("/orders")) }, absentWait/3, 100*time.Millisecond).Should(Equal(n + 1))

	// The printer columns, and the API server's rules on the spec.
	out, err := cluster.KubectlRun(ctx, nil, "get", "callbackreplay", "-n", "replay-team", "by-time")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(string(out)).To(MatchRegexp(`(?m)^NAME\s+ROUTE\s+SOURCE\s+MATCHED\s+REPLAYED\s+COMPLETE\s+AGE`))
	g.Expect(string(out)).To(MatchRegexp(`(?m)^by-time\s+orders\s+Delivered\s+3\s+3\s+True\s`))
	_, err = cluster.KubectlRun(ctx, []byte(fmt.Sprintf("apiVersion: callbacks.callback-router.dev/v1alpha1\nkind: CallbackReplay\nmetadata: {name: both, namespace: replay-team}\nspec: {routeRef: {name: orders}, callbackIDs: [a], from: %q}\n", rfc(from))), "create", "-f", "-")
	g.Expect(err).To(MatchError(ContainSubstring("give callbackIDs or a time range")))
	_, err = cluster.KubectlRun(ctx, nil, "patch", "callbackreplay", "by-id", "-n", "replay-team", "--type=merge", "-p", `{"spec":{"source":"DeadLetters"}}`)
	g.Expect(err).To(MatchError(ContainSubstring("immutable")))
}

// deadLetters reads callback_router_dead_letters_total of a route from the receiver's /metrics.
func deadLetters(ctx context.Context, rx *Receiver, route string) int64 {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rx.MetricsURL+"/metrics", nil)
	if err != nil {
		return -1
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	prefix := `callback_router_dead_letters_total{route="` + route + `"} `
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, prefix) {
			var v float64
			_, _ = fmt.Sscan(strings.TrimPrefix(line, prefix), &v)
			return int64(v)
		}
	}
	return 0
}
