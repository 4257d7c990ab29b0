package dataplane

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/events"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	"github.com/callback-router/callback-router/api/v1alpha1"
)

// FieldOwner is the server-side apply field manager of everything the manager writes.
const FieldOwner = "callback-router"

// ReceiverResync is how often a receiver's objects are re-applied even without an event,
// a safety net for missed watch events.
const ReceiverResync = 10 * time.Minute

// Event reasons on CallbackReceivers.
const (
	// EventReceiverStalled: the receiver cannot be run as specified (invalid or
	// unsupported spec, or its rollout exceeded its progress deadline).
	EventReceiverStalled = "Stalled"
)

// +kubebuilder:rbac:groups=callbacks.callback-router.dev,resources=callbackreceivers,verbs=get;list;watch
// +kubebuilder:rbac:groups=callbacks.callback-router.dev,resources=callbackreceivers/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=callbacks.callback-router.dev,resources=callbackreceivers/finalizers,verbs=update
// +kubebuilder:rbac:groups=apps,resources=deployments,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=services;serviceaccounts,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=rbac.authorization.k8s.io,resources=roles;rolebindings,verbs=get;list;watch;create;update;patch;delete

// ReceiverReconciler runs each CallbackReceiver's data plane: it applies the receiver's
// Deployment, Service, ServiceAccount, Role and RoleBinding with server-side apply and a
// fixed field owner (fields it sets are restored when someone changes them), each with
// the CallbackReceiver as controller owner, so that deleting or renaming the receiver
// leaves nothing behind (the garbage collector deletes the owned objects). It reports the
// workload's state in the receiver's status: replicas, readyReplicas and selector (the
// scale subresource, so an HPA can scale the CallbackReceiver), address, and the Ready,
// Progressing and Stalled conditions.
type ReceiverReconciler struct {
	// Client reads from the manager's cache and writes to the API server.
	Client client.Client
	// Namespaces are the receiver namespaces: CallbackReceivers elsewhere are ignored.
	Namespaces []string
	// DefaultImage is the receiver container image (the manager's own).
	DefaultImage string
	// Recorder emits Warning events on receivers; nil for none.
	Recorder events.EventRecorder
}

// Reconcile applies one receiver's objects and updates its status.
func (r *ReceiverReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	recv := &v1alpha1.CallbackReceiver{}
	if err := r.Client.Get(ctx, req.NamespacedName, recv); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !recv.DeletionTimestamp.IsZero() {
		// The garbage collector deletes the owned objects; nothing of ours to clean up.
		return ctrl.Result{}, nil
	}
	s, err := ResolveReceiver(recv, r.DefaultImage)
	if err != nil {
		return ctrl.Result{}, r.updateStatus(ctx, recv, s, nil, err)
	}
	if err := r.apply(ctx, s); err != nil {
		var terminal errUnsupported
		if !errors.As(err, &terminal) {
			return ctrl.Result{}, err
		}
		return ctrl.Result{}, r.updateStatus(ctx, recv, s, nil, err)
	}
	ctrl.LoggerFrom(ctx).V(1).Info("Applied receiver objects", "receiver", klog.KObj(recv))

	dep := &appsv1.Deployment{}
	if err := r.Client.Get(ctx, client.ObjectKey{Namespace: recv.Namespace, Name: s.Name}, dep); err != nil {
		if !apierrors.IsNotFound(err) {
			return ctrl.Result{}, fmt.Errorf("reading receiver Deployment %s/%s: %w", recv.Namespace, s.Name, err)
		}
		dep = nil // not in the cache yet: its create event brings another pass
	}
	if err := r.updateStatus(ctx, recv, s, dep, nil); err != nil {
		return ctrl.Result{}, err
	}
	return ctrl.Result{RequeueAfter: ReceiverResync}, nil
}

// apply server-side applies every object of the receiver. An object the API server
// refuses as invalid (say, a resource request above its limit) is a terminal failure of
// the spec, returned as errUnsupported; anything else is retried.
func (r *ReceiverReconciler) apply(ctx context.Context, s *ReceiverSettings) error {
	applies := []struct {
		kind string
		obj  runtime.ApplyConfiguration
	}{
		{"ServiceAccount", DesiredServiceAccount(s)},
		{"Role", DesiredRole(s)},
		{"RoleBinding", DesiredRoleBinding(s)},
		{"Service", DesiredService(s)},
		{"Deployment", DesiredDeployment(s)},
	}
	for _, a := range applies {
		err := r.Client.Apply(ctx, a.obj, client.FieldOwner(FieldOwner), client.ForceOwnership)
		switch {
		case err == nil:
		case apierrors.IsInvalid(err):
			return errUnsupported(fmt.Sprintf("the API server refused the receiver's %s: %v", a.kind, err))
		default:
			return fmt.Errorf("applying receiver %s %s/%s: %w", a.kind, s.Receiver.Namespace, s.Name, err)
		}
	}
	return nil
}

// updateStatus writes the receiver's status for the observed Deployment (nil when not
// known yet) or the terminal error, skipping the write when nothing changed.
func (r *ReceiverReconciler) updateStatus(ctx context.Context, recv *v1alpha1.CallbackReceiver, s *ReceiverSettings,
	dep *appsv1.Deployment, terminal error) error {
	updated := recv.DeepCopy()
	setReceiverStatus(&updated.Status, recv.Generation, s, dep, terminal)
	if equality.Semantic.DeepEqual(recv.Status, updated.Status) {
		return nil
	}
	if err := r.Client.Status().Patch(ctx, updated, client.MergeFrom(recv)); err != nil {
		if apierrors.IsNotFound(err) {
			return nil // deleted meanwhile
		}
		return fmt.Errorf("patching status of CallbackReceiver %s/%s: %w", recv.Namespace, recv.Name, err)
	}
	r.emitEvents(recv, updated)
	return nil
}

// setReceiverStatus computes a receiver's status; a condition's lastTransitionTime
// changes only when its status does. Ready is True once the workload runs the current
// spec with every desired replica available (kstatus: Current); while it rolls out Ready
// is False (kstatus: InProgress); a spec that cannot run, or a rollout past its progress
// deadline, sets Stalled=True (kstatus: Failed).
func setReceiverStatus(st *v1alpha1.CallbackReceiverStatus, gen int64, s *ReceiverSettings, dep *appsv1.Deployment, terminal error) {
	cond := func(t string, ok bool, reason, msg string) {
		status := metav1.ConditionFalse
		if ok {
			status = metav1.ConditionTrue
		}
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: t, Status: status, Reason: reason, Message: msg, ObservedGeneration: gen})
	}
	st.ObservedGeneration = gen
	if s != nil {
		st.Selector = ReceiverSelector(s)
		st.Address = ReceiverAddress(s)
	}
	if dep != nil {
		st.Replicas = dep.Status.Replicas
		st.ReadyReplicas = dep.Status.ReadyReplicas
	}
	if terminal != nil {
		msg := "Cannot run the receiver: " + terminal.Error()
		cond(v1alpha1.ConditionReady, false, v1alpha1.ReasonInvalid, msg)
		cond(v1alpha1.ConditionProgressing, false, v1alpha1.ReasonInvalid, msg)
		cond(v1alpha1.ConditionStalled, true, v1alpha1.ReasonInvalid, msg)
		return
	}
	if dep == nil {
		cond(v1alpha1.ConditionReady, false, v1alpha1.ReasonUnavailable, "Waiting for the receiver Deployment")
		cond(v1alpha1.ConditionProgressing, true, v1alpha1.ReasonRollingOut, "Creating the receiver Deployment")
		meta.RemoveStatusCondition(&st.Conditions, v1alpha1.ConditionStalled)
		return
	}
	desired := s.Replicas
	ds := dep.Status
	observed := ds.ObservedGeneration >= dep.Generation
	rolledOut := observed && ds.UpdatedReplicas == desired && ds.Replicas == desired && ds.AvailableReplicas == desired
	if c := deploymentCondition(dep, appsv1.DeploymentProgressing); c != nil && c.Status == corev1.ConditionFalse &&
		c.Reason == "ProgressDeadlineExceeded" && !rolledOut {
		msg := "The rollout exceeded its progress deadline: " + c.Message
		cond(v1alpha1.ConditionReady, false, v1alpha1.ReasonUnavailable,
			fmt.Sprintf("%d of %d replicas ready; rollout stalled", ds.ReadyReplicas, desired))
		cond(v1alpha1.ConditionProgressing, false, v1alpha1.ReasonProgressDeadlineExceeded, msg)
		cond(v1alpha1.ConditionStalled, true, v1alpha1.ReasonProgressDeadlineExceeded, msg)
		return
	}
	meta.RemoveStatusCondition(&st.Conditions, v1alpha1.ConditionStalled)
	if rolledOut {
		cond(v1alpha1.ConditionReady, true, v1alpha1.ReasonAvailable, fmt.Sprintf("%d of %d replicas ready", ds.ReadyReplicas, desired))
		cond(v1alpha1.ConditionProgressing, false, v1alpha1.ReasonStable, "The receiver runs its current spec")
		return
	}
	cond(v1alpha1.ConditionReady, false, v1alpha1.ReasonUnavailable,
		fmt.Sprintf("Rolling out: %d of %d replicas updated, %d available", ds.UpdatedReplicas, desired, ds.AvailableReplicas))
	cond(v1alpha1.ConditionProgressing, true, v1alpha1.ReasonRollingOut,
		fmt.Sprintf("Rolling out to %d replicas: %d updated, %d available, %d in total", desired, ds.UpdatedReplicas, ds.AvailableReplicas, ds.Replicas))
}

// deploymentCondition returns the Deployment's condition of type t, or nil.
func deploymentCondition(d *appsv1.Deployment, t appsv1.DeploymentConditionType) *appsv1.DeploymentCondition {
	for i := range d.Status.Conditions {
		if d.Status.Conditions[i].Type == t {
			return &d.Status.Conditions[i]
		}
	}
	return nil
}

// emitEvents sends a Warning event when a receiver newly stalls.
func (r *ReceiverReconciler) emitEvents(old, updated *v1alpha1.CallbackReceiver) {
	if r.Recorder == nil {
		return
	}
	n := meta.FindStatusCondition(updated.Status.Conditions, v1alpha1.ConditionStalled)
	if n == nil || n.Status != metav1.ConditionTrue {
		return
	}
	if o := meta.FindStatusCondition(old.Status.Conditions, v1alpha1.ConditionStalled); o != nil &&
		o.Status == n.Status && o.Reason == n.Reason && o.Message == n.Message {
		return
	}
	r.Recorder.Eventf(updated, nil, corev1.EventTypeWarning, EventReceiverStalled, "Reconcile", "%s", n.Message)
}

// SetupWithManager registers the reconciler. Receivers are watched in the receiver
// namespaces (the cache is limited to them, see NewCacheOptions), spec changes only; the
// owned kinds through the label-filtered cache, mapped to their controller owner. The
// Deployment's status changes are what move the receiver's status, so they pass.
func (r *ReceiverReconciler) SetupWithManager(mgr ctrl.Manager) error {
	inScope := predicate.NewPredicateFuncs(func(o client.Object) bool {
		return slices.Contains(r.Namespaces, o.GetNamespace())
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named("receiver").
		For(&v1alpha1.CallbackReceiver{}, builder.WithPredicates(inScope, predicate.GenerationChangedPredicate{})).
		Owns(&appsv1.Deployment{}).
		Owns(&corev1.Service{}).
		Owns(&corev1.ServiceAccount{}).
		Owns(&rbacv1.Role{}).
		Owns(&rbacv1.RoleBinding{}).
		Complete(r)
}
