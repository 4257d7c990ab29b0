package controllers

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/callback-router/callback-router/api/v1alpha1"
)

// kubectlWaitTimeout bounds one `kubectl wait` in these tests.
const kubectlWaitTimeout = 30 * time.Second

// health reads an app or route as GitOps tools do (unstructured, straight from the API
// server) and computes its health with Flux's and Argo CD's kstatus library.
func health(g Gomega, obj client.Object, kind string) *status.Result {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(v1alpha1.GroupVersion.WithKind(kind))
	g.Expect(k8s.Get(context.Background(), client.ObjectKeyFromObject(obj), u)).To(Succeed())
	res, err := status.Compute(u)
	g.Expect(err).NotTo(HaveOccurred())
	return res
}

// expectHealth waits until kstatus computes want for obj.
func expectHealth(t *testing.T, obj client.Object, kind string, want status.Status) {
	t.Helper()
	NewWithT(t).Eventually(func(g Gomega) {
		res := health(g, obj, kind)
		g.Expect(res.Status).To(Equal(want), "%s %s: %s", kind, obj.GetName(), res.Message)
	}, waitTimeout, pollInterval).Should(Succeed())
}

// TestAppAndRouteHealthForGitOps computes apps' and routes' kstatus through their life:
// InProgress while they wait for an object GitOps may apply later (the app's Secret, the
// route's Service), Current once Ready, Failed when refused (a route the app does not
// admit, a younger app claiming an app ID): waiting cannot fix those.
func TestAppAndRouteHealthForGitOps(t *testing.T) {
	ns := newNamespace(t)
	app := newApp(ns, "gitops-app", grantSelector("kubernetes.io/metadata.name", ns, []v1alpha1.Mode{v1alpha1.ModeAsync}))
	app.Spec.Verify = &v1alpha1.AppVerification{TokenSecretRef: &v1alpha1.TokenSecretReference{Name: "gitops-token"}}
	route := newRoute(ns, "gitops-route", app, v1alpha1.ModeAsync, "C2C.CallbackAfterSendMsg")
	route.Spec.Backend = v1alpha1.Backend{Service: &v1alpha1.ServiceReference{Name: "gitops-backend", Port: 8080}}
	create(t, app, route)

	// Before its Secret and its Service exist: in progress, not failed.
	expectCondition(t, app, v1alpha1.ConditionResolvedRefs, metav1.ConditionFalse, v1alpha1.ReasonSecretNotFound)
	expectHealth(t, app, "CallbackApp", status.InProgressStatus)
	expectCondition(t, route, v1alpha1.ConditionResolvedRefs, metav1.ConditionFalse, v1alpha1.ReasonBackendNotFound)
	expectHealth(t, route, "CallbackRoute", status.InProgressStatus)

	create(t, tokenSecret(ns, "gitops-token", "s3cret"), &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "gitops-backend"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 8080, TargetPort: intstr.FromInt32(8080)}}},
	})
	expectCondition(t, app, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonRouted)
	expectHealth(t, app, "CallbackApp", status.CurrentStatus)
	expectCondition(t, route, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonRouted)
	expectHealth(t, route, "CallbackRoute", status.CurrentStatus)

	// A Sync route where the app grants only Async: refused, Failed.
	sync := newRoute(ns, "gitops-sync", app, v1alpha1.ModeSync, "C2C.CallbackBeforeSendMsg")
	create(t, sync)
	expectCondition(t, sync, v1alpha1.ConditionAccepted, metav1.ConditionFalse, v1alpha1.ReasonNotAllowedByApp)
	expectCondition(t, sync, v1alpha1.ConditionStalled, metav1.ConditionTrue, v1alpha1.ReasonNotAllowedByApp)
	expectHealth(t, sync, "CallbackRoute", status.FailedStatus)

	// The app grants Sync after all: Stalled goes, the route is Current.
	update(t, app, func(a *v1alpha1.CallbackApp) { a.Spec.AllowedRoutes[0].Modes = nil })
	expectCondition(t, sync, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonRouted)
	NewWithT(t).Eventually(func(g Gomega) {
		r := &v1alpha1.CallbackRoute{}
		g.Expect(k8s.Get(context.Background(), client.ObjectKeyFromObject(sync), r)).To(Succeed())
		for _, c := range r.Status.Conditions {
			g.Expect(c.Type).NotTo(Equal(v1alpha1.ConditionStalled))
		}
	}, waitTimeout, pollInterval).Should(Succeed())
	expectHealth(t, sync, "CallbackRoute", status.CurrentStatus)

	// A younger app claiming the same app ID on the receiver: Conflict, Failed.
	twin := newApp(ns, "gitops-twin")
	twin.Spec.AppID = app.Spec.AppID
	create(t, twin)
	expectCondition(t, twin, v1alpha1.ConditionAccepted, metav1.ConditionFalse, v1alpha1.ReasonConflict)
	expectHealth(t, twin, "CallbackApp", status.FailedStatus)
	expectHealth(t, app, "CallbackApp", status.CurrentStatus)
}

// adminKubeconfig writes the test API server's admin credentials as a kubeconfig for kubectl.
func adminKubeconfig(t *testing.T) string {
	t.Helper()
	kc := clientcmdapi.NewConfig()
	kc.Clusters["envtest"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["admin"] = &clientcmdapi.AuthInfo{ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData, Token: cfg.BearerToken}
	kc.Contexts["envtest"] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: "admin"}
	kc.CurrentContext = "envtest"
	p := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*kc, p); err != nil {
		t.Fatal(err)
	}
	return p
}

// kubectl returns the kubectl of the envtest assets, or the one on PATH.
func kubectl(t *testing.T) string {
	t.Helper()
	if assets := os.Getenv("KUBEBUILDER_ASSETS"); assets != "" {
		if p := filepath.Join(assets, "kubectl"); fileExists(p) {
			return p
		}
	}
	p, err := exec.LookPath("kubectl")
	if err != nil {
		t.Fatal("kubectl is neither in KUBEBUILDER_ASSETS nor on PATH (hack/envtest-assets.sh provides it)")
	}
	return p
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// TestKubectlWaitReadyAppAndRoute runs `kubectl wait --for=condition=Ready` on an app and
// a route that wait for their Secret and Service: both waits return once those appear.
func TestKubectlWaitReadyAppAndRoute(t *testing.T) {
	g := NewWithT(t)
	kc, kubeconfig := kubectl(t), adminKubeconfig(t)
	ns := newNamespace(t)
	app := newApp(ns, "waited-app", grantSelector("kubernetes.io/metadata.name", ns, nil))
	app.Spec.Verify = &v1alpha1.AppVerification{TokenSecretRef: &v1alpha1.TokenSecretReference{Name: "waited-token"}}
	route := newRoute(ns, "waited-route", app, v1alpha1.ModeAsync, "C2C.CallbackAfterSendMsg")
	create(t, app, route)

	ctx, cancel := context.WithTimeout(context.Background(), kubectlWaitTimeout+5*time.Second)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, kc, "--kubeconfig", kubeconfig, "wait", "--for=condition=Ready",
		"--timeout="+kubectlWaitTimeout.String(), "-n", ns, "callbackapp/waited-app", "callbackroute/waited-route")
	cmd.Stdout, cmd.Stderr = &out, &out
	g.Expect(cmd.Start()).To(Succeed())
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()

	g.Consistently(done, time.Second, 100*time.Millisecond).ShouldNot(Receive(), "kubectl wait returned before the app was ready: %s", &out)
	create(t, tokenSecret(ns, "waited-token", "s3cret"))
	var err error
	g.Eventually(done, kubectlWaitTimeout, pollInterval).Should(Receive(&err))
	g.Expect(err).NotTo(HaveOccurred(), "kubectl wait: %s", &out)
	g.Expect(out.String()).To(And(
		ContainSubstring("callbackapp.callbacks.callback-router.dev/waited-app condition met"),
		ContainSubstring("callbackroute.callbacks.callback-router.dev/waited-route condition met")))
}

// TestReceiverCountsItsApps checks the receivers' APPS column: status.apps is the number
// of apps in the receiver's published table.
func TestReceiverCountsItsApps(t *testing.T) {
	ns := newNamespace(t)
	app := newApp(ns, "counted")
	create(t, app)
	expectCondition(t, app, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonRouted)
	NewWithT(t).Eventually(func(g Gomega) {
		recv := &v1alpha1.CallbackReceiver{}
		g.Expect(k8s.Get(context.Background(), client.ObjectKey{Namespace: opts.Namespace, Name: opts.Name}, recv)).To(Succeed())
		snap := readTable(g, opts.Namespace, opts.Name)
		g.Expect(recv.Status.Apps).To(BeNumerically(">=", 1))
		g.Expect(recv.Status.Apps).To(Equal(int32(len(snap.Apps))))
	}, waitTimeout, pollInterval).Should(Succeed())
}
