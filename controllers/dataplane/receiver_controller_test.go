package dataplane

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/callback-router/callback-router/api/v1alpha1"
)

// newReceiver creates a CallbackReceiver and deletes it when the test ends.
func newReceiver(t *testing.T, ns, name string, spec v1alpha1.CallbackReceiverSpec) *v1alpha1.CallbackReceiver {
	t.Helper()
	r := &v1alpha1.CallbackReceiver{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: spec}
	NewWithT(t).Expect(k8s.Create(context.Background(), r)).To(Succeed())
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), r) })
	return r
}

// ownedObjects are empty objects of every kind a receiver owns.
func ownedObjects() map[string]client.Object {
	return map[string]client.Object{
		"StatefulSet":    &appsv1.StatefulSet{},
		"Service":        &corev1.Service{},
		"ServiceAccount": &corev1.ServiceAccount{},
		"Role":           &rbacv1.Role{},
		"RoleBinding":    &rbacv1.RoleBinding{},
	}
}

// expectControlledBy checks the controller owner reference the garbage collector follows.
func expectControlledBy(g Gomega, obj client.Object, owner *v1alpha1.CallbackReceiver) {
	refs := obj.GetOwnerReferences()
	g.Expect(refs).To(HaveLen(1), "%T %s", obj, obj.GetName())
	g.Expect(refs[0]).To(Equal(metav1.OwnerReference{
		APIVersion: v1alpha1.GroupVersion.String(), Kind: "CallbackReceiver", Name: owner.Name, UID: owner.UID,
		Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true),
	}))
}

func getReceiver(g Gomega, key types.NamespacedName) *v1alpha1.CallbackReceiver {
	r := &v1alpha1.CallbackReceiver{}
	g.Expect(k8s.Get(context.Background(), key, r)).To(Succeed())
	return r
}

func condition(r *v1alpha1.CallbackReceiver, t string) *metav1.Condition {
	return meta.FindStatusCondition(r.Status.Conditions, t)
}

func TestReceiverObjectsOwnedAndShaped(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	recv := newReceiver(t, receiverNS, "alpha", v1alpha1.CallbackReceiverSpec{
		Replicas:       ptr.To[int32](3),
		Service:        &v1alpha1.ReceiverService{Type: corev1.ServiceTypeNodePort, Port: 8081},
		TrustedProxies: []string{"10.0.0.0/8"},
		Spool: &v1alpha1.Spool{Embedded: &v1alpha1.EmbeddedSpool{Size: ptr.To(resource.MustParse("2Gi")),
			StorageClassName: ptr.To("fast-ssd")}},
		Resources: &corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("200m")},
			Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("300Mi")},
		},
	})
	key := types.NamespacedName{Namespace: receiverNS, Name: "alpha-receiver"}
	for kind, obj := range ownedObjects() {
		g.Eventually(func(g Gomega) {
			g.Expect(k8s.Get(ctx, key, obj)).To(Succeed(), kind)
			expectControlledBy(g, obj, recv)
			g.Expect(obj.GetLabels()).To(HaveKeyWithValue(LabelManagedBy, ManagedByValue))
		}, waitTimeout, pollInterval).Should(Succeed())
	}

	d := &appsv1.StatefulSet{}
	g.Expect(k8s.Get(ctx, key, d)).To(Succeed())
	podLabels := map[string]string{LabelName: "alpha-receiver", LabelInstance: "alpha", LabelComponent: ComponentReceiver}
	g.Expect(d.Spec.Replicas).To(Equal(ptr.To[int32](3)))
	g.Expect(d.Spec.Selector.MatchLabels).To(Equal(podLabels))
	pod := d.Spec.Template.Spec
	g.Expect(pod.ServiceAccountName).To(Equal("alpha-receiver"))
	g.Expect(pod.SecurityContext.RunAsNonRoot).To(Equal(ptr.To(true)))
	g.Expect(pod.SecurityContext.SeccompProfile.Type).To(Equal(corev1.SeccompProfileTypeRuntimeDefault))
	c := pod.Containers[0]
	g.Expect(c.Image).To(Equal(testImage))
	g.Expect(c.Args).To(Equal([]string{"receiver", "--listen", ":8081", "--metrics-listen", ":9090", "--spool-dir", SpoolDir,
		"--spool-max-bytes", "1073741824", "--namespace", receiverNS, "--table", "alpha", "--trusted-proxies", "10.0.0.0/8",
		"--admin-listen", AdminAddress}))
	g.Expect(c.SecurityContext.ReadOnlyRootFilesystem).To(Equal(ptr.To(true)))
	g.Expect(c.SecurityContext.Capabilities.Drop).To(ConsistOf(corev1.Capability("ALL")))
	g.Expect(c.Resources.Requests.Cpu().String()).To(Equal("200m"))
	g.Expect(c.Resources.Limits.Memory().String()).To(Equal("300Mi"))
	g.Expect(c.Resources.Limits.Cpu().IsZero()).To(BeTrue())
	for _, v := range pod.Volumes {
		g.Expect(v.Name).NotTo(Equal(SpoolVolume), "the spool is the pod's claim, not a pod volume")
	}
	g.Expect(c.VolumeMounts).To(ContainElement(corev1.VolumeMount{Name: SpoolVolume, MountPath: SpoolDir}))
	g.Expect(d.Spec.ServiceName).To(Equal("alpha-pods"))
	g.Expect(d.Spec.Template.Labels).To(HaveKeyWithValue(LabelServing, "true"))
	g.Expect(d.Spec.PersistentVolumeClaimRetentionPolicy).To(Equal(&appsv1.StatefulSetPersistentVolumeClaimRetentionPolicy{
		WhenScaled: appsv1.RetainPersistentVolumeClaimRetentionPolicyType, WhenDeleted: appsv1.RetainPersistentVolumeClaimRetentionPolicyType}))
	g.Expect(d.Spec.VolumeClaimTemplates).To(HaveLen(1))
	vct := d.Spec.VolumeClaimTemplates[0]
	g.Expect(vct.Name).To(Equal(SpoolVolume))
	g.Expect(vct.Spec.Resources.Requests.Storage().Cmp(resource.MustParse("2Gi"))).To(Equal(0))
	g.Expect(vct.Spec.StorageClassName).To(Equal(ptr.To("fast-ssd")))
	g.Expect(vct.Spec.AccessModes).To(ConsistOf(corev1.ReadWriteOnce))

	headless := &corev1.Service{}
	g.Expect(k8s.Get(ctx, types.NamespacedName{Namespace: receiverNS, Name: "alpha-pods"}, headless)).To(Succeed())
	expectControlledBy(g, headless, recv)
	g.Expect(headless.Spec.ClusterIP).To(Equal(corev1.ClusterIPNone))
	g.Expect(headless.Spec.PublishNotReadyAddresses).To(BeTrue())
	g.Expect(headless.Spec.Selector).To(Equal(podLabels))
	// The metrics port is on the headless Service only (never a LoadBalancer).
	g.Expect(headless.Spec.Ports).To(HaveLen(2))
	g.Expect(headless.Spec.Ports[1].Name).To(Equal("metrics"))
	g.Expect(headless.Spec.Ports[1].Port).To(Equal(int32(MetricsPort)))

	svc := &corev1.Service{}
	g.Expect(k8s.Get(ctx, key, svc)).To(Succeed())
	g.Expect(svc.Spec.Type).To(Equal(corev1.ServiceTypeNodePort))
	g.Expect(svc.Spec.Selector).To(Equal(map[string]string{LabelName: "alpha-receiver", LabelInstance: "alpha",
		LabelComponent: ComponentReceiver, LabelServing: "true"}))
	// The callback Service (which may be a LoadBalancer's) has the callback port alone.
	g.Expect(svc.Spec.Ports).To(HaveLen(1))
	g.Expect(svc.Spec.Ports[0].Name).To(Equal("http"))
	g.Expect(svc.Spec.Ports[0].Port).To(Equal(int32(8081)))

	role := &rbacv1.Role{}
	g.Expect(k8s.Get(ctx, key, role)).To(Succeed())
	g.Expect(role.Rules).To(Equal([]rbacv1.PolicyRule{{
		APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get", "list", "watch"}}}))
	rb := &rbacv1.RoleBinding{}
	g.Expect(k8s.Get(ctx, key, rb)).To(Succeed())
	g.Expect(rb.RoleRef.Name).To(Equal("alpha-receiver"))
	g.Expect(rb.Subjects).To(ConsistOf(rbacv1.Subject{Kind: "ServiceAccount", Name: "alpha-receiver", Namespace: receiverNS}))

	// No deployment controller runs here: the workload has no pods, so the receiver is
	// rolling out, with its address and selector already known.
	g.Eventually(func(g Gomega) {
		r := getReceiver(g, client.ObjectKeyFromObject(recv))
		g.Expect(r.Status.ObservedGeneration).To(Equal(r.Generation))
		g.Expect(r.Status.Address).To(Equal("http://alpha-receiver.callback-router-system.svc:8081"))
		g.Expect(r.Status.Selector).To(Equal("app.kubernetes.io/component=receiver,app.kubernetes.io/instance=alpha,app.kubernetes.io/name=alpha-receiver"))
		g.Expect(r.Status.Replicas).To(BeZero())
		ready := condition(r, v1alpha1.ConditionReady)
		g.Expect(ready).NotTo(BeNil())
		g.Expect(ready.Status).To(Equal(metav1.ConditionFalse))
		g.Expect(ready.Reason).To(Equal(v1alpha1.ReasonUnavailable))
		g.Expect(ready.ObservedGeneration).To(Equal(r.Generation))
		g.Expect(condition(r, v1alpha1.ConditionProgressing).Status).To(Equal(metav1.ConditionTrue))
		g.Expect(condition(r, v1alpha1.ConditionStalled)).To(BeNil())
	}, waitTimeout, pollInterval).Should(Succeed())
}

// setWorkloadStatus writes a StatefulSet's status as the statefulset controller would
// (none runs in envtest) once the StatefulSet asks for replicas pods: replicas pods, ready
// and available of them up to date.
func setWorkloadStatus(g Gomega, key types.NamespacedName, replicas, ready int32) {
	g.Eventually(func() error {
		d := &appsv1.StatefulSet{}
		if err := k8s.Get(context.Background(), key, d); err != nil {
			return err
		}
		if d.Spec.Replicas == nil || *d.Spec.Replicas != replicas {
			// The manager has not carried the receiver's replicas to the workload yet; the
			// statefulset controller would describe the new spec only after that.
			return fmt.Errorf("statefulset %s has spec.replicas %v, want %d", key, d.Spec.Replicas, replicas)
		}
		d.Status = appsv1.StatefulSetStatus{
			ObservedGeneration: d.Generation, Replicas: replicas, UpdatedReplicas: replicas,
			ReadyReplicas: ready, AvailableReplicas: ready, CurrentRevision: "r1", UpdateRevision: "r1",
		}
		return k8s.Status().Update(context.Background(), d)
	}, waitTimeout, pollInterval).Should(Succeed())
}

// TestReceiverOnJetStream: spec.spool.jetStream reaches the receiver as --spool-url,
// a stream of the receiver's own, the replicas and the credentials file mounted from
// the named Secret; its StatefulSet has no claims.
func TestReceiverOnJetStream(t *testing.T) {
	g := NewWithT(t)
	recv := newReceiver(t, receiverNS, "js-alpha", v1alpha1.CallbackReceiverSpec{
		Spool: &v1alpha1.Spool{JetStream: &v1alpha1.JetStreamSpool{
			URL:                  "nats://127.0.0.1:4222,127.0.0.1:4223",
			CredentialsSecretRef: &v1alpha1.LocalObjectReference{Name: "nats-creds"},
		}},
	})
	key := types.NamespacedName{Namespace: receiverNS, Name: ObjectName(recv.Name)}
	d := &appsv1.StatefulSet{}
	g.Eventually(func() error { return k8s.Get(context.Background(), key, d) }, waitTimeout, pollInterval).Should(Succeed())
	g.Expect(d.Spec.VolumeClaimTemplates).To(BeEmpty(), "a JetStream receiver keeps nothing on its pods: no claims")
	c := d.Spec.Template.Spec.Containers[0]
	g.Expect(c.Args).To(Equal([]string{"receiver", "--listen", ":8080", "--metrics-listen", ":9090",
		"--spool-url", "nats://127.0.0.1:4222,127.0.0.1:4223", "--spool-stream", "CALLBACKS_" + strings.ToUpper(receiverNS) + "_JS-ALPHA",
		"--spool-replicas", "3", "--spool-creds", NATSCredsDir + "/creds",
		"--namespace", receiverNS, "--table", TableName(recv.Name), "--admin-listen", AdminAddress}))
	g.Expect(c.VolumeMounts).To(ContainElement(corev1.VolumeMount{Name: "nats-creds", MountPath: NATSCredsDir, ReadOnly: true}))
	var found bool
	for _, v := range d.Spec.Template.Spec.Volumes {
		if v.Name == "nats-creds" {
			found = true
			g.Expect(v.Secret.SecretName).To(Equal("nats-creds"))
			g.Expect(v.Secret.Items).To(Equal([]corev1.KeyToPath{{Key: "creds", Path: "creds"}}))
		}
	}
	g.Expect(found).To(BeTrue(), "no nats-creds volume")
}

func TestReceiverStatusFollowsWorkload(t *testing.T) {
	g := NewWithT(t)
	recv := newReceiver(t, receiverNS, "beta", v1alpha1.CallbackReceiverSpec{Replicas: ptr.To[int32](2)})
	key := types.NamespacedName{Namespace: receiverNS, Name: "beta-receiver"}
	g.Eventually(func() error { return k8s.Get(context.Background(), key, &appsv1.StatefulSet{}) }, waitTimeout, pollInterval).Should(Succeed())

	// One of two pods ready: still rolling out.
	setWorkloadStatus(g, key, 2, 1)
	g.Eventually(func(g Gomega) {
		r := getReceiver(g, client.ObjectKeyFromObject(recv))
		g.Expect(r.Status.Replicas).To(Equal(int32(2)))
		g.Expect(r.Status.ReadyReplicas).To(Equal(int32(1)))
		g.Expect(condition(r, v1alpha1.ConditionReady).Status).To(Equal(metav1.ConditionFalse))
		g.Expect(condition(r, v1alpha1.ConditionProgressing).Reason).To(Equal(v1alpha1.ReasonRollingOut))
	}, waitTimeout, pollInterval).Should(Succeed())

	// Both ready: Ready, stable.
	setWorkloadStatus(g, key, 2, 2)
	g.Eventually(func(g Gomega) {
		r := getReceiver(g, client.ObjectKeyFromObject(recv))
		g.Expect(r.Status.ReadyReplicas).To(Equal(int32(2)))
		ready := condition(r, v1alpha1.ConditionReady)
		g.Expect(ready.Status).To(Equal(metav1.ConditionTrue))
		g.Expect(ready.Reason).To(Equal(v1alpha1.ReasonAvailable))
		g.Expect(ready.Message).To(Equal("2 of 2 replicas ready"))
		g.Expect(condition(r, v1alpha1.ConditionProgressing).Status).To(Equal(metav1.ConditionFalse))
	}, waitTimeout, pollInterval).Should(Succeed())

}

// expectEvent waits for an events.k8s.io Event of the given reason about obj.
func expectEvent(g Gomega, obj client.Object, reason string) {
	g.Eventually(func(g Gomega) {
		list := &eventsv1.EventList{}
		g.Expect(k8s.List(context.Background(), list, client.InNamespace(obj.GetNamespace()))).To(Succeed())
		found := false
		for _, e := range list.Items {
			found = found || (e.Regarding.UID == obj.GetUID() && e.Reason == reason)
		}
		g.Expect(found).To(BeTrue(), "no %s event about %s", reason, obj.GetName())
	}, waitTimeout, pollInterval).Should(Succeed())
}

// TestReceiverScaleSubresource scales the CallbackReceiver as an HPA does, through the
// scale subresource: the workload follows, and the scale reports the pods' selector.
func TestReceiverScaleSubresource(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	recv := newReceiver(t, receiverNS, "gamma", v1alpha1.CallbackReceiverSpec{})
	key := types.NamespacedName{Namespace: receiverNS, Name: "gamma-receiver"}
	g.Eventually(func(g Gomega) {
		d := &appsv1.StatefulSet{}
		g.Expect(k8s.Get(ctx, key, d)).To(Succeed())
		g.Expect(d.Spec.Replicas).To(Equal(ptr.To[int32](v1alpha1.DefaultReceiverReplicas)))
	}, waitTimeout, pollInterval).Should(Succeed())
	g.Eventually(func(g Gomega) {
		g.Expect(getReceiver(g, client.ObjectKeyFromObject(recv)).Status.Selector).NotTo(BeEmpty())
	}, waitTimeout, pollInterval).Should(Succeed())

	scale := &autoscalingv1.Scale{}
	g.Expect(k8s.SubResource("scale").Get(ctx, recv, scale)).To(Succeed())
	g.Expect(scale.Status.Selector).To(Equal("app.kubernetes.io/component=receiver,app.kubernetes.io/instance=gamma,app.kubernetes.io/name=gamma-receiver"))
	g.Expect(scale.Spec.Replicas).To(Equal(int32(v1alpha1.DefaultReceiverReplicas)))

	// As kubectl scale and an HPA do: read the scale, set replicas, write it back, and read
	// again when the manager's status write got in between (a conflict on resourceVersion).
	g.Eventually(func() error {
		if err := k8s.SubResource("scale").Get(ctx, recv, scale); err != nil {
			return err
		}
		scale.Spec.Replicas = 5
		return k8s.SubResource("scale").Update(ctx, recv, client.WithSubResourceBody(scale))
	}, waitTimeout, pollInterval).Should(Succeed())
	g.Eventually(func(g Gomega) {
		d := &appsv1.StatefulSet{}
		g.Expect(k8s.Get(ctx, key, d)).To(Succeed())
		g.Expect(d.Spec.Replicas).To(Equal(ptr.To[int32](5)))
	}, waitTimeout, pollInterval).Should(Succeed())
	setWorkloadStatus(g, key, 5, 5)
	g.Eventually(func(g Gomega) {
		g.Expect(k8s.SubResource("scale").Get(ctx, recv, scale)).To(Succeed())
		g.Expect(scale.Status.Replicas).To(Equal(int32(5)))
	}, waitTimeout, pollInterval).Should(Succeed())
}

func TestReceiverThatCannotRunStalls(t *testing.T) {
	tests := map[string]struct {
		spec v1alpha1.CallbackReceiverSpec
		// message is part of the Stalled condition's message.
		message string
		// created says whether the StatefulSet exists (the refusal came from the API server).
		created bool
	}{
		"JetStream spool with retention (replay needs the embedded spool)": {
			spec: v1alpha1.CallbackReceiverSpec{
				Spool:     &v1alpha1.Spool{JetStream: &v1alpha1.JetStreamSpool{URL: "nats://127.0.0.1:4222"}},
				Retention: &metav1.Duration{Duration: time.Hour},
			},
			message: "spec.retention (replay of delivered callbacks) is not supported with spool.jetStream",
		},
		"service port on the metrics port": {
			spec:    v1alpha1.CallbackReceiverSpec{Service: &v1alpha1.ReceiverService{Port: MetricsPort}},
			message: "is the receiver's metrics port",
		},
		"memory request above its limit (refused by the API server)": {
			spec: v1alpha1.CallbackReceiverSpec{Resources: &corev1.ResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1Gi")},
				Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")},
			}},
			message: "the API server refused the receiver's StatefulSet",
		},
	}
	i := 0
	for name, tc := range tests {
		i++
		t.Run(name, func(t *testing.T) {
			g := NewWithT(t)
			recv := newReceiver(t, receiverNS, fmt.Sprintf("stalled-%d", i), tc.spec)
			g.Eventually(func(g Gomega) {
				r := getReceiver(g, client.ObjectKeyFromObject(recv))
				stalled := condition(r, v1alpha1.ConditionStalled)
				g.Expect(stalled).NotTo(BeNil())
				g.Expect(stalled.Status).To(Equal(metav1.ConditionTrue))
				g.Expect(stalled.Reason).To(Equal(v1alpha1.ReasonInvalid))
				g.Expect(stalled.Message).To(ContainSubstring(tc.message))
				g.Expect(condition(r, v1alpha1.ConditionReady).Status).To(Equal(metav1.ConditionFalse))
				g.Expect(r.Status.ObservedGeneration).To(Equal(r.Generation))
			}, waitTimeout, pollInterval).Should(Succeed())
			err := k8s.Get(context.Background(), types.NamespacedName{Namespace: receiverNS, Name: ObjectName(recv.Name)}, &appsv1.StatefulSet{})
			g.Expect(apierrors.IsNotFound(err)).To(BeTrue(), "no StatefulSet for a receiver that cannot run: %v", err)
			expectEvent(g, recv, EventReceiverStalled)

			// Fixing the spec clears Stalled and creates the workload.
			g.Eventually(func() error {
				r := &v1alpha1.CallbackReceiver{}
				if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(recv), r); err != nil {
					return err
				}
				r.Spec = v1alpha1.CallbackReceiverSpec{}
				return k8s.Update(context.Background(), r)
			}, waitTimeout, pollInterval).Should(Succeed())
			g.Eventually(func(g Gomega) {
				r := getReceiver(g, client.ObjectKeyFromObject(recv))
				g.Expect(condition(r, v1alpha1.ConditionStalled)).To(BeNil())
				g.Expect(k8s.Get(context.Background(), types.NamespacedName{Namespace: receiverNS, Name: ObjectName(recv.Name)}, &appsv1.StatefulSet{})).To(Succeed())
			}, waitTimeout, pollInterval).Should(Succeed())
		})
	}
}

func TestReceiverObjectsRecreatedAfterDeletion(t *testing.T) {
	recv := newReceiver(t, receiverNS, "delta", v1alpha1.CallbackReceiverSpec{})
	key := types.NamespacedName{Namespace: receiverNS, Name: "delta-receiver"}
	for kind, obj := range ownedObjects() {
		t.Run(kind, func(t *testing.T) {
			g := NewWithT(t)
			ctx := context.Background()
			g.Eventually(func() error { return k8s.Get(ctx, key, obj) }, waitTimeout, pollInterval).Should(Succeed())
			uid := obj.GetUID()
			g.Expect(k8s.Delete(ctx, obj)).To(Succeed())
			g.Eventually(func(g Gomega) {
				fresh := obj.DeepCopyObject().(client.Object)
				g.Expect(k8s.Get(ctx, key, fresh)).To(Succeed())
				g.Expect(fresh.GetUID()).NotTo(Equal(uid), "a new object was created")
				expectControlledBy(g, fresh, recv)
			}, waitTimeout, pollInterval).Should(Succeed())
		})
	}
}

func TestReceiverDriftRepaired(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	newReceiver(t, receiverNS, "epsilon", v1alpha1.CallbackReceiverSpec{Replicas: ptr.To[int32](2)})
	key := types.NamespacedName{Namespace: receiverNS, Name: "epsilon-receiver"}
	g.Eventually(func() error { return k8s.Get(ctx, key, &appsv1.StatefulSet{}) }, waitTimeout, pollInterval).Should(Succeed())

	// Someone edits the image, the security context and the replicas; all are restored
	// (replicas belong to the CallbackReceiver, which an HPA scales).
	g.Eventually(func() error {
		d := &appsv1.StatefulSet{}
		if err := k8s.Get(ctx, key, d); err != nil {
			return err
		}
		d.Spec.Template.Spec.Containers[0].Image = "evil:latest"
		d.Spec.Template.Spec.Containers[0].SecurityContext.ReadOnlyRootFilesystem = ptr.To(false)
		d.Spec.Replicas = ptr.To[int32](7)
		return k8s.Update(ctx, d)
	}, waitTimeout, pollInterval).Should(Succeed())
	g.Eventually(func(g Gomega) {
		d := &appsv1.StatefulSet{}
		g.Expect(k8s.Get(ctx, key, d)).To(Succeed())
		c := d.Spec.Template.Spec.Containers[0]
		g.Expect(c.Image).To(Equal(testImage))
		g.Expect(c.SecurityContext.ReadOnlyRootFilesystem).To(Equal(ptr.To(true)))
		g.Expect(d.Spec.Replicas).To(Equal(ptr.To[int32](2)))
	}, waitTimeout, pollInterval).Should(Succeed())

	// The Role is widened; it is narrowed back.
	g.Eventually(func() error {
		role := &rbacv1.Role{}
		if err := k8s.Get(ctx, key, role); err != nil {
			return err
		}
		role.Rules[0].Verbs = append(role.Rules[0].Verbs, "delete")
		return k8s.Update(ctx, role)
	}, waitTimeout, pollInterval).Should(Succeed())
	g.Eventually(func(g Gomega) {
		role := &rbacv1.Role{}
		g.Expect(k8s.Get(ctx, key, role)).To(Succeed())
		g.Expect(role.Rules[0].Verbs).To(Equal([]string{"get", "list", "watch"}))
	}, waitTimeout, pollInterval).Should(Succeed())
}

// TestSeveralReceivers runs a public and an internal receiver side by side, in two
// receiver namespaces: each gets objects of its own, reading its own table, and a
// receiver outside the receiver namespaces gets nothing.
func TestSeveralReceivers(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	public := newReceiver(t, receiverNS, "public", v1alpha1.CallbackReceiverSpec{})
	internal := newReceiver(t, secondNS, "internal", v1alpha1.CallbackReceiverSpec{
		AllowedApps: &v1alpha1.AllowedApps{Namespaces: v1alpha1.Namespaces{From: v1alpha1.NamespacesFromAll}},
	})
	elsewhere := newReceiver(t, newNamespace(t), "ignored", v1alpha1.CallbackReceiverSpec{})
	for _, r := range []*v1alpha1.CallbackReceiver{public, internal} {
		g.Eventually(func(g Gomega) {
			d := &appsv1.StatefulSet{}
			g.Expect(k8s.Get(ctx, types.NamespacedName{Namespace: r.Namespace, Name: ObjectName(r.Name)}, d)).To(Succeed())
			expectControlledBy(g, d, r)
			g.Expect(d.Spec.Template.Spec.Containers[0].Args).To(ContainElements("--namespace", r.Namespace, "--table", TableName(r.Name)))
		}, waitTimeout, pollInterval).Should(Succeed())
	}
	g.Consistently(func() bool {
		err := k8s.Get(ctx, types.NamespacedName{Namespace: elsewhere.Namespace, Name: ObjectName(elsewhere.Name)}, &appsv1.StatefulSet{})
		return apierrors.IsNotFound(err)
	}, 2*time.Second, 200*time.Millisecond).Should(BeTrue(), "a receiver outside the receiver namespaces must not run")
}

// TestReceiverSpoolSizeKeptOnceRunning changes spool.embedded.size on a running receiver:
// the StatefulSet's claim template cannot change, so the manager keeps it (and the
// receiver's --spool-max-bytes with it), says so in a Warning event, and the receiver is
// not Stalled: its other fields still apply.
func TestReceiverSpoolSizeKeptOnceRunning(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	recv := newReceiver(t, receiverNS, "delta", v1alpha1.CallbackReceiverSpec{
		Spool: &v1alpha1.Spool{Embedded: &v1alpha1.EmbeddedSpool{Size: ptr.To(resource.MustParse("1Gi"))}}})
	key := types.NamespacedName{Namespace: receiverNS, Name: "delta-receiver"}
	g.Eventually(func() error { return k8s.Get(ctx, key, &appsv1.StatefulSet{}) }, waitTimeout, pollInterval).Should(Succeed())

	g.Eventually(func() error {
		r := getReceiver(g, client.ObjectKeyFromObject(recv))
		r.Spec.Spool.Embedded.Size = ptr.To(resource.MustParse("4Gi"))
		r.Spec.Replicas = ptr.To[int32](4)
		return k8s.Update(ctx, r)
	}, waitTimeout, pollInterval).Should(Succeed())
	expectEvent(g, recv, EventSpoolFixed)
	g.Eventually(func(g Gomega) {
		d := &appsv1.StatefulSet{}
		g.Expect(k8s.Get(ctx, key, d)).To(Succeed())
		g.Expect(d.Spec.Replicas).To(Equal(ptr.To[int32](4)), "the rest of the spec still applies")
		g.Expect(d.Spec.VolumeClaimTemplates[0].Spec.Resources.Requests.Storage().String()).To(Equal("1Gi"))
		g.Expect(d.Spec.Template.Spec.Containers[0].Args).To(ContainElements("--spool-max-bytes", "536870912"))
		g.Expect(condition(getReceiver(g, client.ObjectKeyFromObject(recv)), v1alpha1.ConditionStalled)).To(BeNil())
	}, waitTimeout, pollInterval).Should(Succeed())
}

// TestReceiverNameValidated: the API server refuses names whose objects ("<name>-receiver")
// could not be a StatefulSet whose pods can be created, so no new receiver is ever stalled
// by its name.
func TestReceiverNameValidated(t *testing.T) {
	tests := map[string]struct {
		name string
		// ok says whether the API server accepts it.
		ok bool
	}{
		"43 characters":             {name: strings.Repeat("a", MaxNameLength), ok: true},
		"44 characters":             {name: strings.Repeat("a", MaxNameLength+1)},
		"starts with a digit":       {name: "1public"},
		"a dot (a DNS subdomain)":   {name: "public.tencent"},
		"dashes and digits, inside": {name: "public-2", ok: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			g := NewWithT(t)
			r := &v1alpha1.CallbackReceiver{ObjectMeta: metav1.ObjectMeta{Namespace: newNamespace(t), Name: tc.name}}
			err := k8s.Create(context.Background(), r)
			if tc.ok {
				g.Expect(err).NotTo(HaveOccurred())
				return
			}
			g.Expect(apierrors.IsInvalid(err)).To(BeTrue(), "%v", err)
			g.Expect(err.Error()).To(ContainSubstring("at most 43 characters"))
		})
	}
}
