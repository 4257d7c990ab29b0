package controllers

import (
	"context"
	"testing"

	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/callback-router/callback-router/api/v1alpha1"
)

// TestUnknownCommandsCondition: a typo in a route's commands leaves it Accepted and
// routed, with UnknownCommands=True (did-you-mean) and one Warning event; fixing it turns
// the condition False. A Sync route on an after-callback is warned about; @after expands.
func TestUnknownCommandsCondition(t *testing.T) {
	g := NewWithT(t)
	im, team := newNamespace(t), newNamespace(t)
	app := newApp(im, "chat", grantAll)
	typo := newRoute(team, "typo", app, v1alpha1.ModeAsync, "C2C.CallbackAfterSendMessage")
	syncAfter := newRoute(team, "sync-after", app, v1alpha1.ModeSync, "Group.CallbackAfterSendMsg")
	after := newRoute(team, "all-after", app, v1alpha1.ModeAsync, "@after")
	create(t, app, typo, syncAfter, after)

	expectCondition(t, typo, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonRouted)
	expectCondition(t, typo, v1alpha1.ConditionUnknownCommands, metav1.ConditionTrue, v1alpha1.ReasonUnknownCommands,
		"C2C.CallbackAfterSendMessage (did you mean C2C.CallbackAfterSendMsg?)")
	g.Eventually(func(g Gomega) {
		g.Expect(warningEvents(g, "CallbackRoute", team, "typo", v1alpha1.ReasonUnknownCommands)).To(HaveLen(1))
		g.Expect(warningEvents(g, "CallbackRoute", team, "sync-after", v1alpha1.ReasonSyncOnAfterCallback)).To(HaveLen(1))
	}, waitTimeout, pollInterval).Should(Succeed())
	expectCondition(t, syncAfter, v1alpha1.ConditionAccepted, metav1.ConditionTrue, v1alpha1.ReasonAccepted,
		"warning: mode Sync on Group.CallbackAfterSendMsg")
	expectCondition(t, after, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonRouted)
	expectCondition(t, after, v1alpha1.ConditionUnknownCommands, metav1.ConditionFalse, v1alpha1.ReasonCommandsKnown)
	g.Eventually(func(g Gomega) {
		cr := tableRoute(g, team, "all-after")
		g.Expect(cr).NotTo(BeNil())
		g.Expect(cr.Commands).To(ContainElements("C2C.CallbackAfterSendMsg", "Push.OfflinePush", "State.StateChange"))
		g.Expect(cr.Commands).NotTo(ContainElement("C2C.CallbackBeforeSendMsg"))
	}, waitTimeout, pollInterval).Should(Succeed())

	update(t, typo, func(r *v1alpha1.CallbackRoute) { r.Spec.Commands = []string{"C2C.CallbackAfterSendMsg"} })
	expectCondition(t, typo, v1alpha1.ConditionUnknownCommands, metav1.ConditionFalse, v1alpha1.ReasonCommandsKnown)
	g.Expect(warningEvents(g, "CallbackRoute", team, "typo", v1alpha1.ReasonUnknownCommands)).To(HaveLen(1), "no event when the condition clears")

	// Without its app the route has no provider, so no verdict: the condition goes.
	g.Expect(k8s.Delete(context.Background(), app)).To(Succeed())
	expectCondition(t, typo, v1alpha1.ConditionAccepted, metav1.ConditionFalse, v1alpha1.ReasonAppNotFound)
	g.Expect(k8s.Get(context.Background(), client.ObjectKeyFromObject(typo), typo)).To(Succeed())
	g.Expect(meta.FindStatusCondition(typo.Status.Conditions, v1alpha1.ConditionUnknownCommands)).To(BeNil())
}
