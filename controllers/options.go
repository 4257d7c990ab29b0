// Package controllers reconciles CallbackApps and CallbackRoutes into each receiver's
// routing table and their status, and each CallbackReceiver into the data plane it owns:
// its Deployment, Service, ServiceAccount, Role and RoleBinding.
package controllers

import (
	"fmt"
	"strings"

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
	// objects' name, ReceiverObjectName(receiver).
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

// Defaults of the manager-level settings; the manager's flags default to these.
const (
	// DefaultReceiverNamespace is the manager's namespace when neither --namespace nor
	// POD_NAMESPACE is set, and so the default receiver namespace.
	DefaultReceiverNamespace = "callback-router-system"
	// DefaultReceiverName is the name of the CallbackReceiver the chart and config/default
	// install, and the receiver a CallbackApp binds to when it names none.
	DefaultReceiverName = "default"
	// ReceiverObjectSuffix is appended to a CallbackReceiver's name to name its objects:
	// receiver "default" runs as Deployment and Service "default-receiver".
	ReceiverObjectSuffix = "-receiver"
	// MaxReceiverNameLength keeps "<name>-receiver" a valid Service name (a DNS-1035
	// label of at most 63 characters).
	MaxReceiverNameLength = validation.DNS1035LabelMaxLength - len(ReceiverObjectSuffix)
	// ReceiverSpoolDir is where the receiver's spool volume is mounted.
	ReceiverSpoolDir = "/var/spool/callback-router"
	// ReceiverTmpDir is a writable emptyDir for the read-only root filesystem.
	ReceiverTmpDir = "/tmp"
	// ReceiverMetricsPort serves the receiver pods' /metrics (--metrics-listen), apart
	// from the callback port, which is for the IM platforms alone.
	ReceiverMetricsPort = 9090
)

// ReceiverObjectName names the Deployment, Service, ServiceAccount, Role and RoleBinding
// of the CallbackReceiver named receiver, and its routing table (the table Secrets'
// prefix, the receiver pods' --table).
func ReceiverObjectName(receiver string) string { return receiver + ReceiverObjectSuffix }

// TableName is the name of the routing table of the CallbackReceiver named receiver: the
// table controller writes it, the receiver pods read it (--table).
func TableName(receiver string) string { return ReceiverObjectName(receiver) }

// ManagerOptions are the manager-level settings, from its flags. Everything about one
// receiver is in its CallbackReceiver's spec.
type ManagerOptions struct {
	// Namespace is the manager's own namespace: its leader-election Lease, and the
	// installed-receivers ConfigMap.
	Namespace string
	// ReceiverNamespaces are the namespaces whose CallbackReceivers the manager runs; it
	// creates receiver objects and writes tables only there. Default: Namespace.
	ReceiverNamespaces []string
	// DefaultImage is the receiver image (the manager's own image).
	DefaultImage string
	// InstalledReceivers names a ConfigMap in Namespace whose CallbackReceiver manifests
	// the manager applies and prunes (see InstallReconciler); empty for none.
	InstalledReceivers string
	// StatusWorkers bounds concurrent status patches; DefaultStatusWorkers when 0.
	StatusWorkers int
}

// Validate reports the first setting that cannot work.
func (o *ManagerOptions) Validate() error {
	if o.Namespace == "" {
		return fmt.Errorf("manager namespace is empty")
	}
	if o.DefaultImage == "" {
		return fmt.Errorf("receiver image is empty: set --receiver-image or RECEIVER_IMAGE")
	}
	if len(o.ReceiverNamespaces) == 0 {
		return fmt.Errorf("no receiver namespaces")
	}
	for _, ns := range o.ReceiverNamespaces {
		if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
			return fmt.Errorf("receiver namespace %q: %s", ns, strings.Join(errs, "; "))
		}
	}
	if o.InstalledReceivers != "" {
		if errs := validation.IsDNS1123Subdomain(o.InstalledReceivers); len(errs) > 0 {
			return fmt.Errorf("installed-receivers ConfigMap %q: %s", o.InstalledReceivers, strings.Join(errs, "; "))
		}
	}
	if o.StatusWorkers < 0 {
		return fmt.Errorf("status workers %d is negative", o.StatusWorkers)
	}
	return nil
}

// watchesReceiverNamespace reports whether the manager runs receivers in ns.
func (o *ManagerOptions) watchesReceiverNamespace(ns string) bool {
	for _, n := range o.ReceiverNamespaces {
		if n == ns {
			return true
		}
	}
	return false
}

// ParseList splits a comma-separated list, dropping empty items.
func ParseList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
