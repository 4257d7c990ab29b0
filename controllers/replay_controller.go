package controllers

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	"github.com/callback-router/callback-router/api/v1alpha1"
	"github.com/callback-router/callback-router/controllers/dataplane"
	"github.com/callback-router/callback-router/webhook/replays"
	"github.com/callback-router/callback-router/webhook/routing"
)

// Settings of the CallbackReplay controller.
const (
	// ReplayPollInterval is how often the manager reads the receiver pods' results of a
	// replay in progress.
	ReplayPollInterval = time.Second
	// ReplayReadTimeout bounds one read of a pod's /metrics.
	ReplayReadTimeout = 2 * time.Second
	// MaxReplayMetricsBytes is the most of a pod's /metrics answer that is read.
	MaxReplayMetricsBytes = 4 << 20
)

// +kubebuilder:rbac:groups=callbacks.callback-router.dev,resources=callbackreplays,verbs=get;list;watch
// +kubebuilder:rbac:groups=callbacks.callback-router.dev,resources=callbackreplays/status,verbs=get;update;patch
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch

// replayDone reports whether a CallbackReplay has a final outcome (Complete or Failed
// True): it then leaves the routing tables.
func replayDone(x *v1alpha1.CallbackReplay) bool {
	return meta.IsStatusConditionTrue(x.Status.Conditions, v1alpha1.ConditionComplete) ||
		meta.IsStatusConditionTrue(x.Status.Conditions, v1alpha1.ConditionFailed)
}

// replayPublishChanged passes CallbackReplay creations, deletions and the updates that
// change whether it is in a table: the table controller publishes the replays in progress.
func replayPublishChanged() predicate.Predicate {
	return predicate.Funcs{
		UpdateFunc: func(e event.UpdateEvent) bool {
			o, ok1 := e.ObjectOld.(*v1alpha1.CallbackReplay)
			n, ok2 := e.ObjectNew.(*v1alpha1.CallbackReplay)
			return !ok1 || !ok2 || replayDone(o) != replayDone(n)
		},
	}
}

// addReplays puts each CallbackReplay in progress in the table holding its route (the
// route's key is namespace/name in the replay's own namespace: a team replays only its
// own routes). Replays whose route is in no table stay out; the replay controller marks
// them Failed.
func addReplays(out *routing.Output, list []v1alpha1.CallbackReplay) {
	if len(list) == 0 {
		return
	}
	byRoute := map[string][]routing.Replay{}
	for i := range list {
		x := &list[i]
		if replayDone(x) || x.DeletionTimestamp != nil {
			continue
		}
		key := x.Namespace + "/" + x.Spec.RouteRef.Name
		byRoute[key] = append(byRoute[key], publishedReplay(x))
	}
	for _, snap := range out.Tables {
		for i := range snap.Routes {
			snap.Replays = append(snap.Replays, byRoute[snap.Routes[i].Key()]...)
		}
		sort.Slice(snap.Replays, func(i, j int) bool { return snap.Replays[i].UID < snap.Replays[j].UID })
	}
}

func publishedReplay(x *v1alpha1.CallbackReplay) routing.Replay {
	p := routing.Replay{UID: string(x.UID), Namespace: x.Namespace, Name: x.Name,
		Route: x.Namespace + "/" + x.Spec.RouteRef.Name, Source: string(x.Spec.Source), IDs: x.Spec.CallbackIDs}
	if p.Source == "" {
		p.Source = string(v1alpha1.ReplaySourceDeadLetters)
	}
	if x.Spec.From != nil {
		p.From = x.Spec.From.UTC()
	}
	if x.Spec.To != nil {
		p.To = x.Spec.To.UTC()
	}
	return p
}

// ReplayResultReader reads one pod's results of replays.
type ReplayResultReader interface {
	// Read returns the results the pod exposes, by replay UID.
	Read(ctx context.Context, pod *corev1.Pod) (map[string]PodReplayResult, error)
}

// PodReplayResult is one pod's result of one replay.
type PodReplayResult struct {
	Matched, Replayed int64
	// Failing is true while the pod's last attempt failed (it retries).
	Failing bool
	// Ran is true once the pod ran the replay (matched and replayed are present).
	Ran bool
}

// MetricsReplayReader reads the replay results from the receiver's /metrics on the pod's
// IP and its container port named "metrics" (where Prometheus scrapes it).
type MetricsReplayReader struct {
	// Client sends the requests; nil uses a client without keep-alives or proxy.
	Client *http.Client
}

var replayMetricsClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil}}

// podMetricsAddress is host:port of a receiver pod's metrics endpoint.
func podMetricsAddress(pod *corev1.Pod) (string, error) {
	if pod.Status.PodIP == "" {
		return "", errors.New("the pod has no IP yet")
	}
	for _, c := range pod.Spec.Containers {
		for _, p := range c.Ports {
			if p.Name == "metrics" {
				return net.JoinHostPort(pod.Status.PodIP, strconv.Itoa(int(p.ContainerPort))), nil
			}
		}
	}
	return "", errors.New(`the pod has no container port named "metrics"`)
}

// Read implements ReplayResultReader.
func (m *MetricsReplayReader) Read(ctx context.Context, pod *corev1.Pod) (map[string]PodReplayResult, error) {
	addr, err := podMetricsAddress(pod)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, ReplayReadTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	cl := m.Client
	if cl == nil {
		cl = replayMetricsClient
	}
	resp, err := cl.Do(req)
	if err != nil {
		return nil, fmt.Errorf("reading %s/metrics: %w", addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("reading %s/metrics: status %d", addr, resp.StatusCode)
	}
	return ParseReplayMetrics(io.LimitReader(resp.Body, MaxReplayMetricsBytes))
}

// ParseReplayMetrics reads the replay gauges (package replays) of a Prometheus text
// exposition, by replay UID.
func ParseReplayMetrics(r io.Reader) (map[string]PodReplayResult, error) {
	out := map[string]PodReplayResult{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	prefix := `{` + replays.LabelReplay + `="`
	for sc.Scan() {
		line := sc.Text()
		var name string
		for _, n := range []string{replays.MetricMatched, replays.MetricReplayed, replays.MetricErrors} {
			if strings.HasPrefix(line, n+prefix) {
				name = n
				break
			}
		}
		if name == "" {
			continue
		}
		rest := line[len(name)+len(prefix):]
		end := strings.Index(rest, `"}`)
		if end < 0 {
			return nil, fmt.Errorf("malformed metric line %q", line)
		}
		uid := rest[:end]
		v, err := strconv.ParseFloat(strings.TrimSpace(rest[end+2:]), 64)
		if err != nil {
			return nil, fmt.Errorf("malformed metric line %q: %w", line, err)
		}
		res := out[uid]
		switch name {
		case replays.MetricMatched:
			res.Matched, res.Ran = int64(v), true
		case replays.MetricReplayed:
			res.Replayed = int64(v)
		case replays.MetricErrors:
			res.Failing = v != 0
		}
		out[uid] = res
	}
	return out, sc.Err()
}

// ReplayReconciler validates CallbackReplays and writes their status from what the
// receiver pods report; the table controller publishes them to the pods.
type ReplayReconciler struct {
	Client client.Client
	// Pods lists the receiver pods (the manager does not cache pods); the API reader.
	Pods   client.Reader
	Reader ReplayResultReader
}

// Reconcile implements reconcile.Reconciler.
func (r *ReplayReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	x := &v1alpha1.CallbackReplay{}
	if err := r.Client.Get(ctx, req.NamespacedName, x); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if replayDone(x) || x.DeletionTimestamp != nil {
		return ctrl.Result{}, nil
	}
	st := x.Status.DeepCopy()
	st.ObservedGeneration = x.Generation
	recv, reason, msg, err := r.receiverOf(ctx, x)
	if err != nil {
		return ctrl.Result{}, err
	}
	if reason == "wait" {
		setReplayConditions(st, x.Generation, false, v1alpha1.ReasonInProgress, msg, false, v1alpha1.ReasonNotFailed, "")
		return ctrl.Result{RequeueAfter: ReplayPollInterval}, r.patch(ctx, x, st)
	}
	if reason != "" {
		setReplayConditions(st, x.Generation, false, reason, msg, true, reason, msg)
		return ctrl.Result{}, r.patch(ctx, x, st)
	}
	st.Receiver = recv.Namespace + "/" + recv.Name

	pods := &corev1.PodList{}
	if err := r.Pods.List(ctx, pods, client.InNamespace(recv.Namespace), client.MatchingLabels{
		dataplane.LabelName: dataplane.ObjectName(recv.Name), dataplane.LabelInstance: recv.Name, dataplane.LabelComponent: dataplane.ComponentReceiver,
	}); err != nil {
		return ctrl.Result{}, fmt.Errorf("listing the pods of CallbackReceiver %s/%s: %w", recv.Namespace, recv.Name, err)
	}
	st.Pods, st.Matched, st.Replayed = nil, 0, 0
	serving, reported := 0, 0
	for i := range pods.Items {
		pod := &pods.Items[i]
		if !podServing(pod) {
			continue
		}
		serving++
		ps := v1alpha1.ReplayPodStatus{Name: pod.Name}
		results, err := r.Reader.Read(ctx, pod)
		res, ok := results[string(x.UID)]
		switch {
		case err != nil:
			ps.Error = err.Error()
		case ok && res.Failing:
			ps.Error = "the replay failed on the pod; it retries (see the pod's log)"
		}
		if ok && res.Ran {
			reported++
			ps.Matched, ps.Replayed = res.Matched, res.Replayed
			st.Matched += res.Matched
			st.Replayed += res.Replayed
		}
		st.Pods = append(st.Pods, ps)
	}
	slices.SortFunc(st.Pods, func(a, b v1alpha1.ReplayPodStatus) int { return strings.Compare(a.Name, b.Name) })
	switch {
	case serving == 0:
		setReplayConditions(st, x.Generation, false, v1alpha1.ReasonInProgress,
			fmt.Sprintf("no serving pod of CallbackReceiver %s yet", st.Receiver), false, v1alpha1.ReasonNotFailed, "")
	case reported < serving:
		setReplayConditions(st, x.Generation, false, v1alpha1.ReasonInProgress,
			fmt.Sprintf("%d of %d serving pods of CallbackReceiver %s have replayed", reported, serving, st.Receiver), false, v1alpha1.ReasonNotFailed, "")
	default:
		setReplayConditions(st, x.Generation, true, v1alpha1.ReasonReplayed,
			fmt.Sprintf("%d serving pods of CallbackReceiver %s replayed %d of %d matched deliveries", serving, st.Receiver, st.Replayed, st.Matched),
			false, v1alpha1.ReasonNotFailed, "")
		return ctrl.Result{}, r.patch(ctx, x, st)
	}
	return ctrl.Result{RequeueAfter: ReplayPollInterval}, r.patch(ctx, x, st)
}

// receiverOf finds the receiver whose table holds the replay's route. A reason says why
// there is none ("wait": the route's status is not yet current).
func (r *ReplayReconciler) receiverOf(ctx context.Context, x *v1alpha1.CallbackReplay) (*v1alpha1.CallbackReceiver, string, string, error) {
	route := &v1alpha1.CallbackRoute{}
	key := types.NamespacedName{Namespace: x.Namespace, Name: x.Spec.RouteRef.Name}
	if err := r.Client.Get(ctx, key, route); apierrors.IsNotFound(err) {
		return nil, v1alpha1.ReasonRouteNotFound, fmt.Sprintf("CallbackRoute %s not found in namespace %s (a CallbackReplay replays routes of its own namespace)", key.Name, key.Namespace), nil
	} else if err != nil {
		return nil, "", "", err
	}
	ready := meta.FindStatusCondition(route.Status.Conditions, v1alpha1.ConditionReady)
	if ready == nil || ready.ObservedGeneration != route.Generation || route.Status.ObservedGeneration != route.Generation {
		return nil, "wait", fmt.Sprintf("waiting for the status of CallbackRoute %s", key), nil
	}
	if ready.Status != metav1.ConditionTrue {
		return nil, v1alpha1.ReasonRouteNotRouted, fmt.Sprintf("CallbackRoute %s is in no receiver's routing table: %s", key, ready.Message), nil
	}
	appNS := route.Spec.AppRef.Namespace
	if appNS == "" {
		appNS = route.Namespace
	}
	app := &v1alpha1.CallbackApp{}
	if err := r.Client.Get(ctx, types.NamespacedName{Namespace: appNS, Name: route.Spec.AppRef.Name}, app); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, v1alpha1.ReasonRouteNotRouted, fmt.Sprintf("the app of CallbackRoute %s is gone", key), nil
		}
		return nil, "", "", err
	}
	recvNS := app.Spec.ReceiverRef.Namespace
	if recvNS == "" {
		recvNS = app.Namespace
	}
	recv := &v1alpha1.CallbackReceiver{}
	if err := r.Client.Get(ctx, types.NamespacedName{Namespace: recvNS, Name: app.Spec.ReceiverRef.Name}, recv); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, v1alpha1.ReasonRouteNotRouted, fmt.Sprintf("the receiver of CallbackRoute %s is gone", key), nil
		}
		return nil, "", "", err
	}
	return recv, "", "", nil
}

// podServing: running, ready and with an IP (the pods the Service sends callbacks to).
func podServing(p *corev1.Pod) bool {
	if p.DeletionTimestamp != nil || p.Status.PodIP == "" || p.Status.Phase != corev1.PodRunning {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func setReplayConditions(st *v1alpha1.CallbackReplayStatus, gen int64, complete bool, completeReason, completeMsg string, failed bool, failedReason, failedMsg string) {
	b := func(v bool) metav1.ConditionStatus {
		if v {
			return metav1.ConditionTrue
		}
		return metav1.ConditionFalse
	}
	meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: v1alpha1.ConditionComplete, Status: b(complete),
		Reason: completeReason, Message: truncate(completeMsg), ObservedGeneration: gen})
	meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: v1alpha1.ConditionFailed, Status: b(failed),
		Reason: failedReason, Message: truncate(failedMsg), ObservedGeneration: gen})
}

func (r *ReplayReconciler) patch(ctx context.Context, x *v1alpha1.CallbackReplay, st *v1alpha1.CallbackReplayStatus) error {
	updated := x.DeepCopy()
	updated.Status = *st
	if err := r.Client.Status().Patch(ctx, updated, client.MergeFrom(x)); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("patching the status of CallbackReplay %s/%s: %w", x.Namespace, x.Name, err)
	}
	return nil
}

// SetupWithManager registers the controller.
func (r *ReplayReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Reader == nil {
		r.Reader = &MetricsReplayReader{}
	}
	if r.Pods == nil {
		r.Pods = mgr.GetAPIReader()
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named("replay").
		For(&v1alpha1.CallbackReplay{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Complete(r)
}
