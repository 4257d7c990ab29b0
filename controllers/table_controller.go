package controllers

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/callback-router/callback-router/api/v1alpha1"
	"github.com/callback-router/callback-router/controllers/dataplane"
	"github.com/callback-router/callback-router/webhook/routing"
	"github.com/callback-router/callback-router/webhook/tablestore"
)

// Field indexes used to map Secret and Service events to the objects that reference them.
const (
	// IndexAppSecretRefs indexes CallbackApps by the names of the Secrets they reference.
	IndexAppSecretRefs = "callbackapp.secretRefs" //nolint:gosec // G101: the name of a field index, not a credential
	// IndexServiceRef indexes CallbackRoutes by the name of their backend Service.
	IndexServiceRef = "callbackroute.serviceRef"
)

// DefaultStatusWorkers is how many status patches run at once: with 10,000 routes, one
// at a time would take longer than the target of all Ready within 60 s.
const DefaultStatusWorkers = 16

// Retry delays of a failed table pass (an API error while reading a Secret, writing a
// table or a status): exponential from TableRetryMin, capped at TableRetryMax. The cap is
// low because the one table request carries every object: a long backoff would hold back
// every change in the cluster, and a pass with nothing changed costs no writes.
const (
	TableRetryMin = 50 * time.Millisecond
	TableRetryMax = 2 * time.Second
)

// TableResync re-compiles the tables periodically even without events, a safety net.
const TableResync = 10 * time.Minute

// tableRequest is the single work item of the table controller.
var tableRequest = reconcile.Request{NamespacedName: types.NamespacedName{Name: "routing-tables"}}

// TableName is the name of a receiver's table (its Secrets are <name>-table and
// <name>-table-<n> in the receiver's namespace): the receiver reads it with
// `receiver --namespace <receiver namespace> --table <TableName>`.
func TableName(r *v1alpha1.CallbackReceiver) string { return dataplane.TableName(r.Name) }

// +kubebuilder:rbac:groups=callbacks.callback-router.dev,resources=callbackroutes;callbackapps;callbackreceivers;callbackreplays,verbs=get;list;watch
// +kubebuilder:rbac:groups=callbacks.callback-router.dev,resources=callbackroutes/status;callbackapps/status;callbackreceivers/status,verbs=get;update;patch
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// TableReconciler compiles every CallbackApp and CallbackRoute with their Secrets into one
// routing table per CallbackReceiver (apps bind to receivers, routes attach to apps; the
// rules cross namespaces and receivers, so everything compiles together), writes each
// table into Secrets of its receiver's namespace, owned by the receiver, and sets every
// app's and route's status. It works on a single fixed request that every relevant event
// maps to (receivers, apps, routes, namespace label changes, referenced Secrets and
// Services, the tables' own Secrets); controller-runtime's queue coalesces bursts into one
// pass, and a change that takes an allowance away takes routes out in that same pass.
type TableReconciler struct {
	// Client reads from the cache and patches statuses.
	Client client.Client
	// TableClient writes the tables (server-side apply); TableReader reads the table
	// Secrets' metadata. Both default to Client.
	TableClient client.Client
	TableReader client.Reader
	// Labels are put on every table Secret.
	Labels map[string]string
	// Recorder emits Warning events on apps and routes.
	Recorder events.EventRecorder
	// StatusWorkers bounds concurrent status patches; DefaultStatusWorkers when 0.
	StatusWorkers int

	// secrets is set by SetupWithManager (or by tests).
	secrets *secretData
	metrics *tableMetrics
}

// Reconcile compiles, writes the tables, then updates statuses.
func (r *TableReconciler) Reconcile(ctx context.Context, _ reconcile.Request) (ctrl.Result, error) {
	log := ctrl.LoggerFrom(ctx)
	start := time.Now()
	// The objects are the cache's own (no deep copy of 10,000 routes per pass): Compile
	// only reads them, and the status updates copy an object before changing it.
	receivers := &v1alpha1.CallbackReceiverList{}
	apps := &v1alpha1.CallbackAppList{}
	routes := &v1alpha1.CallbackRouteList{}
	namespaces := &corev1.NamespaceList{}
	replayList := &v1alpha1.CallbackReplayList{}
	for _, l := range []client.ObjectList{receivers, apps, routes, namespaces, replayList} {
		if err := r.Client.List(ctx, l, client.UnsafeDisableDeepCopy); err != nil {
			return ctrl.Result{}, fmt.Errorf("listing %T: %w", l, err)
		}
	}
	nsLabels := make(map[string]map[string]string, len(namespaces.Items))
	for i := range namespaces.Items {
		nsLabels[namespaces.Items[i].Name] = namespaces.Items[i].Labels
	}

	// Compile's callbacks cannot return errors: remember the first transient one, and
	// retry the whole pass rather than publish an object as unresolved because of it.
	var lookupErr error
	used := map[types.NamespacedName]bool{}
	getSecret := func(namespace, name string) (*corev1.Secret, bool) {
		key := types.NamespacedName{Namespace: namespace, Name: name}
		used[key] = true
		s, err := r.secrets.get(ctx, key)
		if err != nil {
			lookupErr = errors.Join(lookupErr, fmt.Errorf("reading Secret %s: %w", key, err))
			return nil, false
		}
		return s, s != nil
	}
	resolveService := func(namespace string, ref v1alpha1.ServiceReference) (string, error) {
		svc := &corev1.Service{}
		err := r.Client.Get(ctx, types.NamespacedName{Namespace: namespace, Name: ref.Name}, svc)
		if apierrors.IsNotFound(err) {
			return "", refError(fmt.Sprintf("service %s/%s not found", namespace, ref.Name))
		}
		if err != nil {
			lookupErr = errors.Join(lookupErr, fmt.Errorf("reading Service %s/%s: %w", namespace, ref.Name, err))
			return "", refError(fmt.Sprintf("service %s/%s could not be read", namespace, ref.Name))
		}
		for _, p := range svc.Spec.Ports {
			if p.Port == ref.Port {
				return routing.DefaultServiceResolver(namespace, ref)
			}
		}
		return "", refError(fmt.Sprintf("service %s/%s has no port %d", namespace, ref.Name, ref.Port))
	}
	out := routing.Compile(routing.Input{
		Receivers: receivers.Items,
		Apps:      apps.Items,
		Routes:    routes.Items,
		Secret:    getSecret,
		Service:   resolveService,
		Namespace: func(name string) (map[string]string, bool) {
			l, ok := nsLabels[name]
			return l, ok
		},
	})
	if lookupErr != nil {
		return ctrl.Result{}, lookupErr
	}
	r.secrets.retain(used)
	compiled := time.Since(start)

	addReplays(out, replayList.Items)
	if err := r.writeTables(ctx, receivers.Items, out); err != nil {
		return ctrl.Result{}, err
	}
	patched, err := r.updateStatuses(ctx, apps.Items, routes.Items, out)
	if err != nil {
		return ctrl.Result{}, err
	}
	log.V(1).Info("Reconciled routing tables", "receivers", len(receivers.Items), "apps", len(apps.Items),
		"routes", len(routes.Items), "statusesPatched", patched, "compileTime", compiled, "duration", time.Since(start))
	return ctrl.Result{RequeueAfter: TableResync}, nil
}

// writeTables writes each receiver's table; unchanged tables cost no writes.
func (r *TableReconciler) writeTables(ctx context.Context, receivers []v1alpha1.CallbackReceiver, out *routing.Output) error {
	log := ctrl.LoggerFrom(ctx)
	var total tablestore.WriteResult
	routes := 0
	for i := range receivers {
		recv := &receivers[i]
		snap := out.Tables[types.NamespacedName{Namespace: recv.Namespace, Name: recv.Name}]
		w := r.writer(recv)
		res, err := w.WriteSnapshot(ctx, snap)
		if err != nil {
			return fmt.Errorf("writing the routing table of CallbackReceiver %s/%s: %w", recv.Namespace, recv.Name, err)
		}
		if res.Changed() {
			log.Info("Wrote routing table", "receiver", klogRef(recv), "apps", len(snap.Apps), "routes", len(snap.Routes),
				"shards", res.Shards, "shardsWritten", res.ShardsWritten, "compressedBytes", res.CompressedBytes)
		}
		if err := r.setReceiverApps(ctx, recv, int32(len(snap.Apps))); err != nil {
			return err
		}
		routes += len(snap.Routes)
		total.Shards += res.Shards
		total.ShardsWritten += res.ShardsWritten
		total.CompressedBytes += res.CompressedBytes
		total.ManifestWritten = total.ManifestWritten || res.ManifestWritten
	}
	r.metrics.observe(routes, total)
	return nil
}

// setReceiverApps records in the receiver's status.apps how many apps its published table
// holds. The patch carries that field alone: the rest of the receiver's status belongs to
// the receiver reconciler (package dataplane).
func (r *TableReconciler) setReceiverApps(ctx context.Context, recv *v1alpha1.CallbackReceiver, apps int32) error {
	if recv.Status.Apps == apps {
		return nil
	}
	updated := recv.DeepCopy()
	updated.Status.Apps = apps
	if err := r.Client.Status().Patch(ctx, updated, client.MergeFrom(recv)); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("patching status.apps of CallbackReceiver %s/%s: %w", recv.Namespace, recv.Name, err)
	}
	return nil
}

func (r *TableReconciler) writer(recv *v1alpha1.CallbackReceiver) *tablestore.Writer {
	c, rd := r.TableClient, r.TableReader
	if c == nil {
		c = r.Client
	}
	if rd == nil {
		rd = r.Client
	}
	return &tablestore.Writer{
		Client: c, Reader: rd, Namespace: recv.Namespace, Name: TableName(recv), FieldOwner: FieldOwner, Labels: r.Labels,
		Owner: &metav1.OwnerReference{APIVersion: v1alpha1.GroupVersion.String(), Kind: "CallbackReceiver", Name: recv.Name, UID: recv.UID},
	}
}

func klogRef(o client.Object) string { return o.GetNamespace() + "/" + o.GetName() }

// refError is an unresolved reference, worded for the ResolvedRefs condition message
// that users read.
type refError string

func (e refError) Error() string { return string(e) }

// updateStatuses patches each app's and route's status that changed, several at a time.
func (r *TableReconciler) updateStatuses(ctx context.Context, apps []v1alpha1.CallbackApp, routes []v1alpha1.CallbackRoute, out *routing.Output) (int, error) {
	g, ctx := errgroup.WithContext(ctx)
	workers := r.StatusWorkers
	if workers <= 0 {
		workers = DefaultStatusWorkers
	}
	g.SetLimit(workers)
	patched := make(chan struct{}, len(apps)+len(routes))
	patch := func(old, updated client.Object, kind string, warnings ...routing.Cond) {
		g.Go(func() error {
			if err := r.Client.Status().Patch(ctx, updated, client.MergeFrom(old)); err != nil {
				if apierrors.IsNotFound(err) {
					return nil // deleted meanwhile; its delete event brings another pass
				}
				return fmt.Errorf("patching status of %s %s/%s: %w", kind, old.GetNamespace(), old.GetName(), err)
			}
			r.emitEvents(updated, conditionsOf(old), conditionsOf(updated))
			r.emitWarnings(updated, conditionsOf(old), conditionsOf(updated), warnings)
			patched <- struct{}{}
			return nil
		})
	}
	for i := range apps {
		a, st := &apps[i], &out.Apps[i]
		if appStatusUpToDate(&a.Status, a.Generation, st) {
			continue
		}
		updated := a.DeepCopy()
		setAppStatus(&updated.Status, a.Generation, st)
		patch(a, updated, "CallbackApp")
	}
	for i := range routes {
		rt, st := &routes[i], &out.Routes[i]
		if routeStatusUpToDate(&rt.Status, rt.Generation, st) {
			continue
		}
		updated := rt.DeepCopy()
		setRouteStatus(&updated.Status, rt.Generation, st)
		patch(rt, updated, "CallbackRoute", st.Warnings...)
	}
	err := g.Wait()
	return len(patched), err
}

func conditionsOf(o client.Object) []metav1.Condition {
	switch x := o.(type) {
	case *v1alpha1.CallbackApp:
		return x.Status.Conditions
	case *v1alpha1.CallbackRoute:
		return x.Status.Conditions
	}
	return nil
}

// stalledReasons are the Accepted and ResolvedRefs reasons that waiting does not fix: the
// object as written is refused, and only a change (of it, its app, its receiver or a
// namespace's labels) can admit it. They also set Stalled=True, which GitOps tools read
// (kstatus: Failed), so a pipeline that applies a refused route fails instead of waiting
// for its timeout. Reasons that the arrival of another object fixes (AppNotFound,
// ReceiverNotFound, BackendNotFound, SecretNotFound: GitOps applies in any order) leave
// Ready=False alone (kstatus: InProgress).
var stalledReasons = map[string]bool{
	v1alpha1.ReasonInvalid:              true,
	v1alpha1.ReasonNotAllowedByApp:      true,
	v1alpha1.ReasonNotAllowedByReceiver: true,
	v1alpha1.ReasonRefNotPermitted:      true,
	v1alpha1.ReasonConflict:             true,
}

// conditionSet is an outcome's conditions (without times): Accepted, ResolvedRefs and
// Ready, then Stalled when refused, then OrderingGuaranteed on an ordered route. An
// array, not a slice: the up-to-date check runs for every object on every pass and must
// not allocate.
type conditionSet struct {
	c [5]metav1.Condition
	n int
}

// optionalConditions are set only while they apply, and removed otherwise.
var optionalConditions = [...]string{v1alpha1.ConditionStalled, v1alpha1.ConditionOrderingGuaranteed}

// has reports whether the set holds a condition of type t.
func (s *conditionSet) has(t string) bool {
	for i := 0; i < s.n; i++ {
		if s.c[i].Type == t {
			return true
		}
	}
	return false
}

func condition(gen int64, t string, x *routing.Cond) metav1.Condition {
	s := metav1.ConditionFalse
	if x.True {
		s = metav1.ConditionTrue
	}
	return metav1.Condition{Type: t, Status: s, Reason: x.Reason, Message: truncate(x.Message), ObservedGeneration: gen}
}

// routeConditions are a route's conditions: an app's, plus OrderingGuaranteed when the
// route has spec.ordering.
func routeConditions(gen int64, st *routing.RouteStatus) conditionSet {
	out := conditions(gen, st.Accepted, st.ResolvedRefs, st.Ready)
	if st.Ordering != nil {
		out.c[out.n] = condition(gen, v1alpha1.ConditionOrderingGuaranteed, st.Ordering)
		out.n++
	}
	return out
}

// conditions are the conditions of an outcome: Stalled=True is added when the app or route
// is refused for one of the stalledReasons.
func conditions(gen int64, accepted, refs, ready routing.Cond) conditionSet {
	c := func(t string, x routing.Cond) metav1.Condition {
		s := metav1.ConditionFalse
		if x.True {
			s = metav1.ConditionTrue
		}
		return metav1.Condition{Type: t, Status: s, Reason: x.Reason, Message: truncate(x.Message), ObservedGeneration: gen}
	}
	out := conditionSet{n: 3}
	out.c[0] = c(v1alpha1.ConditionAccepted, accepted)
	out.c[1] = c(v1alpha1.ConditionResolvedRefs, refs)
	out.c[2] = c(v1alpha1.ConditionReady, ready)
	for _, x := range [2]*routing.Cond{&accepted, &refs} {
		if !x.True && stalledReasons[x.Reason] {
			out.c[3] = c(v1alpha1.ConditionStalled, routing.Cond{True: true, Reason: x.Reason, Message: x.Message})
			out.n = 4
			break
		}
	}
	return out
}

// maxConditionMessage is metav1.Condition's limit on message length.
const maxConditionMessage = 32768

func truncate(s string) string {
	if len(s) <= maxConditionMessage {
		return s
	}
	return s[:maxConditionMessage-3] + "..."
}

// setAppStatus writes an app's status for a compile outcome.
func setAppStatus(s *v1alpha1.CallbackAppStatus, gen int64, st *routing.AppStatus) {
	setConditions(&s.Conditions, conditions(gen, st.Accepted, st.ResolvedRefs, st.Ready))
	s.ObservedGeneration, s.URL, s.AttachedRoutes = gen, st.URL, st.AttachedRoutes
}

// unknownCommandsCondition is a route's UnknownCommands condition (the command catalogue's
// verdict), without time.
func unknownCommandsCondition(gen int64, st *routing.RouteStatus) metav1.Condition {
	u := &st.UnknownCommands
	s := metav1.ConditionFalse
	if u.True {
		s = metav1.ConditionTrue
	}
	return metav1.Condition{Type: v1alpha1.ConditionUnknownCommands, Status: s, Reason: u.Reason, Message: truncate(u.Message), ObservedGeneration: gen}
}

// unknownCommandsUpToDate reports whether have already carries the route's UnknownCommands
// verdict, or none when there is none (no app, no provider); it does not allocate.
func unknownCommandsUpToDate(have []metav1.Condition, gen int64, st *routing.RouteStatus) bool {
	h := meta.FindStatusCondition(have, v1alpha1.ConditionUnknownCommands)
	if !st.CommandsChecked {
		return h == nil
	}
	u := &st.UnknownCommands
	return h != nil && (h.Status == metav1.ConditionTrue) == u.True && h.Reason == u.Reason &&
		h.Message == truncate(u.Message) && h.ObservedGeneration == gen
}

// setRouteStatus writes a route's status for a compile outcome.
func setRouteStatus(s *v1alpha1.CallbackRouteStatus, gen int64, st *routing.RouteStatus) {
	setConditions(&s.Conditions, routeConditions(gen, st))
	if st.CommandsChecked {
		meta.SetStatusCondition(&s.Conditions, unknownCommandsCondition(gen, st))
	} else {
		meta.RemoveStatusCondition(&s.Conditions, v1alpha1.ConditionUnknownCommands)
	}
	s.ObservedGeneration, s.URL = gen, st.URL
}

// conditionsUpToDate reports whether have already says what want says, ignoring times;
// it runs for every object on every pass, so it neither copies nor allocates.
func conditionsUpToDate(have []metav1.Condition, want *conditionSet) bool {
	for _, t := range optionalConditions {
		if !want.has(t) && meta.FindStatusCondition(have, t) != nil {
			return false // set only while it applies: it must go
		}
	}
	for i := 0; i < want.n; i++ {
		w := &want.c[i]
		h := meta.FindStatusCondition(have, w.Type)
		if h == nil || h.Status != w.Status || h.Reason != w.Reason || h.Message != w.Message || h.ObservedGeneration != w.ObservedGeneration {
			return false
		}
	}
	return true
}

func appStatusUpToDate(have *v1alpha1.CallbackAppStatus, gen int64, st *routing.AppStatus) bool {
	if have.ObservedGeneration != gen || have.URL != st.URL || have.AttachedRoutes != st.AttachedRoutes {
		return false
	}
	want := conditions(gen, st.Accepted, st.ResolvedRefs, st.Ready)
	return conditionsUpToDate(have.Conditions, &want)
}

func routeStatusUpToDate(have *v1alpha1.CallbackRouteStatus, gen int64, st *routing.RouteStatus) bool {
	if have.ObservedGeneration != gen || have.URL != st.URL {
		return false
	}
	want := routeConditions(gen, st)
	return conditionsUpToDate(have.Conditions, &want) && unknownCommandsUpToDate(have.Conditions, gen, st)
}

// setConditions sets each condition; a condition's lastTransitionTime changes only when
// its status does.
func setConditions(have *[]metav1.Condition, want conditionSet) {
	for i := 0; i < want.n; i++ {
		meta.SetStatusCondition(have, want.c[i])
	}
	for _, t := range optionalConditions {
		if !want.has(t) {
			meta.RemoveStatusCondition(have, t)
		}
	}
}

// emitEvents sends a Warning event when an app or route newly fails a condition (its
// status, reason or message changed to a failure): unchanged failures send nothing. The
// event's reason is the condition's (Conflict, NotAllowedByApp, RefNotPermitted, ...).
// Ready=False follows from the other two and sends none of its own, except AppNotReady.
func (r *TableReconciler) emitEvents(obj client.Object, old, updated []metav1.Condition) {
	if r.Recorder == nil {
		return
	}
	for _, t := range []string{v1alpha1.ConditionAccepted, v1alpha1.ConditionResolvedRefs, v1alpha1.ConditionReady} {
		n := meta.FindStatusCondition(updated, t)
		if n == nil || n.Status == metav1.ConditionTrue {
			continue
		}
		if t == v1alpha1.ConditionReady && n.Reason != v1alpha1.ReasonAppNotReady {
			continue
		}
		if t == v1alpha1.ConditionResolvedRefs && n.Reason == v1alpha1.ReasonInvalid {
			continue // follows from Accepted=False
		}
		o := meta.FindStatusCondition(old, t)
		if o != nil && o.Status == n.Status && o.Reason == n.Reason && o.Message == n.Message {
			continue
		}
		r.Recorder.Eventf(obj, nil, corev1.EventTypeWarning, n.Reason, "Compile", "%s", n.Message)
	}
}

// emitWarnings sends the catalogue's Warning events about a route when they appear: its
// UnknownCommands condition turning True or changing (reason UnknownCommands, with the
// did-you-mean), and each compiler warning (SyncOnAfterCallback) when its Accepted
// message, which carries the warnings, changed.
func (r *TableReconciler) emitWarnings(obj client.Object, old, updated []metav1.Condition, warnings []routing.Cond) {
	if r.Recorder == nil {
		return
	}
	if n := meta.FindStatusCondition(updated, v1alpha1.ConditionUnknownCommands); n != nil && n.Status == metav1.ConditionTrue {
		if o := meta.FindStatusCondition(old, v1alpha1.ConditionUnknownCommands); o == nil || o.Status != n.Status || o.Message != n.Message {
			r.Recorder.Eventf(obj, nil, corev1.EventTypeWarning, n.Reason, "Compile", "%s", n.Message)
		}
	}
	if len(warnings) == 0 {
		return
	}
	n, o := meta.FindStatusCondition(updated, v1alpha1.ConditionAccepted), meta.FindStatusCondition(old, v1alpha1.ConditionAccepted)
	if n == nil || (o != nil && o.Message == n.Message) {
		return
	}
	for _, w := range warnings {
		r.Recorder.Eventf(obj, nil, corev1.EventTypeWarning, w.Reason, "Compile", "%s", w.Message)
	}
}

// appSecretNames are the Secrets an app references.
func appSecretNames(a *v1alpha1.CallbackApp) []string {
	v := a.Spec.Verify
	if v == nil {
		return nil
	}
	var names []string
	if v.TokenSecretRef != nil {
		names = append(names, v.TokenSecretRef.Name)
	}
	if v.BasicAuthSecretRef != nil && (v.TokenSecretRef == nil || v.BasicAuthSecretRef.Name != v.TokenSecretRef.Name) {
		names = append(names, v.BasicAuthSecretRef.Name)
	}
	return names
}

// SetupWithManager registers the field indexes and the controller. Receivers, apps and
// routes are watched fully (status changes filtered out), Namespaces for label changes,
// Services through the cache, Secrets metadata-only and mapped through the app index, so
// only referenced Secrets (and the tables' own, for drift repair) trigger a pass.
func (r *TableReconciler) SetupWithManager(ctx context.Context, mgr ctrl.Manager) error {
	idx := mgr.GetFieldIndexer()
	if err := idx.IndexField(ctx, &v1alpha1.CallbackApp{}, IndexAppSecretRefs, func(o client.Object) []string {
		return appSecretNames(o.(*v1alpha1.CallbackApp))
	}); err != nil {
		return fmt.Errorf("indexing CallbackApps by Secret: %w", err)
	}
	if err := idx.IndexField(ctx, &v1alpha1.CallbackRoute{}, IndexServiceRef, func(o client.Object) []string {
		if s := o.(*v1alpha1.CallbackRoute).Spec.Backend.Service; s != nil {
			return []string{s.Name}
		}
		return nil
	}); err != nil {
		return fmt.Errorf("indexing CallbackRoutes by Service: %w", err)
	}
	if r.secrets == nil {
		r.secrets = newSecretData(mgr.GetCache(), mgr.GetAPIReader())
	}
	if r.metrics == nil {
		r.metrics = newTableMetrics()
	}
	toTable := func() []reconcile.Request { return []reconcile.Request{tableRequest} }
	referenced := func(ctx context.Context, list client.ObjectList, index string, obj client.Object) bool {
		err := r.Client.List(ctx, list, client.InNamespace(obj.GetNamespace()), client.MatchingFields{index: obj.GetName()})
		// On an index error, err on the side of a (cheap, coalesced) extra pass.
		return err != nil || meta.LenList(list) > 0
	}
	mapSecret := handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, obj client.Object) []reconcile.Request {
		if _, ok := obj.GetLabels()[tablestore.LabelTable]; ok {
			return toTable()
		}
		if referenced(ctx, &v1alpha1.CallbackAppList{}, IndexAppSecretRefs, obj) {
			return toTable()
		}
		return nil
	})
	mapService := handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, obj client.Object) []reconcile.Request {
		if referenced(ctx, &v1alpha1.CallbackRouteList{}, IndexServiceRef, obj) {
			return toTable()
		}
		return nil
	})
	all := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request { return toTable() })
	// A pass at start even with nothing to route: a receiver becomes ready only once a
	// table, possibly empty, is published.
	kick := source.Func(func(_ context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request]) error {
		q.Add(tableRequest)
		return nil
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named("table").
		WatchesRawSource(kick).
		// A single request: one worker. Bursts coalesce in the queue.
		WithOptions(controller.Options{
			MaxConcurrentReconciles: 1,
			RateLimiter:             workqueue.NewTypedItemExponentialFailureRateLimiter[reconcile.Request](TableRetryMin, TableRetryMax),
		}).
		Watches(&v1alpha1.CallbackReceiver{}, all, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&v1alpha1.CallbackApp{}, all, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&v1alpha1.CallbackRoute{}, all, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&v1alpha1.CallbackReplay{}, all, builder.WithPredicates(replayPublishChanged())).
		Watches(&corev1.Namespace{}, all, builder.WithPredicates(predicate.LabelChangedPredicate{})).
		Watches(&corev1.Service{}, mapService, builder.WithPredicates(servicePortsChanged())).
		WatchesMetadata(&corev1.Secret{}, mapSecret, builder.WithPredicates(predicate.ResourceVersionChangedPredicate{})).
		Complete(r)
}

// servicePortsChanged passes Service creations, deletions and port changes: the only
// things the tables depend on.
func servicePortsChanged() predicate.Predicate {
	return predicate.Funcs{
		UpdateFunc: func(e event.UpdateEvent) bool {
			o, ok1 := e.ObjectOld.(*corev1.Service)
			n, ok2 := e.ObjectNew.(*corev1.Service)
			return !ok1 || !ok2 || !equality.Semantic.DeepEqual(o.Spec.Ports, n.Spec.Ports)
		},
	}
}
