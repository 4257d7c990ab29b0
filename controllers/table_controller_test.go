package controllers

import (
	"context"
	"fmt"
	"sync/atomic"
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
	"github.com/callback-router/callback-router/controllers/dataplane"
	"github.com/callback-router/callback-router/webhook/routing"
	"github.com/callback-router/callback-router/webhook/tablestore"
)

// appIDs gives each test app its own SDKAppID, so tests never conflict with each other.
var appIDs atomic.Int64

func nextAppID() string { return fmt.Sprint(1401000000 + appIDs.Add(1)) } // clear of 1400000001 (examples, docs)

// loopbackBackends is the backendURLs of the tests' apps: their routes' url backends.
const loopbackBackends = "http://127.0.0.1:9"

// newApp is a TencentIM app on the tests' receiver, with its own app ID; its routes may
// use url backends under loopbackBackends.
func newApp(ns, name string, grants ...v1alpha1.RouteGrant) *v1alpha1.CallbackApp {
	return &v1alpha1.CallbackApp{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: v1alpha1.CallbackAppSpec{
			Provider: v1alpha1.ProviderTencentIM, AppID: nextAppID(),
			ReceiverRef:   v1alpha1.ObjectReference{Namespace: opts.Namespace, Name: opts.Name},
			AllowedRoutes: grants,
			BackendURLs:   []string{loopbackBackends},
		},
	}
}

var grantAll = v1alpha1.RouteGrant{Namespaces: v1alpha1.Namespaces{From: v1alpha1.NamespacesFromAll}}

func grantSelector(key, value string, modes []v1alpha1.Mode, commands ...string) v1alpha1.RouteGrant {
	return v1alpha1.RouteGrant{
		Namespaces: v1alpha1.Namespaces{From: v1alpha1.NamespacesFromSelector,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{key: value}}},
		Modes: modes, Commands: commands,
	}
}

// newRoute is a route of app to a loopback url backend.
func newRoute(ns, name string, app *v1alpha1.CallbackApp, mode v1alpha1.Mode, commands ...string) *v1alpha1.CallbackRoute {
	return &v1alpha1.CallbackRoute{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: v1alpha1.CallbackRouteSpec{
			AppRef:   v1alpha1.ObjectReference{Namespace: app.Namespace, Name: app.Name},
			Commands: commands,
			Mode:     mode,
			Backend:  v1alpha1.Backend{URL: loopbackBackends + "/" + name},
		},
	}
}

func tokenSecret(ns, name, token string) *corev1.Secret {
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Data: map[string][]byte{"token": []byte(token)}}
}

func create(t *testing.T, objs ...client.Object) {
	t.Helper()
	for _, o := range objs {
		NewWithT(t).Expect(k8s.Create(context.Background(), o)).To(Succeed())
	}
}

// update re-reads obj and applies change until the write does not conflict.
func update[T client.Object](t *testing.T, obj T, change func(T)) {
	t.Helper()
	NewWithT(t).Eventually(func() error {
		if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(obj), obj); err != nil {
			return err
		}
		change(obj)
		return k8s.Update(context.Background(), obj)
	}, waitTimeout, pollInterval).Should(Succeed())
}

// expectCondition waits until obj (a *CallbackRoute or *CallbackApp, re-read into obj)
// has the condition for its current generation.
func expectCondition(t *testing.T, obj client.Object, typ string, status metav1.ConditionStatus, reason string, msg ...string) {
	t.Helper()
	NewWithT(t).Eventually(func(g Gomega) {
		g.Expect(k8s.Get(context.Background(), client.ObjectKeyFromObject(obj), obj)).To(Succeed())
		var conds []metav1.Condition
		var observed int64
		switch o := obj.(type) {
		case *v1alpha1.CallbackRoute:
			conds, observed = o.Status.Conditions, o.Status.ObservedGeneration
		case *v1alpha1.CallbackApp:
			conds, observed = o.Status.Conditions, o.Status.ObservedGeneration
		}
		c := meta.FindStatusCondition(conds, typ)
		g.Expect(c).NotTo(BeNil(), "condition %s", typ)
		g.Expect(c.ObservedGeneration).To(Equal(obj.GetGeneration()))
		g.Expect(observed).To(Equal(obj.GetGeneration()))
		g.Expect(c.Status).To(Equal(status), "%s: %s", typ, c.Message)
		g.Expect(c.Reason).To(Equal(reason), "%s: %s", typ, c.Message)
		for _, m := range msg {
			g.Expect(c.Message).To(ContainSubstring(m))
		}
	}, waitTimeout, pollInterval).Should(Succeed())
}

// readTable reads a receiver's stored table. A read that falls between a pass's shard and
// manifest writes sees them disagree (the receiver ignores such a table too): it reads
// again until they agree.
func readTable(g Gomega, ns, name string) *routing.Snapshot {
	var s *routing.Snapshot
	var err error
	for range 100 {
		if s, err = tablestore.ReadSnapshot(context.Background(), k8s, ns, name); err == nil {
			return s
		}
		time.Sleep(20 * time.Millisecond)
	}
	g.Expect(err).NotTo(HaveOccurred())
	return s
}

// tableRoute returns the compiled route ns/name from the default receiver's stored table, or nil.
func tableRoute(g Gomega, ns, name string) *routing.CompiledRoute {
	s := readTable(g, opts.Namespace, opts.Name)
	for i := range s.Routes {
		if s.Routes[i].Namespace == ns && s.Routes[i].Name == name {
			return &s.Routes[i]
		}
	}
	return nil
}

// warningEvents lists the Warning events about the kind ns/name with reason.
func warningEvents(g Gomega, kind, ns, name, reason string) []eventsv1.Event {
	list := &eventsv1.EventList{}
	g.Expect(k8s.List(context.Background(), list, client.InNamespace(ns))).To(Succeed())
	var out []eventsv1.Event
	for _, e := range list.Items {
		if e.Regarding.Name == name && e.Regarding.Kind == kind && e.Type == corev1.EventTypeWarning && e.Reason == reason {
			out = append(out, e)
		}
	}
	return out
}

func TestValidRouteIsReadyAndInTable(t *testing.T) {
	g := NewWithT(t)
	im, team := newNamespace(t), newNamespace(t)
	app := newApp(im, "chat", grantAll)
	app.Spec.Verify = &v1alpha1.AppVerification{TokenSecretRef: &v1alpha1.TokenSecretReference{Name: "tencent-im"}}
	r := newRoute(team, "archive", app, v1alpha1.ModeAsync, "C2C.CallbackAfterSendMsg", "Group.*")
	r.Spec.Backend = v1alpha1.Backend{Service: &v1alpha1.ServiceReference{Name: "archiver", Port: 8080}, Path: "/im"}
	create(t, tokenSecret(im, "tencent-im", "s3cret"), &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: team, Name: "archiver"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 8080}}},
	}, app, r)

	expectCondition(t, r, v1alpha1.ConditionAccepted, metav1.ConditionTrue, v1alpha1.ReasonAccepted)
	expectCondition(t, r, v1alpha1.ConditionResolvedRefs, metav1.ConditionTrue, v1alpha1.ReasonResolvedRefs)
	expectCondition(t, r, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonRouted)
	g.Expect(r.Status.URL).To(Equal("/tencent?SdkAppid=" + app.Spec.AppID))
	expectCondition(t, app, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonRouted)
	g.Expect(app.Status.URL).To(Equal("/tencent?SdkAppid=" + app.Spec.AppID))
	g.Expect(app.Status.AttachedRoutes).To(BeEquivalentTo(1))

	cr := tableRoute(g, team, "archive")
	g.Expect(cr).NotTo(BeNil())
	g.Expect(cr.URL).To(Equal("http://archiver." + team + ".svc:8080/im"))
	g.Expect(cr.Tokens).To(Equal([]string{"s3cret"}))
	g.Expect(cr.App).To(Equal(im + "/chat"))
	g.Expect(cr.ForwardSignature).To(BeFalse())
	g.Expect(cr.Commands).To(Equal([]string{"C2C.CallbackAfterSendMsg", "Group.*"}))

	// A spec change bumps the generation; the conditions follow it.
	update(t, r, func(r *v1alpha1.CallbackRoute) { r.Spec.Commands = append(r.Spec.Commands, "Push.*") })
	expectCondition(t, r, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonRouted)
	g.Expect(r.Generation).To(Equal(int64(2)))
	// The app's owner allows forwarding the Sign: the compiled route says so.
	update(t, app, func(a *v1alpha1.CallbackApp) { a.Spec.Verify.ForwardSignature = true })
	g.Eventually(func(g Gomega) {
		cr := tableRoute(g, team, "archive")
		g.Expect(cr.Commands).To(ContainElement("Push.*"))
		g.Expect(cr.ForwardSignature).To(BeTrue())
	}, waitTimeout, pollInterval).Should(Succeed())
}

// TestAllowedRoutesMatrix: Same, All and Selector, with modes and commands limits,
// against the real API server and the manager.
func TestAllowedRoutesMatrix(t *testing.T) {
	im := newNamespace(t)
	analytics := newNamespace(t, "im-callbacks", "analytics")
	chat := newNamespace(t, "im-callbacks", "chat")
	other := newNamespace(t)
	app := newApp(im, "chat",
		v1alpha1.RouteGrant{Namespaces: v1alpha1.Namespaces{From: v1alpha1.NamespacesFromSame}},
		grantSelector("im-callbacks", "chat", nil),
		grantSelector("im-callbacks", "analytics", []v1alpha1.Mode{v1alpha1.ModeAsync}, "Push.*", "C2C.CallbackAfterSendMsg"))
	allApp := newApp(im, "open", grantAll)
	tests := []struct {
		route  *v1alpha1.CallbackRoute
		reason string
		msg    string
	}{
		{newRoute(im, "same-ns-sync", app, v1alpha1.ModeSync, "*"), v1alpha1.ReasonAccepted, ""},
		{newRoute(chat, "selected-sync", app, v1alpha1.ModeSync, "C2C.CallbackBeforeSendMsg"), v1alpha1.ReasonAccepted, ""},
		{newRoute(analytics, "async-in-limits", app, v1alpha1.ModeAsync, "Push.*", "C2C.CallbackAfterSendMsg"), v1alpha1.ReasonAccepted, ""},
		{newRoute(analytics, "sync-not-granted", app, v1alpha1.ModeSync, "C2C.CallbackAfterSendMsg"), v1alpha1.ReasonNotAllowedByApp, "mode Sync is not allowed"},
		{newRoute(analytics, "command-not-granted", app, v1alpha1.ModeAsync, "C2C.*"), v1alpha1.ReasonNotAllowedByApp, "commands C2C.* are not allowed"},
		{newRoute(other, "namespace-not-granted", app, v1alpha1.ModeAsync, "Push.*"), v1alpha1.ReasonNotAllowedByApp, "namespace " + other + " is not allowed"},
		{newRoute(other, "all-admits", allApp, v1alpha1.ModeSync, "*"), v1alpha1.ReasonAccepted, ""},
	}
	create(t, app, allApp)
	for _, tc := range tests {
		create(t, tc.route)
	}
	for _, tc := range tests {
		t.Run(tc.route.Name, func(t *testing.T) {
			ok := tc.reason == v1alpha1.ReasonAccepted
			status := map[bool]metav1.ConditionStatus{true: metav1.ConditionTrue, false: metav1.ConditionFalse}[ok]
			expectCondition(t, tc.route, v1alpha1.ConditionAccepted, status, tc.reason, tc.msg)
			expectCondition(t, tc.route, v1alpha1.ConditionReady, status, map[bool]string{true: v1alpha1.ReasonRouted, false: v1alpha1.ReasonNotRouted}[ok])
			NewWithT(t).Expect(tableRoute(NewWithT(t), tc.route.Namespace, tc.route.Name) != nil).To(Equal(ok))
		})
	}
	expectCondition(t, app, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonRouted)
	NewWithT(t).Expect(app.Status.AttachedRoutes).To(BeEquivalentTo(3))
	NewWithT(t).Eventually(func(g Gomega) {
		g.Expect(warningEvents(g, "CallbackRoute", analytics, "sync-not-granted", v1alpha1.ReasonNotAllowedByApp)).To(HaveLen(1))
	}, waitTimeout, pollInterval).Should(Succeed())

	// A Sync route from a namespace allowed only Async never answers: the receiver's table
	// has no Sync candidate for its command.
	g := NewWithT(t)
	tab, err := routing.NewTable(readTable(g, opts.Namespace, opts.Name))
	g.Expect(err).NotTo(HaveOccurred())
	m := tab.App(v1alpha1.ProviderTencentIM, app.Spec.AppID).Lookup("C2C.CallbackAfterSendMsg")
	g.Expect(m).NotTo(BeNil())
	for _, r := range m.Sync {
		g.Expect(r.Namespace).NotTo(Equal(analytics), "a route of an Async-only namespace may answer")
	}
	g.Expect(m.Sync).To(HaveLen(1)) // same-ns-sync's "*"
}

// TestTakingAllowancesAwayTakesRoutesOut: relabelling a namespace or editing the app takes
// the route out of the table in the same pass that sets its status: once the status says
// NotAllowedByApp, the published table no longer has it.
func TestTakingAllowancesAwayTakesRoutesOut(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	im := newNamespace(t)
	team := newNamespace(t, "im-callbacks", "chat")
	app := newApp(im, "chat", grantSelector("im-callbacks", "chat", nil))
	sync := newRoute(team, "moderate", app, v1alpha1.ModeSync, "C2C.CallbackBeforeSendMsg")
	async := newRoute(team, "archive", app, v1alpha1.ModeAsync, "C2C.CallbackAfterSendMsg")
	create(t, app, sync, async)
	expectCondition(t, sync, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonRouted)
	expectCondition(t, async, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonRouted)

	// The app's owner allows the namespace Async only: the Sync route leaves.
	update(t, app, func(a *v1alpha1.CallbackApp) { a.Spec.AllowedRoutes[0].Modes = []v1alpha1.Mode{v1alpha1.ModeAsync} })
	expectCondition(t, sync, v1alpha1.ConditionAccepted, metav1.ConditionFalse, v1alpha1.ReasonNotAllowedByApp, "mode Sync")
	g.Expect(tableRoute(g, team, "moderate")).To(BeNil(), "status says out, the table still has it")
	g.Expect(tableRoute(g, team, "archive")).NotTo(BeNil())

	// The namespace loses its label: the Async route leaves too.
	ns := &corev1.Namespace{}
	g.Expect(k8s.Get(ctx, types.NamespacedName{Name: team}, ns)).To(Succeed())
	update(t, ns, func(n *corev1.Namespace) { n.Labels["im-callbacks"] = "elsewhere" })
	expectCondition(t, async, v1alpha1.ConditionAccepted, metav1.ConditionFalse, v1alpha1.ReasonNotAllowedByApp, "namespace "+team)
	g.Expect(tableRoute(g, team, "archive")).To(BeNil(), "status says out, the table still has it")
	expectCondition(t, app, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonRouted)
	g.Expect(app.Status.AttachedRoutes).To(BeZero())

	// Relabelled back: it returns.
	update(t, ns, func(n *corev1.Namespace) { n.Labels["im-callbacks"] = "chat" })
	expectCondition(t, async, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonRouted)
}

func TestAppDeletedAppNotFound(t *testing.T) {
	g := NewWithT(t)
	im, team := newNamespace(t), newNamespace(t)
	app := newApp(im, "chat", grantAll)
	r := newRoute(team, "archive", app, v1alpha1.ModeAsync, "*")
	orphan := newRoute(team, "orphan", &v1alpha1.CallbackApp{ObjectMeta: metav1.ObjectMeta{Namespace: im, Name: "never"}}, v1alpha1.ModeAsync, "*")
	create(t, app, r, orphan)
	expectCondition(t, r, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonRouted)
	expectCondition(t, orphan, v1alpha1.ConditionAccepted, metav1.ConditionFalse, v1alpha1.ReasonAppNotFound, "CallbackApp "+im+"/never not found")

	g.Expect(k8s.Delete(context.Background(), app)).To(Succeed())
	expectCondition(t, r, v1alpha1.ConditionAccepted, metav1.ConditionFalse, v1alpha1.ReasonAppNotFound, im+"/chat")
	g.Expect(tableRoute(g, team, "archive")).To(BeNil())
	g.Eventually(func(g Gomega) {
		g.Expect(warningEvents(g, "CallbackRoute", team, "archive", v1alpha1.ReasonAppNotFound)).To(HaveLen(1))
	}, waitTimeout, pollInterval).Should(Succeed())
}

// TestAppConflict: two apps claiming one provider+appID on a receiver: the younger is
// Conflict (one Warning event), its routes stay out; when the older goes, it takes over.
func TestAppConflict(t *testing.T) {
	g := NewWithT(t)
	nsA, nsB := newNamespace(t), newNamespace(t)
	older := newApp(nsA, "chat", grantAll)
	create(t, older)
	expectCondition(t, older, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonRouted)
	// creationTimestamp has one-second resolution: make the second app clearly younger.
	time.Sleep(1100 * time.Millisecond)
	younger := newApp(nsB, "chat-claim", grantAll)
	younger.Spec.AppID = older.Spec.AppID
	r := newRoute(nsB, "steal", younger, v1alpha1.ModeAsync, "*")
	create(t, younger, r)
	expectCondition(t, younger, v1alpha1.ConditionAccepted, metav1.ConditionFalse, v1alpha1.ReasonConflict, "older CallbackApp "+nsA+"/chat")
	expectCondition(t, younger, v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonNotRouted)
	expectCondition(t, r, v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonAppNotReady, "already claimed")
	expectCondition(t, older, v1alpha1.ConditionAccepted, metav1.ConditionTrue, v1alpha1.ReasonAccepted)
	g.Expect(tableRoute(g, nsB, "steal")).To(BeNil())
	g.Eventually(func(g Gomega) {
		g.Expect(warningEvents(g, "CallbackApp", nsB, "chat-claim", v1alpha1.ReasonConflict)).To(HaveLen(1))
	}, waitTimeout, pollInterval).Should(Succeed())
	g.Consistently(func(g Gomega) {
		g.Expect(warningEvents(g, "CallbackApp", nsB, "chat-claim", v1alpha1.ReasonConflict)).To(HaveLen(1), "one event per change, not per pass")
	}, 2*time.Second, 200*time.Millisecond).Should(Succeed())

	g.Expect(k8s.Delete(context.Background(), older)).To(Succeed())
	expectCondition(t, younger, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonRouted)
	expectCondition(t, r, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonRouted)
}

// TestBackendURLNotPermitted: a backend.url outside the app's backendURLs is
// ResolvedRefs=False RefNotPermitted; allowing it routes it.
func TestBackendURLNotPermitted(t *testing.T) {
	g := NewWithT(t)
	im, team := newNamespace(t), newNamespace(t)
	app := newApp(im, "chat", grantAll)
	r := newRoute(team, "exfiltrate", app, v1alpha1.ModeAsync, "*")
	r.Spec.Backend.URL = "http://127.0.0.2:9/collect"
	create(t, app, r)
	expectCondition(t, r, v1alpha1.ConditionResolvedRefs, metav1.ConditionFalse, v1alpha1.ReasonRefNotPermitted, "http://127.0.0.2:9/collect")
	expectCondition(t, r, v1alpha1.ConditionAccepted, metav1.ConditionTrue, v1alpha1.ReasonAccepted)
	g.Expect(tableRoute(g, team, "exfiltrate")).To(BeNil())
	g.Eventually(func(g Gomega) {
		g.Expect(warningEvents(g, "CallbackRoute", team, "exfiltrate", v1alpha1.ReasonRefNotPermitted)).To(HaveLen(1))
	}, waitTimeout, pollInterval).Should(Succeed())

	update(t, app, func(a *v1alpha1.CallbackApp) {
		a.Spec.BackendURLs = append(a.Spec.BackendURLs, "http://127.0.0.2:9/collect")
	})
	expectCondition(t, r, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonRouted)
}

// TestSecretsOnlyInAppNamespace: a Secret of the referenced name in the route's namespace
// is never used; the app's own namespace is.
func TestSecretsOnlyInAppNamespace(t *testing.T) {
	g := NewWithT(t)
	im, team := newNamespace(t), newNamespace(t)
	app := newApp(im, "chat", grantAll)
	app.Spec.Verify = &v1alpha1.AppVerification{TokenSecretRef: &v1alpha1.TokenSecretReference{Name: "tencent-im", PreviousKey: "previous"}}
	r := newRoute(team, "archive", app, v1alpha1.ModeAsync, "*")
	create(t, tokenSecret(team, "tencent-im", "planted-by-the-team"), app, r)
	expectCondition(t, app, v1alpha1.ConditionResolvedRefs, metav1.ConditionFalse, v1alpha1.ReasonSecretNotFound, im+"/tencent-im")
	expectCondition(t, r, v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonAppNotReady, "not found")
	g.Expect(tableRoute(g, team, "archive")).To(BeNil())

	sec := tokenSecret(im, "tencent-im", "first")
	create(t, sec)
	expectCondition(t, r, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonRouted)
	g.Expect(tableRoute(g, team, "archive").Tokens).To(Equal([]string{"first"}))

	// Rotation reaches the table: the old token moves to previous.
	update(t, sec, func(s *corev1.Secret) {
		s.Data = map[string][]byte{"token": []byte("second"), "previous": []byte("first")}
	})
	g.Eventually(func(g Gomega) {
		g.Expect(tableRoute(g, team, "archive").Tokens).To(Equal([]string{"second", "first"}))
	}, waitTimeout, pollInterval).Should(Succeed())
}

func TestConflictingSyncRoutes(t *testing.T) {
	g := NewWithT(t)
	im, nsA, nsB := newNamespace(t), newNamespace(t), newNamespace(t)
	app := newApp(im, "chat", grantAll)
	winner := newRoute(nsA, "moderation", app, v1alpha1.ModeSync, "C2C.CallbackBeforeSendMsg")
	create(t, app, winner)
	expectCondition(t, winner, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonRouted)
	time.Sleep(1100 * time.Millisecond)
	loser := newRoute(nsB, "moderation-too", app, v1alpha1.ModeSync, "C2C.CallbackBeforeSendMsg")
	archive := newRoute(nsB, "archive", app, v1alpha1.ModeAsync, "C2C.CallbackBeforeSendMsg")
	create(t, loser, archive)

	expectCondition(t, loser, v1alpha1.ConditionAccepted, metav1.ConditionFalse, v1alpha1.ReasonConflict, nsA+"/moderation")
	expectCondition(t, loser, v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonNotRouted)
	expectCondition(t, archive, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonRouted)
	g.Eventually(func(g Gomega) {
		g.Expect(tableRoute(g, nsB, "moderation-too")).To(BeNil())
		g.Expect(warningEvents(g, "CallbackRoute", nsB, "moderation-too", v1alpha1.ReasonConflict)).To(HaveLen(1))
	}, waitTimeout, pollInterval).Should(Succeed())

	g.Expect(k8s.Delete(context.Background(), winner)).To(Succeed())
	expectCondition(t, loser, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonRouted)
}

func TestUnresolvedBackend(t *testing.T) {
	g := NewWithT(t)
	im, team := newNamespace(t), newNamespace(t)
	app := newApp(im, "chat", grantAll)
	r := newRoute(team, "no-service", app, v1alpha1.ModeAsync, "Group.*")
	r.Spec.Backend = v1alpha1.Backend{Service: &v1alpha1.ServiceReference{Name: "backend", Port: 80}}
	create(t, app, r)
	expectCondition(t, r, v1alpha1.ConditionResolvedRefs, metav1.ConditionFalse, v1alpha1.ReasonBackendNotFound, "backend")
	g.Expect(meta.IsStatusConditionTrue(r.Status.Conditions, v1alpha1.ConditionAccepted)).To(BeTrue(), "a missing reference is not a spec error")

	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: team, Name: "backend"},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 81}}}}
	create(t, svc)
	expectCondition(t, r, v1alpha1.ConditionResolvedRefs, metav1.ConditionFalse, v1alpha1.ReasonBackendNotFound, "no port 80")
	update(t, svc, func(s *corev1.Service) {
		s.Spec.Ports = []corev1.ServicePort{{Name: "other", Port: 81}, {Name: "http", Port: 80}}
	})
	expectCondition(t, r, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonRouted)
	g.Expect(k8s.Delete(context.Background(), svc)).To(Succeed())
	expectCondition(t, r, v1alpha1.ConditionResolvedRefs, metav1.ConditionFalse, v1alpha1.ReasonBackendNotFound)
	g.Expect(tableRoute(g, team, "no-service")).To(BeNil())
}

// TestReceiversScopeApps: a second receiver admitting only its own namespace's apps gets
// a table of its own with only them; an app of another namespace is NotAllowedByReceiver.
func TestReceiversScopeApps(t *testing.T) {
	g := NewWithT(t)
	// A receiver namespace of the manager under test (--receiver-namespaces): receivers
	// elsewhere are not run.
	internal, team := secondReceiverNamespace, newNamespace(t)
	recv := &v1alpha1.CallbackReceiver{ObjectMeta: metav1.ObjectMeta{Namespace: internal, Name: "internal"}}
	onInternal := func(a *v1alpha1.CallbackApp) *v1alpha1.CallbackApp {
		a.Spec.ReceiverRef = v1alpha1.ObjectReference{Name: "internal"}
		return a
	}
	own := onInternal(newApp(internal, "openim", grantAll))
	foreign := onInternal(newApp(team, "foreign", grantAll))
	foreign.Spec.ReceiverRef.Namespace = internal
	lost := newApp(team, "lost", grantAll)
	lost.Spec.ReceiverRef = v1alpha1.ObjectReference{Name: "missing"}
	route := newRoute(team, "r", own, v1alpha1.ModeAsync, "*")
	create(t, recv, own, foreign, lost, route)
	expectCondition(t, own, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonRouted, internal+"/internal")
	// The route may come a pass after its app.
	expectCondition(t, route, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonRouted)
	expectCondition(t, foreign, v1alpha1.ConditionAccepted, metav1.ConditionFalse, v1alpha1.ReasonNotAllowedByReceiver, "namespace "+team)
	expectCondition(t, lost, v1alpha1.ConditionAccepted, metav1.ConditionFalse, v1alpha1.ReasonReceiverNotFound, team+"/missing")

	s := readTable(g, internal, "internal")
	g.Expect(s.Apps).To(HaveLen(1))
	g.Expect(s.Apps[0].Name).To(Equal("openim"))
	g.Expect(s.Routes).To(HaveLen(1))
	g.Expect(tableRoute(g, team, "r")).To(BeNil(), "the default receiver's table has another receiver's route")
	manifest := &corev1.Secret{}
	g.Expect(k8s.Get(context.Background(), types.NamespacedName{Namespace: internal, Name: tablestore.ManifestName("internal")}, manifest)).To(Succeed())
	g.Expect(manifest.OwnerReferences).To(HaveLen(1))
	g.Expect(manifest.OwnerReferences[0].UID).To(Equal(recv.UID))
}

func TestTableSecretsRepaired(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	im := newNamespace(t)
	app := newApp(im, "chat")
	create(t, app, newRoute(im, "kept", app, v1alpha1.ModeAsync, "State.*"))
	g.Eventually(func(g Gomega) { g.Expect(tableRoute(g, im, "kept")).NotTo(BeNil()) }, waitTimeout, pollInterval).Should(Succeed())

	for _, name := range []string{tablestore.ManifestName(opts.Name), tablestore.ShardName(opts.Name, 0)} {
		old := &corev1.Secret{}
		g.Expect(k8s.Get(ctx, types.NamespacedName{Namespace: opts.Namespace, Name: name}, old)).To(Succeed())
		g.Expect(old.Labels).To(HaveKeyWithValue(dataplane.LabelManagedBy, dataplane.ManagedByValue))
		g.Expect(k8s.Delete(ctx, old)).To(Succeed())
		g.Eventually(func(g Gomega) {
			s := &corev1.Secret{}
			g.Expect(k8s.Get(ctx, types.NamespacedName{Namespace: opts.Namespace, Name: name}, s)).To(Succeed())
			g.Expect(s.UID).NotTo(Equal(old.UID))
			g.Expect(tableRoute(g, im, "kept")).NotTo(BeNil())
		}, waitTimeout, pollInterval).Should(Succeed())
	}
}
