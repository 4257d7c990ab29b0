package controllers

import (
	"context"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/callback-router/callback-router/api/v1alpha1"
	"github.com/callback-router/callback-router/webhook/routing"
	"github.com/callback-router/callback-router/webhook/tablestore"
)

func tencentRoute(ns, name string, mode v1alpha1.Mode, commands ...string) *v1alpha1.CallbackRoute {
	return &v1alpha1.CallbackRoute{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: v1alpha1.CallbackRouteSpec{
			Provider: v1alpha1.ProviderTencentIM,
			AppID:    "1400000001",
			Commands: commands,
			Mode:     mode,
			Backend:  v1alpha1.Backend{URL: "http://127.0.0.1:9/" + name},
		},
	}
}

func tokenSecret(ns, name, token string) *corev1.Secret {
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Data: map[string][]byte{"token": []byte(token)}}
}

func getRoute(g Gomega, ns, name string) *v1alpha1.CallbackRoute {
	r := &v1alpha1.CallbackRoute{}
	g.Expect(k8s.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, r)).To(Succeed())
	return r
}

// expectCondition waits until the route has the condition for its current generation.
func expectCondition(t *testing.T, ns, name, typ string, status metav1.ConditionStatus, reason string, msg ...string) *v1alpha1.CallbackRoute {
	t.Helper()
	var r *v1alpha1.CallbackRoute
	NewWithT(t).Eventually(func(g Gomega) {
		r = getRoute(g, ns, name)
		c := meta.FindStatusCondition(r.Status.Conditions, typ)
		g.Expect(c).NotTo(BeNil(), "condition %s", typ)
		g.Expect(c.ObservedGeneration).To(Equal(r.Generation))
		g.Expect(r.Status.ObservedGeneration).To(Equal(r.Generation))
		g.Expect(c.Status).To(Equal(status), "%s: %s", typ, c.Message)
		g.Expect(c.Reason).To(Equal(reason))
		for _, m := range msg {
			g.Expect(c.Message).To(ContainSubstring(m))
		}
	}, waitTimeout, pollInterval).Should(Succeed())
	return r
}

// tableRoute returns the compiled route ns/name from the stored table, or nil.
func tableRoute(g Gomega, ns, name string) *routing.CompiledRoute {
	s, err := tablestore.ReadSnapshot(context.Background(), k8s, opts.Namespace, opts.Name)
	g.Expect(err).NotTo(HaveOccurred())
	for i := range s.Routes {
		if s.Routes[i].Namespace == ns && s.Routes[i].Name == name {
			return &s.Routes[i]
		}
	}
	return nil
}

// warningEvents lists the Warning events about route ns/name with reason.
func warningEvents(g Gomega, ns, name, reason string) []eventsv1.Event {
	list := &eventsv1.EventList{}
	g.Expect(k8s.List(context.Background(), list, client.InNamespace(ns))).To(Succeed())
	var out []eventsv1.Event
	for _, e := range list.Items {
		if e.Regarding.Name == name && e.Regarding.Kind == "CallbackRoute" && e.Type == corev1.EventTypeWarning && e.Reason == reason {
			out = append(out, e)
		}
	}
	return out
}

func TestValidRouteIsReadyAndInTable(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := newNamespace(t)
	g.Expect(k8s.Create(ctx, tokenSecret(ns, "tencent-im", "s3cret"))).To(Succeed())
	g.Expect(k8s.Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "archiver"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 8080}}},
	})).To(Succeed())
	r := tencentRoute(ns, "archive", v1alpha1.ModeAsync, "C2C.CallbackAfterSendMsg", "Group.*")
	r.Spec.Backend = v1alpha1.Backend{Service: &v1alpha1.ServiceReference{Name: "archiver", Port: 8080}, Path: "/im"}
	r.Spec.Verify = &v1alpha1.Verification{TokenSecretRef: &v1alpha1.TokenSecretReference{Name: "tencent-im"}}
	g.Expect(k8s.Create(ctx, r)).To(Succeed())

	expectCondition(t, ns, "archive", v1alpha1.ConditionAccepted, metav1.ConditionTrue, v1alpha1.ReasonAccepted)
	expectCondition(t, ns, "archive", v1alpha1.ConditionResolvedRefs, metav1.ConditionTrue, v1alpha1.ReasonResolved)
	got := expectCondition(t, ns, "archive", v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonRouted)
	g.Expect(got.Status.URL).To(Equal("/tencent?SdkAppid=1400000001"))

	cr := tableRoute(g, ns, "archive")
	g.Expect(cr).NotTo(BeNil())
	g.Expect(cr.URL).To(Equal("http://archiver." + ns + ".svc:8080/im"))
	g.Expect(cr.Tokens).To(Equal([]string{"s3cret"}))
	g.Expect(cr.Commands).To(Equal([]string{"C2C.CallbackAfterSendMsg", "Group.*"}))

	// A spec change bumps the generation; the conditions follow it.
	g.Eventually(func() error {
		r := getRoute(g, ns, "archive")
		r.Spec.Commands = append(r.Spec.Commands, "Push.*")
		return k8s.Update(ctx, r)
	}, waitTimeout, pollInterval).Should(Succeed())
	got = expectCondition(t, ns, "archive", v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonRouted)
	g.Expect(got.Generation).To(Equal(int64(2)))
	g.Eventually(func(g Gomega) {
		g.Expect(tableRoute(g, ns, "archive").Commands).To(ContainElement("Push.*"))
	}, waitTimeout, pollInterval).Should(Succeed())
}

func TestConflictingSyncRoutes(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	nsA, nsB := newNamespace(t), newNamespace(t)
	// Same app as other tests' Async routes; a different command keeps the tests independent.
	cmd := "C2C.CallbackBeforeSendMsg." + nsA
	g.Expect(k8s.Create(ctx, tencentRoute(nsA, "moderation", v1alpha1.ModeSync, cmd))).To(Succeed())
	expectCondition(t, nsA, "moderation", v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonRouted)
	// creationTimestamp has one-second resolution: make the second route clearly younger.
	time.Sleep(1100 * time.Millisecond)
	g.Expect(k8s.Create(ctx, tencentRoute(nsB, "moderation-too", v1alpha1.ModeSync, cmd))).To(Succeed())
	// An unrelated Async route in the loser's namespace is unaffected.
	g.Expect(k8s.Create(ctx, tencentRoute(nsB, "archive", v1alpha1.ModeAsync, cmd))).To(Succeed())

	expectCondition(t, nsB, "moderation-too", v1alpha1.ConditionAccepted, metav1.ConditionFalse, v1alpha1.ReasonConflict, nsA+"/moderation")
	expectCondition(t, nsB, "moderation-too", v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonNotRouted)
	expectCondition(t, nsB, "archive", v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonRouted)
	expectCondition(t, nsA, "moderation", v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonRouted)
	g.Eventually(func(g Gomega) {
		g.Expect(tableRoute(g, nsB, "moderation-too")).To(BeNil())
		g.Expect(tableRoute(g, nsA, "moderation")).NotTo(BeNil())
		g.Expect(warningEvents(g, nsB, "moderation-too", EventConflict)).To(HaveLen(1))
	}, waitTimeout, pollInterval).Should(Succeed())
	g.Consistently(func(g Gomega) {
		g.Expect(warningEvents(g, nsB, "moderation-too", EventConflict)).To(HaveLen(1), "one event per change, not per pass")
	}, 2*time.Second, 200*time.Millisecond).Should(Succeed())

	// The winner goes away: the loser takes over.
	g.Expect(k8s.Delete(ctx, getRoute(g, nsA, "moderation"))).To(Succeed())
	expectCondition(t, nsB, "moderation-too", v1alpha1.ConditionAccepted, metav1.ConditionTrue, v1alpha1.ReasonAccepted)
	expectCondition(t, nsB, "moderation-too", v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonRouted)
	g.Eventually(func(g Gomega) {
		g.Expect(tableRoute(g, nsA, "moderation")).To(BeNil())
		g.Expect(tableRoute(g, nsB, "moderation-too")).NotTo(BeNil())
	}, waitTimeout, pollInterval).Should(Succeed())
}

func TestUnresolvedReferences(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := newNamespace(t)

	noSecret := tencentRoute(ns, "no-secret", v1alpha1.ModeAsync, "C2C.*")
	noSecret.Spec.Verify = &v1alpha1.Verification{TokenSecretRef: &v1alpha1.TokenSecretReference{Name: "later"}}
	noService := tencentRoute(ns, "no-service", v1alpha1.ModeAsync, "Group.*")
	noService.Spec.Backend = v1alpha1.Backend{Service: &v1alpha1.ServiceReference{Name: "backend", Port: 80}}
	openim := &v1alpha1.CallbackRoute{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "openim-basic"},
		Spec: v1alpha1.CallbackRouteSpec{Provider: v1alpha1.ProviderOpenIM, AppID: "prod-" + ns, Commands: []string{"*"},
			Backend: v1alpha1.Backend{URL: "http://127.0.0.1:9"},
			Verify:  &v1alpha1.Verification{BasicAuthSecretRef: &v1alpha1.LocalObjectReference{Name: "hook"}}},
	}
	for _, r := range []*v1alpha1.CallbackRoute{noSecret, noService, openim} {
		g.Expect(k8s.Create(ctx, r)).To(Succeed())
	}

	r := expectCondition(t, ns, "no-secret", v1alpha1.ConditionResolvedRefs, metav1.ConditionFalse, v1alpha1.ReasonSecretNotFound, ns+"/later")
	g.Expect(meta.IsStatusConditionTrue(r.Status.Conditions, v1alpha1.ConditionAccepted)).To(BeTrue(), "a missing reference is not a spec error")
	expectCondition(t, ns, "no-secret", v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonNotRouted, "not found")
	expectCondition(t, ns, "no-service", v1alpha1.ConditionResolvedRefs, metav1.ConditionFalse, v1alpha1.ReasonServiceNotFound, "backend")
	expectCondition(t, ns, "openim-basic", v1alpha1.ConditionResolvedRefs, metav1.ConditionFalse, v1alpha1.ReasonSecretNotFound, "hook")
	g.Eventually(func(g Gomega) {
		g.Expect(warningEvents(g, ns, "no-secret", EventRefNotFound)).NotTo(BeEmpty())
		g.Expect(warningEvents(g, ns, "no-service", EventRefNotFound)).NotTo(BeEmpty())
		g.Expect(tableRoute(g, ns, "no-secret")).To(BeNil())
	}, waitTimeout, pollInterval).Should(Succeed())

	// The Secret appears without its key, then with it.
	g.Expect(k8s.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "later"},
		Data: map[string][]byte{"other": []byte("x")}})).To(Succeed())
	expectCondition(t, ns, "no-secret", v1alpha1.ConditionResolvedRefs, metav1.ConditionFalse, v1alpha1.ReasonSecretNotFound, `"token"`)
	g.Eventually(func() error {
		s := &corev1.Secret{}
		if err := k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "later"}, s); err != nil {
			return err
		}
		s.Data["token"] = []byte("t0k3n")
		return k8s.Update(ctx, s)
	}, waitTimeout, pollInterval).Should(Succeed())
	expectCondition(t, ns, "no-secret", v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonRouted)

	// The Service appears with another port, then with the right one.
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "backend"},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 81}}}}
	g.Expect(k8s.Create(ctx, svc)).To(Succeed())
	expectCondition(t, ns, "no-service", v1alpha1.ConditionResolvedRefs, metav1.ConditionFalse, v1alpha1.ReasonServiceNotFound, "no port 80")
	g.Eventually(func() error {
		s := &corev1.Service{}
		if err := k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "backend"}, s); err != nil {
			return err
		}
		s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{Name: "http", Port: 80})
		s.Spec.Ports[0].Name = "other"
		return k8s.Update(ctx, s)
	}, waitTimeout, pollInterval).Should(Succeed())
	expectCondition(t, ns, "no-service", v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonRouted)

	// Basic auth Secret arrives; deleting the Service takes its route out again.
	g.Expect(k8s.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "hook"},
		Data: map[string][]byte{"username": []byte("im"), "password": []byte("pw")}})).To(Succeed())
	expectCondition(t, ns, "openim-basic", v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonRouted)
	g.Eventually(func(g Gomega) {
		g.Expect(tableRoute(g, ns, "openim-basic").BasicAuth).To(Equal(&routing.BasicAuth{Username: "im", Password: "pw"}))
	}, waitTimeout, pollInterval).Should(Succeed())
	g.Expect(k8s.Delete(ctx, svc)).To(Succeed())
	expectCondition(t, ns, "no-service", v1alpha1.ConditionResolvedRefs, metav1.ConditionFalse, v1alpha1.ReasonServiceNotFound)
	g.Eventually(func(g Gomega) { g.Expect(tableRoute(g, ns, "no-service")).To(BeNil()) }, waitTimeout, pollInterval).Should(Succeed())
}

func TestSecretRotationReachesTable(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := newNamespace(t)
	sec := tokenSecret(ns, "tencent-im", "first")
	g.Expect(k8s.Create(ctx, sec)).To(Succeed())
	r := tencentRoute(ns, "rotating", v1alpha1.ModeAsync, "C2C.*")
	r.Spec.Verify = &v1alpha1.Verification{TokenSecretRef: &v1alpha1.TokenSecretReference{Name: "tencent-im", PreviousKey: "previous"}}
	g.Expect(k8s.Create(ctx, r)).To(Succeed())
	g.Eventually(func(g Gomega) {
		cr := tableRoute(g, ns, "rotating")
		g.Expect(cr).NotTo(BeNil())
		g.Expect(cr.Tokens).To(Equal([]string{"first"}))
	}, waitTimeout, pollInterval).Should(Succeed())

	// Rotation: the old token moves to previous, the new one becomes current.
	sec.Data = map[string][]byte{"token": []byte("second"), "previous": []byte("first")}
	g.Expect(k8s.Update(ctx, sec)).To(Succeed())
	g.Eventually(func(g Gomega) {
		g.Expect(tableRoute(g, ns, "rotating").Tokens).To(Equal([]string{"second", "first"}))
	}, waitTimeout, pollInterval).Should(Succeed())

	// Rotation finished: previous removed.
	delete(sec.Data, "previous")
	g.Expect(k8s.Update(ctx, sec)).To(Succeed())
	g.Eventually(func(g Gomega) {
		g.Expect(tableRoute(g, ns, "rotating").Tokens).To(Equal([]string{"second"}))
	}, waitTimeout, pollInterval).Should(Succeed())
}

func TestDeletedRouteLeavesTable(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := newNamespace(t)
	g.Expect(k8s.Create(ctx, tencentRoute(ns, "short-lived", v1alpha1.ModeAsync, "*"))).To(Succeed())
	expectCondition(t, ns, "short-lived", v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonRouted)
	g.Eventually(func(g Gomega) { g.Expect(tableRoute(g, ns, "short-lived")).NotTo(BeNil()) }, waitTimeout, pollInterval).Should(Succeed())
	g.Expect(k8s.Delete(ctx, getRoute(g, ns, "short-lived"))).To(Succeed())
	g.Eventually(func(g Gomega) { g.Expect(tableRoute(g, ns, "short-lived")).To(BeNil()) }, waitTimeout, pollInterval).Should(Succeed())
}

func TestTableSecretsRepaired(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := newNamespace(t)
	g.Expect(k8s.Create(ctx, tencentRoute(ns, "kept", v1alpha1.ModeAsync, "State.*"))).To(Succeed())
	g.Eventually(func(g Gomega) { g.Expect(tableRoute(g, ns, "kept")).NotTo(BeNil()) }, waitTimeout, pollInterval).Should(Succeed())

	for _, name := range []string{tablestore.ManifestName(opts.Name), tablestore.ShardName(opts.Name, 0)} {
		old := &corev1.Secret{}
		g.Expect(k8s.Get(ctx, types.NamespacedName{Namespace: opts.Namespace, Name: name}, old)).To(Succeed())
		g.Expect(old.Labels).To(HaveKeyWithValue(LabelManagedBy, ManagedByValue))
		g.Expect(k8s.Delete(ctx, old)).To(Succeed())
		g.Eventually(func(g Gomega) {
			s := &corev1.Secret{}
			g.Expect(k8s.Get(ctx, types.NamespacedName{Namespace: opts.Namespace, Name: name}, s)).To(Succeed())
			g.Expect(s.UID).NotTo(Equal(old.UID))
			g.Expect(tableRoute(g, ns, "kept")).NotTo(BeNil())
		}, waitTimeout, pollInterval).Should(Succeed())
	}
}
