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
)

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
func (s *CallbackRouteSpec) EffectiveMaxRequestAge() time.Duration {
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
