package dataplane

import (
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/callback-router/callback-router/api/v1alpha1"
)

// TestReceiverArgsDeliveryControl: spec.retention and spec.tracing reach the receiver's
// command line; the admin API is always on, on loopback only.
func TestReceiverArgsDeliveryControl(t *testing.T) {
	r := &v1alpha1.CallbackReceiver{
		ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: "ns"},
		Spec: v1alpha1.CallbackReceiverSpec{
			Retention: &metav1.Duration{Duration: 24 * time.Hour},
			Tracing:   &v1alpha1.ReceiverTracing{OTLPEndpoint: "http://otel.observability.svc:4318"},
		},
	}
	s, err := ResolveReceiver(r, "img")
	if err != nil {
		t.Fatal(err)
	}
	args := ReceiverArgs(s)
	for _, want := range [][]string{
		{"--admin-listen", "127.0.0.1:9091"},
		{"--retention", "24h0m0s"},
		{"--otlp-endpoint", "http://otel.observability.svc:4318"},
	} {
		i := slices.Index(args, want[0])
		if i < 0 || i+1 >= len(args) || args[i+1] != want[1] {
			t.Errorf("args %v: want %s %s", args, want[0], want[1])
		}
	}
	plain, _ := ResolveReceiver(&v1alpha1.CallbackReceiver{ObjectMeta: r.ObjectMeta}, "img")
	if a := ReceiverArgs(plain); slices.Contains(a, "--retention") || slices.Contains(a, "--otlp-endpoint") {
		t.Errorf("defaults: %v", a)
	}
}
