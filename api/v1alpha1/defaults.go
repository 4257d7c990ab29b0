package v1alpha1

import (
	"time"
)

// Defaults that apply when a field is omitted. The API server fills in the ones it can
// (mode, failurePolicy, maxRequestAge, the retry fields) from the CRD schema; these
// constants and the Effective* methods give the same answers for objects that never
// went through an API server (standalone mode) and for defaults that depend on the mode.
const (
	// DefaultSyncTimeout leaves room inside Tencent IM's 2s budget for the fallback answer.
	DefaultSyncTimeout = 1500 * time.Millisecond
	// DefaultAsyncTimeout bounds one Async delivery attempt.
	DefaultAsyncTimeout = 10 * time.Second
	// DefaultMaxRequestAge is the Tencent IM replay window.
	DefaultMaxRequestAge = 300 * time.Second
	// DefaultMaxAttempts is the number of Async delivery attempts before dead-lettering.
	DefaultMaxAttempts = 10
	// DefaultInitialBackoff is the wait before the first retry.
	DefaultInitialBackoff = time.Second
	// DefaultMaxBackoff caps the wait between retries.
	DefaultMaxBackoff = 5 * time.Minute
	// DefaultTokenKey is the Secret key of the Tencent IM callback token.
	DefaultTokenKey = "token"
	// DefaultReceiverReplicas is a CallbackReceiver's spec.replicas when omitted.
	DefaultReceiverReplicas = 2
	// DefaultReceiverPort is a CallbackReceiver's service.port when omitted.
	DefaultReceiverPort = 8080
	// DefaultSpoolSize is the embedded spool's PersistentVolumeClaim size when omitted.
	DefaultSpoolSize = "1Gi"
	// DefaultJetStreamReplicas is the JetStream stream's replicas when omitted.
	DefaultJetStreamReplicas = 3
)

// EffectiveNamespace is the reference's namespace, defaulting to from (the referring
// object's namespace).
func (r ObjectReference) EffectiveNamespace(from string) string {
	if r.Namespace == "" {
		return from
	}
	return r.Namespace
}

// EffectiveFrom is namespaces.from, defaulting to Same.
func (n Namespaces) EffectiveFrom() FromNamespaces {
	if n.From == "" {
		return NamespacesFromSame
	}
	return n.From
}

// EffectiveAllowedRoutes is spec.allowedRoutes, defaulting to one grant for routes of
// the app's own namespace.
func (s *CallbackAppSpec) EffectiveAllowedRoutes() []RouteGrant {
	if len(s.AllowedRoutes) == 0 {
		return []RouteGrant{{Namespaces: Namespaces{From: NamespacesFromSame}}}
	}
	return s.AllowedRoutes
}

// EffectiveReplicas is spec.replicas, defaulting to DefaultReceiverReplicas.
func (s *CallbackReceiverSpec) EffectiveReplicas() int32 {
	if s.Replicas == nil {
		return DefaultReceiverReplicas
	}
	return *s.Replicas
}

// EffectiveAllowedApps is spec.allowedApps.namespaces, defaulting to Same.
func (s *CallbackReceiverSpec) EffectiveAllowedApps() Namespaces {
	if s.AllowedApps == nil {
		return Namespaces{From: NamespacesFromSame}
	}
	return s.AllowedApps.Namespaces
}

// EffectivePort is spec.service.port, defaulting to DefaultReceiverPort.
func (s *CallbackReceiverSpec) EffectivePort() int32 {
	if s.Service == nil || s.Service.Port == 0 {
		return DefaultReceiverPort
	}
	return s.Service.Port
}

// EffectiveMode is spec.mode, defaulting to Async.
func (s *CallbackRouteSpec) EffectiveMode() Mode {
	if s.Mode == "" {
		return ModeAsync
	}
	return s.Mode
}

// EffectiveFailurePolicy is spec.failurePolicy, defaulting to Allow.
func (s *CallbackRouteSpec) EffectiveFailurePolicy() FailurePolicy {
	if s.FailurePolicy == "" {
		return FailurePolicyAllow
	}
	return s.FailurePolicy
}

// EffectiveTimeout is spec.backend.timeout, defaulting by mode.
func (s *CallbackRouteSpec) EffectiveTimeout() time.Duration {
	if s.Backend.Timeout != nil && s.Backend.Timeout.Duration > 0 {
		return s.Backend.Timeout.Duration
	}
	if s.EffectiveMode() == ModeSync {
		return DefaultSyncTimeout
	}
	return DefaultAsyncTimeout
}

// EffectiveMaxRequestAge is spec.verify.maxRequestAge, defaulting to 300s.
func (s *CallbackAppSpec) EffectiveMaxRequestAge() time.Duration {
	if s.Verify != nil && s.Verify.MaxRequestAge != nil && s.Verify.MaxRequestAge.Duration > 0 {
		return s.Verify.MaxRequestAge.Duration
	}
	return DefaultMaxRequestAge
}

// EffectiveRetry is spec.retry with every field defaulted.
func (s *CallbackRouteSpec) EffectiveRetry() (maxAttempts int, initial, maxBackoff time.Duration) {
	maxAttempts, initial, maxBackoff = DefaultMaxAttempts, DefaultInitialBackoff, DefaultMaxBackoff
	if r := s.Retry; r != nil {
		if r.MaxAttempts > 0 {
			maxAttempts = int(r.MaxAttempts)
		}
		if r.InitialBackoff != nil && r.InitialBackoff.Duration > 0 {
			initial = r.InitialBackoff.Duration
		}
		if r.MaxBackoff != nil && r.MaxBackoff.Duration > 0 {
			maxBackoff = r.MaxBackoff.Duration
		}
	}
	if initial > maxBackoff {
		initial = maxBackoff
	}
	return maxAttempts, initial, maxBackoff
}

// EffectiveTokenKey is the Secret key of the current Tencent IM token.
func (r *TokenSecretReference) EffectiveTokenKey() string {
	if r.Key == "" {
		return DefaultTokenKey
	}
	return r.Key
}

// EffectiveDelivery is spec.delivery: the route's maxConcurrency (0: the receiver's
// per-route default) and maxPerSecond (0: no rate limit).
func (s *CallbackRouteSpec) EffectiveDelivery() (maxConcurrency, maxPerSecond int) {
	if d := s.Delivery; d != nil {
		if d.MaxConcurrency != nil {
			maxConcurrency = int(*d.MaxConcurrency)
		}
		if d.MaxPerSecond != nil {
			maxPerSecond = int(*d.MaxPerSecond)
		}
	}
	return maxConcurrency, maxPerSecond
}

// Ordered reports whether the route orders its copies by conversation.
func (s *CallbackRouteSpec) Ordered() bool {
	return s.Ordering != nil && s.Ordering.Key == OrderingKeyConversation
}
