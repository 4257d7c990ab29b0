package dataplane

import (
	"errors"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/callback-router/callback-router/api/v1alpha1"
)

func TestParseSpoolMetrics(t *testing.T) {
	cases := []struct {
		name    string
		text    string
		want    SpoolReading
		wantErr string
	}{
		{name: "routes summed", text: `# HELP callback_router_spool_depth Pending Async deliveries.
# TYPE callback_router_spool_depth gauge
callback_router_spool_depth{route="chat/archive"} 12
callback_router_spool_depth{route="chat/a b}c"} 3
callback_router_spool_depth_other 99
callback_router_spool_bytes 4096
`, want: SpoolReading{Pending: 15, Bytes: 4096}},
		{name: "no routes yet", text: "callback_router_spool_bytes 0\n", want: SpoolReading{}},
		{name: "scientific notation", text: "callback_router_spool_bytes 1.048576e+06\ncallback_router_spool_depth{route=\"x\"} 2e+00\n",
			want: SpoolReading{Pending: 2, Bytes: 1 << 20}},
		{name: "not a receiver", text: "go_goroutines 12\n", wantErr: "not a receiver's metrics"},
		{name: "malformed value", text: "callback_router_spool_bytes twelve\n", wantErr: "malformed metric line"},
		{name: "unterminated labels", text: "callback_router_spool_depth{route=\"x\" 1\ncallback_router_spool_bytes 1\n", wantErr: "malformed metric line"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			g := NewWithT(t)
			got, err := ParseSpoolMetrics(strings.NewReader(c.text))
			if c.wantErr != "" {
				g.Expect(err).To(MatchError(ContainSubstring(c.wantErr)))
				return
			}
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(got).To(Equal(c.want))
		})
	}
}

func TestPodMetricsAddress(t *testing.T) {
	g := NewWithT(t)
	pod := &corev1.Pod{
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: receiverContainer, Ports: []corev1.ContainerPort{
			{Name: receiverPortName, ContainerPort: 8080}, {Name: receiverMetricsPortName, ContainerPort: 9090}}}}},
	}
	_, err := PodMetricsAddress(pod)
	g.Expect(err).To(MatchError(ContainSubstring("no IP yet")))
	pod.Status.PodIP = "fd00::7"
	g.Expect(PodMetricsAddress(pod)).To(Equal("[fd00::7]:9090"))
	pod.Spec.Containers[0].Ports = pod.Spec.Containers[0].Ports[:1]
	_, err = PodMetricsAddress(pod)
	g.Expect(err).To(MatchError(ContainSubstring(`no "metrics" port`)))
}

// planFixture is a receiver "p" scaled from 3 to desired, with pods whose serving label,
// draining-since annotation and readings the cases set.
type planFixture struct {
	desired int32
	current int32
	pods    map[int]podState
	claims  []int
	// depPods are pods of the Deployment of a previous version (which exists when set).
	depPods map[string]podState
	// stsReady is the StatefulSet's readyReplicas; current when 0.
	stsReady int32
}

type podState struct {
	serving bool
	since   time.Duration // how long ago it left the Service; 0: no annotation
	pending int64
	bytes   int64
	err     error
}

var planNow = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

func (f planFixture) input() planInput {
	recv := &v1alpha1.CallbackReceiver{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p", UID: "u"},
		Spec: v1alpha1.CallbackReceiverSpec{Replicas: ptr.To(f.desired)}}
	s, err := ResolveReceiver(recv, "img")
	if err != nil {
		panic(err)
	}
	in := planInput{s: s, now: planNow, settle: 10 * time.Second, readings: map[string]podReading{},
		claims: map[string]*corev1.PersistentVolumeClaim{},
		sts: &appsv1.StatefulSet{Spec: appsv1.StatefulSetSpec{Replicas: ptr.To(f.current)},
			Status: appsv1.StatefulSetStatus{ReadyReplicas: f.current}}}
	if f.stsReady > 0 {
		in.sts.Status.ReadyReplicas = f.stsReady
	}
	if f.depPods != nil {
		in.dep = &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: s.Name, Namespace: "ns"}}
	}
	for name, st := range f.depPods {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", Annotations: map[string]string{}}}
		if st.since > 0 {
			pod.Annotations[AnnotationDrainingSince] = planNow.Add(-st.since).Format(time.RFC3339)
		}
		in.pods = append(in.pods, pod)
		in.readings[name] = podReading{SpoolReading: SpoolReading{Pending: st.pending, Bytes: st.bytes}, err: st.err}
	}
	for n, st := range f.pods {
		name := s.Name + "-" + string(rune('0'+n))
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns",
			Labels: map[string]string{LabelStatefulSetPod: name}, Annotations: map[string]string{}}}
		if st.serving {
			pod.Labels[LabelServing] = "true"
		}
		if st.since > 0 {
			pod.Annotations[AnnotationDrainingSince] = planNow.Add(-st.since).Format(time.RFC3339)
		}
		in.pods = append(in.pods, pod)
		in.readings[name] = podReading{SpoolReading: SpoolReading{Pending: st.pending, Bytes: st.bytes}, err: st.err}
	}
	for _, n := range f.claims {
		name := ClaimName("p", n)
		in.claims[name] = &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{}}}
	}
	return in
}

func TestPlanScale(t *testing.T) {
	settled := time.Minute
	cases := []struct {
		name         string
		f            planFixture
		replicas     int32
		leaving      []string
		pending      int64
		unserve      []string // pods whose serving label comes off
		serve        []string // pods whose serving label goes (back) on
		claimLabels  map[string]string
		message      string
		drainingWant bool
		// selectServing and deleteDeployment are the migration's decisions.
		selectServing    *bool
		deleteDeployment bool
	}{
		{
			name: "migration: the StatefulSet not ready yet, the Service selects every pod",
			f: planFixture{desired: 2, current: 2, stsReady: 1, pods: map[int]podState{0: {serving: true}, 1: {serving: true}},
				depPods: map[string]podState{"p-receiver-5d8f-abcde": {pending: 4}}},
			replicas:      2,
			pending:       0,
			selectServing: ptr.To(false),
		},
		{
			name: "migration: the StatefulSet ready, the Deployment's pods drain",
			f: planFixture{desired: 2, current: 2, pods: map[int]podState{0: {serving: true}, 1: {serving: true}},
				depPods: map[string]podState{"p-receiver-5d8f-abcde": {pending: 4}, "p-receiver-5d8f-fghij": {since: settled}}},
			replicas:      2,
			leaving:       []string{"p-receiver-5d8f-abcde"},
			pending:       4,
			unserve:       []string{"p-receiver-5d8f-abcde"},
			message:       "pod(s) of the Deployment the StatefulSet replaces: 4 callbacks pending (p-receiver-5d8f-abcde: 4)",
			drainingWant:  true,
			selectServing: ptr.To(true),
		},
		{
			name: "migration: the Deployment's pods drained, it goes",
			f: planFixture{desired: 2, current: 2, pods: map[int]podState{0: {serving: true}, 1: {serving: true}},
				depPods: map[string]podState{"p-receiver-5d8f-abcde": {since: settled}}},
			replicas:         2,
			selectServing:    ptr.To(true),
			deleteDeployment: true,
		},
		{
			name:     "steady",
			f:        planFixture{desired: 3, current: 3, pods: map[int]podState{0: {serving: true, pending: 4}, 1: {serving: true}, 2: {serving: true}}},
			replicas: 3,
		},
		{
			name:         "scale-down starts: the leaving pod comes out of the Service first",
			f:            planFixture{desired: 2, current: 3, pods: map[int]podState{0: {serving: true}, 1: {serving: true}, 2: {serving: true, pending: 7}}},
			replicas:     3,
			leaving:      []string{"p-receiver-2"},
			pending:      7,
			unserve:      []string{"p-receiver-2"},
			message:      "from 3 to 2 replicas: 7 callbacks pending (p-receiver-2: leaving the Service)",
			drainingWant: true,
		},
		{
			name:         "out of the Service but holding callbacks: wait",
			f:            planFixture{desired: 2, current: 3, pods: map[int]podState{0: {serving: true}, 1: {serving: true}, 2: {since: settled, pending: 5}}},
			replicas:     3,
			leaving:      []string{"p-receiver-2"},
			pending:      5,
			message:      "5 callbacks pending (p-receiver-2: 5)",
			drainingWant: true,
		},
		{
			name:         "empty but not settled: wait",
			f:            planFixture{desired: 2, current: 3, pods: map[int]podState{0: {serving: true}, 1: {serving: true}, 2: {since: time.Second}}},
			replicas:     3,
			leaving:      []string{"p-receiver-2"},
			message:      "p-receiver-2: 0, settling",
			drainingWant: true,
		},
		{
			name:         "count unknown: wait",
			f:            planFixture{desired: 2, current: 3, pods: map[int]podState{0: {serving: true}, 1: {serving: true}, 2: {since: settled, err: errors.New("connection refused")}}},
			replicas:     3,
			leaving:      []string{"p-receiver-2"},
			message:      "p-receiver-2: pending unknown (connection refused)",
			drainingWant: true,
		},
		{
			name:        "drained: replicas lowered, claim labelled empty",
			f:           planFixture{desired: 2, current: 3, claims: []int{0, 1, 2}, pods: map[int]podState{0: {serving: true}, 1: {serving: true}, 2: {since: settled}}},
			replicas:    2,
			claimLabels: map[string]string{"spool-p-receiver-2": SpoolEmpty},
		},
		{
			name:        "drained with dead letters: claim labelled retained",
			f:           planFixture{desired: 2, current: 3, claims: []int{2}, pods: map[int]podState{0: {serving: true}, 1: {serving: true}, 2: {since: settled, bytes: 900}}},
			replicas:    2,
			claimLabels: map[string]string{"spool-p-receiver-2": SpoolRetained},
		},
		{
			name: "3 to 1: the top pod drained, the one below not: one step down",
			f: planFixture{desired: 1, current: 3, pods: map[int]podState{0: {serving: true},
				1: {since: settled, pending: 2}, 2: {since: settled}}},
			replicas:     2,
			leaving:      []string{"p-receiver-1"},
			pending:      2,
			drainingWant: true,
		},
		{
			name: "3 to 1: the top pod holds callbacks, the one below is drained: no step",
			f: planFixture{desired: 1, current: 3, pods: map[int]podState{0: {serving: true},
				1: {since: settled}, 2: {since: settled, pending: 3}}},
			replicas:     3,
			leaving:      []string{"p-receiver-2"},
			pending:      3,
			drainingWant: true,
		},
		{
			name:         "a leaving pod that does not run while its claim exists: wait",
			f:            planFixture{desired: 2, current: 3, claims: []int{2}, pods: map[int]podState{0: {serving: true}, 1: {serving: true}}},
			replicas:     3,
			leaving:      []string{"p-receiver-2"},
			message:      "p-receiver-2: not running, its claim holds its spool",
			drainingWant: true,
		},
		{
			name:     "a leaving pod never created and no claim: nothing to drain",
			f:        planFixture{desired: 2, current: 3, pods: map[int]podState{0: {serving: true}, 1: {serving: true}}},
			replicas: 2,
		},
		{
			name:        "scale back up while draining: the pod serves again, its claim unlabelled",
			f:           planFixture{desired: 3, current: 3, claims: []int{2}, pods: map[int]podState{0: {serving: true}, 1: {serving: true}, 2: {since: settled, pending: 9}}},
			replicas:    3,
			serve:       []string{"p-receiver-2"},
			claimLabels: map[string]string{},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			g := NewWithT(t)
			in := c.f.input()
			if c.name == "scale back up while draining: the pod serves again, its claim unlabelled" {
				in.claims["spool-p-receiver-2"].Labels[LabelSpool] = SpoolEmpty
			}
			p := planScale(in)
			g.Expect(p.replicas).To(Equal(c.replicas))
			g.Expect(p.leaving).To(Equal(c.leaving))
			g.Expect(p.leavingPending).To(Equal(c.pending))
			g.Expect(p.draining()).To(Equal(c.drainingWant))
			g.Expect(p.deleteDeployment).To(Equal(c.deleteDeployment))
			if c.selectServing != nil {
				g.Expect(p.selectServing).To(Equal(*c.selectServing))
			}
			var unserve, serve []string
			for _, ch := range p.podChanges {
				if ch.serving {
					serve = append(serve, ch.pod.Name)
				} else {
					unserve = append(unserve, ch.pod.Name)
				}
			}
			g.Expect(unserve).To(ConsistOf(c.unserve))
			g.Expect(serve).To(ConsistOf(c.serve))
			if c.claimLabels != nil {
				got := map[string]string{}
				for _, ch := range p.claims {
					got[ch.name] = ch.value
				}
				if c.name == "scale back up while draining: the pod serves again, its claim unlabelled" {
					g.Expect(got).To(Equal(map[string]string{"spool-p-receiver-2": ""}))
				} else {
					g.Expect(got).To(Equal(c.claimLabels))
				}
			}
			if c.message != "" {
				g.Expect(p.drainMessage(c.f.desired)).To(ContainSubstring(c.message))
			}
			var total int64
			for _, ps := range p.pods {
				if ps.Pending != nil {
					total += *ps.Pending
				}
			}
			g.Expect(p.pending).To(Equal(total))
		})
	}
}

// TestStatelessReceiver: a receiver whose spool is not on its pods (JetStream) gets no
// claims, and a scale-down lowers the replicas at once, without draining.
func TestStatelessReceiver(t *testing.T) {
	g := NewWithT(t)
	in := planFixture{desired: 1, current: 3, pods: map[int]podState{0: {serving: true}, 1: {serving: true, pending: 5}, 2: {serving: true}}}.input()
	in.s.Stateless = true
	p := planScale(in)
	g.Expect(p.replicas).To(Equal(int32(1)))
	g.Expect(p.draining()).To(BeFalse())
	g.Expect(p.podChanges).To(BeEmpty())

	sts := DesiredStatefulSet(in.s)
	g.Expect(sts.Spec.VolumeClaimTemplates).To(BeEmpty())
	var spool *corev1.Volume
	for _, v := range sts.Spec.Template.Spec.Volumes {
		if *v.Name == SpoolVolume {
			spool = &corev1.Volume{Name: *v.Name}
			g.Expect(v.EmptyDir).NotTo(BeNil())
		}
	}
	g.Expect(spool).NotTo(BeNil(), "the spool mount needs a volume")
}
