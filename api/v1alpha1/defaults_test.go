package v1alpha1

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestEffectiveDefaults(t *testing.T) {
	d := func(v time.Duration) *metav1.Duration { return &metav1.Duration{Duration: v} }
	tests := map[string]struct {
		spec CallbackRouteSpec
		// the effective values the receiver must use
		mode       Mode
		policy     FailurePolicy
		timeout    time.Duration
		attempts   int
		initial    time.Duration
		maxBackoff time.Duration
	}{
		"empty spec is an async route with every default": {
			spec: CallbackRouteSpec{},
			mode: ModeAsync, policy: FailurePolicyAllow, timeout: DefaultAsyncTimeout,
			attempts: DefaultMaxAttempts, initial: DefaultInitialBackoff, maxBackoff: DefaultMaxBackoff,
		},
		"sync route defaults to a timeout inside Tencent's 2s budget": {
			spec: CallbackRouteSpec{Mode: ModeSync},
			mode: ModeSync, policy: FailurePolicyAllow, timeout: DefaultSyncTimeout,
			attempts: DefaultMaxAttempts, initial: DefaultInitialBackoff, maxBackoff: DefaultMaxBackoff,
		},
		"explicit values win": {
			spec: CallbackRouteSpec{
				Mode: ModeSync, FailurePolicy: FailurePolicyReject,
				Backend: Backend{Timeout: d(700 * time.Millisecond)},
			},
			mode: ModeSync, policy: FailurePolicyReject, timeout: 700 * time.Millisecond,
			attempts: DefaultMaxAttempts, initial: DefaultInitialBackoff, maxBackoff: DefaultMaxBackoff,
		},
		"partial retry policy keeps the other defaults": {
			spec: CallbackRouteSpec{Retry: &RetryPolicy{MaxAttempts: 3}},
			mode: ModeAsync, policy: FailurePolicyAllow, timeout: DefaultAsyncTimeout,
			attempts: 3, initial: DefaultInitialBackoff, maxBackoff: DefaultMaxBackoff,
		},
		"initial backoff is capped by a smaller max backoff": {
			spec: CallbackRouteSpec{Retry: &RetryPolicy{MaxBackoff: d(500 * time.Millisecond)}},
			mode: ModeAsync, policy: FailurePolicyAllow, timeout: DefaultAsyncTimeout,
			attempts: DefaultMaxAttempts, initial: 500 * time.Millisecond, maxBackoff: 500 * time.Millisecond,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			s := tc.spec
			if got := s.EffectiveMode(); got != tc.mode {
				t.Errorf("mode = %s, want %s", got, tc.mode)
			}
			if got := s.EffectiveFailurePolicy(); got != tc.policy {
				t.Errorf("failurePolicy = %s, want %s", got, tc.policy)
			}
			if got := s.EffectiveTimeout(); got != tc.timeout {
				t.Errorf("timeout = %s, want %s", got, tc.timeout)
			}
			a, i, m := s.EffectiveRetry()
			if a != tc.attempts || i != tc.initial || m != tc.maxBackoff {
				t.Errorf("retry = (%d, %s, %s), want (%d, %s, %s)", a, i, m, tc.attempts, tc.initial, tc.maxBackoff)
			}
		})
	}
}

func TestEffectiveTokenKey(t *testing.T) {
	if got := (&TokenSecretReference{Name: "s"}).EffectiveTokenKey(); got != DefaultTokenKey {
		t.Errorf("default key = %q, want %q", got, DefaultTokenKey)
	}
	if got := (&TokenSecretReference{Name: "s", Key: "current"}).EffectiveTokenKey(); got != "current" {
		t.Errorf("key = %q, want current", got)
	}
}

func TestEffectiveAppDefaults(t *testing.T) {
	var app CallbackAppSpec
	if got := app.EffectiveMaxRequestAge(); got != DefaultMaxRequestAge {
		t.Errorf("maxRequestAge = %s, want %s", got, DefaultMaxRequestAge)
	}
	if got := app.EffectiveAllowedRoutes(); len(got) != 1 || got[0].Namespaces.EffectiveFrom() != NamespacesFromSame ||
		got[0].Modes != nil || got[0].Commands != nil {
		t.Errorf("allowedRoutes = %+v, want one grant for the app's own namespace, any mode and command", got)
	}
	app.Verify = &AppVerification{MaxRequestAge: &metav1.Duration{Duration: time.Minute}}
	if got := app.EffectiveMaxRequestAge(); got != time.Minute {
		t.Errorf("maxRequestAge = %s, want 1m", got)
	}
	if got := (ObjectReference{Name: "a"}).EffectiveNamespace("team"); got != "team" {
		t.Errorf("namespace = %q, want the referring object's", got)
	}
	var recv CallbackReceiverSpec
	if recv.EffectiveReplicas() != DefaultReceiverReplicas || recv.EffectivePort() != DefaultReceiverPort ||
		recv.EffectiveAllowedApps().EffectiveFrom() != NamespacesFromSame {
		t.Errorf("receiver defaults = %d, %d, %s", recv.EffectiveReplicas(), recv.EffectivePort(), recv.EffectiveAllowedApps().From)
	}
}
