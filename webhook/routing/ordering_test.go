package routing

import (
	"testing"

	"k8s.io/apimachinery/pkg/types"

	"github.com/callback-router/callback-router/api/v1alpha1"
)

// TestOrderingGuaranteed: the OrderingGuaranteed condition of an ordered route follows its
// receiver's spool kind and replicas; the compiled route carries ordering and limits.
func TestOrderingGuaranteed(t *testing.T) {
	all := v1alpha1.Namespaces{From: v1alpha1.NamespacesFromAll}
	one, three := int32(1), int32(3)
	embedded := func(replicas *int32) v1alpha1.CallbackReceiver {
		r := receiverObj("recv", "default", all)
		r.Spec.Replicas = replicas
		return r
	}
	jetStream := embedded(&three)
	jetStream.Spec.Spool = &v1alpha1.Spool{JetStream: &v1alpha1.JetStreamSpool{URL: "nats://127.0.0.1:4222"}}
	ordered := route("team", "archive", 1, "ns/tencent-1", v1alpha1.ModeAsync, "C2C.*")
	ordered.Spec.Ordering = &v1alpha1.Ordering{Key: v1alpha1.OrderingKeyConversation}
	conc, rate := int32(4), int32(50)
	ordered.Spec.Delivery = &v1alpha1.DeliveryLimits{MaxConcurrency: &conc, MaxPerSecond: &rate}
	plain := route("team", "plain", 2, "ns/tencent-1", v1alpha1.ModeAsync, "Group.*")
	apps := []v1alpha1.CallbackApp{appObj("ns", "tencent-1", 0, v1alpha1.ProviderTencentIM, "1", allGrant)}
	apps[0].Spec.BackendURLs = []string{"http://127.0.0.1:9000/"}

	for _, c := range []struct {
		name string
		recv v1alpha1.CallbackReceiver
		want string
	}{
		{"one embedded replica", embedded(&one), "true/SingleReplica"},
		{"default replicas (2), embedded", embedded(nil), "false/MultipleReplicas"},
		{"three embedded replicas", embedded(&three), "false/MultipleReplicas"},
		{"JetStream, three replicas", jetStream, "true/JetStream"},
	} {
		t.Run(c.name, func(t *testing.T) {
			out := Compile(Input{Receivers: []v1alpha1.CallbackReceiver{c.recv}, Apps: apps,
				Routes: []v1alpha1.CallbackRoute{ordered, plain}})
			st := out.Routes[0]
			if st.Ordering == nil || cond(*st.Ordering) != c.want {
				t.Fatalf("OrderingGuaranteed %+v, want %s", st.Ordering, c.want)
			}
			if out.Routes[1].Ordering != nil {
				t.Errorf("a route without ordering got OrderingGuaranteed %+v", out.Routes[1].Ordering)
			}
			var cr *CompiledRoute
			for i, r := range out.Tables[types.NamespacedName{Namespace: "recv", Name: "default"}].Routes {
				if r.Name == "archive" {
					cr = &out.Tables[types.NamespacedName{Namespace: "recv", Name: "default"}].Routes[i]
				}
			}
			if cr == nil || !cr.Ordered || cr.MaxConcurrency != 4 || cr.MaxPerSecond != 50 {
				t.Fatalf("compiled route %+v: want ordered, maxConcurrency 4, maxPerSecond 50", cr)
			}
		})
	}

	unrouted := ordered.DeepCopy()
	unrouted.Spec.AppRef.Name = "missing"
	out := Compile(Input{Receivers: []v1alpha1.CallbackReceiver{embedded(&one)}, Apps: apps, Routes: []v1alpha1.CallbackRoute{*unrouted}})
	if st := out.Routes[0]; st.Ordering == nil || cond(*st.Ordering) != "false/NotRouted" {
		t.Errorf("unrouted ordered route: OrderingGuaranteed %+v, want false/NotRouted", st.Ordering)
	}
	if s := standalone(ordered); len(s.Routes) != 1 || !s.Routes[0].Ordered {
		t.Errorf("standalone: %+v, want the ordered route", s.Routes)
	}
}
