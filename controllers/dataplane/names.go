// Package dataplane runs each CallbackReceiver's data plane: its StatefulSet (a spool
// PersistentVolumeClaim per pod), Service, headless Service,
// ServiceAccount, Role and RoleBinding, owned by the CallbackReceiver, and the receiver's
// status (replicas and selector for the scale subresource, address, Ready, Progressing and
// Stalled). It also applies the CallbackReceivers an installation declares in a ConfigMap
// (the Helm chart's way to create them). The routing tables the receivers read are written
// by the table controller (package controllers) under TableName.
package dataplane

import (
	"strconv"
)

// Labels and values shared by every object the manager owns in a receiver namespace.
const (
	// LabelManagedBy marks objects the manager owns; drift on them is repaired and the
	// manager's cache of them is filtered by it.
	LabelManagedBy = "app.kubernetes.io/managed-by"
	// ManagedByValue is the value of LabelManagedBy on owned objects.
	ManagedByValue = "callback-router"
	// LabelName is the standard name label; on a receiver's objects and pods it is the
	// objects' name, ObjectName(receiver).
	LabelName = "app.kubernetes.io/name"
	// LabelInstance is the standard instance label; on a receiver's objects and pods it is
	// the CallbackReceiver's name.
	LabelInstance = "app.kubernetes.io/instance"
	// LabelComponent is the standard component label; "receiver" on receiver pods.
	LabelComponent = "app.kubernetes.io/component"
	// ComponentReceiver is the value of LabelComponent on the receiver's objects.
	ComponentReceiver = "receiver"
	// LabelPartOf groups every object of the product.
	LabelPartOf = "app.kubernetes.io/part-of"
	// LabelServing is on every receiver pod the receiver's Service sends callbacks to
	// (value "true"): the pod template carries it and the Service selects it; the manager
	// removes it from a pod it drains before a scale-down, so the pod gets no new callbacks
	// while it delivers what it holds. The StatefulSet's selector does not include it.
	LabelServing = "callbacks.callback-router.dev/serving"
	// ServingValue is LabelServing's value.
	ServingValue = "true"
	// LabelSpool is on the PersistentVolumeClaim of a receiver pod that a scale-down
	// removed: SpoolEmpty when its spool was empty (nothing pending, no dead letters) as
	// the pod left, SpoolRetained when it still held data (dead letters). The manager
	// removes it when a scale-up brings the pod, and so the claim, back. It never deletes
	// claims itself; `kubectl delete pvc -l callbacks.callback-router.dev/spool=empty`
	// deletes the empty ones.
	LabelSpool = "callbacks.callback-router.dev/spool"
	// SpoolEmpty is LabelSpool's value on a claim that holds nothing.
	SpoolEmpty = "empty"
	// SpoolRetained is LabelSpool's value on a claim that still holds data.
	SpoolRetained = "retained"
	// LabelStatefulSetPod is the label the StatefulSet controller puts on each of its pods
	// (the pod's name).
	LabelStatefulSetPod = "statefulset.kubernetes.io/pod-name"
)

// Naming and fixed paths of a receiver's objects.
const (
	// ObjectSuffix is appended to a CallbackReceiver's name to name its objects: receiver
	// "default" runs as StatefulSet and Service "default-receiver".
	ObjectSuffix = "-receiver"
	// MaxStatefulSetNameLength is the longest StatefulSet name whose pods can be created:
	// the controller-revision-hash label, "<name>-<hash>", must fit a label value (63).
	MaxStatefulSetNameLength = 52
	// MaxNameLength keeps "<name>-receiver" a StatefulSet name whose pods can be created
	// (and so a valid Service name); the CRD enforces it too.
	MaxNameLength = MaxStatefulSetNameLength - len(ObjectSuffix)
	// HeadlessSuffix is appended to a CallbackReceiver's name to name its headless
	// Service, which gives the StatefulSet's pods their identity
	// (<name>-receiver-0.<name>-pods.<namespace>.svc).
	HeadlessSuffix = "-pods"
	// SpoolVolume names the spool's volumeClaimTemplate; the claims are
	// spool-<name>-receiver-<ordinal>.
	SpoolVolume = "spool"
	// SpoolDir is where the receiver's spool volume is mounted.
	SpoolDir = "/var/spool/callback-router"
	// NATSCredsDir is where spec.spool.jetStream.credentialsSecretRef is mounted.
	NATSCredsDir = "/etc/callback-router/nats" //nolint:gosec // a mount path, not a credential
	// NATSCredsKey is the key of the NATS credentials file in that Secret.
	NATSCredsKey = "creds"
	// natsCredsVolume names the credentials volume.
	natsCredsVolume = "nats-creds" //nolint:gosec // a volume name, not a credential
	// TmpDir is a writable emptyDir for the read-only root filesystem.
	TmpDir = "/tmp"
	// MetricsPort serves the receiver pods' /metrics (--metrics-listen), apart from the
	// callback port, which is for the IM platforms alone.
	MetricsPort = 9090
	// AdminAddress is where the receiver pods serve the admin API (--admin-listen):
	// loopback only, reached with `kubectl port-forward`, never through a Service.
	AdminAddress = "127.0.0.1:9091"
)

// ObjectName names the Deployment, Service, ServiceAccount, Role and RoleBinding of the
// CallbackReceiver named receiver.
func ObjectName(receiver string) string { return receiver + ObjectSuffix }

// HeadlessName names the headless Service of the CallbackReceiver named receiver.
func HeadlessName(receiver string) string { return receiver + HeadlessSuffix }

// ClaimName names the spool PersistentVolumeClaim of the receiver's pod ordinal.
func ClaimName(receiver string, ordinal int) string {
	return SpoolVolume + "-" + ObjectName(receiver) + "-" + strconv.Itoa(ordinal)
}

// TableName is the name of the routing table of the CallbackReceiver named receiver (its
// Secrets are <name>-table and <name>-table-<n> in the receiver's namespace): the table
// controller writes it, the receiver pods read it (their --table).
func TableName(receiver string) string { return receiver }

// ServiceHost is the in-cluster DNS name of a receiver's Service.
func ServiceHost(namespace, receiver string) string {
	return ObjectName(receiver) + "." + namespace + ".svc"
}
