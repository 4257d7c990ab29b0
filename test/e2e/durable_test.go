package e2e

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/callback-router/callback-router/api/v1alpha1"
	"github.com/callback-router/callback-router/controllers/dataplane"
	"github.com/callback-router/callback-router/webhook/samples"
)

// Bounds of the durability tests.
const (
	// durableCallbacks is how many callbacks each test sends while the backend is down.
	durableCallbacks = 90
	// durableWait bounds each wait for the manager or the receivers.
	durableWait = 60 * time.Second
	// durableDrainSettle is the manager's --receiver-drain-settle in these tests.
	durableDrainSettle = 2 * time.Second
	// durableNamespace holds the tests' app and route.
	durableNamespace = "durable"
	durableApp       = "1400000777"
)

// durableManifests: a CallbackReceiver of 3 replicas and an app whose after-send
// callbacks go to one Async route of the backend, retried often and long enough (100
// attempts, up to 2s apart) to outlast the outage.
const durableManifests = `
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackReceiver
metadata: {name: %[4]s, namespace: %[5]s}
spec:
  replicas: 3
  allowedApps: {namespaces: {from: All}}
  spool: {embedded: {size: 64Mi}}
---
apiVersion: v1
kind: Secret
metadata: {name: tencent-im, namespace: %[6]s}
stringData: {token: %[1]s}
---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackApp
metadata: {name: chat-%[4]s, namespace: %[6]s}
spec:
  provider: TencentIM
  appID: "%[2]s"
  receiverRef: {name: %[4]s, namespace: %[5]s}
  verify: {tokenSecretRef: {name: tencent-im}}
  backendURLs: ["%[3]s"]
---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackRoute
metadata: {name: archive-%[4]s, namespace: %[6]s}
spec:
  appRef: {name: chat-%[4]s}
  commands: [C2C.CallbackAfterSendMsg]
  mode: Async
  backend: {url: "%[3]s", path: /archive, timeout: 2s}
  retry: {maxAttempts: 100, initialBackoff: 100ms, maxBackoff: 2s}
`

// durableRig is a manager, a CallbackReceiver whose StatefulSet's pods run as processes,
// and a backend that starts down.
type durableRig struct {
	t        *testing.T
	g        *WithT
	backend  *Backend
	mgr      *Process
	pods     *StatefulPods
	recv     types.NamespacedName
	sts      string
	acked    map[string]bool // callback n=<id> answered 200 (acknowledged)
	ackedMu  sync.Mutex
	sentNext int
}

func newDurableRig(t *testing.T, ctx context.Context, receiver string) *durableRig {
	g := NewWithT(t)
	r := &durableRig{t: t, g: g, backend: NewBackend(), recv: types.NamespacedName{Namespace: receiverNamespace, Name: receiver},
		sts: dataplane.ObjectName(receiver), acked: map[string]bool{}}
	t.Cleanup(r.backend.Close)
	r.backend.SetDown(true)
	var err error
	r.mgr, err = cluster.StartManager(ctx, receiverNamespace, "--receiver-drain-settle", durableDrainSettle.String(),
		"--receiver-pending-interval", "500ms")
	g.Expect(err).NotTo(HaveOccurred())
	stopOnCleanup(t, "manager", r.mgr)
	g.Expect(cluster.EnsureNamespace(ctx, durableNamespace)).To(Succeed())
	manifests := fmt.Sprintf(durableManifests, exampleToken, durableApp, r.backend.URL, receiver, receiverNamespace, durableNamespace)
	_, err = cluster.KubectlRun(ctx, []byte(manifests), "apply", "-f", "-")
	g.Expect(err).NotTo(HaveOccurred())
	t.Cleanup(func() {
		_, _ = cluster.KubectlRun(context.Background(), []byte(manifests), "delete", "--ignore-not-found", "--wait=false", "-f", "-")
	})
	_, err = cluster.WaitForStatefulSet(ctx, receiverNamespace, r.sts)
	g.Expect(err).NotTo(HaveOccurred())
	r.pods = cluster.RunStatefulSet(receiverNamespace, r.sts, t.TempDir())
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("pods:\n%s\nsync errors: %v", r.pods.Logs(), r.pods.Errors())
		}
		r.pods.Stop()
	})
	r.waitPods(3)
	return r
}

// waitPods waits until n pods run and the StatefulSet says so.
func (r *durableRig) waitPods(n int) {
	r.g.Eventually(func(g Gomega) {
		for i := range n {
			g.Expect(r.pods.Receiver(i)).NotTo(BeNil(), "pod %d", i)
		}
		sts := &appsv1.StatefulSet{}
		g.Expect(cluster.Client.Get(context.Background(), types.NamespacedName{Namespace: receiverNamespace, Name: r.sts}, sts)).To(Succeed())
		g.Expect(sts.Status.ReadyReplicas).To(Equal(int32(n)))
	}, durableWait, 100*time.Millisecond).Should(Succeed(), "sync errors: %v\nmanager:\n%s", r.pods.Errors(), r.mgr.Tail())
}

// send posts one signed after-send callback numbered by the rig to base, and records it
// when acknowledged.
func (r *durableRig) send(ctx context.Context, base string) (int, error) {
	after, _ := samples.Get("tencent-c2c-after-send")
	r.ackedMu.Lock()
	id := fmt.Sprintf("n=%s-%d", r.recv.Name, r.sentNext)
	r.sentNext++
	r.ackedMu.Unlock()
	status, _, err := SendTencent(ctx, base, durableApp, after.Command, exampleToken, id, after.Body)
	if err == nil && status == http.StatusOK {
		r.ackedMu.Lock()
		r.acked[id] = true
		r.ackedMu.Unlock()
	}
	return status, err
}

// sendToServing sends n callbacks round-robin over the pods the receiver's Service
// selects, and returns how many each URL acknowledged.
func (r *durableRig) sendToServing(ctx context.Context, n int) map[string]int {
	urls, err := r.pods.ServingURLs(ctx, r.sts)
	r.g.Expect(err).NotTo(HaveOccurred())
	r.g.Expect(urls).NotTo(BeEmpty())
	per := map[string]int{}
	for i := range n {
		u := urls[i%len(urls)]
		status, err := r.send(ctx, u)
		r.g.Expect(err).NotTo(HaveOccurred())
		r.g.Expect(status).To(Equal(http.StatusOK), "a callback refused by %s", u)
		per[u]++
	}
	return per
}

// waitRouted sends to every serving pod until each acknowledges (its table has the app).
func (r *durableRig) waitRouted(ctx context.Context) {
	urls, err := r.pods.ServingURLs(ctx, r.sts)
	r.g.Expect(err).NotTo(HaveOccurred())
	for _, u := range urls {
		r.g.Eventually(func() (int, error) { return r.send(ctx, u) }, durableWait, 50*time.Millisecond).Should(Equal(http.StatusOK))
	}
}

// ackedCount is the number of acknowledged callbacks.
func (r *durableRig) ackedCount() int {
	r.ackedMu.Lock()
	defer r.ackedMu.Unlock()
	return len(r.acked)
}

// expectAllDelivered waits until the backend holds every acknowledged callback, and
// reports duplicates (at-least-once: a delivery interrupted by a kill may repeat).
func (r *durableRig) expectAllDelivered() {
	var missing []string
	r.g.Eventually(func() []string {
		got := map[string]int{}
		for _, d := range r.backend.Deliveries() {
			q, _ := url.ParseQuery(d.RawQuery)
			if n := q.Get("n"); n != "" {
				got["n="+n]++
			}
		}
		r.ackedMu.Lock()
		defer r.ackedMu.Unlock()
		missing = missing[:0]
		for id := range r.acked {
			if got[id] == 0 {
				missing = append(missing, id)
			}
		}
		return missing
	}, durableWait, 100*time.Millisecond).Should(BeEmpty(), "acknowledged callbacks never delivered")
	r.t.Logf("%d acknowledged callbacks, %d deliveries at the backend", r.ackedCount(), len(r.backend.Deliveries()))
}

func (r *durableRig) receiver(g Gomega) *v1alpha1.CallbackReceiver {
	cr := &v1alpha1.CallbackReceiver{}
	g.Expect(cluster.Client.Get(context.Background(), r.recv, cr)).To(Succeed())
	return cr
}

// expectPending waits until status.pending is want, read from every pod.
func (r *durableRig) expectPending(want int64, pods int) {
	r.g.Eventually(func(g Gomega) {
		cr := r.receiver(g)
		g.Expect(cr.Status.Pods).To(HaveLen(pods))
		for _, p := range cr.Status.Pods {
			g.Expect(p.Error).To(BeEmpty(), p.Name)
			g.Expect(p.Pending).NotTo(BeNil(), p.Name)
		}
		g.Expect(cr.Status.Pending).To(Equal(want))
	}, durableWait, 200*time.Millisecond).Should(Succeed(), "manager:\n%s", r.mgr.Tail())
}

// TestRollEveryPodWithBackendDown: with the backend down and a backlog on every pod, every
// pod is replaced in turn (two stopped as a rollout does, one killed with SIGKILL as a
// node loss does); each comes back on its own claim with its backlog, and once the
// backend is up every acknowledged callback is delivered. The manager reads each pod's
// pending count from its /metrics into status.pods and status.pending throughout.
func TestRollEveryPodWithBackendDown(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	r := newDurableRig(t, ctx, "rolling")
	r.waitRouted(ctx)
	per := r.sendToServing(ctx, durableCallbacks)
	r.g.Expect(per).To(HaveLen(3), "every pod holds a backlog")
	total := int64(r.ackedCount())
	r.expectPending(total, 3)
	r.g.Eventually(func(g Gomega) {
		for _, p := range r.receiver(g).Status.Pods {
			g.Expect(*p.Pending).To(BeNumerically(">", 0), p.Name)
			g.Expect(p.Serving).To(BeTrue(), p.Name)
		}
	}, durableWait, 200*time.Millisecond).Should(Succeed())

	for n := range 3 {
		r.g.Expect(r.pods.Roll(ctx, n, n == 1)).To(Succeed())
		r.waitPods(3)
	}
	// Every pod is a new process; the backlog is where it was.
	r.expectPending(total, 3)

	r.backend.SetDown(false)
	r.expectAllDelivered()
	r.expectPending(0, 3)
}

// TestScaleDownDrainsFirst scales a 3-pod receiver to 2 through the scale subresource
// while the backend is down: the manager takes pod 2 out of the Service, keeps the
// StatefulSet at 3 and says Draining with the pending count (condition and event); once
// the backend is up pod 2 delivers its backlog, the StatefulSet goes to 2, pod 2's claim
// is kept and labelled empty, and nothing acknowledged is lost. Scaling back up brings the
// claim back into use.
func TestScaleDownDrainsFirst(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	r := newDurableRig(t, ctx, "scaling")
	r.waitRouted(ctx)
	r.sendToServing(ctx, durableCallbacks)
	total := int64(r.ackedCount())
	r.expectPending(total, 3)
	var pod2 int64
	r.g.Eventually(func(g Gomega) {
		for _, p := range r.receiver(g).Status.Pods {
			if p.Name == r.pods.PodName(2) {
				pod2 = *p.Pending
			}
		}
		g.Expect(pod2).To(BeNumerically(">", 0))
	}, durableWait, 200*time.Millisecond).Should(Succeed())

	_, err := cluster.KubectlRun(ctx, nil, "scale", "-n", receiverNamespace, "callbackreceiver/"+r.recv.Name, "--replicas=2")
	r.g.Expect(err).NotTo(HaveOccurred())

	// Draining: out of the Service, still running, the count in the condition.
	r.g.Eventually(func(g Gomega) {
		cr := r.receiver(g)
		c := meta.FindStatusCondition(cr.Status.Conditions, v1alpha1.ConditionProgressing)
		g.Expect(c).NotTo(BeNil())
		g.Expect(c.Status).To(Equal(metav1.ConditionTrue))
		g.Expect(c.Reason).To(Equal(v1alpha1.ReasonDraining))
		g.Expect(c.Message).To(ContainSubstring(fmt.Sprintf("from 3 to 2 replicas: %d callbacks pending", pod2)))
		g.Expect(c.Message).To(ContainSubstring(fmt.Sprintf("%s: %d", r.pods.PodName(2), pod2)))
		urls, err := r.pods.ServingURLs(ctx, r.sts)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(urls).To(HaveLen(2))
		g.Expect(urls).NotTo(ContainElement(r.pods.Receiver(2).URL))
	}, durableWait, 200*time.Millisecond).Should(Succeed(), "manager:\n%s", r.mgr.Tail())
	expectReceiverEvent(r.g, r.recv, dataplane.EventDraining)
	// The StatefulSet keeps pod 2 as long as it holds callbacks: well past the settle time.
	r.g.Consistently(func(g Gomega) {
		sts := &appsv1.StatefulSet{}
		g.Expect(cluster.Client.Get(ctx, types.NamespacedName{Namespace: receiverNamespace, Name: r.sts}, sts)).To(Succeed())
		g.Expect(*sts.Spec.Replicas).To(Equal(int32(3)))
		g.Expect(r.pods.Receiver(2)).NotTo(BeNil())
	}, 3*durableDrainSettle, 200*time.Millisecond).Should(Succeed())
	// Traffic meanwhile goes to the two staying pods only.
	r.g.Expect(r.sendToServing(ctx, 20)).To(HaveLen(2))

	r.backend.SetDown(false)
	r.g.Eventually(func(g Gomega) {
		sts := &appsv1.StatefulSet{}
		g.Expect(cluster.Client.Get(ctx, types.NamespacedName{Namespace: receiverNamespace, Name: r.sts}, sts)).To(Succeed())
		g.Expect(*sts.Spec.Replicas).To(Equal(int32(2)))
	}, durableWait, 200*time.Millisecond).Should(Succeed(), "manager:\n%s", r.mgr.Tail())
	expectReceiverEvent(r.g, r.recv, dataplane.EventScaledDown)
	r.expectAllDelivered()
	r.g.Eventually(func(g Gomega) {
		// A bool, not the *Process: on failure gomega would format the process by
		// reflection while the harness stops it (a data race in the test, not the product).
		stillRunning := r.pods.Receiver(2) != nil
		g.Expect(stillRunning).To(BeFalse(), "pod 2 is still running")
		claim := &corev1.PersistentVolumeClaim{}
		g.Expect(cluster.Client.Get(ctx, types.NamespacedName{Namespace: receiverNamespace, Name: r.pods.ClaimName(2)}, claim)).To(Succeed())
		g.Expect(claim.DeletionTimestamp).To(BeNil())
		g.Expect(claim.Labels).To(HaveKeyWithValue(dataplane.LabelSpool, dataplane.SpoolEmpty))
		cr := r.receiver(g)
		g.Expect(cr.Status.Pods).To(HaveLen(2))
		g.Expect(cr.Status.Pending).To(BeZero())
		c := meta.FindStatusCondition(cr.Status.Conditions, v1alpha1.ConditionProgressing)
		g.Expect(c.Reason).NotTo(Equal(v1alpha1.ReasonDraining))
	}, durableWait, 200*time.Millisecond).Should(Succeed(), "manager:\n%s", r.mgr.Tail())

	// Scale up again: pod 2 returns on its claim, which loses the label.
	_, err = cluster.KubectlRun(ctx, nil, "scale", "-n", receiverNamespace, "callbackreceiver/"+r.recv.Name, "--replicas=3")
	r.g.Expect(err).NotTo(HaveOccurred())
	r.waitPods(3)
	r.g.Eventually(func(g Gomega) {
		claim := &corev1.PersistentVolumeClaim{}
		g.Expect(cluster.Client.Get(ctx, types.NamespacedName{Namespace: receiverNamespace, Name: r.pods.ClaimName(2)}, claim)).To(Succeed())
		g.Expect(claim.Labels).NotTo(HaveKey(dataplane.LabelSpool))
		urls, err := r.pods.ServingURLs(ctx, r.sts)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(urls).To(HaveLen(3))
	}, durableWait, 200*time.Millisecond).Should(Succeed(), "manager:\n%s", r.mgr.Tail())
}

// expectReceiverEvent waits for an events.k8s.io Event of the reason about the receiver.
func expectReceiverEvent(g *WithT, recv types.NamespacedName, reason string) {
	g.Eventually(func(g Gomega) {
		cr := &v1alpha1.CallbackReceiver{}
		g.Expect(cluster.Client.Get(context.Background(), recv, cr)).To(Succeed())
		list := &eventsv1.EventList{}
		g.Expect(cluster.Client.List(context.Background(), list, client.InNamespace(recv.Namespace))).To(Succeed())
		var reasons []string
		for _, e := range list.Items {
			if e.Regarding.UID == cr.UID {
				reasons = append(reasons, e.Reason+": "+e.Note)
			}
		}
		g.Expect(strings.Join(reasons, "\n")).To(ContainSubstring(reason+": "), "events about %s", recv)
	}, durableWait, 200*time.Millisecond).Should(Succeed())
}
