package controllers

import (
	"context"
	"testing"

	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

func receiverKey() types.NamespacedName {
	return types.NamespacedName{Namespace: opts.Namespace, Name: opts.Name}
}

func getDeployment(g Gomega) *appsv1.Deployment {
	d := &appsv1.Deployment{}
	g.Expect(k8s.Get(context.Background(), receiverKey(), d)).To(Succeed())
	return d
}

func TestReceiverObjectsCreated(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	var d *appsv1.Deployment
	g.Eventually(func(g Gomega) { d = getDeployment(g) }, waitTimeout, pollInterval).Should(Succeed())

	g.Expect(d.Labels).To(HaveKeyWithValue(LabelManagedBy, ManagedByValue))
	g.Expect(d.Spec.Replicas).To(Equal(ptr.To[int32](2)))
	g.Expect(d.Spec.Selector.MatchLabels).To(Equal(map[string]string{
		LabelName: opts.Name, LabelComponent: ComponentReceiver}))
	pod := d.Spec.Template.Spec
	g.Expect(pod.ServiceAccountName).To(Equal(opts.Name))
	g.Expect(pod.SecurityContext.RunAsNonRoot).To(Equal(ptr.To(true)))
	g.Expect(pod.SecurityContext.SeccompProfile.Type).To(Equal(corev1.SeccompProfileTypeRuntimeDefault))
	g.Expect(pod.Containers).To(HaveLen(1))
	c := pod.Containers[0]
	g.Expect(c.Image).To(Equal(opts.Image))
	g.Expect(c.Args).To(Equal([]string{"receiver", "--listen", ":8080", "--metrics-listen", ":9090", "--spool-dir", ReceiverSpoolDir,
		"--namespace", opts.Namespace, "--table", opts.Name, "--trusted-proxies", "10.0.0.0/8"}))
	g.Expect(c.SecurityContext.AllowPrivilegeEscalation).To(Equal(ptr.To(false)))
	g.Expect(c.SecurityContext.ReadOnlyRootFilesystem).To(Equal(ptr.To(true)))
	g.Expect(c.SecurityContext.Capabilities.Drop).To(ConsistOf(corev1.Capability("ALL")))
	g.Expect(c.ReadinessProbe.HTTPGet.Path).To(Equal("/readyz"))
	g.Expect(c.LivenessProbe.HTTPGet.Path).To(Equal("/healthz"))
	g.Expect(c.Resources.Requests.Cpu().String()).To(Equal("100m"))
	g.Expect(c.Resources.Requests.Memory().String()).To(Equal("64Mi"))
	g.Expect(c.Resources.Limits.Memory().String()).To(Equal("256Mi"))
	g.Expect(c.Resources.Limits.Cpu().IsZero()).To(BeTrue())
	var spool *corev1.Volume
	for i := range pod.Volumes {
		if pod.Volumes[i].Name == "spool" {
			spool = &pod.Volumes[i]
		}
	}
	g.Expect(spool).NotTo(BeNil())
	g.Expect(spool.EmptyDir.SizeLimit.Cmp(resource.MustParse("1Gi"))).To(Equal(0))

	svc := &corev1.Service{}
	g.Expect(k8s.Get(ctx, receiverKey(), svc)).To(Succeed())
	g.Expect(svc.Spec.Type).To(Equal(corev1.ServiceTypeClusterIP))
	g.Expect(svc.Spec.Selector).To(Equal(d.Spec.Selector.MatchLabels))
	g.Expect(svc.Spec.Ports).To(HaveLen(1))
	g.Expect(svc.Spec.Ports[0].Port).To(Equal(int32(8080)))
	// Metrics on a port and a ClusterIP Service of their own, never the callback port.
	msvc := &corev1.Service{}
	g.Expect(k8s.Get(ctx, types.NamespacedName{Namespace: opts.Namespace, Name: ReceiverMetricsServiceName(&opts)}, msvc)).To(Succeed())
	g.Expect(msvc.Spec.Type).To(Equal(corev1.ServiceTypeClusterIP))
	g.Expect(msvc.Spec.Selector).To(Equal(d.Spec.Selector.MatchLabels))
	g.Expect(msvc.Spec.Ports).To(HaveLen(1))
	g.Expect(msvc.Spec.Ports[0].Port).To(Equal(int32(9090)))
	g.Expect(msvc.Labels).To(HaveKeyWithValue(LabelComponent, ComponentReceiverMetrics))

	g.Expect(k8s.Get(ctx, receiverKey(), &corev1.ServiceAccount{})).To(Succeed())
	role := &rbacv1.Role{}
	g.Expect(k8s.Get(ctx, receiverKey(), role)).To(Succeed())
	g.Expect(role.Rules).To(Equal([]rbacv1.PolicyRule{{
		APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get", "list", "watch"}}}))
	rb := &rbacv1.RoleBinding{}
	g.Expect(k8s.Get(ctx, receiverKey(), rb)).To(Succeed())
	g.Expect(rb.RoleRef.Name).To(Equal(opts.Name))
	g.Expect(rb.Subjects).To(ConsistOf(rbacv1.Subject{Kind: "ServiceAccount", Name: opts.Name, Namespace: opts.Namespace}))
}

func TestReceiverObjectsRecreatedAfterDeletion(t *testing.T) {
	objs := map[string]client.Object{
		"Deployment":     &appsv1.Deployment{},
		"Service":        &corev1.Service{},
		"ServiceAccount": &corev1.ServiceAccount{},
		"Role":           &rbacv1.Role{},
		"RoleBinding":    &rbacv1.RoleBinding{},
	}
	for kind, obj := range objs {
		t.Run(kind, func(t *testing.T) {
			g := NewWithT(t)
			ctx := context.Background()
			g.Eventually(func() error { return k8s.Get(ctx, receiverKey(), obj) }, waitTimeout, pollInterval).Should(Succeed())
			uid := obj.GetUID()
			g.Expect(k8s.Delete(ctx, obj)).To(Succeed())
			g.Eventually(func(g Gomega) {
				fresh := obj.DeepCopyObject().(client.Object)
				err := k8s.Get(ctx, receiverKey(), fresh)
				g.Expect(apierrors.IsNotFound(err)).To(BeFalse())
				g.Expect(err).NotTo(HaveOccurred())
				g.Expect(fresh.GetUID()).NotTo(Equal(uid), "a new object was created")
				g.Expect(fresh.GetDeletionTimestamp()).To(BeNil())
			}, waitTimeout, pollInterval).Should(Succeed())
		})
	}
}

func TestReceiverDriftRepaired(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	g.Eventually(func(g Gomega) { getDeployment(g) }, waitTimeout, pollInterval).Should(Succeed())

	// Someone edits the image and the security context; the manager restores them.
	g.Eventually(func() error {
		d := getDeployment(g)
		d.Spec.Template.Spec.Containers[0].Image = "evil:latest"
		d.Spec.Template.Spec.Containers[0].SecurityContext.ReadOnlyRootFilesystem = ptr.To(false)
		return k8s.Update(ctx, d)
	}, waitTimeout, pollInterval).Should(Succeed())
	g.Eventually(func(g Gomega) {
		c := getDeployment(g).Spec.Template.Spec.Containers[0]
		g.Expect(c.Image).To(Equal(opts.Image))
		g.Expect(c.SecurityContext.ReadOnlyRootFilesystem).To(Equal(ptr.To(true)))
	}, waitTimeout, pollInterval).Should(Succeed())

	// The Role is widened; the manager narrows it back.
	g.Eventually(func() error {
		role := &rbacv1.Role{}
		if err := k8s.Get(ctx, receiverKey(), role); err != nil {
			return err
		}
		role.Rules[0].Verbs = append(role.Rules[0].Verbs, "delete")
		return k8s.Update(ctx, role)
	}, waitTimeout, pollInterval).Should(Succeed())
	g.Eventually(func(g Gomega) {
		role := &rbacv1.Role{}
		g.Expect(k8s.Get(ctx, receiverKey(), role)).To(Succeed())
		g.Expect(role.Rules[0].Verbs).To(Equal([]string{"get", "list", "watch"}))
	}, waitTimeout, pollInterval).Should(Succeed())
}

func TestDesiredDeploymentReplicas(t *testing.T) {
	tests := map[string]struct {
		manage bool
		// want is spec.replicas in the apply configuration; nil leaves it to an autoscaler.
		want *int32
	}{
		"managed":            {manage: true, want: ptr.To[int32](3)},
		"left to autoscaler": {manage: false, want: nil},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			o := DefaultReceiverOptions()
			o.Image, o.Replicas, o.ManageReplicas = "img", 3, tc.manage
			NewWithT(t).Expect(DesiredDeployment(&o).Spec.Replicas).To(Equal(tc.want))
		})
	}
}

func TestReceiverOptionsValidate(t *testing.T) {
	valid := func() ReceiverOptions {
		o := DefaultReceiverOptions()
		o.Image = "img"
		return o
	}
	tests := map[string]struct {
		mutate func(*ReceiverOptions)
		// ok says whether Validate accepts the options.
		ok bool
	}{
		"defaults with an image":       {mutate: func(*ReceiverOptions) {}, ok: true},
		"no image":                     {mutate: func(o *ReceiverOptions) { o.Image = "" }},
		"bad quantity":                 {mutate: func(o *ReceiverOptions) { o.MemoryLimit = "lots" }},
		"bad service type":             {mutate: func(o *ReceiverOptions) { o.ServiceType = "ExternalName" }},
		"bad port":                     {mutate: func(o *ReceiverOptions) { o.Port = 0 }},
		"metrics on the callback port": {mutate: func(o *ReceiverOptions) { o.MetricsPort = o.Port }},
		"bad metrics port":             {mutate: func(o *ReceiverOptions) { o.MetricsPort = 70000 }},
		"bad trusted proxy":            {mutate: func(o *ReceiverOptions) { o.TrustedProxies = []string{"10.0.0.1"} }},
		"trusted proxies":              {mutate: func(o *ReceiverOptions) { o.TrustedProxies = ParseCIDRList(" 10.0.0.0/8, ,::1/128") }, ok: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			o := valid()
			tc.mutate(&o)
			err := o.Validate()
			NewWithT(t).Expect(err == nil).To(Equal(tc.ok), "err: %v", err)
		})
	}
}

// TestReplicasLeftToAutoscaler runs the reconciler with --receiver-manage-replicas=false
// against the API server: an autoscaler's scale (through the scale subresource, as the
// HPA does) survives later applies, while the rest of the spec is still enforced.
func TestReplicasLeftToAutoscaler(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	o := opts
	o.Namespace, o.Name, o.ManageReplicas = newNamespace(t), "rx-hpa", false
	r := &ReceiverReconciler{Client: k8s, Options: o}
	key := types.NamespacedName{Namespace: o.Namespace, Name: o.Name}

	_, err := r.Reconcile(ctx, r.receiverRequest())
	g.Expect(err).NotTo(HaveOccurred())
	d := &appsv1.Deployment{}
	g.Expect(k8s.Get(ctx, key, d)).To(Succeed())
	g.Expect(d.Spec.Replicas).To(Equal(ptr.To[int32](1)), "the API server's default until an autoscaler acts")

	scale := &autoscalingv1.Scale{Spec: autoscalingv1.ScaleSpec{Replicas: 5}}
	g.Expect(k8s.SubResource("scale").Update(ctx, d, client.WithSubResourceBody(scale))).To(Succeed())

	g.Expect(k8s.Get(ctx, key, d)).To(Succeed())
	d.Spec.Template.Spec.Containers[0].Image = "drifted:1"
	g.Expect(k8s.Update(ctx, d)).To(Succeed())

	for range 2 {
		_, err = r.Reconcile(ctx, r.receiverRequest())
		g.Expect(err).NotTo(HaveOccurred())
	}
	g.Expect(k8s.Get(ctx, key, d)).To(Succeed())
	g.Expect(d.Spec.Replicas).To(Equal(ptr.To[int32](5)), "the autoscaler's replicas are kept")
	g.Expect(d.Spec.Template.Spec.Containers[0].Image).To(Equal(o.Image), "the rest is still repaired")
}
