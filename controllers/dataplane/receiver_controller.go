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
	// EventDraining: a scale-down (or the migration from a Deployment) waits for leaving
	// pods to deliver what they hold; the message gives the pending count.
	EventDraining = "Draining"
	// EventScaledDown: drained pods were removed (the StatefulSet's replicas lowered).
	EventScaledDown = "ScaledDown"
	// EventMigrated: the Deployment of a previous version was drained and deleted.
	EventMigrated = "Migrated"
	// EventSpoolFixed: spool.embedded's size or storage class differs from the running
	// StatefulSet's claims, which cannot change; the claims keep theirs.
	EventSpoolFixed = "SpoolFixed"
)

// +kubebuilder:rbac:groups=callbacks.callback-router.dev,resources=callbackreceivers,verbs=get;list;watch
// +kubebuilder:rbac:groups=callbacks.callback-router.dev,resources=callbackreceivers/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=callbacks.callback-router.dev,resources=callbackreceivers/finalizers,verbs=update
// +kubebuilder:rbac:groups=apps,resources=statefulsets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=apps,resources=deployments,verbs=get;list;watch;delete
// +kubebuilder:rbac:groups="",resources=services;serviceaccounts,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=pods;persistentvolumeclaims,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups=rbac.authorization.k8s.io,resources=roles;rolebindings,verbs=get;list;watch;create;update;patch;delete

// ReceiverReconciler runs each CallbackReceiver's data plane: it applies the receiver's
// StatefulSet (a spool PersistentVolumeClaim per pod), Service, headless Service,
// ServiceAccount, Role and RoleBinding with server-side apply and a fixed field owner
// (fields it sets are restored when someone changes them), each with the CallbackReceiver
// as controller owner, so that deleting or renaming the receiver leaves nothing behind
// but the spool claims (the garbage collector deletes the owned objects; the claims are
// retained). It reads each pod's pending deliveries from its /metrics, drains pods before
// a scale-down removes them (see planScale), replaces the Deployment of a previous version
// once its pods have drained, and reports in the receiver's status: replicas, readyReplicas
// and selector (the scale subresource, so an HPA can scale the CallbackReceiver), pending
// and pods, address, and the Ready, Progressing and Stalled conditions.
type ReceiverReconciler struct {
	// Client reads from the manager's cache and writes to the API server.
	Client client.Client
	// Namespaces are the receiver namespaces: CallbackReceivers elsewhere are ignored.
	Namespaces []string
	// DefaultImage is the receiver container image (the manager's own).
	DefaultImage string
	// Recorder emits events on receivers; nil for none.
	Recorder events.EventRecorder
	// Pending reads the pods' spool figures; nil uses a MetricsPendingReader.
	Pending PendingReader
	// DrainSettle: see DefaultDrainSettle (used when zero).
	DrainSettle time.Duration
	// DrainPollInterval: see DefaultDrainPollInterval (used when zero).
	DrainPollInterval time.Duration
	// PendingInterval: see DefaultPendingInterval (used when zero).
	PendingInterval time.Duration
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
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
		return ctrl.Result{}, r.updateStatus(ctx, recv, s, nil, nil, err)
	}
	in, err := r.observe(ctx, s)
	if err != nil {
		return ctrl.Result{}, err
	}
	r.keepClaimTemplate(recv, s, in.sts)
	plan := planScale(in)
	s.WorkloadReplicas, s.SelectServing = plan.replicas, plan.selectServing
	if err := r.apply(ctx, s); err != nil {
		var terminal errUnsupported
		if !errors.As(err, &terminal) {
			return ctrl.Result{}, err
		}
		return ctrl.Result{}, r.updateStatus(ctx, recv, s, nil, nil, err)
	}
	ctrl.LoggerFrom(ctx).V(1).Info("Applied receiver objects", "receiver", klog.KObj(recv), "replicas", plan.replicas)
	if err := r.carryOut(ctx, recv, s, in, plan); err != nil {
		return ctrl.Result{}, err
	}
	if err := r.updateStatus(ctx, recv, s, in.sts, plan, nil); err != nil {
		return ctrl.Result{}, err
	}
	if plan.draining() || plan.migrating || plan.replicas != plan.current {
		return ctrl.Result{RequeueAfter: orDefault(r.DrainPollInterval, DefaultDrainPollInterval)}, nil
	}
	return ctrl.Result{RequeueAfter: min(ReceiverResync, orDefault(r.PendingInterval, DefaultPendingInterval))}, nil
}

// observe reads the receiver's StatefulSet, the previous version's Deployment, its pods,
// their spool figures and the spool claims.
func (r *ReceiverReconciler) observe(ctx context.Context, s *ReceiverSettings) (planInput, error) {
	ns := s.Receiver.Namespace
	in := planInput{s: s, now: time.Now(), settle: orDefault(r.DrainSettle, DefaultDrainSettle),
		claims: map[string]*corev1.PersistentVolumeClaim{}}
	sts := &appsv1.StatefulSet{}
	switch err := r.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: s.Name}, sts); {
	case err == nil:
		in.sts = sts
	case !apierrors.IsNotFound(err):
		return in, fmt.Errorf("reading receiver StatefulSet %s/%s: %w", ns, s.Name, err)
	}
	dep := &appsv1.Deployment{}
	switch err := r.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: s.Name}, dep); {
	case err == nil:
		if metav1.IsControlledBy(dep, s.Receiver) {
			in.dep = dep
		}
	case !apierrors.IsNotFound(err):
		return in, fmt.Errorf("reading the previous receiver Deployment %s/%s: %w", ns, s.Name, err)
	}
	var pods corev1.PodList
	if err := r.Client.List(ctx, &pods, client.InNamespace(ns), client.MatchingLabels(ReceiverPodLabels(s))); err != nil {
		return in, fmt.Errorf("listing the pods of receiver %s/%s: %w", ns, s.Receiver.Name, err)
	}
	for i := range pods.Items {
		pod := &pods.Items[i]
		if ordinal(s.Name, pod) >= 0 || (in.dep != nil && isDeploymentPod(in.dep, pod)) {
			in.pods = append(in.pods, pod)
		}
	}
	var claims corev1.PersistentVolumeClaimList
	if err := r.Client.List(ctx, &claims, client.InNamespace(ns), client.MatchingLabels(ReceiverPodLabels(s))); err != nil {
		return in, fmt.Errorf("listing the spool claims of receiver %s/%s: %w", ns, s.Receiver.Name, err)
	}
	for i := range claims.Items {
		in.claims[claims.Items[i].Name] = &claims.Items[i]
	}
	reader := r.Pending
	if reader == nil {
		reader = &MetricsPendingReader{}
	}
	in.readings = readPods(ctx, reader, in.pods)
	return in, nil
}

// carryOut makes the plan's changes: pod labels, claim labels, the old Deployment's
// deletion, and the events.
func (r *ReceiverReconciler) carryOut(ctx context.Context, recv *v1alpha1.CallbackReceiver, s *ReceiverSettings, in planInput, plan *scalePlan) error {
	for _, c := range plan.podChanges {
		patch := client.MergeFrom(c.pod.DeepCopy())
		pod := c.pod.DeepCopy()
		if c.serving {
			if pod.Labels == nil {
				pod.Labels = map[string]string{}
			}
			pod.Labels[LabelServing] = ServingValue
			delete(pod.Annotations, AnnotationDrainingSince)
		} else {
			delete(pod.Labels, LabelServing)
			if _, ok := pod.Annotations[AnnotationDrainingSince]; !ok {
				if pod.Annotations == nil {
					pod.Annotations = map[string]string{}
				}
				pod.Annotations[AnnotationDrainingSince] = in.now.UTC().Format(time.RFC3339)
			}
		}
		if err := r.Client.Patch(ctx, pod, patch); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("labelling receiver pod %s/%s: %w", pod.Namespace, pod.Name, err)
		}
	}
	for _, c := range plan.claims {
		claim := in.claims[c.name].DeepCopy()
		patch := client.MergeFrom(in.claims[c.name])
		if c.value == "" {
			delete(claim.Labels, LabelSpool)
		} else {
			claim.Labels[LabelSpool] = c.value
		}
		if err := r.Client.Patch(ctx, claim, patch); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("labelling spool claim %s/%s: %w", claim.Namespace, claim.Name, err)
		}
	}
	if plan.replicas < plan.current {
		r.event(recv, corev1.EventTypeNormal, EventScaledDown, "Scale", fmt.Sprintf(
			"Drained pods removed: the StatefulSet goes from %d to %d replicas; their spool claims are kept", plan.current, plan.replicas))
	}
	if plan.deleteDeployment {
		err := r.Client.Delete(ctx, in.dep, client.Preconditions{UID: &in.dep.UID}, client.PropagationPolicy(metav1.DeletePropagationBackground))
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("deleting the previous receiver Deployment %s/%s: %w", in.dep.Namespace, in.dep.Name, err)
		}
		r.event(recv, corev1.EventTypeNormal, EventMigrated, "Migrate",
			"The Deployment of a previous version was drained and deleted; the StatefulSet "+s.Name+" runs the receiver")
	}
	return nil
}

// keepClaimTemplate keeps the running StatefulSet's claim size and storage class when the
// spec asks for others: a StatefulSet's volumeClaimTemplates cannot change, and refusing
// the whole StatefulSet would stop scaling and rollouts too. A Warning event says so.
func (r *ReceiverReconciler) keepClaimTemplate(recv *v1alpha1.CallbackReceiver, s *ReceiverSettings, sts *appsv1.StatefulSet) {
	if sts == nil || len(sts.Spec.VolumeClaimTemplates) != 1 || s.Stateless {
		return
	}
	vct := sts.Spec.VolumeClaimTemplates[0].Spec
	size, class := vct.Resources.Requests[corev1.ResourceStorage], vct.StorageClassName
	sameClass := (class == nil) == (s.StorageClassName == nil) && (class == nil || *class == *s.StorageClassName)
	if size.Cmp(s.SpoolSize) == 0 && sameClass {
		return
	}
	r.event(recv, corev1.EventTypeWarning, EventSpoolFixed, "Apply", fmt.Sprintf(
		"spool.embedded cannot change on a running receiver (a StatefulSet's volumeClaimTemplates are immutable): its claims keep size %s and storage class %s; expand the claims themselves, or create a new CallbackReceiver",
		size.String(), ptrString(class)))
	s.SpoolSize, s.StorageClassName = size, class
}

func ptrString(p *string) string {
	if p == nil {
		return "(cluster default)"
	}
	return *p
}

func (r *ReceiverReconciler) event(recv *v1alpha1.CallbackReceiver, typ, reason, action, msg string) {
	if r.Recorder != nil {
		r.Recorder.Eventf(recv, nil, typ, reason, action, "%s", msg)
	}
}

// apply server-side applies every object of the receiver. An object the API server
// refuses as invalid (say, a resource request above its limit, or a changed spool size:
// a StatefulSet's volumeClaimTemplates cannot change) is a terminal failure of the spec,
// returned as errUnsupported; anything else is retried.
func (r *ReceiverReconciler) apply(ctx context.Context, s *ReceiverSettings) error {
	applies := []struct {
		kind string
		obj  runtime.ApplyConfiguration
	}{
		{"ServiceAccount", DesiredServiceAccount(s)},
		{"Role", DesiredRole(s)},
		{"RoleBinding", DesiredRoleBinding(s)},
		{"headless Service", DesiredHeadlessService(s)},
		{"StatefulSet", DesiredStatefulSet(s)},
		{"Service", DesiredService(s)},
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

// updateStatus writes the receiver's status for the observed StatefulSet (nil when not
// known yet) and plan, or the terminal error, skipping the write when nothing changed.
func (r *ReceiverReconciler) updateStatus(ctx context.Context, recv *v1alpha1.CallbackReceiver, s *ReceiverSettings,
	sts *appsv1.StatefulSet, plan *scalePlan, terminal error) error {
	updated := recv.DeepCopy()
	setReceiverStatus(&updated.Status, recv.Generation, s, sts, plan, terminal)
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
// changes only when its status does. Ready is True once the StatefulSet runs the current
// spec with every desired replica available and nothing draining (kstatus: Current);
// while it rolls out or drains Ready is False (kstatus: InProgress), Progressing says
// which (reason RollingOut or Draining, the latter with the pending count); a spec that
// cannot run sets Stalled=True (kstatus: Failed).
func setReceiverStatus(st *v1alpha1.CallbackReceiverStatus, gen int64, s *ReceiverSettings, sts *appsv1.StatefulSet,
	plan *scalePlan, terminal error) {
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
	if sts != nil {
		st.Replicas = sts.Status.Replicas
		st.ReadyReplicas = sts.Status.ReadyReplicas
	}
	if plan != nil {
		st.Pending, st.Pods = plan.pending, plan.pods
	}
	if terminal != nil {
		msg := "Cannot run the receiver: " + terminal.Error()
		cond(v1alpha1.ConditionReady, false, v1alpha1.ReasonInvalid, msg)
		cond(v1alpha1.ConditionProgressing, false, v1alpha1.ReasonInvalid, msg)
		cond(v1alpha1.ConditionStalled, true, v1alpha1.ReasonInvalid, msg)
		return
	}
	meta.RemoveStatusCondition(&st.Conditions, v1alpha1.ConditionStalled)
	if sts == nil {
		cond(v1alpha1.ConditionReady, false, v1alpha1.ReasonUnavailable, "Waiting for the receiver StatefulSet")
		cond(v1alpha1.ConditionProgressing, true, v1alpha1.ReasonRollingOut, "Creating the receiver StatefulSet")
		return
	}
	desired := s.Replicas
	if plan != nil && plan.draining() {
		msg := plan.drainMessage(desired)
		cond(v1alpha1.ConditionReady, false, v1alpha1.ReasonDraining, msg)
		cond(v1alpha1.ConditionProgressing, true, v1alpha1.ReasonDraining, msg)
		return
	}
	ss := sts.Status
	want := desired
	if plan != nil {
		want = plan.replicas
	}
	observed := ss.ObservedGeneration >= sts.Generation
	rolledOut := observed && want == desired && ss.UpdatedReplicas == desired && ss.Replicas == desired && ss.AvailableReplicas == desired &&
		(ss.UpdateRevision == "" || ss.CurrentRevision == ss.UpdateRevision) && (plan == nil || !plan.migrating)
	if rolledOut {
		cond(v1alpha1.ConditionReady, true, v1alpha1.ReasonAvailable, fmt.Sprintf("%d of %d replicas ready", ss.ReadyReplicas, desired))
		cond(v1alpha1.ConditionProgressing, false, v1alpha1.ReasonStable, "The receiver runs its current spec")
		return
	}
	cond(v1alpha1.ConditionReady, false, v1alpha1.ReasonUnavailable,
		fmt.Sprintf("Rolling out: %d of %d replicas updated, %d available", ss.UpdatedReplicas, desired, ss.AvailableReplicas))
	cond(v1alpha1.ConditionProgressing, true, v1alpha1.ReasonRollingOut,
		fmt.Sprintf("Rolling out to %d replicas: %d updated, %d available, %d in total", desired, ss.UpdatedReplicas, ss.AvailableReplicas, ss.Replicas))
}

// emitEvents sends a Warning event when a receiver newly stalls, and a Normal one when
// it starts draining.
func (r *ReceiverReconciler) emitEvents(old, updated *v1alpha1.CallbackReceiver) {
	if r.Recorder == nil {
		return
	}
	if p := meta.FindStatusCondition(updated.Status.Conditions, v1alpha1.ConditionProgressing); p != nil &&
		p.Status == metav1.ConditionTrue && p.Reason == v1alpha1.ReasonDraining {
		if o := meta.FindStatusCondition(old.Status.Conditions, v1alpha1.ConditionProgressing); o == nil || o.Reason != v1alpha1.ReasonDraining {
			r.Recorder.Eventf(updated, nil, corev1.EventTypeNormal, EventDraining, "Scale", "%s", p.Message)
		}
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
// StatefulSet's status changes are what move the receiver's status, so they pass; the
// Deployment of a previous version is watched so that its deletion is seen.
func (r *ReceiverReconciler) SetupWithManager(mgr ctrl.Manager) error {
	inScope := predicate.NewPredicateFuncs(func(o client.Object) bool {
		return slices.Contains(r.Namespaces, o.GetNamespace())
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named("receiver").
		For(&v1alpha1.CallbackReceiver{}, builder.WithPredicates(inScope, predicate.GenerationChangedPredicate{})).
		Owns(&appsv1.StatefulSet{}).
		Owns(&appsv1.Deployment{}).
		Owns(&corev1.Service{}).
		Owns(&corev1.ServiceAccount{}).
		Owns(&rbacv1.Role{}).
		Owns(&rbacv1.RoleBinding{}).
		Complete(r)
}
