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
	"github.com/callback-router/callback-router/webhook/routing"
	"github.com/callback-router/callback-router/webhook/tablestore"
)

// Field indexes on CallbackRoutes, used to map Secret and Service events to routes.
const (
	// IndexSecretRefs indexes routes by the names of the Secrets they reference.
	IndexSecretRefs = "callbackroute.secretRefs"
	// IndexServiceRef indexes routes by the name of their backend Service.
	IndexServiceRef = "callbackroute.serviceRef"
)

// DefaultStatusWorkers is how many route status patches run at once: with 10,000 routes,
// one at a time would take longer than the target of all Ready within 60 s.
const DefaultStatusWorkers = 16

// Retry delays of a failed table pass (an API error while reading a Secret, writing the
// table or a status): exponential from TableRetryMin, capped at TableRetryMax. The cap is
// low because the one table request carries every route: a long backoff would hold back
// every change in the cluster, and a pass with nothing changed costs no writes.
const (
	TableRetryMin = 50 * time.Millisecond
	TableRetryMax = 2 * time.Second
)

// TableResync re-compiles the table periodically even without events, a safety net.
const TableResync = 10 * time.Minute

// Event reasons on CallbackRoutes.
const (
	// EventConflict: the route lost a Sync command to an older route.
	EventConflict = "Conflict"
	// EventInvalid: the route cannot be compiled.
	EventInvalid = "Invalid"
	// EventRefNotFound: a referenced Secret, key, Service or port is missing.
	EventRefNotFound = "ReferenceNotFound"
)

// +kubebuilder:rbac:groups=callbacks.callback-router.dev,resources=callbackroutes,verbs=get;list;watch
// +kubebuilder:rbac:groups=callbacks.callback-router.dev,resources=callbackroutes/status,verbs=get;update;patch
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// TableReconciler compiles every CallbackRoute into the one routing table (conflicts are
// cross-namespace, so routes compile together), writes the table into Secrets of the
// receiver namespace, and sets each route's status. It works on a single fixed request
// that every route, referenced Secret and Service, and table Secret event maps to;
// controller-runtime's queue coalesces bursts into one pass.
type TableReconciler struct {
	// Client reads routes and Services from the cache and patches route status.
	Client client.Client
	// Writer stores the table.
	Writer *tablestore.Writer
	// Recorder emits Warning events on routes.
	Recorder events.EventRecorder
	// StatusWorkers bounds concurrent status patches; DefaultStatusWorkers when 0.
	StatusWorkers int

	// secrets is set by SetupWithManager (or NewTableReconciler in tests).
	secrets *secretData
	metrics *tableMetrics
}

// tableRequest is the single work item.
func (r *TableReconciler) tableRequest() reconcile.Request {
	return reconcile.Request{NamespacedName: types.NamespacedName{Namespace: r.Writer.Namespace, Name: tablestore.ManifestName(r.Writer.Name)}}
}

// Reconcile compiles, writes the table, then updates statuses.
func (r *TableReconciler) Reconcile(ctx context.Context, _ reconcile.Request) (ctrl.Result, error) {
	log := ctrl.LoggerFrom(ctx)
	start := time.Now()
	// The routes are the cache's own objects (no deep copy of 10,000 routes per pass):
	// Compile only reads them, and updateStatuses copies a route before changing it.
	routes := &v1alpha1.CallbackRouteList{}
	if err := r.Client.List(ctx, routes, client.UnsafeDisableDeepCopy); err != nil {
		return ctrl.Result{}, fmt.Errorf("listing CallbackRoutes: %w", err)
	}

	// Compile's callbacks cannot return errors: remember the first transient one, and
	// retry the whole pass rather than publish a route as unresolved because of it.
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
	snap, statuses := routing.Compile(routing.Input{Routes: routes.Items, Secret: getSecret, Service: resolveService})
	if lookupErr != nil {
		return ctrl.Result{}, lookupErr
	}
	r.secrets.retain(used)
	compiled := time.Since(start)

	res, err := r.Writer.WriteSnapshot(ctx, snap)
	if err != nil {
		return ctrl.Result{}, fmt.Errorf("writing routing table: %w", err)
	}
	r.metrics.observe(len(snap.Routes), res)
	if res.Changed() {
		log.Info("Wrote routing table", "routes", len(snap.Routes), "shards", res.Shards,
			"shardsWritten", res.ShardsWritten, "compressedBytes", res.CompressedBytes)
	}

	patched, err := r.updateStatuses(ctx, routes.Items, statuses)
	if err != nil {
		return ctrl.Result{}, err
	}
	log.V(1).Info("Reconciled routing table", "routes", len(routes.Items), "routed", len(snap.Routes),
		"statusesPatched", patched, "compileTime", compiled, "duration", time.Since(start))
	return ctrl.Result{RequeueAfter: TableResync}, nil
}

// refError is an unresolved reference, worded for the ResolvedRefs condition message
// that users read (it names the object's kind in lower case, like the compiler's "secret
// ... not found").
type refError string

func (e refError) Error() string { return string(e) }

// updateStatuses patches each route's status that changed, several at a time.
func (r *TableReconciler) updateStatuses(ctx context.Context, routes []v1alpha1.CallbackRoute, statuses []routing.RouteStatus) (int, error) {
	g, ctx := errgroup.WithContext(ctx)
	workers := r.StatusWorkers
	if workers <= 0 {
		workers = DefaultStatusWorkers
	}
	g.SetLimit(workers)
	patched := make(chan struct{}, len(routes))
	for i := range routes {
		route, st := &routes[i], statuses[i]
		if statusUpToDate(&route.Status, route.Generation, st) {
			continue
		}
		updated := route.DeepCopy()
		setStatus(&updated.Status, route.Generation, st)
		g.Go(func() error {
			if err := r.Client.Status().Patch(ctx, updated, client.MergeFrom(route)); err != nil {
				if apierrors.IsNotFound(err) {
					return nil // deleted meanwhile; its delete event brings another pass
				}
				return fmt.Errorf("patching status of CallbackRoute %s/%s: %w", route.Namespace, route.Name, err)
			}
			r.emitEvents(route, updated)
			patched <- struct{}{}
			return nil
		})
	}
	err := g.Wait()
	return len(patched), err
}

// desiredConditions are a route's conditions for a compile outcome (without times).
func desiredConditions(gen int64, st routing.RouteStatus) [3]metav1.Condition {
	cond := func(t string, ok bool, reason, msg string) metav1.Condition {
		s := metav1.ConditionFalse
		if ok {
			s = metav1.ConditionTrue
		}
		return metav1.Condition{Type: t, Status: s, Reason: reason, Message: msg, ObservedGeneration: gen}
	}
	refsReason := st.RefsReason
	if refsReason == "" {
		refsReason = v1alpha1.ReasonInvalid
	}
	var ready metav1.Condition
	switch {
	case st.Routed:
		ready = cond(v1alpha1.ConditionReady, true, v1alpha1.ReasonRouted, "The route is in the published routing table")
	case !st.Accepted:
		ready = cond(v1alpha1.ConditionReady, false, v1alpha1.ReasonNotRouted, "Not routed: "+st.AcceptedMessage)
	case !st.ResolvedRefs:
		ready = cond(v1alpha1.ConditionReady, false, v1alpha1.ReasonNotRouted, "Not routed: "+st.RefsMessage)
	default:
		ready = cond(v1alpha1.ConditionReady, false, v1alpha1.ReasonNotRouted, "Not routed")
	}
	return [3]metav1.Condition{
		cond(v1alpha1.ConditionAccepted, st.Accepted, st.AcceptedReason, st.AcceptedMessage),
		cond(v1alpha1.ConditionResolvedRefs, st.ResolvedRefs, refsReason, st.RefsMessage),
		ready,
	}
}

// statusUpToDate reports whether status already says what a compile outcome says; it
// neither copies nor allocates, as it runs for every route on every pass.
func statusUpToDate(status *v1alpha1.CallbackRouteStatus, gen int64, st routing.RouteStatus) bool {
	if status.ObservedGeneration != gen || status.URL != st.URL {
		return false
	}
	for _, want := range desiredConditions(gen, st) {
		have := meta.FindStatusCondition(status.Conditions, want.Type)
		if have == nil || have.Status != want.Status || have.Reason != want.Reason ||
			have.Message != want.Message || have.ObservedGeneration != want.ObservedGeneration {
			return false
		}
	}
	return true
}

// setStatus writes the conditions, observedGeneration and URL of one route; a
// condition's lastTransitionTime changes only when its status does.
func setStatus(status *v1alpha1.CallbackRouteStatus, gen int64, st routing.RouteStatus) {
	for _, c := range desiredConditions(gen, st) {
		meta.SetStatusCondition(&status.Conditions, c)
	}
	status.ObservedGeneration = gen
	status.URL = st.URL
}

// emitEvents sends a Warning event when a route newly fails: a conflict, an invalid spec
// or a missing reference. Unchanged failures send nothing.
func (r *TableReconciler) emitEvents(old, updated *v1alpha1.CallbackRoute) {
	if r.Recorder == nil {
		return
	}
	changed := func(t string) (*metav1.Condition, bool) {
		n := meta.FindStatusCondition(updated.Status.Conditions, t)
		o := meta.FindStatusCondition(old.Status.Conditions, t)
		if n == nil || n.Status == metav1.ConditionTrue {
			return n, false
		}
		return n, o == nil || o.Status != n.Status || o.Reason != n.Reason || o.Message != n.Message
	}
	if c, ok := changed(v1alpha1.ConditionAccepted); ok {
		reason := EventInvalid
		if c.Reason == v1alpha1.ReasonConflict {
			reason = EventConflict
		}
		r.Recorder.Eventf(updated, nil, corev1.EventTypeWarning, reason, "Compile", "%s", c.Message)
	}
	if c, ok := changed(v1alpha1.ConditionResolvedRefs); ok && c.Reason != v1alpha1.ReasonInvalid {
		r.Recorder.Eventf(updated, nil, corev1.EventTypeWarning, EventRefNotFound, "Resolve", "%s", c.Message)
	}
}

// routeSecretNames are the Secrets a route references.
func routeSecretNames(r *v1alpha1.CallbackRoute) []string {
	v := r.Spec.Verify
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

// SetupWithManager registers the field indexes and the controller. Routes are watched
// fully (status changes filtered out), Services through the cache, Secrets metadata-only
// and mapped through the secret index, so only referenced Secrets (and the table's own
// Secrets, for drift repair) trigger a pass.
func (r *TableReconciler) SetupWithManager(ctx context.Context, mgr ctrl.Manager) error {
	idx := mgr.GetFieldIndexer()
	if err := idx.IndexField(ctx, &v1alpha1.CallbackRoute{}, IndexSecretRefs, func(o client.Object) []string {
		return routeSecretNames(o.(*v1alpha1.CallbackRoute))
	}); err != nil {
		return fmt.Errorf("indexing CallbackRoutes by Secret: %w", err)
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
	toTable := func() []reconcile.Request { return []reconcile.Request{r.tableRequest()} }
	referenced := func(ctx context.Context, index string, obj client.Object) bool {
		list := &v1alpha1.CallbackRouteList{}
		err := r.Client.List(ctx, list, client.InNamespace(obj.GetNamespace()), client.MatchingFields{index: obj.GetName()})
		// On an index error, err on the side of a (cheap, coalesced) extra pass.
		return err != nil || len(list.Items) > 0
	}
	mapSecret := handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, obj client.Object) []reconcile.Request {
		if obj.GetNamespace() == r.Writer.Namespace && obj.GetLabels()[tablestore.LabelTable] == r.Writer.Name {
			return toTable()
		}
		if referenced(ctx, IndexSecretRefs, obj) {
			return toTable()
		}
		return nil
	})
	mapService := handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, obj client.Object) []reconcile.Request {
		if referenced(ctx, IndexServiceRef, obj) {
			return toTable()
		}
		return nil
	})
	mapRoute := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
		return toTable()
	})
	// A pass at start even with no routes: the receiver becomes ready only once a table,
	// possibly empty, is published.
	kick := source.Func(func(_ context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request]) error {
		q.Add(r.tableRequest())
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
		Watches(&v1alpha1.CallbackRoute{}, mapRoute, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&corev1.Service{}, mapService, builder.WithPredicates(servicePortsChanged())).
		WatchesMetadata(&corev1.Secret{}, mapSecret, builder.WithPredicates(predicate.ResourceVersionChangedPredicate{})).
		Complete(r)
}

// servicePortsChanged passes Service creations, deletions and port changes: the only
// things the table depends on.
func servicePortsChanged() predicate.Predicate {
	return predicate.Funcs{
		UpdateFunc: func(e event.UpdateEvent) bool {
			o, ok1 := e.ObjectOld.(*corev1.Service)
			n, ok2 := e.ObjectNew.(*corev1.Service)
			return !ok1 || !ok2 || !equality.Semantic.DeepEqual(o.Spec.Ports, n.Spec.Ports)
		},
	}
}
