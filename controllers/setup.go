package controllers

import (
	"context"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/callback-router/callback-router/api/v1alpha1"
)

// NewScheme returns a scheme with the built-in types and the callback-router kinds.
func NewScheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		return nil, fmt.Errorf("adding client-go types to scheme: %w", err)
	}
	if err := v1alpha1.AddToScheme(s); err != nil {
		return nil, fmt.Errorf("adding callback-router types to scheme: %w", err)
	}
	return s, nil
}

// NewCacheOptions limits the manager's cache: the owned kinds only in the receiver
// namespace and with the managed-by label, managed fields stripped everywhere. Services
// are cached cluster-wide (route backends); Secrets only as metadata (see TableReconciler).
func NewCacheOptions(o ReceiverOptions) cache.Options {
	owned := cache.ByObject{
		Namespaces: map[string]cache.Config{o.Namespace: {}},
		Label:      labels.SelectorFromSet(labels.Set{LabelManagedBy: ManagedByValue}),
	}
	return cache.Options{
		DefaultTransform: cache.TransformStripManagedFields(),
		ByObject: map[client.Object]cache.ByObject{
			&appsv1.Deployment{}:     owned,
			&corev1.ServiceAccount{}: owned,
			&rbacv1.Role{}:           owned,
			&rbacv1.RoleBinding{}:    owned,
		},
	}
}

// Setup registers the table and receiver reconcilers with mgr. statusWorkers 0 means
// DefaultStatusWorkers.
func Setup(ctx context.Context, mgr ctrl.Manager, o ReceiverOptions, statusWorkers int) error {
	table := &TableReconciler{
		Client:        mgr.GetClient(),
		TableReader:   mgr.GetCache(),
		Labels:        map[string]string{LabelManagedBy: ManagedByValue, LabelPartOf: ManagedByValue},
		Recorder:      mgr.GetEventRecorder("callback-router"),
		StatusWorkers: statusWorkers,
	}
	if err := table.SetupWithManager(ctx, mgr); err != nil {
		return fmt.Errorf("setting up the table controller: %w", err)
	}
	receiver := &ReceiverReconciler{Client: mgr.GetClient(), Options: o}
	if err := receiver.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the receiver controller: %w", err)
	}
	if err := RegisterStatusMetrics(mgr); err != nil {
		return fmt.Errorf("registering the status metrics: %w", err)
	}
	return nil
}
