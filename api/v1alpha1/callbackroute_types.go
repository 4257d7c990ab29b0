package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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

// CallbackRouteSpec says which callbacks of one CallbackApp go to which backend, and how.
// The route attaches to the app (Gateway API's HTTPRoute parentRefs); the app's
// allowedRoutes decide whether it may.
//
// +kubebuilder:validation:XValidation:rule="!has(self.retry) || self.mode == 'Async'",message="retry applies only to Async routes; a Sync route answers once, inside the platform's deadline"
// +kubebuilder:validation:XValidation:rule="!has(self.ordering) || self.mode == 'Async'",message="ordering applies only to Async routes; a Sync route answers each callback as it comes"
// +kubebuilder:validation:XValidation:rule="!has(self.delivery) || self.mode == 'Async'",message="delivery applies only to Async routes; a Sync route's rate is the IM platform's"
// +kubebuilder:validation:XValidation:rule="self.mode == 'Sync' || self.failurePolicy == 'Allow'",message="failurePolicy Reject applies only to Sync routes; Async routes are acknowledged before delivery"
// +kubebuilder:validation:XValidation:rule="self.mode != 'Sync' || !has(self.backend.timeout) || duration(self.backend.timeout) <= duration('15s')",message="backend.timeout of a Sync route must be at most 15s, the most OpenIM ever waits; OpenIM waits only its webhooks.yml timeout (default 5s) and Tencent IM 2s, and the receiver answers within its --openim-timeout or --sync-budget whatever this says"
type CallbackRouteSpec struct {
	// appRef names the CallbackApp whose callbacks the route subscribes to; its namespace
	// defaults to the route's own.
	// +required
	AppRef ObjectReference `json:"appRef"`

	// commands are the callback commands routed here: exact names
	// ("C2C.CallbackAfterSendMsg"), prefixes ending in "*" ("Group.*", "*"), or the
	// selectors "@before" and "@after": every before- (after-) callback the command
	// catalogue knows for the app's provider, whatever its name (OpenIM's revoke
	// after-callback is callbackBeforeAfterMsgCommand). A name the provider is not known
	// to send is routed all the same, and reported by the UnknownCommands condition.
	// +required
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=256
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=128
	// +kubebuilder:validation:items:Pattern=`^(@before|@after|[A-Za-z0-9_.-]*\*?)$`
	Commands []string `json:"commands"`

	// mode is Async (acknowledged at once, stored durably, delivered with retries) or
	// Sync (the backend's answer is returned to the IM platform).
	// +optional
	// +kubebuilder:default=Async
	Mode Mode `json:"mode,omitempty"`

	// backend is where matching callbacks are sent.
	// +required
	Backend Backend `json:"backend"`

	// retry is the delivery retry policy of an Async route.
	// +optional
	Retry *RetryPolicy `json:"retry,omitempty"`

	// failurePolicy says what the IM platform hears when a Sync backend fails or
	// times out: Allow lets the action through, Reject blocks it.
	// +optional
	// +kubebuilder:default=Allow
	FailurePolicy FailurePolicy `json:"failurePolicy,omitempty"`

	// filter is a CEL expression that a callback must satisfy to reach this route, over
	// `body` (the callback's parsed JSON), `query` (its query parameters, map of string
	// to string), `command` and `app` (strings). It must be of type bool. Example:
	// `body.MsgBody.exists(m, m.MsgType == "TIMImageElem")`. It is type-checked when the
	// route is compiled (an invalid expression makes the route Accepted=False, reason
	// Invalid) and its cost is limited per callback; a callback on which it fails at run
	// time (a missing field, a wrong type) does not match and is counted in
	// callback_router_filter_errors_total. A Sync route whose filter does not match
	// does not answer: the platform hears the OK envelope.
	// +optional
	// +kubebuilder:validation:MaxLength=4096
	Filter string `json:"filter,omitempty"`

	// ordering delivers the copies of an Async route that share a key one at a time, in
	// arrival order (different keys in parallel). Within one receiver pod for the
	// embedded spool, across all receivers with JetStream; the OrderingGuaranteed
	// condition says whether the route's receiver can keep that promise.
	// +optional
	Ordering *Ordering `json:"ordering,omitempty"`

	// delivery protects the backend of an Async route: at most maxConcurrency attempts in
	// flight and maxPerSecond started per second, per receiver pod.
	// +optional
	Delivery *DeliveryLimits `json:"delivery,omitempty"`
}

// OrderingKey names what the copies of an ordered route are ordered by.
// +kubebuilder:validation:Enum=Conversation
type OrderingKey string

const (
	// OrderingKeyConversation orders by conversation: a C2C message by its unordered
	// account pair, a group message by GroupId, an official-account message by the
	// account, an OpenIM message by its session (see docs/delivery.md).
	OrderingKeyConversation OrderingKey = "Conversation"
)

// Ordering is the delivery order of an Async route.
type Ordering struct {
	// key is what copies are ordered by: Conversation.
	// +required
	Key OrderingKey `json:"key"`
}

// DeliveryLimits bound the deliveries of an Async route to its backend.
//
// +kubebuilder:validation:XValidation:rule="has(self.maxConcurrency) || has(self.maxPerSecond)",message="delivery needs maxConcurrency, maxPerSecond or both"
type DeliveryLimits struct {
	// maxConcurrency is the most delivery attempts in flight at once, per receiver pod.
	// Unset: the receiver's --spool-max-concurrency-per-route (default 16).
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1024
	MaxConcurrency *int32 `json:"maxConcurrency,omitempty"`

	// maxPerSecond is the most delivery attempts started per second, per receiver pod
	// (a token bucket with a burst of one second's worth). Unset: no rate limit.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100000
	MaxPerSecond *int32 `json:"maxPerSecond,omitempty"`
}

// Backend is a Service in the route's namespace or a URL.
//
// +kubebuilder:validation:XValidation:rule="has(self.service) != has(self.url)",message="exactly one of backend.service or backend.url must be set"
type Backend struct {
	// service is a Service in the route's own namespace.
	// +optional
	Service *ServiceReference `json:"service,omitempty"`

	// url is an http(s) URL: in a cluster only under one of the app's backendURLs; in
	// standalone mode any URL, e.g. a loopback backend.
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
	// budget) and 10s for Async routes. A Sync route of a TencentIM app must stay under
	// 2s (checked when the route attaches, as the provider is the app's).
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

// CallbackRouteStatus is the observed state of a CallbackRoute.
type CallbackRouteStatus struct {
	// observedGeneration is the generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// conditions: Accepted (False: AppNotFound, NotAllowedByApp, Conflict, Invalid),
	// ResolvedRefs (False: BackendNotFound, RefNotPermitted), Ready (in the receiver's
	// table; False AppNotReady when the app itself is not), and for a route with
	// spec.ordering OrderingGuaranteed (False: MultipleReplicas, NotRouted). Each carries
	// observedGeneration.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// url is the app's callback path (what the IM platform is configured with, after the
	// receiver's address).
	// +optional
	URL string `json:"url,omitempty"`
}

// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=cbr;cbroute,categories=callback-router
// +kubebuilder:printcolumn:name="App",type=string,JSONPath=`.spec.appRef.name`
// +kubebuilder:printcolumn:name="Mode",type=string,JSONPath=`.spec.mode`
// +kubebuilder:printcolumn:name="Commands",type=string,JSONPath=`.spec.commands`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].reason`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`

// CallbackRoute sends some callback commands of one CallbackApp to one backend.
type CallbackRoute struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec CallbackRouteSpec `json:"spec"`
	// status defaults to observedGeneration 0, so that an object the manager has not yet
	// seen reads as in progress (kstatus, Argo CD), not as current.
	// +optional
	// +kubebuilder:default={observedGeneration: 0}
	Status CallbackRouteStatus `json:"status,omitempty"`
}

// +kubebuilder:object:root=true

// CallbackRouteList is a list of CallbackRoutes.
type CallbackRouteList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []CallbackRoute `json:"items"`
}
