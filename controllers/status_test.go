package controllers

import (
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/callback-router/callback-router/api/v1alpha1"
	"github.com/callback-router/callback-router/webhook/routing"
)

func TestSetStatusAndUpToDate(t *testing.T) {
	ok := func(reason string) routing.Cond { return routing.Cond{True: true, Reason: reason, Message: "ok"} }
	routed := routing.RouteStatus{Accepted: ok(v1alpha1.ReasonAccepted), ResolvedRefs: ok(v1alpha1.ReasonResolvedRefs),
		Ready: ok(v1alpha1.ReasonRouted), URL: "/openim/prod"}
	conflict := routed
	conflict.Accepted = routing.Cond{Reason: v1alpha1.ReasonConflict, Message: "lost to a/b"}
	conflict.Ready = routing.Cond{Reason: v1alpha1.ReasonNotRouted, Message: "Not routed: lost to a/b"}

	tests := map[string]struct {
		// from is the outcome the status was set for first, to the next one.
		from, to routing.RouteStatus
		// genFrom and genTo are the route generations of the two passes.
		genFrom, genTo int64
		// upToDate says whether the first status already matches the second outcome.
		upToDate bool
		// readyTransitions says whether Ready's lastTransitionTime must move.
		readyTransitions bool
	}{
		"same outcome, same generation":     {from: routed, to: routed, genFrom: 1, genTo: 1, upToDate: true},
		"same outcome, new generation":      {from: routed, to: routed, genFrom: 1, genTo: 2},
		"routed to conflict":                {from: routed, to: conflict, genFrom: 1, genTo: 1, readyTransitions: true},
		"conflict to routed (Stalled goes)": {from: conflict, to: routed, genFrom: 1, genTo: 1, readyTransitions: true},
		"conflict message changes": {from: conflict, to: func() routing.RouteStatus {
			c := conflict
			c.Accepted.Message = "lost to c/d"
			return c
		}(), genFrom: 1, genTo: 1},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			g := NewWithT(t)
			var s v1alpha1.CallbackRouteStatus
			set := func(gen int64, st routing.RouteStatus) { setRouteStatus(&s, gen, &st) }
			upToDate := func(gen int64, st routing.RouteStatus) bool { return routeStatusUpToDate(&s, gen, &st) }
			set(tc.genFrom, tc.from)
			g.Expect(upToDate(tc.genFrom, tc.from)).To(BeTrue())
			// Accepted, ResolvedRefs and Ready, and Stalled while refused (Conflict).
			wantConds := 3
			if !tc.from.Accepted.True {
				wantConds = 4
				g.Expect(meta.FindStatusCondition(s.Conditions, v1alpha1.ConditionStalled).Reason).To(Equal(tc.from.Accepted.Reason))
			}
			g.Expect(s.Conditions).To(HaveLen(wantConds))
			for _, c := range s.Conditions {
				g.Expect(c.ObservedGeneration).To(Equal(tc.genFrom))
				g.Expect(c.Reason).NotTo(BeEmpty(), "the API requires a reason")
			}
			g.Expect(upToDate(tc.genTo, tc.to)).To(Equal(tc.upToDate))

			// Age the transition times, then apply the second outcome.
			old := metav1.NewTime(time.Now().Add(-time.Hour).Truncate(time.Second))
			for i := range s.Conditions {
				s.Conditions[i].LastTransitionTime = old
			}
			set(tc.genTo, tc.to)
			g.Expect(upToDate(tc.genTo, tc.to)).To(BeTrue())
			g.Expect(s.ObservedGeneration).To(Equal(tc.genTo))
			ready := meta.FindStatusCondition(s.Conditions, v1alpha1.ConditionReady)
			g.Expect(ready.LastTransitionTime.Equal(&old)).To(Equal(!tc.readyTransitions))
			stalled := meta.FindStatusCondition(s.Conditions, v1alpha1.ConditionStalled)
			g.Expect(stalled != nil).To(Equal(!tc.to.Accepted.True), "Stalled is present exactly while the route is refused")
		})
	}
}
