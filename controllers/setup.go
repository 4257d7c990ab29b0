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
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/callback-router/callback-router/api/v1alpha1"
	"github.com/callback-router/callback-router/controllers/dataplane"
)

// NewScheme returns a scheme with the built-in types and callback-router's kinds.
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

// NewCacheOptions limits the manager's cache: CallbackReceivers and the kinds they own
// only in the receiver namespaces, the owned kinds only with the managed-by label, and
// the installed-receivers ConfigMap only in the manager's namespace; managed fields are
// stripped everywhere. Services are cached cluster-wide (route backends); Secrets only
// as metadata (see TableReconciler).
func NewCacheOptions(o ManagerOptions) cache.Options {
	receiverNS := map[string]cache.Config{}
	for _, ns := range o.ReceiverNamespaces {
		receiverNS[ns] = cache.Config{}
	}
	owned := cache.ByObject{
		Namespaces: receiverNS,
		Label:      labels.SelectorFromSet(labels.Set{dataplane.LabelManagedBy: dataplane.ManagedByValue}),
	}
	return cache.Options{
		DefaultTransform: cache.TransformStripManagedFields(),
		ByObject: map[client.Object]cache.ByObject{
			&v1alpha1.CallbackReceiver{}:    {Namespaces: receiverNS},
			&appsv1.Deployment{}:            owned,
			&appsv1.StatefulSet{}:           owned,
			&corev1.Pod{}:                   owned,
			&corev1.PersistentVolumeClaim{}: owned,
			&corev1.ServiceAccount{}:        owned,
			&rbacv1.Role{}:                  owned,
			&rbacv1.RoleBinding{}:           owned,
			&corev1.ConfigMap{}:             {Namespaces: map[string]cache.Config{o.Namespace: {}}},
		},
	}
}

// Setup registers the manager's reconcilers with mgr.
func Setup(ctx context.Context, mgr ctrl.Manager, o ManagerOptions) error {
	recorder := mgr.GetEventRecorder("callback-router")
	table := &TableReconciler{
		Client:        mgr.GetClient(),
		TableReader:   mgr.GetCache(),
		Labels:        map[string]string{dataplane.LabelManagedBy: dataplane.ManagedByValue, dataplane.LabelPartOf: dataplane.ManagedByValue},
		Recorder:      recorder,
		StatusWorkers: o.StatusWorkers,
	}
	if err := table.SetupWithManager(ctx, mgr); err != nil {
		return fmt.Errorf("setting up the table controller: %w", err)
	}
	replay := &ReplayReconciler{Client: mgr.GetClient()}
	if err := replay.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the replay controller: %w", err)
	}
	if err := RegisterStatusMetrics(mgr); err != nil {
		return fmt.Errorf("registering the status metrics: %w", err)
	}
	return SetupDataPlane(mgr, o, recorder)
}

// SetupDataPlane registers the receiver reconciler and, with o.InstalledReceivers, the
// installed-receivers reconciler.
func SetupDataPlane(mgr ctrl.Manager, o ManagerOptions, recorder events.EventRecorder) error {
	receiver := &dataplane.ReceiverReconciler{Client: mgr.GetClient(), Namespaces: o.ReceiverNamespaces,
		DefaultImage: o.DefaultImage, Recorder: recorder, DrainSettle: o.DrainSettle,
		PendingInterval: o.PendingInterval}
	if err := receiver.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the receiver controller: %w", err)
	}
	if o.InstalledReceivers != "" {
		install := &dataplane.InstallReconciler{Client: mgr.GetClient(), Namespace: o.Namespace, Name: o.InstalledReceivers, Recorder: recorder}
		if err := install.SetupWithManager(mgr); err != nil {
			return fmt.Errorf("setting up the installed-receivers controller: %w", err)
		}
	}
	return nil
}
