package e2e

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// StatefulSetSyncInterval is how often StatefulPods compares the pods it runs with the
// StatefulSet's replicas.
const StatefulSetSyncInterval = 100 * time.Millisecond

// StatefulPods runs a receiver StatefulSet's pods as local processes, doing what the
// statefulset controller, the kubelet and the volume provisioner would (none runs here):
// for each ordinal below spec.replicas it creates the claim spool-<name>-<n> (a directory
// under Dir, which outlives the process as a PersistentVolume outlives its pod) and the
// Pod object <name>-<n> from the template, runs the receiver on loopback ports it writes
// into the Pod's container ports, and reports the Pod Running and Ready on 127.0.0.1 once
// /readyz answers; above spec.replicas it stops the process (SIGTERM) and deletes the Pod,
// keeping the claim (whenScaled: Retain). It keeps the StatefulSet's status current.
type StatefulPods struct {
	c         *Cluster
	Namespace string
	Name      string
	// Dir holds one directory per claim.
	Dir string

	mu      sync.Mutex
	running map[int]*Receiver
	cancel  context.CancelFunc
	done    chan struct{}
	// Errors are sync failures, for the test's failure message.
	errs []error
}

// RunStatefulSet starts running the StatefulSet namespace/name's pods.
func (c *Cluster) RunStatefulSet(namespace, name, dir string) *StatefulPods {
	ctx, cancel := context.WithCancel(context.Background())
	p := &StatefulPods{c: c, Namespace: namespace, Name: name, Dir: dir, running: map[int]*Receiver{}, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		t := time.NewTicker(StatefulSetSyncInterval)
		defer t.Stop()
		for {
			if err := p.sync(ctx); err != nil && ctx.Err() == nil {
				p.mu.Lock()
				if len(p.errs) < 20 {
					p.errs = append(p.errs, err)
				}
				p.mu.Unlock()
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return p
}

// Stop stops syncing and every process (SIGTERM).
func (p *StatefulPods) Stop() {
	p.cancel()
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	for n, r := range p.running {
		_ = r.Stop()
		delete(p.running, n)
	}
}

// Errors returns the sync errors seen so far.
func (p *StatefulPods) Errors() []error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]error(nil), p.errs...)
}

// PodName is the name of the pod of ordinal n.
func (p *StatefulPods) PodName(n int) string { return p.Name + "-" + strconv.Itoa(n) }

// ClaimName is the claim of ordinal n (the volumeClaimTemplate is "spool").
func (p *StatefulPods) ClaimName(n int) string { return "spool-" + p.PodName(n) }

// Receiver returns the process of ordinal n, nil when it does not run.
func (p *StatefulPods) Receiver(n int) *Receiver {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.running[n]
}

// Logs returns the tails of the running processes' logs.
func (p *StatefulPods) Logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := ""
	for n, r := range p.running {
		out += fmt.Sprintf("--- %s:\n%s\n", p.PodName(n), r.Tail())
	}
	return out
}

// Roll replaces the pod of ordinal n as a rollout or an eviction does: the process stops
// (SIGTERM, or SIGKILL with kill) and the Pod is deleted; the next sync starts it again
// on the same claim.
func (p *StatefulPods) Roll(ctx context.Context, n int, kill bool) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	r := p.running[n]
	if r == nil {
		return fmt.Errorf("pod %s does not run", p.PodName(n))
	}
	if kill {
		r.Kill()
	} else if err := r.Stop(); err != nil {
		return fmt.Errorf("stopping %s: %w", p.PodName(n), err)
	}
	delete(p.running, n)
	return client.IgnoreNotFound(p.c.Client.Delete(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: p.Namespace, Name: p.PodName(n)}}))
}

// sync runs one comparison of the processes with the StatefulSet.
func (p *StatefulPods) sync(ctx context.Context) error {
	sts := &appsv1.StatefulSet{}
	if err := p.c.Client.Get(ctx, types.NamespacedName{Namespace: p.Namespace, Name: p.Name}, sts); err != nil {
		return client.IgnoreNotFound(err)
	}
	want := 1
	if sts.Spec.Replicas != nil {
		want = int(*sts.Spec.Replicas)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for n, r := range p.running {
		if n < want {
			continue
		}
		if err := r.Stop(); err != nil {
			p.errs = append(p.errs, fmt.Errorf("stopping %s: %w", p.PodName(n), err))
		}
		delete(p.running, n)
		if err := p.c.Client.Delete(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: p.Namespace, Name: p.PodName(n)}}); client.IgnoreNotFound(err) != nil {
			return err
		}
	}
	for n := range want {
		if p.running[n] != nil {
			continue
		}
		if err := p.startPod(ctx, sts, n); err != nil {
			return fmt.Errorf("starting %s: %w", p.PodName(n), err)
		}
	}
	ready := int32(0)
	for _, r := range p.running {
		if exited, _ := r.Exited(); !exited {
			ready++
		}
	}
	st := appsv1.StatefulSetStatus{
		ObservedGeneration: sts.Generation, Replicas: int32(len(p.running)), ReadyReplicas: ready, CurrentReplicas: int32(len(p.running)),
		UpdatedReplicas: int32(len(p.running)), AvailableReplicas: ready, CurrentRevision: p.Name + "-1", UpdateRevision: p.Name + "-1",
	}
	if sts.Status.ObservedGeneration == st.ObservedGeneration && sts.Status.Replicas == st.Replicas && sts.Status.ReadyReplicas == st.ReadyReplicas &&
		sts.Status.CurrentRevision == st.CurrentRevision {
		return nil
	}
	sts.Status = st
	return p.c.Client.Status().Update(ctx, sts)
}

// startPod creates ordinal n's claim and Pod, runs its process and reports it ready.
func (p *StatefulPods) startPod(ctx context.Context, sts *appsv1.StatefulSet, n int) error {
	if len(sts.Spec.VolumeClaimTemplates) != 1 {
		return fmt.Errorf("statefulset %s has %d volumeClaimTemplates, want 1", sts.Name, len(sts.Spec.VolumeClaimTemplates))
	}
	vct := sts.Spec.VolumeClaimTemplates[0]
	claim := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: p.Namespace, Name: vct.Name + "-" + p.PodName(n), Labels: maps.Clone(vct.Labels)},
		Spec:       vct.Spec,
	}
	if err := p.c.Client.Create(ctx, claim); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	dir := filepath.Join(p.Dir, claim.Name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	old := &corev1.Pod{}
	switch err := p.c.Client.Get(ctx, types.NamespacedName{Namespace: p.Namespace, Name: p.PodName(n)}, old); {
	case err == nil:
		// A pod left from a previous process (a Roll, a restart of the harness): replace it.
		if err := p.c.Client.Delete(ctx, old); client.IgnoreNotFound(err) != nil {
			return err
		}
	case !apierrors.IsNotFound(err):
		return err
	}
	r, err := p.c.startPod(sts, p.PodName(n), dir, p.c.Kubeconfig)
	if err != nil {
		return err
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: p.Namespace, Name: p.PodName(n),
			Labels:          labels.Merge(sts.Spec.Template.Labels, map[string]string{"statefulset.kubernetes.io/pod-name": p.PodName(n)}),
			Annotations:     maps.Clone(sts.Spec.Template.Annotations),
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(sts, appsv1.SchemeGroupVersion.WithKind("StatefulSet"))},
		},
		Spec: *sts.Spec.Template.Spec.DeepCopy(),
	}
	pod.Spec.Hostname, pod.Spec.Subdomain = p.PodName(n), sts.Spec.ServiceName
	pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{Name: vct.Name, VolumeSource: corev1.VolumeSource{
		PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim.Name}}})
	for i := range pod.Spec.Containers[0].Ports {
		switch port := &pod.Spec.Containers[0].Ports[i]; port.Name {
		case "http":
			port.ContainerPort = int32(r.Port)
		case "metrics":
			port.ContainerPort = int32(r.MetricsPort)
		}
	}
	fail := func(err error) error {
		r.Kill()
		return err
	}
	if err := p.c.Client.Create(ctx, pod); err != nil {
		return fail(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := r.WaitReady(wctx); err != nil {
		return fail(err)
	}
	now := metav1.Now()
	pod.Status = corev1.PodStatus{
		Phase: corev1.PodRunning, PodIP: "127.0.0.1", PodIPs: []corev1.PodIP{{IP: "127.0.0.1"}}, StartTime: &now,
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now}},
	}
	if err := p.c.Client.Status().Update(ctx, pod); err != nil {
		return fail(err)
	}
	p.running[n] = r
	return nil
}

// ServingURLs are the base URLs of the pods the Service namespace/service sends to: what
// the endpoints controller and kube-proxy would pick, from the Service's selector.
func (p *StatefulPods) ServingURLs(ctx context.Context, service string) ([]string, error) {
	svc := &corev1.Service{}
	if err := p.c.Client.Get(ctx, types.NamespacedName{Namespace: p.Namespace, Name: service}, svc); err != nil {
		return nil, err
	}
	sel := labels.SelectorFromSet(svc.Spec.Selector)
	p.mu.Lock()
	defer p.mu.Unlock()
	var urls []string
	for n, r := range p.running {
		pod := &corev1.Pod{}
		if err := p.c.Client.Get(ctx, types.NamespacedName{Namespace: p.Namespace, Name: p.PodName(n)}, pod); err != nil {
			continue
		}
		if sel.Matches(labels.Set(pod.Labels)) {
			urls = append(urls, r.URL)
		}
	}
	return urls, nil
}
