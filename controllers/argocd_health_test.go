package controllers

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	lua "github.com/yuin/gopher-lua"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/callback-router/callback-router/api/v1alpha1"
	"github.com/callback-router/callback-router/controllers/dataplane"
	"github.com/callback-router/callback-router/internal/testenv"
)

// argoHealth is what an Argo CD health script returns.
type argoHealth struct{ Status, Message string }

// luaScript reads docs/gitops/health-<kind>.lua.
func luaScript(t *testing.T, kind string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "docs", "gitops", "health-"+strings.ToLower(kind)+".lua"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// runArgoHealth runs a health script as Argo CD does (util/lua): gopher-lua with only the
// package, base and table libraries open, the object as the global obj (decoded from its
// JSON form), the returned table read as status and message.
func runArgoHealth(script string, obj map[string]any) (argoHealth, error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	for _, lib := range []struct {
		name string
		fn   lua.LGFunction
	}{{lua.LoadLibName, lua.OpenPackage}, {lua.BaseLibName, lua.OpenBase}, {lua.TabLibName, lua.OpenTable}} {
		l.Push(l.NewFunction(lib.fn))
		l.Push(lua.LString(lib.name))
		l.Call(1, 0)
	}
	l.SetGlobal("obj", toLua(l, obj))
	if err := l.DoString(script); err != nil {
		return argoHealth{}, err
	}
	t, ok := l.Get(-1).(*lua.LTable)
	if !ok {
		return argoHealth{}, fmt.Errorf("the script returned %s, not a table", l.Get(-1).Type())
	}
	return argoHealth{Status: t.RawGetString("status").String(), Message: t.RawGetString("message").String()}, nil
}

// toLua converts a JSON value as Argo CD's decodeValue does.
func toLua(l *lua.LState, v any) lua.LValue {
	switch x := v.(type) {
	case map[string]any:
		t := l.NewTable()
		for k, e := range x {
			t.RawSetString(k, toLua(l, e))
		}
		return t
	case []any:
		t := l.NewTable()
		for _, e := range x {
			t.Append(toLua(l, e))
		}
		return t
	case string:
		return lua.LString(x)
	case bool:
		return lua.LBool(x)
	case int64:
		return lua.LNumber(x)
	case float64:
		return lua.LNumber(x)
	case nil:
		return lua.LNil
	}
	panic(fmt.Sprintf("toLua: %T", v))
}

// argoHealthOf reads obj as Argo CD does (unstructured, from the API server) and runs the
// kind's script on it; it also returns the object's kstatus, which must agree.
func argoHealthOf(g Gomega, script, kind string, key types.NamespacedName) (argoHealth, status.Status) {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(v1alpha1.GroupVersion.WithKind(kind))
	g.Expect(k8s.Get(context.Background(), key, u)).To(Succeed())
	h, err := runArgoHealth(script, u.Object)
	g.Expect(err).NotTo(HaveOccurred())
	res, err := status.Compute(u)
	g.Expect(err).NotTo(HaveOccurred())
	return h, res.Status
}

// agreeing are the kstatus results each Argo CD status matches.
var agreeing = map[string]status.Status{
	"Healthy": status.CurrentStatus, "Progressing": status.InProgressStatus, "Degraded": status.FailedStatus,
}

// expectArgoHealth waits until the script says want for the object, with a message
// containing msg, and checks kstatus (Flux) agrees.
func expectArgoHealth(t *testing.T, kind string, obj client.Object, want, msg string) {
	t.Helper()
	script := luaScript(t, kind)
	NewWithT(t).Eventually(func(g Gomega) {
		h, ks := argoHealthOf(g, script, kind, client.ObjectKeyFromObject(obj))
		g.Expect(h.Status).To(Equal(want), "%s %s: %s", kind, obj.GetName(), h.Message)
		g.Expect(h.Message).To(ContainSubstring(msg))
		g.Expect(ks).To(Equal(agreeing[want]), "kstatus of %s %s", kind, obj.GetName())
	}, waitTimeout, pollInterval).Should(Succeed())
}

// createExpectingProgressing creates obj (unstructured, as GitOps tools apply) and runs
// the script on the object the API server returns, before any reconcile: its status
// defaults to observedGeneration 0, so Argo CD says Progressing and kstatus InProgress,
// not Healthy/Current (as they would for an object with no status at all).
func createExpectingProgressing(t *testing.T, kind string, obj client.Object) {
	t.Helper()
	g := NewWithT(t)
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	g.Expect(err).NotTo(HaveOccurred())
	u := &unstructured.Unstructured{Object: m}
	u.SetGroupVersionKind(v1alpha1.GroupVersion.WithKind(kind))
	g.Expect(k8s.Create(context.Background(), u)).To(Succeed())
	g.Expect(u.Object["status"]).To(HaveKeyWithValue("observedGeneration", BeNumerically("==", 0)), "the API server defaults status.observedGeneration")
	h, err := runArgoHealth(luaScript(t, kind), u.Object)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(h.Status).To(Equal("Progressing"), h.Message)
	res, err := status.Compute(u)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(res.Status).To(Equal(status.InProgressStatus), res.Message)
}

// TestArgoCDHealthAppAndRoute runs docs/gitops' Argo CD health checks on real apps and
// routes through their life: Progressing before the manager has seen them and while
// they wait for a Secret or a Service, Healthy once Ready, Degraded when refused.
func TestArgoCDHealthAppAndRoute(t *testing.T) {
	ns, other := newNamespace(t), newNamespace(t)
	app := newApp(ns, "argo-app", grantSelector("kubernetes.io/metadata.name", ns, nil))
	app.Spec.Verify = &v1alpha1.AppVerification{TokenSecretRef: &v1alpha1.TokenSecretReference{Name: "argo-token"}}
	route := newRoute(ns, "argo-route", app, v1alpha1.ModeAsync, "C2C.CallbackAfterSendMessage")
	route.Spec.Backend = v1alpha1.Backend{Service: &v1alpha1.ServiceReference{Name: "argo-backend", Port: 8080}}
	refused := newRoute(other, "argo-refused", app, v1alpha1.ModeAsync, "C2C.CallbackAfterSendMsg")
	createExpectingProgressing(t, "CallbackApp", app)
	createExpectingProgressing(t, "CallbackRoute", route)
	create(t, refused)

	expectArgoHealth(t, "CallbackApp", app, "Progressing", "SecretNotFound: ")
	expectArgoHealth(t, "CallbackRoute", route, "Progressing", "BackendNotFound: ")
	expectArgoHealth(t, "CallbackRoute", refused, "Degraded", "NotAllowedByApp: namespace "+other)

	create(t, tokenSecret(ns, "argo-token", "s3cret"), &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "argo-backend"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 8080, TargetPort: intstr.FromInt32(8080)}}},
	})
	expectArgoHealth(t, "CallbackApp", app, "Healthy", "routing table")
	// Healthy, and the message carries the catalogue's did-you-mean.
	expectArgoHealth(t, "CallbackRoute", route, "Healthy", "did you mean C2C.CallbackAfterSendMsg?")

	twin := newApp(ns, "argo-twin")
	twin.Spec.AppID = app.Spec.AppID
	create(t, twin)
	expectArgoHealth(t, "CallbackApp", twin, "Degraded", "Conflict: ")
	expectArgoHealth(t, "CallbackApp", app, "Healthy", "")
}

// TestArgoCDHealthReceiver: Progressing while the receiver's workload rolls out, Healthy
// once every replica is ready, Degraded when it cannot run as specified.
func TestArgoCDHealthReceiver(t *testing.T) {
	g := NewWithT(t)
	recv := &v1alpha1.CallbackReceiver{
		ObjectMeta: metav1.ObjectMeta{Namespace: opts.Namespace, Name: "argo"},
		Spec:       v1alpha1.CallbackReceiverSpec{Replicas: ptr.To[int32](2)},
	}
	bad := &v1alpha1.CallbackReceiver{
		ObjectMeta: metav1.ObjectMeta{Namespace: opts.Namespace, Name: "argo-bad"},
		// A spec the manager accepts but cannot run (terminal: Stalled): replay of delivered
		// callbacks (retention) is not supported on the JetStream spool.
		Spec: v1alpha1.CallbackReceiverSpec{
			Spool:     &v1alpha1.Spool{JetStream: &v1alpha1.JetStreamSpool{URL: "nats://127.0.0.1:4222"}},
			Retention: &metav1.Duration{Duration: time.Hour},
		},
	}
	createExpectingProgressing(t, "CallbackReceiver", recv)
	create(t, bad)
	t.Cleanup(func() {
		_ = k8s.Delete(context.Background(), recv)
		_ = k8s.Delete(context.Background(), bad)
	})
	expectArgoHealth(t, "CallbackReceiver", recv, "Progressing", "")
	expectArgoHealth(t, "CallbackReceiver", bad, "Degraded", "Invalid: ")

	// The workload reports both pods ready (no kubelet here: the test plays its part).
	key := types.NamespacedName{Namespace: opts.Namespace, Name: dataplane.ObjectName(recv.Name)}
	g.Eventually(func() error {
		d := &appsv1.StatefulSet{}
		if err := k8s.Get(context.Background(), key, d); err != nil {
			return err
		}
		d.Status = appsv1.StatefulSetStatus{ObservedGeneration: d.Generation, Replicas: 2, UpdatedReplicas: 2, ReadyReplicas: 2, AvailableReplicas: 2}
		return k8s.Status().Update(context.Background(), d)
	}, waitTimeout, pollInterval).Should(Succeed())
	expectArgoHealth(t, "CallbackReceiver", recv, "Healthy", "")
}

// TestArgoCDConfigMapCarriesScripts: docs/gitops/argocd-cm.yaml holds the .lua files unchanged.
func TestArgoCDConfigMapCarriesScripts(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "docs", "gitops", "argocd-cm.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var cm corev1.ConfigMap
	if err := yaml.UnmarshalStrict(b, &cm); err != nil {
		t.Fatal(err)
	}
	for _, kind := range []string{"CallbackReceiver", "CallbackApp", "CallbackRoute"} {
		key := "resource.customizations.health." + v1alpha1.GroupVersion.Group + "_" + kind
		if got, want := cm.Data[key], luaScript(t, kind); got != want {
			t.Errorf("argocd-cm.yaml %s differs from health-%s.lua", key, strings.ToLower(kind))
		}
	}
}
