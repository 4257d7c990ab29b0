// Package controllers reconciles CallbackRoutes into the receiver's routing table and the
// routes' status, and keeps the receiver's Deployment, Service, ServiceAccount, Role and
// RoleBinding in the desired state.
package controllers

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// Labels and values shared by every object the manager owns in the receiver namespace.
const (
	// LabelManagedBy marks objects the manager owns; drift on them is repaired and the
	// manager's cache of them is filtered by it.
	LabelManagedBy = "app.kubernetes.io/managed-by"
	// ManagedByValue is the value of LabelManagedBy on owned objects.
	ManagedByValue = "callback-router"
	// LabelName is the standard name label; on receiver pods it is the receiver name.
	LabelName = "app.kubernetes.io/name"
	// LabelComponent is the standard component label; "receiver" on receiver pods.
	LabelComponent = "app.kubernetes.io/component"
	// ComponentReceiver is the value of LabelComponent on the receiver's objects.
	ComponentReceiver = "receiver"
	// LabelPartOf groups every object of the product.
	LabelPartOf = "app.kubernetes.io/part-of"
)

// Defaults of the receiver settings; the manager's flags default to these.
const (
	// DefaultReceiverNamespace is used when neither --receiver-namespace nor POD_NAMESPACE is set.
	DefaultReceiverNamespace = "callback-router-system"
	// DefaultReceiverName names the receiver Deployment, Service, ServiceAccount, Role and RoleBinding.
	DefaultReceiverName = "callback-router-receiver"
	// DefaultReceiverReplicas is the receiver's replica count when the manager manages it.
	DefaultReceiverReplicas = 2
	// DefaultReceiverPort serves callbacks and health probes.
	DefaultReceiverPort = 8080
	// DefaultReceiverMetricsPort serves the receiver's /metrics (its --metrics-listen),
	// never the callback port: metrics name apps and routes, and the callback port may be
	// public.
	DefaultReceiverMetricsPort = 9090
	// ReceiverSpoolDir is where the receiver's spool volume is mounted.
	ReceiverSpoolDir = "/var/spool/callback-router"
	// ReceiverTmpDir is a writable emptyDir for the read-only root filesystem.
	ReceiverTmpDir = "/tmp"
)

// ReceiverOptions are the settings of the receiver's Deployment and Service, from the
// manager's --receiver-* flags.
type ReceiverOptions struct {
	// Namespace holds the receiver's objects and the table Secrets.
	Namespace string
	// Name names the Deployment, Service, ServiceAccount, Role, RoleBinding, and prefixes the table Secrets.
	Name string
	// Image is the container image (the same image as the manager).
	Image string
	// Replicas is spec.replicas of the Deployment when ManageReplicas is true.
	Replicas int32
	// ManageReplicas false leaves spec.replicas to an autoscaler.
	ManageReplicas bool
	// CPURequest, MemoryRequest, CPULimit and MemoryLimit are the container resources; empty means unset.
	CPURequest, MemoryRequest, CPULimit, MemoryLimit string
	// SpoolSize is the sizeLimit of the spool emptyDir.
	SpoolSize string
	// ServiceType is the receiver Service's type.
	ServiceType corev1.ServiceType
	// Port is the receiver's callback port (callbacks and health probes) and the Service port.
	Port int32
	// MetricsPort is the receiver's metrics port (its --metrics-listen), served to the
	// cluster only by the ClusterIP Service <Name>-metrics.
	MetricsPort int32
	// OpenIMTimeout is the receiver's --openim-timeout (OpenIM's webhooks.yml timeout);
	// zero leaves the receiver's default.
	OpenIMTimeout time.Duration
	// TrustedProxies are CIDRs whose X-Forwarded-For the receiver trusts (its --trusted-proxies).
	TrustedProxies []string
}

// DefaultReceiverOptions returns the defaults the manager's flags use.
func DefaultReceiverOptions() ReceiverOptions {
	return ReceiverOptions{
		Namespace:      DefaultReceiverNamespace,
		Name:           DefaultReceiverName,
		Replicas:       DefaultReceiverReplicas,
		ManageReplicas: true,
		CPURequest:     "100m",
		MemoryRequest:  "64Mi",
		MemoryLimit:    "256Mi",
		SpoolSize:      "1Gi",
		ServiceType:    corev1.ServiceTypeClusterIP,
		Port:           DefaultReceiverPort,
		MetricsPort:    DefaultReceiverMetricsPort,
	}
}

// Validate reports the first setting that cannot produce a valid Deployment or Service.
func (o *ReceiverOptions) Validate() error {
	switch {
	case o.Namespace == "":
		return fmt.Errorf("receiver namespace is empty")
	case o.Name == "":
		return fmt.Errorf("receiver name is empty")
	case o.Image == "":
		return fmt.Errorf("receiver image is empty: set --receiver-image or RECEIVER_IMAGE")
	case o.Replicas < 0:
		return fmt.Errorf("receiver replicas %d is negative", o.Replicas)
	case o.Port < 1 || o.Port > 65535:
		return fmt.Errorf("receiver port %d is out of range", o.Port)
	case o.MetricsPort < 1 || o.MetricsPort > 65535:
		return fmt.Errorf("receiver metrics port %d is out of range", o.MetricsPort)
	case o.MetricsPort == o.Port:
		return fmt.Errorf("receiver metrics port %d is the callback port: metrics must not be served where callbacks arrive", o.MetricsPort)
	case o.OpenIMTimeout < 0:
		return fmt.Errorf("receiver OpenIM timeout %s is negative", o.OpenIMTimeout)
	}
	switch o.ServiceType {
	case corev1.ServiceTypeClusterIP, corev1.ServiceTypeNodePort, corev1.ServiceTypeLoadBalancer:
	default:
		return fmt.Errorf("receiver service type %q is not ClusterIP, NodePort or LoadBalancer", o.ServiceType)
	}
	for name, q := range map[string]string{
		"cpu request": o.CPURequest, "memory request": o.MemoryRequest,
		"cpu limit": o.CPULimit, "memory limit": o.MemoryLimit, "spool size": o.SpoolSize,
	} {
		if q == "" {
			continue
		}
		if _, err := resource.ParseQuantity(q); err != nil {
			return fmt.Errorf("receiver %s %q: %w", name, q, err)
		}
	}
	for _, c := range o.TrustedProxies {
		if _, err := netip.ParsePrefix(c); err != nil {
			return fmt.Errorf("receiver trusted proxy %q: %w", c, err)
		}
	}
	return nil
}

// ParseCIDRList splits a comma-separated list of CIDRs, dropping empty items.
func ParseCIDRList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
