// Package controllers reconciles CallbackApps and CallbackRoutes into each receiver's
// routing table and their status, and wires the manager: the table controller here, the
// receivers' data planes in package dataplane.
package controllers

import (
	"fmt"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/callback-router/callback-router/controllers/dataplane"
)

// FieldOwner is the server-side apply field manager of everything the manager writes
// (tables here, receiver objects in package dataplane).
const FieldOwner = dataplane.FieldOwner

// Defaults of the manager-level settings; the manager's flags default to these.
const (
	// DefaultNamespace is the manager's namespace when neither --namespace nor
	// POD_NAMESPACE is set, and so the default receiver namespace.
	DefaultNamespace = "callback-router-system"
	// DefaultReceiverName is the name of the CallbackReceiver the chart and config/default
	// install.
	DefaultReceiverName = "default"
)

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
	// the manager applies and prunes (see dataplane.InstallReconciler); empty for none.
	InstalledReceivers string
	// StatusWorkers bounds concurrent status patches; DefaultStatusWorkers when 0.
	StatusWorkers int
	// DrainSettle is how long a receiver pod leaving in a scale-down must have been out of
	// the Service before its empty spool counts as drained; dataplane.DefaultDrainSettle
	// when 0.
	DrainSettle time.Duration
	// PendingInterval is how often the receiver pods' pending counts are read into the
	// receivers' status when nothing drains; dataplane.DefaultPendingInterval when 0.
	PendingInterval time.Duration
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
	if o.DrainSettle < 0 {
		return fmt.Errorf("drain settle %s is negative", o.DrainSettle)
	}
	if o.PendingInterval < 0 {
		return fmt.Errorf("pending interval %s is negative", o.PendingInterval)
	}
	if o.StatusWorkers < 0 {
		return fmt.Errorf("status workers %d is negative", o.StatusWorkers)
	}
	return nil
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
