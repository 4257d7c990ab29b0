package controllers

import (
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/callback-router/callback-router/api/v1alpha1"
	"github.com/callback-router/callback-router/webhook/routing"
	"github.com/callback-router/callback-router/webhook/tablestore"
)

// BenchmarkPass10kRoutes measures the manager's CPU work in one table pass over 10,000
// routes in 100 namespaces attached to 10 apps, API calls excluded: compile, marshal,
// compress and hash, and the status comparison that finds nothing to write.
func BenchmarkPass10kRoutes(b *testing.B) {
	const n, namespaces, nApps = 10_000, 100, 10
	recv := v1alpha1.CallbackReceiver{ObjectMeta: metav1.ObjectMeta{Namespace: "callback-router-system", Name: "default"},
		Spec: v1alpha1.CallbackReceiverSpec{AllowedApps: &v1alpha1.AllowedApps{Namespaces: v1alpha1.Namespaces{From: v1alpha1.NamespacesFromAll}}}}
	apps := make([]v1alpha1.CallbackApp, nApps)
	for i := range apps {
		a := newApp("im-platform", fmt.Sprintf("app-%02d", i), grantAll)
		a.Spec.AppID = fmt.Sprint(1400000000 + i)
		a.Spec.ReceiverRef = v1alpha1.ObjectReference{Namespace: recv.Namespace, Name: recv.Name}
		a.Spec.Verify = &v1alpha1.AppVerification{TokenSecretRef: &v1alpha1.TokenSecretReference{Name: "tencent-im"}}
		a.Generation = 1
		apps[i] = *a
	}
	routes := make([]v1alpha1.CallbackRoute, n)
	for i := range routes {
		ns := fmt.Sprintf("team-%03d", i%namespaces)
		r := newRoute(ns, fmt.Sprintf("route-%05d", i), &apps[i%nApps], v1alpha1.ModeAsync, "C2C.CallbackAfterSendMsg", "Group.*")
		r.CreationTimestamp = metav1.Unix(int64(1_700_000_000+i), 0)
		r.Generation = 1
		if i%10 == 0 {
			r.Spec.Mode = v1alpha1.ModeSync
			r.Spec.Commands = []string{fmt.Sprintf("C2C.CallbackBeforeSendMsg.%d", i)}
		}
		routes[i] = *r
	}
	secret := &corev1.Secret{Data: map[string][]byte{"token": []byte("token")}}
	in := routing.Input{Receivers: []v1alpha1.CallbackReceiver{recv}, Apps: apps, Routes: routes,
		Secret: func(string, string) (*corev1.Secret, bool) { return secret, true }}
	out := routing.Compile(in)
	for i := range routes {
		setRouteStatus(&routes[i].Status, 1, &out.Routes[i])
	}
	b.ReportAllocs()
	for b.Loop() {
		out := routing.Compile(in)
		data, err := tablestore.MarshalSnapshot(out.Tables[types.NamespacedName{Namespace: recv.Namespace, Name: recv.Name}])
		if err != nil {
			b.Fatal(err)
		}
		if _, err := tablestore.Encode(data); err != nil {
			b.Fatal(err)
		}
		for i := range routes {
			if !routeStatusUpToDate(&routes[i].Status, 1, &out.Routes[i]) {
				b.Fatalf("route %d: status not up to date", i)
			}
		}
	}
}
