package controllers

import (
	"context"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"
)

// FieldOwner is the server-side apply field manager of everything the manager writes.
const FieldOwner = "callback-router"

// ReceiverResync is how often the receiver's objects are re-applied even without an event,
// a safety net for missed watch events.
const ReceiverResync = 10 * time.Minute

// +kubebuilder:rbac:groups=apps,resources=deployments,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=services;serviceaccounts,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=rbac.authorization.k8s.io,resources=roles;rolebindings,verbs=get;list;watch;create;update;patch;delete

// ReceiverReconciler keeps the receiver's Deployment, Service, ServiceAccount, Role and
// RoleBinding as ReceiverOptions describes them. It uses server-side apply with a fixed
// field owner: fields it sets are restored when someone changes them (drift repair), fields
// it leaves out (spec.replicas under an autoscaler) belong to others. The objects live in
// the receiver namespace and have no owner reference (no namespaced owner exists); the
// label app.kubernetes.io/managed-by=callback-router marks and selects them.
type ReceiverReconciler struct {
	Client  client.Client
	Options ReceiverOptions
}

// receiverRequest is the single work item of the receiver reconciler.
func (r *ReceiverReconciler) receiverRequest() reconcile.Request {
	return reconcile.Request{NamespacedName: types.NamespacedName{Namespace: r.Options.Namespace, Name: r.Options.Name}}
}

// Reconcile applies every receiver object.
func (r *ReceiverReconciler) Reconcile(ctx context.Context, _ reconcile.Request) (ctrl.Result, error) {
	log := ctrl.LoggerFrom(ctx)
	o := &r.Options
	applies := []struct {
		kind, name string
		obj        runtime.ApplyConfiguration
	}{
		{"ServiceAccount", o.Name, DesiredServiceAccount(o)},
		{"Role", o.Name, DesiredRole(o)},
		{"RoleBinding", o.Name, DesiredRoleBinding(o)},
		{"Service", o.Name, DesiredService(o)},
		{"Service", ReceiverMetricsServiceName(o), DesiredMetricsService(o)},
		{"Deployment", o.Name, DesiredDeployment(o)},
	}
	for _, a := range applies {
		if err := r.Client.Apply(ctx, a.obj, client.FieldOwner(FieldOwner), client.ForceOwnership); err != nil {
			return ctrl.Result{}, fmt.Errorf("applying receiver %s %s/%s: %w", a.kind, o.Namespace, a.name, err)
		}
	}
	log.V(1).Info("Applied receiver objects", "namespace", o.Namespace, "name", o.Name)
	return ctrl.Result{RequeueAfter: ReceiverResync}, nil
}

// isReceiverObject reports whether obj is one of the receiver's objects.
func (r *ReceiverReconciler) isReceiverObject(obj client.Object) bool {
	if obj.GetNamespace() != r.Options.Namespace {
		return false
	}
	if _, ok := obj.(*corev1.Service); ok && obj.GetName() == ReceiverMetricsServiceName(&r.Options) {
		return true
	}
	return obj.GetName() == r.Options.Name
}

// SetupWithManager registers the reconciler. The owned kinds are watched through the
// manager's label-filtered cache (see NewCacheOptions); any event on one of them, and the
// start of the manager, enqueue the single receiver request.
func (r *ReceiverReconciler) SetupWithManager(mgr ctrl.Manager) error {
	toReceiver := handler.EnqueueRequestsFromMapFunc(func(_ context.Context, obj client.Object) []reconcile.Request {
		if !r.isReceiverObject(obj) {
			return nil
		}
		return []reconcile.Request{r.receiverRequest()}
	})
	own := builder.WithPredicates(predicate.NewPredicateFuncs(r.isReceiverObject))
	// Status-only changes of the Deployment (every rollout step) need no re-apply.
	ownDeployment := builder.WithPredicates(predicate.NewPredicateFuncs(r.isReceiverObject),
		predicate.Or(predicate.GenerationChangedPredicate{}, predicate.LabelChangedPredicate{}))
	kick := source.Func(func(_ context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request]) error {
		q.Add(r.receiverRequest())
		return nil
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named("receiver").
		WatchesRawSource(kick).
		Watches(&appsv1.Deployment{}, toReceiver, ownDeployment).
		Watches(&corev1.Service{}, toReceiver, own).
		Watches(&corev1.ServiceAccount{}, toReceiver, own).
		Watches(&rbacv1.Role{}, toReceiver, own).
		Watches(&rbacv1.RoleBinding{}, toReceiver, own).
		Complete(r)
}
