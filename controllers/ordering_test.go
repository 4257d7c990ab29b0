package controllers

import (
	"context"
	"testing"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/callback-router/callback-router/api/v1alpha1"
)

// TestOrderingGuaranteedCondition: an ordered route says whether its receiver can keep
// the order, from the receiver's replicas and spool kind, through the real API server:
// embedded spool with 2 replicas (the default) False MultipleReplicas; scaled to 1 True
// SingleReplica; JetStream True JetStream; without spec.ordering the condition goes.
// The compiled route carries the ordering and the delivery limits.
func TestOrderingGuaranteedCondition(t *testing.T) {
	g := NewWithT(t)
	internal, team := secondReceiverNamespace, newNamespace(t)
	recv := &v1alpha1.CallbackReceiver{ObjectMeta: metav1.ObjectMeta{Namespace: internal, Name: "ordering"}}
	app := newApp(internal, "ordering-app", grantAll)
	app.Spec.ReceiverRef = v1alpha1.ObjectReference{Name: "ordering"}
	route := newRoute(team, "ordered", app, v1alpha1.ModeAsync, "C2C.*")
	route.Spec.Ordering = &v1alpha1.Ordering{Key: v1alpha1.OrderingKeyConversation}
	conc := int32(4)
	route.Spec.Delivery = &v1alpha1.DeliveryLimits{MaxConcurrency: &conc}
	create(t, recv, app, route)

	expectCondition(t, route, v1alpha1.ConditionOrderingGuaranteed, metav1.ConditionFalse, v1alpha1.ReasonMultipleReplicas, "2 pods")
	expectHealth(t, route, "CallbackRoute", status.CurrentStatus) // a caveat, not a failure

	update(t, recv, func(r *v1alpha1.CallbackReceiver) { one := int32(1); r.Spec.Replicas = &one })
	expectCondition(t, route, v1alpha1.ConditionOrderingGuaranteed, metav1.ConditionTrue, v1alpha1.ReasonSingleReplica)

	update(t, recv, func(r *v1alpha1.CallbackReceiver) {
		three := int32(3)
		r.Spec.Replicas = &three
		r.Spec.Spool = &v1alpha1.Spool{JetStream: &v1alpha1.JetStreamSpool{URL: "nats://127.0.0.1:4222"}}
	})
	expectCondition(t, route, v1alpha1.ConditionOrderingGuaranteed, metav1.ConditionTrue, v1alpha1.ReasonJetStream)
	g.Eventually(func(g Gomega) {
		s := readTable(g, internal, "ordering")
		g.Expect(s.Routes).To(HaveLen(1))
		g.Expect(s.Routes[0].Ordered).To(BeTrue())
		g.Expect(s.Routes[0].MaxConcurrency).To(Equal(4))
	}, waitTimeout, pollInterval).Should(Succeed())

	update(t, route, func(r *v1alpha1.CallbackRoute) { r.Spec.Ordering = nil })
	expectCondition(t, route, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonRouted)
	g.Eventually(func(g Gomega) {
		r := &v1alpha1.CallbackRoute{}
		g.Expect(k8s.Get(context.Background(), client.ObjectKeyFromObject(route), r)).To(Succeed())
		g.Expect(r.Status.ObservedGeneration).To(Equal(r.Generation))
		for _, c := range r.Status.Conditions {
			g.Expect(c.Type).NotTo(Equal(v1alpha1.ConditionOrderingGuaranteed))
		}
	}, waitTimeout, pollInterval).Should(Succeed())
}
