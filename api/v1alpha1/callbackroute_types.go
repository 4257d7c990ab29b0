package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Provider names an IM platform whose callback protocol the receiver speaks.
// +kubebuilder:validation:Enum=TencentIM;OpenIM
type Provider string

const (
	// ProviderTencentIM is Tencent Cloud IM (Chat): one URL per app, command in the query.
	ProviderTencentIM Provider = "TencentIM"
	// ProviderOpenIM is OpenIM: the command is the last path segment, no signature.
	ProviderOpenIM Provider = "OpenIM"
)

// Mode says whether the backend's answer goes back to the IM platform.
// +kubebuilder:validation:Enum=Async;Sync
type Mode string

const (
	// ModeAsync acknowledges at once, stores the callback durably and delivers it with retries.
	ModeAsync Mode = "Async"
	// ModeSync proxies the callback and returns the backend's answer to the IM platform.
	ModeSync Mode = "Sync"
)

// FailurePolicy says what the IM platform hears when a Sync backend fails or times out.
// +kubebuilder:validation:Enum=Allow;Reject
type FailurePolicy string

const (
	// FailurePolicyAllow answers with the provider's "continue" envelope: the action goes through.
	FailurePolicyAllow FailurePolicy = "Allow"
	// FailurePolicyReject answers with the provider's "reject" envelope: the action is blocked.
	FailurePolicyReject FailurePolicy = "Reject"
)

// CallbackRouteSpec says which callbacks of one IM app go to which backend, and how.
//
// +kubebuilder:validation:XValidation:rule="self.provider != 'TencentIM' || self.appID.matches('^[0-9]+$')",message="appID of a TencentIM route is the SDKAppID and must be all digits"
// +kubebuilder:validation:XValidation:rule="!has(self.retry) || self.mode == 'Async'",message="retry applies only to Async routes; a Sync route answers once, inside the platform's deadline"
// +kubebuilder:validation:XValidation:rule="self.mode == 'Sync' || self.failurePolicy == 'Allow'",message="failurePolicy Reject applies only to Sync routes; Async routes are acknowledged before delivery"
// +kubebuilder:validation:XValidation:rule="!(self.provider == 'TencentIM' && self.mode == 'Sync' && has(self.backend.timeout)) || duration(self.backend.timeout) < duration('2s')",message="backend.timeout of a Sync TencentIM route must be under 2s: Tencent IM waits 2s for the answer, and the fallback answer must still reach it in time"
// +kubebuilder:validation:XValidation:rule="!(self.provider == 'OpenIM' && self.mode == 'Sync' && has(self.backend.timeout)) || duration(self.backend.timeout) <= duration('15s')",message="backend.timeout of a Sync OpenIM route must be at most 15s, the most OpenIM ever waits; OpenIM waits only its webhooks.yml timeout (default 5s), and the receiver answers 500ms before its --openim-timeout whatever this says"
// +kubebuilder:validation:XValidation:rule="!has(self.verify) || !has(self.verify.tokenSecretRef) || self.provider == 'TencentIM'",message="verify.tokenSecretRef applies only to TencentIM routes; OpenIM sends no signature"
// +kubebuilder:validation:XValidation:rule="!has(self.verify) || !has(self.verify.basicAuthSecretRef) || self.provider == 'OpenIM'",message="verify.basicAuthSecretRef applies only to OpenIM routes; Tencent IM sends no Basic auth"
type CallbackRouteSpec struct {
	// provider is the IM platform that sends the callbacks.
	// +required
	Provider Provider `json:"provider"`

	// appID identifies the app: for TencentIM the SDKAppID (digits), for OpenIM the
	// name used in the receiver path /openim/<appID>/.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9][A-Za-z0-9._-]*$`
	AppID string `json:"appID"`

	// commands are the callback commands routed here: exact names
	// ("C2C.CallbackAfterSendMsg") or prefixes ending in "*" ("Group.*", "*").
	// +required
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=256
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=128
	// +kubebuilder:validation:items:Pattern=`^[A-Za-z0-9_.-]*\*?$`
	Commands []string `json:"commands"`

	// mode is Async (acknowledged at once, stored durably, delivered with retries) or
	// Sync (the backend's answer is returned to the IM platform).
	// +optional
	// +kubebuilder:default=Async
	Mode Mode `json:"mode,omitempty"`

	// backend is where matching callbacks are sent.
	// +required
	Backend Backend `json:"backend"`

	// verify holds the checks a callback must pass to reach this route.
	// +optional
	Verify *Verification `json:"verify,omitempty"`

	// retry is the delivery retry policy of an Async route.
	// +optional
	Retry *RetryPolicy `json:"retry,omitempty"`

	// failurePolicy says what the IM platform hears when a Sync backend fails or
	// times out: Allow lets the action through, Reject blocks it.
	// +optional
	// +kubebuilder:default=Allow
	FailurePolicy FailurePolicy `json:"failurePolicy,omitempty"`
}

// Backend is a Service in the route's namespace or any URL.
//
// +kubebuilder:validation:XValidation:rule="has(self.service) != has(self.url)",message="exactly one of backend.service or backend.url must be set"
type Backend struct {
	// service is a Service in the route's own namespace.
	// +optional
	Service *ServiceReference `json:"service,omitempty"`

	// url is any http(s) URL, e.g. an external target or a loopback backend in standalone mode.
	// +optional
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="isURL(self) && url(self).getScheme() in ['http', 'https'] && url(self).getHostname() != ''",message="backend.url must be an absolute http or https URL"
	URL string `json:"url,omitempty"`

	// path is appended to the service or URL, e.g. /im/callbacks.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	// +kubebuilder:validation:Pattern=`^/[^?#]*$`
	Path string `json:"path,omitempty"`

	// timeout bounds one attempt. Defaults to 1500ms for Sync routes (inside Tencent's 2s
	// budget) and 10s for Async routes. A Sync answer also leaves within the receiver's
	// budget for the provider whatever this says: Tencent IM's --sync-budget (1800ms), and
	// for OpenIM 500ms before --openim-timeout (OpenIM's webhooks.yml timeout, default 5s).
	// +optional
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s') && duration(self) <= duration('60s')",message="backend.timeout must be positive and at most 60s"
	Timeout *metav1.Duration `json:"timeout,omitempty"`
}

// ServiceReference names a Service port in the route's namespace.
type ServiceReference struct {
	// name of the Service.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z]([-a-z0-9]*[a-z0-9])?$`
	Name string `json:"name"`

	// port is the Service port number.
	// +required
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Port int32 `json:"port"`
}

// Verification lists the checks a callback must pass to reach a route.
type Verification struct {
	// tokenSecretRef names the Tencent IM callback token:
	// Sign = hex(sha256(token + RequestTime)). TencentIM only.
	// +optional
	TokenSecretRef *TokenSecretReference `json:"tokenSecretRef,omitempty"`

	// maxRequestAge is the replay window: callbacks whose RequestTime differs from now by
	// more than this are rejected. Defaults to 300s.
	// +optional
	// +kubebuilder:default="300s"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1s') && duration(self) <= duration('24h')",message="verify.maxRequestAge must be between 1s and 24h"
	MaxRequestAge *metav1.Duration `json:"maxRequestAge,omitempty"`

	// basicAuthSecretRef names a Secret with keys username and password. OpenIM sends
	// the user-info of its webhook URL as Basic auth. OpenIM only.
	// +optional
	BasicAuthSecretRef *LocalObjectReference `json:"basicAuthSecretRef,omitempty"`

	// sourceCIDRs, when set, admit only callbacks from these networks.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=64
	// +kubebuilder:validation:items:XValidation:rule="isCIDR(self)",message="each of verify.sourceCIDRs must be a CIDR such as 203.0.113.0/24"
	SourceCIDRs []string `json:"sourceCIDRs,omitempty"`
}

// TokenSecretReference names a key of a Secret in the route's namespace, and optionally
// a second key whose token stays valid during rotation.
type TokenSecretReference struct {
	// name of the Secret.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`

	// key holding the current token. Defaults to "token".
	// +optional
	// +kubebuilder:default=token
	// +kubebuilder:validation:MaxLength=253
	Key string `json:"key,omitempty"`

	// previousKey, when set and present in the Secret, holds the previous token, which
	// stays valid too: rotate by moving the old token there, then setting the new one.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	PreviousKey string `json:"previousKey,omitempty"`
}

// LocalObjectReference names an object in the route's namespace.
type LocalObjectReference struct {
	// name of the object.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
}

// RetryPolicy bounds the delivery attempts of an Async route.
//
// +kubebuilder:validation:XValidation:rule="duration(self.initialBackoff) <= duration(self.maxBackoff)",message="retry.initialBackoff must not exceed retry.maxBackoff"
type RetryPolicy struct {
	// maxAttempts is the number of delivery attempts, the first included, before the
	// callback goes to the dead-letter store.
	// +optional
	// +kubebuilder:default=10
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	MaxAttempts int32 `json:"maxAttempts,omitempty"`

	// initialBackoff is the wait before the second attempt; it doubles on each retry.
	// +optional
	// +kubebuilder:default="1s"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('10ms') && duration(self) <= duration('1h')",message="retry.initialBackoff must be between 10ms and 1h"
	InitialBackoff *metav1.Duration `json:"initialBackoff,omitempty"`

	// maxBackoff caps the wait between attempts.
	// +optional
	// +kubebuilder:default="5m"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('10ms') && duration(self) <= duration('24h')",message="retry.maxBackoff must be between 10ms and 24h"
	MaxBackoff *metav1.Duration `json:"maxBackoff,omitempty"`
}

// Condition types and reasons of a CallbackRoute.
const (
	// ConditionAccepted is True when the route is valid and not in conflict.
	ConditionAccepted = "Accepted"
	// ConditionResolvedRefs is True when every referenced Service and Secret exists.
	ConditionResolvedRefs = "ResolvedRefs"
	// ConditionReady is True when the route is in the receiver's live routing table.
	ConditionReady = "Ready"

	// ReasonAccepted: the route is valid and owns its commands.
	ReasonAccepted = "Accepted"
	// ReasonConflict: another Sync route answers one of this route's commands.
	ReasonConflict = "Conflict"
	// ReasonInvalid: the route cannot be compiled.
	ReasonInvalid = "Invalid"
	// ReasonResolved: every reference was found.
	ReasonResolved = "Resolved"
	// ReasonSecretNotFound: a referenced Secret or key is missing.
	ReasonSecretNotFound = "SecretNotFound"
	// ReasonServiceNotFound: the backend Service or its port is missing.
	ReasonServiceNotFound = "ServiceNotFound"
	// ReasonRouted: the route is in the published routing table.
	ReasonRouted = "Routed"
	// ReasonNotRouted: the route is not in the routing table; see the other conditions.
	ReasonNotRouted = "NotRouted"
)

// CallbackRouteStatus is the observed state of a CallbackRoute.
type CallbackRouteStatus struct {
	// observedGeneration is the generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// conditions: Accepted, ResolvedRefs, Ready.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// url is where the IM platform must send callbacks for this route (path plus query hint).
	// +optional
	URL string `json:"url,omitempty"`
}

// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=cbr;cbroute,categories=callback-router
// +kubebuilder:printcolumn:name="Provider",type=string,JSONPath=`.spec.provider`
// +kubebuilder:printcolumn:name="App",type=string,JSONPath=`.spec.appID`
// +kubebuilder:printcolumn:name="Mode",type=string,JSONPath=`.spec.mode`
// +kubebuilder:printcolumn:name="Commands",type=string,JSONPath=`.spec.commands`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`

// CallbackRoute sends some callback commands of one IM app to one backend.
type CallbackRoute struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec CallbackRouteSpec `json:"spec"`
	// +optional
	Status CallbackRouteStatus `json:"status,omitempty"`
}

// +kubebuilder:object:root=true

// CallbackRouteList is a list of CallbackRoutes.
type CallbackRouteList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []CallbackRoute `json:"items"`
}
