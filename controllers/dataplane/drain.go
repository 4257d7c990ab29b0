package dataplane

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/callback-router/callback-router/api/v1alpha1"
)

// Defaults of the drain settings (ReceiverReconciler fields, manager flags).
const (
	// DefaultDrainSettle is how long a pod must have been out of the Service before an
	// empty spool counts as drained: callbacks the Service routed to it just before the
	// label came off (endpoint propagation, connections in flight) land in that time.
	DefaultDrainSettle = 10 * time.Second
	// DefaultDrainPollInterval is how often the pending counts are read while pods drain.
	DefaultDrainPollInterval = 2 * time.Second
	// DefaultPendingInterval is how often the pending counts are read otherwise, to keep
	// status.pending current.
	DefaultPendingInterval = 30 * time.Second
)

// AnnotationDrainingSince is set on a leaving pod to the time (RFC 3339) the manager took
// it out of the Service.
const AnnotationDrainingSince = "callbacks.callback-router.dev/draining-since"

// podChange is a label and annotation change the plan makes on a pod.
type podChange struct {
	pod     *corev1.Pod
	serving bool // whether LabelServing must be present
}

// claimChange labels (or unlabels, value "") a spool claim.
type claimChange struct {
	name  string
	value string
}

// scalePlan is what one reconcile does about the pods: the StatefulSet's replicas, which
// pods serve, which leave, and the status it reports.
type scalePlan struct {
	// replicas is the StatefulSet's spec.replicas.
	replicas int32
	// current is the StatefulSet's replicas before this pass.
	current int32
	// selectServing: see ReceiverSettings.SelectServing.
	selectServing bool
	// podChanges are the label changes to make.
	podChanges []podChange
	// claims are the claim label changes to make.
	claims []claimChange
	// leaving are the pods still being drained (not yet removed).
	leaving []string
	// waitingFor describes, per leaving pod, why it is not drained yet.
	waitingFor []string
	// leavingPending sums the pending of the leaving pods whose count is known.
	leavingPending int64
	// deleteDeployment: the Deployment a previous version ran is drained and goes.
	deleteDeployment bool
	// migrating: the Deployment a previous version ran still exists.
	migrating bool
	// pods is status.pods; pending is status.pending.
	pods    []v1alpha1.ReceiverPodStatus
	pending int64
}

// draining says whether pods are being drained.
func (p *scalePlan) draining() bool { return len(p.leaving) > 0 }

// drainMessage is the Progressing=Draining message: what waits and the pending count.
func (p *scalePlan) drainMessage(desired int32) string {
	what := fmt.Sprintf("Draining %d pod(s) before scaling from %d to %d replicas", len(p.leaving), p.current, desired)
	if p.migrating && p.current <= desired {
		what = fmt.Sprintf("Draining %d pod(s) of the Deployment the StatefulSet replaces", len(p.leaving))
	}
	return fmt.Sprintf("%s: %d callbacks pending (%s)", what, p.leavingPending, strings.Join(p.waitingFor, ", "))
}

// ordinal returns a StatefulSet pod's ordinal, or -1 for another pod.
func ordinal(stsName string, pod *corev1.Pod) int {
	if pod.Labels[LabelStatefulSetPod] != pod.Name || !strings.HasPrefix(pod.Name, stsName+"-") {
		return -1
	}
	n, err := strconv.Atoi(strings.TrimPrefix(pod.Name, stsName+"-"))
	if err != nil || n < 0 {
		return -1
	}
	return n
}

// planInput is what planScale decides from.
type planInput struct {
	s        *ReceiverSettings
	sts      *appsv1.StatefulSet // nil when not created yet
	dep      *appsv1.Deployment  // the previous version's Deployment, nil when gone
	pods     []*corev1.Pod
	claims   map[string]*corev1.PersistentVolumeClaim
	readings map[string]podReading
	now      time.Time
	settle   time.Duration
}

// planScale decides the StatefulSet's replicas and the pods' serving labels. A scale-up
// (or no change) applies at once. A scale-down first takes the leaving pods (the highest
// ordinals) out of the Service, then lowers the replicas one pod at a time, from the top,
// as each leaving pod has been out of the Service for settle and its spool holds nothing
// pending. A pod whose count cannot be read, or that does not run while its claim exists,
// is waited for. A Stateless receiver (its spool elsewhere) scales down at once. The
// Deployment of a previous version is handled alike: once the
// StatefulSet's pods are ready the Service selects the serving label, which its pods lack,
// and the Deployment is deleted when they have drained.
func planScale(in planInput) *scalePlan {
	desired := in.s.Replicas
	pl := &planner{in: in, leaving: map[string]bool{}, byOrdinal: map[int]*corev1.Pod{},
		p: &scalePlan{current: desired, replicas: desired, selectServing: true}}
	if in.sts != nil && in.sts.Spec.Replicas != nil {
		pl.p.current = *in.sts.Spec.Replicas
	}
	for _, pod := range in.pods {
		if n := ordinal(in.s.Name, pod); n >= 0 {
			pl.byOrdinal[n] = pod
		} else {
			pl.depPods = append(pl.depPods, pod)
		}
	}
	if pl.p.current > desired && !in.s.Stateless {
		pl.scaleDown()
	}
	// Claims of pods that are (back) in the StatefulSet lose the label.
	for n := range int(pl.p.replicas) {
		if c := in.claims[ClaimName(in.s.Receiver.Name, n)]; c != nil && c.Labels[LabelSpool] != "" {
			pl.p.claims = append(pl.p.claims, claimChange{name: c.Name})
		}
	}
	if in.dep != nil {
		pl.migrate()
	}
	for _, pod := range in.pods {
		pl.podStatus(pod)
	}
	slices.SortFunc(pl.p.pods, func(a, b v1alpha1.ReceiverPodStatus) int { return strings.Compare(a.Name, b.Name) })
	return pl.p
}

// planner holds planScale's working state.
type planner struct {
	in        planInput
	p         *scalePlan
	byOrdinal map[int]*corev1.Pod
	depPods   []*corev1.Pod
	leaving   map[string]bool
}

// drained says whether a leaving pod may go, or why not.
func (pl *planner) drained(pod *corev1.Pod) (bool, string) {
	rd := pl.in.readings[pod.Name]
	switch {
	case pod.Labels[LabelServing] == ServingValue:
		return false, pod.Name + ": leaving the Service"
	case rd.err != nil:
		return false, pod.Name + ": pending unknown (" + rd.err.Error() + ")"
	case rd.Pending > 0:
		return false, fmt.Sprintf("%s: %d", pod.Name, rd.Pending)
	}
	since, err := time.Parse(time.RFC3339, pod.Annotations[AnnotationDrainingSince])
	if err != nil || pl.in.now.Sub(since) < pl.in.settle {
		return false, pod.Name + ": 0, settling"
	}
	return true, ""
}

// wait records a leaving pod that is not drained yet.
func (pl *planner) wait(name, why string) {
	pl.p.leaving = append(pl.p.leaving, name)
	pl.p.waitingFor = append(pl.p.waitingFor, why)
	if rd, ok := pl.in.readings[name]; ok && rd.err == nil {
		pl.p.leavingPending += rd.Pending
	}
}

// scaleDown: every pod from the desired count up leaves the Service; the replicas come
// down from the top ordinal as long as the pods there have drained.
func (pl *planner) scaleDown() {
	s := pl.in.s
	blocked := false
	replicas := pl.p.current
	for n := int(pl.p.current) - 1; n >= int(s.Replicas); n-- {
		pod := pl.byOrdinal[n]
		claim := pl.in.claims[ClaimName(s.Receiver.Name, n)]
		if pod == nil || !pod.DeletionTimestamp.IsZero() {
			if pod == nil && claim == nil && !blocked {
				replicas = int32(n) // never created: nothing to drain
				continue
			}
			name := fmt.Sprintf("%s-%d", s.Name, n)
			pl.wait(name, name+": not running, its claim holds its spool")
			blocked = true
			continue
		}
		pl.leaving[pod.Name] = true
		if ok, why := pl.drained(pod); !ok {
			pl.wait(pod.Name, why)
			blocked = true
			continue
		}
		if blocked {
			continue
		}
		replicas = int32(n)
		value := SpoolEmpty
		if pl.in.readings[pod.Name].Bytes > 0 {
			value = SpoolRetained
		}
		if claim != nil && claim.Labels[LabelSpool] != value {
			pl.p.claims = append(pl.p.claims, claimChange{name: claim.Name, value: value})
		}
	}
	pl.p.replicas = replicas
}

// migrate handles the Deployment of a previous version: once the StatefulSet's pods are
// ready the Service selects serving pods only, and the Deployment goes once its pods
// have drained.
func (pl *planner) migrate() {
	sts := pl.in.sts
	pl.p.migrating = true
	ready := sts != nil && sts.Status.ReadyReplicas >= pl.in.s.Replicas && sts.Status.ObservedGeneration >= sts.Generation
	pl.p.selectServing = ready
	if !ready {
		return
	}
	all := true
	for _, pod := range pl.depPods {
		pl.leaving[pod.Name] = true
		if ok, why := pl.drained(pod); !ok {
			pl.wait(pod.Name, why)
			all = false
		}
	}
	pl.p.deleteDeployment = all
}

// podStatus decides a pod's label change and its status entry.
func (pl *planner) podStatus(pod *corev1.Pod) {
	p, leaving := pl.p, pl.leaving[pod.Name]
	serving := pod.Labels[LabelServing] == ServingValue
	_, draining := pod.Annotations[AnnotationDrainingSince]
	n := ordinal(pl.in.s.Name, pod)
	switch {
	case leaving && (serving || !draining):
		p.podChanges = append(p.podChanges, podChange{pod: pod, serving: false})
	case !leaving && n >= 0 && n < int(p.replicas) && pod.DeletionTimestamp.IsZero() && (!serving || draining):
		p.podChanges = append(p.podChanges, podChange{pod: pod, serving: true})
	}
	st := v1alpha1.ReceiverPodStatus{Name: pod.Name, Serving: serving && !leaving, Leaving: leaving}
	if n < 0 && !p.selectServing {
		st.Serving = true // the Service still selects every pod while the StatefulSet starts
	}
	if rd, ok := pl.in.readings[pod.Name]; ok {
		if rd.err != nil {
			st.Error = truncate(rd.err.Error(), 1024)
		} else {
			st.Pending, st.SpoolBytes = ptrTo(rd.Pending), ptrTo(rd.Bytes)
			p.pending += rd.Pending
		}
	}
	p.pods = append(p.pods, st)
}

// isDeploymentPod says whether pod belongs to the Deployment dep (through a ReplicaSet
// named after it).
func isDeploymentPod(dep *appsv1.Deployment, pod *corev1.Pod) bool {
	c := metav1.GetControllerOf(pod)
	return c != nil && c.Kind == "ReplicaSet" && strings.HasPrefix(c.Name, dep.Name+"-")
}

func ptrTo[T any](v T) *T { return &v }

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
