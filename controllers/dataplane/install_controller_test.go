package dataplane

import (
	"context"
	"testing"

	. "github.com/onsi/gomega"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/callback-router/callback-router/api/v1alpha1"
)

func TestParseInstalledReceivers(t *testing.T) {
	tests := map[string]struct {
		yaml string
		// names are the receivers parsed, in order; nil when an error is expected.
		names []string
		// err is part of the expected error.
		err string
	}{
		"two receivers, status dropped": {yaml: `
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackReceiver
metadata: {name: public}
spec: {replicas: 3}
status: {replicas: 9}
---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackReceiver
metadata: {name: internal}
`, names: []string{"internal", "public"}},
		"empty": {yaml: "", names: []string{}},
		"another kind": {yaml: `
apiVersion: v1
kind: ConfigMap
metadata: {name: x}
`, err: "not a callbacks.callback-router.dev/v1alpha1 CallbackReceiver"},
		"a misspelt field is an error, not a dropped setting": {yaml: `
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackReceiver
metadata: {name: public}
spec: {replica: 3}
`, err: `unknown field "replica"`},
		"no name": {yaml: `
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackReceiver
spec: {}
`, err: "has no metadata.name"},
		"duplicate": {yaml: `
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackReceiver
metadata: {name: public}
---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackReceiver
metadata: {name: public}
`, err: "appears twice"},
		"not YAML": {yaml: "{{", err: "document 1"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			g := NewWithT(t)
			got, err := ParseInstalledReceivers(tc.yaml)
			if tc.err != "" {
				g.Expect(err).To(MatchError(ContainSubstring(tc.err)))
				return
			}
			g.Expect(err).NotTo(HaveOccurred())
			names := []string{}
			for _, u := range got {
				names = append(names, u.GetName())
				g.Expect(u.Object).NotTo(HaveKey("status"))
			}
			g.Expect(names).To(Equal(tc.names))
		})
	}
}

// setInstalled writes the installed-receivers ConfigMap.
func setInstalled(g Gomega, yaml string) *corev1.ConfigMap {
	ctx := context.Background()
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: receiverNS, Name: installConfigMap}}
	var out *corev1.ConfigMap
	g.Eventually(func() error {
		err := k8s.Get(ctx, client.ObjectKeyFromObject(cm), cm)
		if apierrors.IsNotFound(err) {
			cm.Data = map[string]string{InstalledReceiversKey: yaml}
			if err := k8s.Create(ctx, cm); err != nil {
				return err
			}
			out = cm
			return nil
		}
		if err != nil {
			return err
		}
		cm.Data = map[string]string{InstalledReceiversKey: yaml}
		if err := k8s.Update(ctx, cm); err != nil {
			return err
		}
		out = cm
		return nil
	}, waitTimeout, pollInterval).Should(Succeed())
	return out
}

// installedNames lists the receivers installed from the ConfigMap.
func installedNames(g Gomega) []string {
	list := &v1alpha1.CallbackReceiverList{}
	g.Expect(k8s.List(context.Background(), list, client.InNamespace(receiverNS),
		client.MatchingLabels{LabelInstalledBy: installConfigMap})).To(Succeed())
	names := []string{}
	for _, r := range list.Items {
		if r.DeletionTimestamp.IsZero() {
			names = append(names, r.Name)
		}
	}
	return names
}

// TestInstalledReceivers is the chart's way of creating receivers: the ConfigMap's
// receivers are applied, owned by it; an autoscaler's replicas survive re-applies when the
// manifest leaves them out; a renamed receiver replaces the old one; an invalid ConfigMap
// changes nothing; deleting the ConfigMap deletes its receivers.
func TestInstalledReceivers(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	const two = `
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackReceiver
metadata: {name: inst-public}
spec:
  allowedApps: {namespaces: {from: Same}}
---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackReceiver
metadata: {name: inst-internal}
spec:
  replicas: 1
  allowedApps: {namespaces: {from: All}}
`
	cm := setInstalled(g, two)
	g.Eventually(installedNames, waitTimeout, pollInterval).Should(ConsistOf("inst-public", "inst-internal"))
	pub := getReceiver(g, types.NamespacedName{Namespace: receiverNS, Name: "inst-public"})
	g.Expect(pub.OwnerReferences).To(Equal([]metav1.OwnerReference{{APIVersion: "v1", Kind: "ConfigMap", Name: installConfigMap, UID: cm.UID}}))
	g.Expect(pub.Spec.EffectiveReplicas()).To(Equal(int32(v1alpha1.DefaultReceiverReplicas)), "the CRD's default")
	// The installed receivers run like any other.
	g.Eventually(func() error {
		return k8s.Get(ctx, types.NamespacedName{Namespace: receiverNS, Name: "inst-internal-receiver"}, &corev1.Service{})
	}, waitTimeout, pollInterval).Should(Succeed())

	// An HPA scales inst-public, whose manifest leaves replicas out; a change of the
	// ConfigMap re-applies everything, and the HPA's replicas stay.
	scale := &autoscalingv1.Scale{}
	g.Expect(k8s.SubResource("scale").Get(ctx, pub, scale)).To(Succeed())
	scale.Spec.Replicas = 6
	g.Expect(k8s.SubResource("scale").Update(ctx, pub, client.WithSubResourceBody(scale))).To(Succeed())
	setInstalled(g, two+"\n# touched\n")
	// inst-internal's replicas belong to the manifest: an edit is reverted.
	g.Eventually(func() error {
		r := &v1alpha1.CallbackReceiver{}
		if err := k8s.Get(ctx, types.NamespacedName{Namespace: receiverNS, Name: "inst-internal"}, r); err != nil {
			return err
		}
		r.Spec.Replicas = ptr.To[int32](4)
		return k8s.Update(ctx, r)
	}, waitTimeout, pollInterval).Should(Succeed())
	g.Eventually(func(g Gomega) {
		g.Expect(getReceiver(g, types.NamespacedName{Namespace: receiverNS, Name: "inst-internal"}).Spec.Replicas).To(Equal(ptr.To[int32](1)))
	}, waitTimeout, pollInterval).Should(Succeed())
	g.Expect(getReceiver(g, types.NamespacedName{Namespace: receiverNS, Name: "inst-public"}).Spec.Replicas).To(Equal(ptr.To[int32](6)))

	// A receiver deleted by hand comes back.
	g.Expect(k8s.Delete(ctx, &v1alpha1.CallbackReceiver{ObjectMeta: metav1.ObjectMeta{Namespace: receiverNS, Name: "inst-internal"}})).To(Succeed())
	g.Eventually(func(g Gomega) {
		r := getReceiver(g, types.NamespacedName{Namespace: receiverNS, Name: "inst-internal"})
		g.Expect(r.DeletionTimestamp).To(BeNil())
	}, waitTimeout, pollInterval).Should(Succeed())

	// An invalid ConfigMap is reported and changes nothing.
	setInstalled(g, "apiVersion: callbacks.callback-router.dev/v1alpha1\nkind: CallbackReceiver\nmetadata: {name: x}\nspec: {replica: 2}\n")
	expectEvent(g, cm, EventInvalidReceivers)
	g.Consistently(installedNames, "1s", "100ms").Should(ConsistOf("inst-public", "inst-internal"))

	// Renaming inst-internal to inst-openim: the old receiver is deleted, the new created.
	setInstalled(g, `
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackReceiver
metadata: {name: inst-public}
---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackReceiver
metadata: {name: inst-openim}
`)
	g.Eventually(installedNames, waitTimeout, pollInterval).Should(ConsistOf("inst-public", "inst-openim"))
	g.Eventually(func() bool {
		err := k8s.Get(ctx, types.NamespacedName{Namespace: receiverNS, Name: "inst-internal"}, &v1alpha1.CallbackReceiver{})
		return apierrors.IsNotFound(err)
	}, waitTimeout, pollInterval).Should(BeTrue())

	// Uninstall: the ConfigMap goes, and so do its receivers (the manager deletes them;
	// in a cluster the garbage collector would as well, through the owner reference).
	g.Expect(k8s.Delete(ctx, cm)).To(Succeed())
	g.Eventually(installedNames, waitTimeout, pollInterval).Should(BeEmpty())
}
