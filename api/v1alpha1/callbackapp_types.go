package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// CallbackAppSpec declares one IM app: its credentials, the receiver it binds to, and
// which namespaces may attach routes to it (Gateway API's Gateway listener with
// allowedRoutes).
//
// +kubebuilder:validation:XValidation:rule="self.provider != 'TencentIM' || self.appID.matches('^[0-9]+$')",message="appID of a TencentIM app is the SDKAppID and must be all digits"
// +kubebuilder:validation:XValidation:rule="!has(self.verify) || !has(self.verify.tokenSecretRef) || self.provider == 'TencentIM'",message="verify.tokenSecretRef applies only to TencentIM apps; OpenIM sends no signature"
// +kubebuilder:validation:XValidation:rule="!has(self.verify) || !has(self.verify.basicAuthSecretRef) || self.provider == 'OpenIM'",message="verify.basicAuthSecretRef applies only to OpenIM apps; Tencent IM sends no Basic auth"
// +kubebuilder:validation:XValidation:rule="!has(self.verify) || !has(self.verify.forwardSignature) || !self.verify.forwardSignature || self.provider == 'TencentIM'",message="verify.forwardSignature applies only to TencentIM apps; OpenIM sends no signature"
type CallbackAppSpec struct {
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

	// receiverRef names the CallbackReceiver that serves the app; its namespace defaults
	// to the app's. The receiver's allowedApps must admit the app's namespace. Standalone
	// mode ignores it (the receiver process is the receiver).
	// +required
	ReceiverRef ObjectReference `json:"receiverRef"`

	// verify holds the checks every callback of the app must pass, once, before it
	// reaches any route.
	// +optional
	Verify *AppVerification `json:"verify,omitempty"`

	// allowedRoutes says which routes may attach. The first entry whose namespaces match
	// the route's namespace decides; a route matching no entry is NotAllowedByApp.
	// Empty (the default) admits routes of the app's own namespace only, every mode
	// and command, like a single entry {namespaces: {from: Same}}.
	// +optional
	// +kubebuilder:validation:MaxItems=32
	AllowedRoutes []RouteGrant `json:"allowedRoutes,omitempty"`

	// backendURLs are the URL prefixes that attached routes may use as backend.url in a
	// cluster: same scheme and host[:port], and a path under the prefix's path (at a '/'
	// boundary). Default none: routes use Services of their own namespace. A route with
	// any other URL is ResolvedRefs=False, reason RefNotPermitted. Standalone mode does
	// not require them.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=2048
	// +kubebuilder:validation:items:XValidation:rule="isURL(self) && url(self).getScheme() in ['http', 'https'] && url(self).getHostname() != '' && url(self).getQuery().size() == 0 && !self.contains('#')",message="each of backendURLs must be an absolute http or https URL without query or fragment"
	BackendURLs []string `json:"backendURLs,omitempty"`
}

// RouteGrant admits routes from some namespaces, optionally only some modes and commands.
type RouteGrant struct {
	// namespaces the grant admits routes from.
	// +optional
	// +kubebuilder:default={from: Same}
	Namespaces Namespaces `json:"namespaces,omitempty"`

	// modes, when set, are the only modes admitted routes may use. Sync routes answer the
	// IM platform and so can block or rewrite users' messages: grant Sync only where meant.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=2
	Modes []Mode `json:"modes,omitempty"`

	// commands, when set, are the only commands admitted routes may subscribe to: exact
	// names, or prefixes ending in "*", or "@before" / "@after" (every before- or
	// after-callback the catalogue knows for the app's provider). A route's exact command
	// must match one of them; a route's prefix must lie within a granted prefix
	// ("Group.Callback*" within "Group.*"); a route's selector is checked name by name.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=256
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=128
	// +kubebuilder:validation:items:Pattern=`^(@before|@after|[A-Za-z0-9_.-]*\*?)$`
	Commands []string `json:"commands,omitempty"`
}

// AppVerification lists the checks every callback of an app must pass.
type AppVerification struct {
	// tokenSecretRef names the Tencent IM callback token, in a Secret of the app's
	// namespace: Sign = hex(sha256(token + RequestTime)). TencentIM only.
	// +optional
	TokenSecretRef *TokenSecretReference `json:"tokenSecretRef,omitempty"`

	// maxRequestAge is the replay window: callbacks whose RequestTime differs from now by
	// more than this are rejected. Defaults to 300s.
	// +optional
	// +kubebuilder:default="300s"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1s') && duration(self) <= duration('24h')",message="verify.maxRequestAge must be between 1s and 24h"
	MaxRequestAge *metav1.Duration `json:"maxRequestAge,omitempty"`

	// basicAuthSecretRef names a Secret of the app's namespace with keys username and
	// password. OpenIM sends the user-info of its webhook URL as Basic auth. OpenIM only.
	// +optional
	BasicAuthSecretRef *LocalObjectReference `json:"basicAuthSecretRef,omitempty"`

	// sourceCIDRs, when set, admit only callbacks from these networks.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=64
	// +kubebuilder:validation:items:XValidation:rule="isCIDR(self)",message="each of verify.sourceCIDRs must be a CIDR such as 203.0.113.0/24"
	SourceCIDRs []string `json:"sourceCIDRs,omitempty"`

	// forwardSignature, when true, lets backends receive Tencent's Sign and RequestTime
	// query parameters (for backends that verify the Sign themselves). Default false: the
	// Sign covers only token and time, not the body or command, so a backend holding one
	// could forge any callback of the app within the replay window; backends trust the
	// receiver's verification and the X-Callback-* headers instead. TencentIM only.
	// +optional
	ForwardSignature bool `json:"forwardSignature,omitempty"`
}

// TokenSecretReference names a key of a Secret in the app's namespace, and optionally a
// second key whose token stays valid during rotation.
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

// CallbackAppStatus is the observed state of a CallbackApp.
type CallbackAppStatus struct {
	// observedGeneration is the generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// conditions: Accepted (False: Conflict, NotAllowedByReceiver, ReceiverNotFound,
	// Invalid), ResolvedRefs (False: SecretNotFound), Ready (in the receiver's table).
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// url is what to configure on the IM side, after the receiver's address, e.g.
	// "/tencent?SdkAppid=1400000001" or "/openim/prod".
	// +optional
	URL string `json:"url,omitempty"`

	// attachedRoutes is the number of routes in the table for this app.
	// +optional
	AttachedRoutes int32 `json:"attachedRoutes"`
}

// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=cbapp,categories=callback-router
// +kubebuilder:printcolumn:name="Provider",type=string,JSONPath=`.spec.provider`
// +kubebuilder:printcolumn:name="AppID",type=string,JSONPath=`.spec.appID`
// +kubebuilder:printcolumn:name="Receiver",type=string,JSONPath=`.spec.receiverRef.name`
// +kubebuilder:printcolumn:name="Routes",type=integer,JSONPath=`.status.attachedRoutes`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="URL",type=string,JSONPath=`.status.url`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`

// CallbackApp is one IM app: its credentials and who may route its callbacks. It is
// owned by the platform team; teams attach CallbackRoutes to it.
type CallbackApp struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec CallbackAppSpec `json:"spec"`
	// status defaults to observedGeneration 0, so that an object the manager has not yet
	// seen reads as in progress (kstatus, Argo CD), not as current.
	// +optional
	// +kubebuilder:default={observedGeneration: 0}
	Status CallbackAppStatus `json:"status,omitempty"`
}

// +kubebuilder:object:root=true

// CallbackAppList is a list of CallbackApps.
type CallbackAppList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []CallbackApp `json:"items"`
}
