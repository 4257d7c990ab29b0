package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// CallbackReceiverSpec is the data plane: receiver pods behind one Service, and which
// namespaces' CallbackApps may bind to it (Gateway API's Gateway).
type CallbackReceiverSpec struct {
	// replicas is the number of receiver pods. It is the scale subresource's spec path,
	// so a HorizontalPodAutoscaler may own it; a scale-down drains the leaving pods first.
	// +optional
	// +kubebuilder:default=2
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1000
	Replicas *int32 `json:"replicas,omitempty"`

	// allowedApps says which namespaces' CallbackApps may bind. Default: the receiver's
	// own namespace only.
	// +optional
	AllowedApps *AllowedApps `json:"allowedApps,omitempty"`

	// service is the receiver's Service.
	// +optional
	Service *ReceiverService `json:"service,omitempty"`

	// spool is where acknowledged Async callbacks wait for delivery: exactly one of
	// embedded (a PersistentVolumeClaim per pod, the default) or jetStream.
	// +optional
	Spool *Spool `json:"spool,omitempty"`

	// trustedProxies are CIDRs whose X-Forwarded-For the receiver trusts (for sourceCIDRs
	// behind an Ingress or load balancer).
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=64
	// +kubebuilder:validation:items:XValidation:rule="isCIDR(self)",message="each of trustedProxies must be a CIDR such as 10.0.0.0/8"
	TrustedProxies []string `json:"trustedProxies,omitempty"`

	// resources of the receiver container.
	// +optional
	Resources *corev1.ResourceRequirements `json:"resources,omitempty"`

	// retention keeps each delivered Async callback this long after its delivery, so that
	// it can be replayed (the receiver's --retention; the admin API's replay). Retained
	// callbacks count against the spool's size. Off (0) by default.
	// +optional
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('0s') && duration(self) <= duration('720h')",message="retention must be between 0s and 720h"
	Retention *metav1.Duration `json:"retention,omitempty"`

	// tracing exports the receivers' trace spans (receive, verify, filter, store, each
	// delivery attempt) with OTLP/HTTP. Every delivery carries a W3C traceparent either way.
	// +optional
	Tracing *ReceiverTracing `json:"tracing,omitempty"`
}

// ReceiverTracing configures span export.
type ReceiverTracing struct {
	// otlpEndpoint is the OTLP/HTTP collector URL, e.g. http://otel-collector.observability.svc:4318
	// (the receiver's --otlp-endpoint; /v1/traces is added when the URL has no path).
	// +required
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="isURL(self) && url(self).getScheme() in ['http', 'https']",message="tracing.otlpEndpoint must be an http or https URL"
	OTLPEndpoint string `json:"otlpEndpoint"`
}

// AllowedApps says which namespaces' CallbackApps may bind to a receiver.
type AllowedApps struct {
	// namespaces whose apps may bind.
	// +optional
	// +kubebuilder:default={from: Same}
	Namespaces Namespaces `json:"namespaces,omitempty"`
}

// ReceiverService is the receiver's Service.
type ReceiverService struct {
	// type of the Service.
	// +optional
	// +kubebuilder:default=ClusterIP
	// +kubebuilder:validation:Enum=ClusterIP;NodePort;LoadBalancer
	Type corev1.ServiceType `json:"type,omitempty"`

	// port of the Service (callbacks only; metrics are on a port of their own).
	// +optional
	// +kubebuilder:default=8080
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Port int32 `json:"port,omitempty"`
}

// Spool selects the receiver's durable store for acknowledged Async callbacks.
//
// +kubebuilder:validation:XValidation:rule="has(self.embedded) != has(self.jetStream)",message="exactly one of spool.embedded or spool.jetStream must be set"
type Spool struct {
	// embedded stores callbacks on a PersistentVolumeClaim per pod.
	// +optional
	Embedded *EmbeddedSpool `json:"embedded,omitempty"`

	// jetStream stores callbacks in a NATS JetStream stream of an existing NATS cluster;
	// the receivers then keep no state of their own.
	// +optional
	JetStream *JetStreamSpool `json:"jetStream,omitempty"`
}

// EmbeddedSpool is a PersistentVolumeClaim per receiver pod.
type EmbeddedSpool struct {
	// size of each pod's PersistentVolumeClaim.
	// +optional
	// +kubebuilder:default="1Gi"
	Size *resource.Quantity `json:"size,omitempty"`

	// storageClassName of the claims; the cluster's default class when unset.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	StorageClassName *string `json:"storageClassName,omitempty"`
}

// JetStreamSpool is a NATS JetStream stream.
type JetStreamSpool struct {
	// url lists the NATS servers: nats://HOST:PORT[,HOST:PORT...].
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:Pattern=`^(nats|tls)://[^\s]+$`
	URL string `json:"url"`

	// credentialsSecretRef names a Secret of the receiver's namespace holding the NATS
	// credentials file under the key "creds".
	// +optional
	CredentialsSecretRef *LocalObjectReference `json:"credentialsSecretRef,omitempty"`

	// replicas of the stream (how many NATS servers hold each callback).
	// +optional
	// +kubebuilder:default=3
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=5
	Replicas int32 `json:"replicas,omitempty"`
}

// CallbackReceiverStatus is the observed state of a CallbackReceiver.
type CallbackReceiverStatus struct {
	// observedGeneration is the generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// replicas is the number of receiver pods (the scale subresource's status path).
	// +optional
	Replicas int32 `json:"replicas"`

	// readyReplicas is the number of receiver pods ready to serve.
	// +optional
	ReadyReplicas int32 `json:"readyReplicas,omitempty"`

	// selector is the label selector of the receiver's pods, in string form, for the
	// scale subresource (and so for HorizontalPodAutoscalers).
	// +optional
	Selector string `json:"selector,omitempty"`

	// apps is the number of CallbackApps in the receiver's routing table.
	// +optional
	Apps int32 `json:"apps"`

	// pending is the number of acknowledged Async deliveries the receiver's pods hold
	// (waiting or in flight), summed over the pods whose count could be read; see pods.
	// +optional
	// +kubebuilder:default=0
	Pending int64 `json:"pending"`

	// pods is each receiver pod's spool: its pending deliveries, whether the receiver's
	// Service sends to it, and whether it is leaving (being drained before a scale-down
	// or the migration from a Deployment).
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=1000
	Pods []ReceiverPodStatus `json:"pods,omitempty"`

	// address is the receiver's in-cluster base URL, e.g.
	// http://default-receiver.callback-router-system.svc:8080.
	// +optional
	Address string `json:"address,omitempty"`

	// conditions: Ready (True once the workload runs the current spec with every desired
	// replica available), Progressing (True while it rolls out or scales; reason Draining
	// while a scale-down waits for leaving pods to deliver), and Stalled (True only when
	// the receiver cannot run as specified: an invalid or unsupported spec). Ready and Stalled follow the
	// kstatus conventions that Flux, Argo CD and `kubectl wait` read.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// ReceiverPodStatus is one receiver pod's spool as the manager last read it.
type ReceiverPodStatus struct {
	// name of the pod.
	// +required
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`

	// pending is the pod's pending Async deliveries (the sum of its
	// callback_router_spool_depth); unset when it could not be read (see error).
	// +optional
	Pending *int64 `json:"pending,omitempty"`

	// spoolBytes is the logical size of the pod's spool (payloads, pending deliveries and
	// dead letters); unset when it could not be read.
	// +optional
	SpoolBytes *int64 `json:"spoolBytes,omitempty"`

	// serving says whether the receiver's Service sends callbacks to the pod.
	// +optional
	Serving bool `json:"serving"`

	// leaving says the pod is being drained: it goes away once pending is 0.
	// +optional
	Leaving bool `json:"leaving,omitempty"`

	// error says why pending could not be read.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Error string `json:"error,omitempty"`
}

// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:subresource:scale:specpath=.spec.replicas,statuspath=.status.replicas,selectorpath=.status.selector
// +kubebuilder:resource:shortName=cbrecv,categories=callback-router
// +kubebuilder:validation:XValidation:rule="self.metadata.name.size() <= 43 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",message="a CallbackReceiver's name must be a DNS-1035 label of at most 43 characters: its StatefulSet and Service are named <name>-receiver, and a StatefulSet's name may not exceed 52"
// +kubebuilder:printcolumn:name="Replicas",type=integer,JSONPath=`.status.replicas`
// +kubebuilder:printcolumn:name="Ready Replicas",type=integer,JSONPath=`.status.readyReplicas`,priority=1
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Pending",type=integer,JSONPath=`.status.pending`
// +kubebuilder:printcolumn:name="Address",type=string,JSONPath=`.status.address`
// +kubebuilder:printcolumn:name="Apps",type=integer,JSONPath=`.status.apps`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`

// CallbackReceiver is a data plane: receiver pods that verify and deliver the callbacks
// of the CallbackApps bound to it. The manager owns its workload, Services,
// ServiceAccount, Role and RoleBinding.
type CallbackReceiver struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +optional
	Spec CallbackReceiverSpec `json:"spec,omitempty"`
	// status defaults to observedGeneration 0, so that an object the manager has not yet
	// seen reads as in progress (kstatus, Argo CD), not as current.
	// +optional
	// +kubebuilder:default={observedGeneration: 0}
	Status CallbackReceiverStatus `json:"status,omitempty"`
}

// +kubebuilder:object:root=true

// CallbackReceiverList is a list of CallbackReceivers.
type CallbackReceiverList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []CallbackReceiver `json:"items"`
}
