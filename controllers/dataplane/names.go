// Package dataplane runs each CallbackReceiver's data plane: its Deployment, Service,
// ServiceAccount, Role and RoleBinding, owned by the CallbackReceiver, and the receiver's
// status (replicas and selector for the scale subresource, address, Ready, Progressing and
// Stalled). It also applies the CallbackReceivers an installation declares in a ConfigMap
// (the Helm chart's way to create them). The routing tables the receivers read are written
// by the table controller (package controllers) under TableName.
package dataplane

import (
	"k8s.io/apimachinery/pkg/util/validation"
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
)

// Naming and fixed paths of a receiver's objects.
const (
	// ObjectSuffix is appended to a CallbackReceiver's name to name its objects: receiver
	// "default" runs as Deployment and Service "default-receiver".
	ObjectSuffix = "-receiver"
	// MaxNameLength keeps "<name>-receiver" a valid Service name (a DNS-1035 label of at
	// most 63 characters); the CRD enforces it too.
	MaxNameLength = validation.DNS1035LabelMaxLength - len(ObjectSuffix)
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

// TableName is the name of the routing table of the CallbackReceiver named receiver (its
// Secrets are <name>-table and <name>-table-<n> in the receiver's namespace): the table
// controller writes it, the receiver pods read it (their --table).
func TableName(receiver string) string { return receiver }

// ServiceHost is the in-cluster DNS name of a receiver's Service.
func ServiceHost(namespace, receiver string) string {
	return ObjectName(receiver) + "." + namespace + ".svc"
}
