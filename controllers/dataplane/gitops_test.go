package dataplane

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/callback-router/callback-router/api/v1alpha1"
)

// kubectlWaitTimeout bounds one `kubectl wait` in these tests.
const kubectlWaitTimeout = 30 * time.Second

// kstatusOf reads a CallbackReceiver as GitOps tools do (unstructured, straight from the
// API server) and computes its health with Flux's and Argo CD's kstatus library.
func kstatusOf(g Gomega, key types.NamespacedName) *status.Result {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(v1alpha1.GroupVersion.WithKind("CallbackReceiver"))
	g.Expect(k8s.Get(context.Background(), key, u)).To(Succeed())
	res, err := status.Compute(u)
	g.Expect(err).NotTo(HaveOccurred())
	return res
}

// TestReceiverHealthForGitOps computes a receiver's kstatus through its life: InProgress
// while its workload rolls out, Current once every replica is ready, Failed when it cannot
// run as specified.
func TestReceiverHealthForGitOps(t *testing.T) {
	g := NewWithT(t)
	recv := newReceiver(t, receiverNS, "kstatus", v1alpha1.CallbackReceiverSpec{Replicas: ptr.To[int32](2)})
	key := client.ObjectKeyFromObject(recv)
	depKey := types.NamespacedName{Namespace: receiverNS, Name: ObjectName(recv.Name)}

	g.Eventually(func(g Gomega) {
		g.Expect(kstatusOf(g, key).Status).To(Equal(status.InProgressStatus))
		g.Expect(condition(getReceiver(g, key), v1alpha1.ConditionProgressing)).NotTo(BeNil())
	}, waitTimeout, pollInterval).Should(Succeed())

	setWorkloadStatus(g, depKey, 2, 2)
	g.Eventually(func(g Gomega) {
		g.Expect(kstatusOf(g, key).Status).To(Equal(status.CurrentStatus))
	}, waitTimeout, pollInterval).Should(Succeed())

	// A new generation is InProgress until its rollout completes.
	g.Eventually(func() error {
		r := &v1alpha1.CallbackReceiver{}
		if err := k8s.Get(context.Background(), key, r); err != nil {
			return err
		}
		r.Spec.Replicas = ptr.To[int32](3)
		return k8s.Update(context.Background(), r)
	}, waitTimeout, pollInterval).Should(Succeed())
	g.Eventually(func(g Gomega) {
		g.Expect(kstatusOf(g, key).Status).To(Equal(status.InProgressStatus))
	}, waitTimeout, pollInterval).Should(Succeed())
	setWorkloadStatus(g, depKey, 3, 3)
	g.Eventually(func(g Gomega) {
		g.Expect(kstatusOf(g, key).Status).To(Equal(status.CurrentStatus))
	}, waitTimeout, pollInterval).Should(Succeed())

	bad := newReceiver(t, receiverNS, "kstatus-bad", v1alpha1.CallbackReceiverSpec{
		Service: &v1alpha1.ReceiverService{Port: MetricsPort},
	})
	g.Eventually(func(g Gomega) {
		res := kstatusOf(g, client.ObjectKeyFromObject(bad))
		g.Expect(res.Status).To(Equal(status.FailedStatus))
		g.Expect(res.Message).To(ContainSubstring("is the receiver's metrics port"))
	}, waitTimeout, pollInterval).Should(Succeed())
}

// kubectl returns the kubectl of the envtest assets, or the one on PATH.
func kubectl(t *testing.T) string {
	t.Helper()
	if p := filepath.Join(assets, "kubectl"); assets != "" {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	p, err := exec.LookPath("kubectl")
	if err != nil {
		t.Fatal("kubectl is neither in KUBEBUILDER_ASSETS nor on PATH (hack/envtest-assets.sh provides it)")
	}
	return p
}

// TestKubectlWaitReady runs `kubectl wait --for=condition=Ready` on a receiver while it
// rolls out: the wait returns once the workload is ready, and times out on a receiver
// that cannot run.
func TestKubectlWaitReady(t *testing.T) {
	g := NewWithT(t)
	kc := kubectl(t)
	recv := newReceiver(t, receiverNS, "waited", v1alpha1.CallbackReceiverSpec{Replicas: ptr.To[int32](1)})
	depKey := types.NamespacedName{Namespace: receiverNS, Name: ObjectName(recv.Name)}

	ctx, cancel := context.WithTimeout(context.Background(), kubectlWaitTimeout+5*time.Second)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, kc, "--kubeconfig", kubeconfig, "wait", "--for=condition=Ready",
		"--timeout="+kubectlWaitTimeout.String(), "-n", receiverNS, "callbackreceiver/waited")
	cmd.Stdout, cmd.Stderr = &out, &out
	g.Expect(cmd.Start()).To(Succeed())
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()

	// Not ready yet: kubectl keeps waiting.
	g.Consistently(done, time.Second, 100*time.Millisecond).ShouldNot(Receive(), "kubectl wait returned before the receiver was ready: %s", &out)
	setWorkloadStatus(g, depKey, 1, 1)
	var err error
	g.Eventually(done, kubectlWaitTimeout, pollInterval).Should(Receive(&err))
	g.Expect(err).NotTo(HaveOccurred(), "kubectl wait: %s", &out)
	g.Expect(out.String()).To(ContainSubstring("callbackreceiver.callbacks.callback-router.dev/waited condition met"))

	// A receiver that cannot run never becomes Ready: the wait times out.
	newReceiver(t, receiverNS, "never", v1alpha1.CallbackReceiverSpec{
		Service: &v1alpha1.ReceiverService{Port: MetricsPort},
	})
	res, err := exec.CommandContext(context.Background(), kc, "--kubeconfig", kubeconfig, "wait", "--for=condition=Ready",
		"--timeout=2s", "-n", receiverNS, "callbackreceiver/never").CombinedOutput()
	g.Expect(err).To(HaveOccurred(), "kubectl wait succeeded on a stalled receiver: %s", res)
	g.Expect(string(res)).To(ContainSubstring("timed out"))
}
