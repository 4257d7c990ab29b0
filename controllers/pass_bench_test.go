package controllers

import (
	"fmt"
	"strconv"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/callback-router/callback-router/api/v1alpha1"
	"github.com/callback-router/callback-router/webhook/routing"
	"github.com/callback-router/callback-router/webhook/tablestore"
)

// BenchmarkPass10kRoutes measures the manager's CPU work in one table pass over 10,000
// routes in 100 namespaces, API calls excluded: compile, marshal, compress and hash, and
// the status comparison that finds nothing to write.
func BenchmarkPass10kRoutes(b *testing.B) {
	const n, namespaces = 10_000, 100
	routes := make([]v1alpha1.CallbackRoute, n)
	secrets := map[string]*corev1.Secret{}
	for i := range routes {
		ns := fmt.Sprintf("team-%03d", i%namespaces)
		secrets[ns] = &corev1.Secret{Data: map[string][]byte{"token": []byte("token-" + ns)}}
		r := tencentRoute(ns, fmt.Sprintf("route-%05d", i), v1alpha1.ModeAsync, "C2C.CallbackAfterSendMsg", "Group.*")
		r.Spec.AppID = strconv.Itoa(1400000000 + i%500)
		r.Spec.Verify = &v1alpha1.Verification{TokenSecretRef: &v1alpha1.TokenSecretReference{Name: "tencent-im"}}
		r.CreationTimestamp = metav1.Unix(int64(1_700_000_000+i), 0)
		r.Generation = 1
		if i%10 == 0 {
			r.Spec.Mode = v1alpha1.ModeSync
			r.Spec.Commands = []string{fmt.Sprintf("C2C.CallbackBeforeSendMsg.%d", i)}
		}
		routes[i] = *r
	}
	in := routing.Input{Routes: routes, Secret: func(ns, _ string) (*corev1.Secret, bool) { s, ok := secrets[ns]; return s, ok }}
	_, statuses := routing.Compile(in)
	for i := range routes {
		setStatus(&routes[i].Status, routes[i].Generation, statuses[i])
	}
	b.ReportAllocs()
	for b.Loop() {
		snap, statuses := routing.Compile(in)
		data, err := tablestore.MarshalSnapshot(snap)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := tablestore.Encode(data); err != nil {
			b.Fatal(err)
		}
		for i := range routes {
			if !statusUpToDate(&routes[i].Status, routes[i].Generation, statuses[i]) {
				b.Fatalf("route %d: status not up to date", i)
			}
		}
	}
}
