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

// FromNamespaces says which namespaces a grant (CallbackReceiver.spec.allowedApps,
// CallbackApp.spec.allowedRoutes) admits, as Gateway API's RouteNamespaces.from does.
// +kubebuilder:validation:Enum=Same;All;Selector
type FromNamespaces string

const (
	// NamespacesFromSame admits only the granting object's own namespace.
	NamespacesFromSame FromNamespaces = "Same"
	// NamespacesFromAll admits every namespace.
	NamespacesFromAll FromNamespaces = "All"
	// NamespacesFromSelector admits the namespaces whose labels match selector.
	NamespacesFromSelector FromNamespaces = "Selector"
)

// Namespaces selects namespaces relative to the object that holds it (Gateway API's
// RouteNamespaces).
//
// +kubebuilder:validation:XValidation:rule="(self.from == 'Selector') == has(self.selector)",message="namespaces.selector must be set when, and only when, namespaces.from is Selector"
type Namespaces struct {
	// from is Same (the granting object's namespace), All, or Selector (the namespaces
	// whose labels match selector).
	// +optional
	// +kubebuilder:default=Same
	From FromNamespaces `json:"from,omitempty"`

	// selector selects namespaces by their labels; required when from is Selector.
	// Relabelling a namespace takes effect at once: routes no longer admitted leave the
	// routing table in the same pass.
	// +optional
	Selector *metav1.LabelSelector `json:"selector,omitempty"`
}

// LocalObjectReference names an object in the referring object's namespace.
type LocalObjectReference struct {
	// name of the object.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
}

// ObjectReference names an object of a known kind, in the referring object's namespace
// unless namespace is set (Gateway API's ParentReference).
type ObjectReference struct {
	// name of the object.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`

	// namespace of the object; defaults to the referring object's own namespace.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Namespace string `json:"namespace,omitempty"`
}

// Condition types shared by the three kinds.
const (
	// ConditionAccepted: the object is valid and the object it attaches to admits it.
	ConditionAccepted = "Accepted"
	// ConditionResolvedRefs: every referenced Secret, Service and URL resolves and is permitted.
	ConditionResolvedRefs = "ResolvedRefs"
	// ConditionReady: the object is live: in its receiver's published routing table (apps,
	// routes), or serving with every replica ready (receivers).
	ConditionReady = "Ready"
	// ConditionProgressing: a CallbackReceiver is rolling out or scaling (reason Draining
	// while a scale-down waits for the leaving pods' backlog).
	ConditionProgressing = "Progressing"
	// ConditionUnknownCommands (routes): True when the route names commands the app's
	// provider is not known to send (the command catalogue; `callback-router send --list`),
	// most likely a typo; the message suggests the known name. Platforms add commands, so
	// such a route stays Accepted and routes them if they come. False when every command
	// is known. Absent while the route's app is not found.
	ConditionUnknownCommands = "UnknownCommands"
	// ConditionStalled: the object cannot work as written until it (or an object it
	// depends on) is changed: a CallbackReceiver that cannot run as specified, an app or
	// route refused (Invalid, NotAllowedByApp, NotAllowedByReceiver, RefNotPermitted,
	// Conflict). Set only while True, as kstatus reads it (Flux, Argo CD: Failed).
	ConditionStalled = "Stalled"
	// ConditionOrderingGuaranteed: on a route with spec.ordering, whether its receiver can
	// deliver copies of one key in order (True: JetStream, SingleReplica; False:
	// MultipleReplicas, NotRouted).
	ConditionOrderingGuaranteed = "OrderingGuaranteed"
)

// Condition reasons. Gateway API's names are used where one fits.
const (
	// ReasonAccepted (Accepted=True): valid and admitted.
	ReasonAccepted = "Accepted"
	// ReasonInvalid (Accepted=False): the spec cannot be compiled; the message says why.
	ReasonInvalid = "Invalid"
	// ReasonConflict (Accepted=False): on a route, another Sync route answers one of its
	// commands; on an app, an older app claims the same provider and appID on the
	// receiver. The message names the winner.
	ReasonConflict = "Conflict"
	// ReasonAppNotFound (Accepted=False): the route's appRef names no CallbackApp.
	ReasonAppNotFound = "AppNotFound"
	// ReasonNotAllowedByApp (Accepted=False): the app's allowedRoutes do not admit the
	// route's namespace, mode or commands; the message says which.
	ReasonNotAllowedByApp = "NotAllowedByApp"
	// ReasonNotAllowedByReceiver (Accepted=False): the receiver's allowedApps do not admit
	// the app's namespace.
	ReasonNotAllowedByReceiver = "NotAllowedByReceiver"
	// ReasonReceiverNotFound (Accepted=False): the app's receiverRef names no CallbackReceiver.
	ReasonReceiverNotFound = "ReceiverNotFound"

	// ReasonResolvedRefs (ResolvedRefs=True): every reference resolved.
	ReasonResolvedRefs = "ResolvedRefs"
	// ReasonBackendNotFound (ResolvedRefs=False): the backend Service or its port is missing.
	ReasonBackendNotFound = "BackendNotFound"
	// ReasonRefNotPermitted (ResolvedRefs=False): a backend.url the app's backendURLs do
	// not allow.
	ReasonRefNotPermitted = "RefNotPermitted"
	// ReasonSecretNotFound (ResolvedRefs=False): an app's verification Secret or key is missing.
	ReasonSecretNotFound = "SecretNotFound"

	// ReasonRouted (Ready=True on apps and routes): in the receiver's published table.
	ReasonRouted = "Routed"
	// ReasonNotRouted (Ready=False): not in the table; Accepted or ResolvedRefs says why.
	ReasonNotRouted = "NotRouted"
	// ReasonJetStream (OrderingGuaranteed=True): the receiver's spool is JetStream, which
	// orders each key across every receiver pod.
	ReasonJetStream = "JetStream"
	// ReasonSingleReplica (OrderingGuaranteed=True): an embedded spool in one receiver pod.
	ReasonSingleReplica = "SingleReplica"
	// ReasonMultipleReplicas (OrderingGuaranteed=False): an embedded spool in several pods;
	// each pod orders only the callbacks it received.
	ReasonMultipleReplicas = "MultipleReplicas"
	// ReasonAppNotReady (Ready=False on a route): the route is admitted, but its app is not
	// in the table (Conflict, missing Secret, ...), so neither is the route.
	ReasonAppNotReady = "AppNotReady"

	// ReasonUnknownCommands (UnknownCommands=True): see ConditionUnknownCommands.
	ReasonUnknownCommands = "UnknownCommands"
	// ReasonCommandsKnown (UnknownCommands=False): every command is in the catalogue.
	ReasonCommandsKnown = "CommandsKnown"
	// ReasonSyncOnAfterCallback is the reason of the Warning event (and the note in the
	// Accepted message) of a Sync route on commands the catalogue knows are
	// after-callbacks, whose answer the platform ignores: use mode Async for them.
	ReasonSyncOnAfterCallback = "SyncOnAfterCallback"

	// ReasonAvailable (Ready=True on a receiver): every desired replica is ready.
	ReasonAvailable = "Available"
	// ReasonUnavailable (Ready=False on a receiver): fewer replicas are ready than desired.
	ReasonUnavailable = "Unavailable"
	// ReasonRollingOut (Progressing=True on a receiver): the workload is being updated or scaled.
	ReasonRollingOut = "RollingOut"
	// ReasonDraining (Progressing=True on a receiver): a scale-down waits while the leaving
	// pods deliver their backlog; the message gives the pending count.
	ReasonDraining = "Draining"
	// ReasonStable (Progressing=False on a receiver): nothing is changing.
	ReasonStable = "Stable"
	// ReasonProgressDeadlineExceeded was set when a receiver ran as a Deployment whose
	// rollout exceeded its progress deadline; StatefulSets have none, so it is no longer
	// set. Kept for clients that compare against it.
	ReasonProgressDeadlineExceeded = "ProgressDeadlineExceeded"
)
