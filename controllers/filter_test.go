package controllers

import (
	"testing"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/callback-router/callback-router/api/v1alpha1"
)

// TestRouteFilterThroughAPIServer: a route's CEL filter goes through the real API server
// into the receiver's table; an invalid one makes the route Accepted=False, reason
// Invalid, with CEL's message, and takes it out of the table; fixing it brings it back.
func TestRouteFilterThroughAPIServer(t *testing.T) {
	g := NewWithT(t)
	im, team := newNamespace(t), newNamespace(t)
	app := newApp(im, "chat", grantAll)
	r := newRoute(team, "images", app, v1alpha1.ModeAsync, "C2C.CallbackAfterSendMsg")
	r.Spec.Filter = `body.MsgBody.exists(m, m.MsgType == "TIMImageElem")`
	create(t, app, r)
	expectCondition(t, r, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonRouted)
	g.Eventually(func(g Gomega) {
		cr := tableRoute(g, team, "images")
		g.Expect(cr).NotTo(BeNil())
		g.Expect(cr.Filter).To(Equal(r.Spec.Filter))
	}, waitTimeout, pollInterval).Should(Succeed())

	update(t, r, func(r *v1alpha1.CallbackRoute) { r.Spec.Filter = `body.MsgBody.exists(m, m.MsgTyp == "x") && bodyy.x` })
	expectCondition(t, r, v1alpha1.ConditionAccepted, metav1.ConditionFalse, v1alpha1.ReasonInvalid,
		"spec.filter", "undeclared reference to 'bodyy'")
	g.Eventually(func(g Gomega) { g.Expect(tableRoute(g, team, "images")).To(BeNil()) }, waitTimeout, pollInterval).Should(Succeed())

	update(t, r, func(r *v1alpha1.CallbackRoute) { r.Spec.Filter = `body.SendMsgResult != 0` })
	expectCondition(t, r, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonRouted)
	g.Eventually(func(g Gomega) {
		cr := tableRoute(g, team, "images")
		g.Expect(cr).NotTo(BeNil())
		g.Expect(cr.Filter).To(Equal(`body.SendMsgResult != 0`))
	}, waitTimeout, pollInterval).Should(Succeed())
}
