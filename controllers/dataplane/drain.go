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
// is waited for. The Deployment of a previous version is handled alike: once the
// StatefulSet's pods are ready the Service selects the serving label, which its pods lack,
// and the Deployment is deleted when they have drained.
func planScale(in planInput) *scalePlan {
	s := in.s
	desired := s.Replicas
	p := &scalePlan{current: desired, replicas: desired, selectServing: true}
	if in.sts != nil && in.sts.Spec.Replicas != nil {
		p.current = *in.sts.Spec.Replicas
	}
	byOrdinal := map[int]*corev1.Pod{}
	var depPods []*corev1.Pod
	for _, pod := range in.pods {
		if n := ordinal(s.Name, pod); n >= 0 {
			byOrdinal[n] = pod
		} else {
			depPods = append(depPods, pod)
		}
	}

	leaving := map[string]bool{}
	drained := func(pod *corev1.Pod) (bool, string) {
		rd := in.readings[pod.Name]
		switch {
		case pod.Labels[LabelServing] == "true":
			return false, pod.Name + ": leaving the Service"
		case rd.err != nil:
			return false, pod.Name + ": pending unknown (" + rd.err.Error() + ")"
		case rd.Pending > 0:
			return false, fmt.Sprintf("%s: %d", pod.Name, rd.Pending)
		}
		since, err := time.Parse(time.RFC3339, pod.Annotations[AnnotationDrainingSince])
		if err != nil || in.now.Sub(since) < in.settle {
			return false, pod.Name + ": 0, settling"
		}
		return true, ""
	}
	wait := func(pod *corev1.Pod, why string) {
		p.leaving = append(p.leaving, pod.Name)
		p.waitingFor = append(p.waitingFor, why)
		if rd := in.readings[pod.Name]; rd.err == nil {
			p.leavingPending += rd.Pending
		}
	}

	// Scale-down: every pod from the desired count up leaves the Service; the replicas
	// come down from the top ordinal as long as the pods there have drained.
	if p.current > desired {
		blocked := false
		replicas := p.current
		for n := int(p.current) - 1; n >= int(desired); n-- {
			pod := byOrdinal[n]
			claim := in.claims[ClaimName(s.Receiver.Name, n)]
			if pod == nil || !pod.DeletionTimestamp.IsZero() {
				if pod == nil && claim == nil && !blocked {
					replicas = int32(n) // never created: nothing to drain
					continue
				}
				p.leaving = append(p.leaving, fmt.Sprintf("%s-%d", s.Name, n))
				p.waitingFor = append(p.waitingFor, fmt.Sprintf("%s-%d: not running, its claim holds its spool", s.Name, n))
				blocked = true
				continue
			}
			leaving[pod.Name] = true
			if ok, why := drained(pod); !ok {
				wait(pod, why)
				blocked = true
				continue
			}
			if blocked {
				continue
			}
			replicas = int32(n)
			value := SpoolEmpty
			if in.readings[pod.Name].Bytes > 0 {
				value = SpoolRetained
			}
			if claim != nil && claim.Labels[LabelSpool] != value {
				p.claims = append(p.claims, claimChange{name: claim.Name, value: value})
			}
		}
		p.replicas = replicas
	}
	// Claims of pods that are (back) in the StatefulSet lose the label.
	for n := range int(p.replicas) {
		if c := in.claims[ClaimName(s.Receiver.Name, n)]; c != nil && c.Labels[LabelSpool] != "" {
			p.claims = append(p.claims, claimChange{name: c.Name})
		}
	}

	// Migration from the Deployment of a previous version.
	if in.dep != nil {
		p.migrating = true
		ready := in.sts != nil && in.sts.Status.ReadyReplicas >= desired && in.sts.Status.ObservedGeneration >= in.sts.Generation
		p.selectServing = ready
		if ready {
			all := true
			for _, pod := range depPods {
				leaving[pod.Name] = true
				if ok, why := drained(pod); !ok {
					wait(pod, why)
					all = false
				}
			}
			p.deleteDeployment = all
		}
	}

	for _, pod := range in.pods {
		serving := pod.Labels[LabelServing] == "true"
		_, draining := pod.Annotations[AnnotationDrainingSince]
		switch {
		case leaving[pod.Name] && (serving || !draining):
			p.podChanges = append(p.podChanges, podChange{pod: pod, serving: false})
		case !leaving[pod.Name] && ordinal(s.Name, pod) >= 0 && ordinal(s.Name, pod) < int(p.replicas) &&
			pod.DeletionTimestamp.IsZero() && (!serving || draining):
			p.podChanges = append(p.podChanges, podChange{pod: pod, serving: true})
		}
		st := v1alpha1.ReceiverPodStatus{Name: pod.Name, Serving: serving && !leaving[pod.Name], Leaving: leaving[pod.Name]}
		if ordinal(s.Name, pod) < 0 && !p.selectServing {
			st.Serving = true // the Service still selects every pod while the StatefulSet starts
		}
		if rd, ok := in.readings[pod.Name]; ok {
			if rd.err != nil {
				st.Error = truncate(rd.err.Error(), 1024)
			} else {
				st.Pending, st.SpoolBytes = ptrTo(rd.Pending), ptrTo(rd.Bytes)
				p.pending += rd.Pending
			}
		}
		p.pods = append(p.pods, st)
	}
	slices.SortFunc(p.pods, func(a, b v1alpha1.ReceiverPodStatus) int { return strings.Compare(a.Name, b.Name) })
	return p
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
