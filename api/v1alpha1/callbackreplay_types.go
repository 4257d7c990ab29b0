package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ReplaySource says where a CallbackReplay finds the deliveries it sends again.
// +kubebuilder:validation:Enum=DeadLetters;Delivered
type ReplaySource string

const (
	// ReplaySourceDeadLetters replays the route's dead letters.
	ReplaySourceDeadLetters ReplaySource = "DeadLetters"
	// ReplaySourceDelivered replays delivered callbacks the receiver retains
	// (CallbackReceiver spec.retention).
	ReplaySourceDelivered ReplaySource = "Delivered"
)

// Limits of a CallbackReplay.
const (
	// MaxReplayCallbackIDs is the most callback IDs one CallbackReplay names: the replay
	// travels in the receiver's routing table.
	MaxReplayCallbackIDs = 1000
)

// CallbackReplaySpec selects deliveries of one route to send again. It is immutable: a
// replay runs once; create another to replay again.
//
// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="a CallbackReplay is immutable: create another one to replay again"
// +kubebuilder:validation:XValidation:rule="!(has(self.callbackIDs) && (has(self.from) || has(self.to)))",message="give callbackIDs or a time range (from, to), not both"
// +kubebuilder:validation:XValidation:rule="!has(self.from) || !has(self.to) || self.from < self.to",message="from must be before to"
type CallbackReplaySpec struct {
	// routeRef names the CallbackRoute, in the replay's own namespace, whose deliveries are
	// replayed: a team replays only its own routes.
	// +required
	RouteRef LocalObjectReference `json:"routeRef"`

	// source: DeadLetters (the route's dead letters) or Delivered (delivered callbacks the
	// receiver retains for its spec.retention).
	// +kubebuilder:default=DeadLetters
	// +optional
	Source ReplaySource `json:"source,omitempty"`

	// callbackIDs select deliveries by their X-Callback-Id. Without them (and without
	// from/to) every delivery of the route in the source is replayed.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=1000
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=128
	CallbackIDs []string `json:"callbackIDs,omitempty"`

	// from selects deliveries of callbacks received at or after this time (RFC 3339;
	// fractional seconds are honoured).
	// +optional
	From *metav1.Time `json:"from,omitempty"`

	// to selects deliveries of callbacks received before this time (RFC 3339; fractional seconds are honoured).
	// +optional
	To *metav1.Time `json:"to,omitempty"`
}

// ReplayPodStatus is what one receiver pod reported of a replay.
type ReplayPodStatus struct {
	// name of the pod.
	Name string `json:"name"`
	// matched is how many deliveries the pod's spool selected.
	Matched int64 `json:"matched"`
	// replayed is how many of them it queued for delivery again.
	Replayed int64 `json:"replayed"`
	// error is why the pod could not replay, if it could not.
	// +optional
	Error string `json:"error,omitempty"`
}

// CallbackReplayStatus is what the receivers did with the replay.
type CallbackReplayStatus struct {
	// observedGeneration is the generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// receiver is the CallbackReceiver ("namespace/name") that carries out the replay.
	// +optional
	Receiver string `json:"receiver,omitempty"`

	// matched is the number of deliveries selected, summed over the receiver's pods.
	// +optional
	Matched int64 `json:"matched"`

	// replayed is the number of deliveries queued again, summed over the receiver's pods.
	// +optional
	Replayed int64 `json:"replayed"`

	// pods are the per-pod figures, in name order.
	// +optional
	// +listType=map
	// +listMapKey=name
	Pods []ReplayPodStatus `json:"pods,omitempty"`

	// conditions: Complete (True when every serving pod of the receiver has reported;
	// False InProgress until then) and Failed (True: RouteNotFound, RouteNotRouted,
	// ReplayFailed). Each carries observedGeneration.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// Condition types and reasons of a CallbackReplay.
const (
	// ConditionComplete: every serving pod of the receiver has carried out the replay.
	ConditionComplete = "Complete"
	// ConditionFailed: the replay cannot run (or a pod failed it); the reason says why.
	ConditionFailed = "Failed"
	// ReasonInProgress (Complete=False): published; not every pod has reported yet.
	ReasonInProgress = "InProgress"
	// ReasonReplayed (Complete=True): every pod reported.
	ReasonReplayed = "Replayed"
	// ReasonRouteNotFound (Failed=True): routeRef names no CallbackRoute in the namespace.
	ReasonRouteNotFound = "RouteNotFound"
	// ReasonRouteNotRouted (Failed=True): the route is in no receiver's table (not
	// accepted, or its app has no receiver), so no receiver holds its deliveries.
	ReasonRouteNotRouted = "RouteNotRouted"
	// ReasonReplayFailed (Failed=True): a pod reported an error; status.pods says which.
	ReasonReplayFailed = "ReplayFailed"
	// ReasonNotFailed (Failed=False): the replay is valid and published.
	ReasonNotFailed = "NotFailed"
)

// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=cbreplay,categories=callback-router
// +kubebuilder:printcolumn:name="Route",type=string,JSONPath=`.spec.routeRef.name`
// +kubebuilder:printcolumn:name="Source",type=string,JSONPath=`.spec.source`
// +kubebuilder:printcolumn:name="Matched",type=integer,JSONPath=`.status.matched`
// +kubebuilder:printcolumn:name="Replayed",type=integer,JSONPath=`.status.replayed`
// +kubebuilder:printcolumn:name="Complete",type=string,JSONPath=`.status.conditions[?(@.type=="Complete")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Failed")].reason`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`

// CallbackReplay sends a route's dead letters or retained delivered callbacks to its
// backend again, on the receiver pods that hold them. Replays carry the original
// X-Callback-Id and X-Callback-Replay: true.
type CallbackReplay struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec CallbackReplaySpec `json:"spec"`
	// +optional
	// +kubebuilder:default={observedGeneration: 0}
	Status CallbackReplayStatus `json:"status,omitempty"`
}

// +kubebuilder:object:root=true

// CallbackReplayList is a list of CallbackReplays.
type CallbackReplayList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []CallbackReplay `json:"items"`
}
