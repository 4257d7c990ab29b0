package install

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"
)

// TestKustomizeInstall builds config/default and applies it into a real API server, as
// `kubectl apply --server-side -k config/default` would, then checks the result works.
func TestKustomizeInstall(t *testing.T) {
	kustomize := tool(t, "KUSTOMIZE")
	objs := decode(t, mustRun(t, nil, kustomize, "build", filepath.Join(repoRoot, "config", "default")))
	const ns = "callback-router-system"
	d := checkKustomizeRender(t, objs, ns)
	c := d.Spec.Template.Spec.Containers[0]

	cl := startCluster(t)
	if err := cl.c.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team-a"}}); err != nil {
		t.Fatal(err)
	}
	cl.warn.take()
	cl.applyAll(t, objs)
	// The garbage collector, started once the CRDs are served (its first discovery sees them).
	cl.startControllerManager(t, gcController)
	if w := cl.warn.take(); len(w) > 0 {
		t.Errorf("API server warned during apply: %v", w)
	}
	sample := decode(t, readFile(t, filepath.Join(repoRoot, "config", "samples", "callbacks_v1alpha1_callbackroute_archive.yaml")))[0]
	sample.SetNamespace("team-a")
	if err := cl.c.Create(context.Background(), sample); err != nil {
		t.Fatalf("the installed CRD refused the archive sample: %v", err)
	}

	t.Run("manager RBAC", func(t *testing.T) {
		user, groups := serviceAccountUser(ns, "callback-router-manager")
		for _, a := range markerAccesses(t, ns) {
			if !cl.allowed(t, user, groups, a) {
				t.Errorf("config/rbac/role.yaml grants %s, but the bound manager may not", a)
			}
		}
		for _, a := range []access{
			{group: "coordination.k8s.io", resource: "leases", verb: "create", namespace: ns},
			{group: "coordination.k8s.io", resource: "leases", verb: "update", namespace: ns},
			{resource: "events", verb: "create", namespace: ns},
		} {
			if !cl.allowed(t, user, groups, a) {
				t.Errorf("manager may not %s (leader election)", a)
			}
		}
	})

	t.Run("manager runs under the kustomize RBAC", func(t *testing.T) {
		got := &appsv1.Deployment{}
		if err := cl.c.Get(context.Background(), client.ObjectKeyFromObject(d), got); err != nil {
			t.Fatal(err)
		}
		createPodFromTemplate(t, cl, ns, got.Name, got.Spec.Template, nil)
		receiver := cl.checkManagerWorks(t, got, "default", "team-a")
		cl.checkReceiverCompanions(t, receiver, objs)
	})

	t.Run("deleting the receiver leaves nothing behind", func(t *testing.T) {
		recv := one(t, objs, "CallbackReceiver")
		if err := cl.c.Delete(context.Background(), recv.DeepCopy()); err != nil {
			t.Fatal(err)
		}
		cl.waitGone(t, ns, "default")
	})

	t.Run("same manager settings as the chart", func(t *testing.T) {
		helm := tool(t, "HELM")
		chart := managerDeployment(t, helmTemplate(t, helm, kubeVersion, "callback-router", ns))
		cc := chart.Spec.Template.Spec.Containers[0]
		if !reflect.DeepEqual(cc.SecurityContext, c.SecurityContext) ||
			!reflect.DeepEqual(chart.Spec.Template.Spec.SecurityContext, d.Spec.Template.Spec.SecurityContext) {
			a, _ := yaml.Marshal(cc.SecurityContext)
			b, _ := yaml.Marshal(c.SecurityContext)
			t.Errorf("security contexts differ: chart\n%s\nkustomize\n%s", a, b)
		}
		if !reflect.DeepEqual(cc.Resources, c.Resources) || !reflect.DeepEqual(cc.Ports, c.Ports) ||
			!reflect.DeepEqual(cc.LivenessProbe, c.LivenessProbe) || !reflect.DeepEqual(cc.ReadinessProbe, c.ReadinessProbe) {
			t.Error("resources, ports or probes differ between the chart and config/manager")
		}
		if cc.Image != c.Image {
			t.Errorf("default images differ: chart %s, kustomize %s", cc.Image, c.Image)
		}
	})
}

// TestGitOpsExamples builds the kustomize overlay of examples/gitops and parses the Argo CD
// and Flux manifests, so that the documented examples do not rot.
func TestGitOpsExamples(t *testing.T) {
	kustomize := tool(t, "KUSTOMIZE")
	dir := filepath.Join(repoRoot, "examples", "gitops")
	objs := decode(t, mustRun(t, nil, kustomize, "build", filepath.Join(dir, "overlay")))
	d := &appsv1.Deployment{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(one(t, objs, "Deployment").Object, d); err != nil {
		t.Fatal(err)
	}
	c := d.Spec.Template.Spec.Containers[0]
	for _, e := range c.Env {
		if e.Name == "RECEIVER_IMAGE" && e.Value != c.Image {
			t.Errorf("overlay: RECEIVER_IMAGE=%q but the manager runs %q", e.Value, c.Image)
		}
	}
	recv := one(t, objs, "CallbackReceiver")
	replicas, _, _ := unstructured.NestedFieldNoCopy(recv.Object, "spec", "replicas")
	proxies, _, _ := unstructured.NestedStringSlice(recv.Object, "spec", "trustedProxies")
	if fmt.Sprint(replicas) != "3" || !reflect.DeepEqual(proxies, []string{"10.244.0.0/16"}) {
		t.Errorf("overlay: the receiver patch did not apply: replicas %v, trustedProxies %v", replicas, proxies)
	}
	for file, kinds := range map[string][]string{
		"argocd-application.yaml": {"Application"},
		"flux-helmrelease.yaml":   {"GitRepository", "HelmRelease"},
		"flux-kustomization.yaml": {"Kustomization"},
	} {
		docs := decode(t, readFile(t, filepath.Join(dir, file)))
		for i, kind := range kinds {
			if i >= len(docs) || docs[i].GetKind() != kind {
				t.Errorf("%s: document %d is not a %s", file, i, kind)
			}
		}
	}
	// The Argo CD values must be values the chart accepts.
	app := decode(t, readFile(t, filepath.Join(dir, "argocd-application.yaml")))[0]
	values, _, _ := unstructured.NestedMap(app.Object, "spec", "source", "helm", "valuesObject")
	hr := decode(t, readFile(t, filepath.Join(dir, "flux-helmrelease.yaml")))[1]
	hrValues, _, _ := unstructured.NestedMap(hr.Object, "spec", "values")
	helm := tool(t, "HELM")
	for name, v := range map[string]map[string]any{"argocd": values, "flux": hrValues} {
		data, err := yaml.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		f := filepath.Join(t.TempDir(), name+"-values.yaml")
		if err := os.WriteFile(f, data, 0o600); err != nil {
			t.Fatal(err)
		}
		mustRun(t, helmEnv(t), helm, "lint", "--strict", chartDir, "-f", f)
	}
}

// checkKustomizeRender checks the output of `kustomize build config/default` and returns
// its manager Deployment.
func checkKustomizeRender(t *testing.T, objs []*unstructured.Unstructured, ns string) *appsv1.Deployment {
	t.Helper()
	for _, o := range objs {
		if o.GetKind() == "Namespace" || o.GetKind() == "CustomResourceDefinition" ||
			o.GetKind() == "ClusterRole" || o.GetKind() == "ClusterRoleBinding" {
			continue
		}
		if o.GetNamespace() != ns {
			t.Errorf("%s %s is in namespace %q, want %s", o.GetKind(), o.GetName(), o.GetNamespace(), ns)
		}
	}
	nsObj := one(t, objs, "Namespace")
	if nsObj.GetName() != ns || nsObj.GetLabels()["pod-security.kubernetes.io/enforce"] != "restricted" {
		t.Errorf("namespace %s labels %v: want %s enforcing restricted Pod Security", nsObj.GetName(), nsObj.GetLabels(), ns)
	}

	checkKustomizeMatchesChart(t, objs, ns)

	d := &appsv1.Deployment{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(one(t, objs, "Deployment").Object, d); err != nil {
		t.Fatal(err)
	}
	c := d.Spec.Template.Spec.Containers[0]
	flags := flagValues(c.Args)
	if c.Args[0] != "manager" || flags["--leader-elect"] != "true" || flags["--health-probe-bind-address"] != ":8081" {
		t.Errorf("manager args %v: want the manager subcommand with leader election and probes on :8081", c.Args)
	}
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
		if e.Name == "POD_NAMESPACE" && (e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != "metadata.namespace") {
			t.Error("POD_NAMESPACE is not the pod's namespace")
		}
	}
	if env["RECEIVER_IMAGE"] != c.Image {
		t.Errorf("RECEIVER_IMAGE=%q, want the manager's image %q", env["RECEIVER_IMAGE"], c.Image)
	}

	pdb := one(t, objs, "PodDisruptionBudget")
	if sel, _, _ := unstructured.NestedStringMap(pdb.Object, "spec", "selector", "matchLabels"); !reflect.DeepEqual(sel,
		map[string]string{labelName: "default-receiver", labelComponent: "receiver"}) {
		t.Errorf("PDB selects %v, not the receiver pods", sel)
	}
	return d
}

// checkKustomizeMatchesChart checks that config/default installs what the chart does: the
// generated CRDs, the same default receiver, the same people's ClusterRoles.
func checkKustomizeMatchesChart(t *testing.T, objs []*unstructured.Unstructured, ns string) {
	t.Helper()
	// The CRDs are the generated ones, unchanged.
	crds := byKind(objs, "CustomResourceDefinition")
	if len(crds) != 4 {
		t.Errorf("%d CRDs, want CallbackReceiver, CallbackApp, CallbackRoute and CallbackReplay", len(crds))
	}
	for _, crd := range crds {
		generated := decode(t, readFile(t, filepath.Join(crdBasesDir, "callbacks.callback-router.dev_"+strings.TrimSuffix(crd.GetName(), ".callbacks.callback-router.dev")+".yaml")))[0]
		if !reflect.DeepEqual(crd.Object["spec"], generated.Object["spec"]) {
			t.Errorf("the kustomize CRD %s spec differs from config/crd/bases", crd.GetName())
		}
	}

	// The default receiver is the chart's default receiver.
	helm := tool(t, "HELM")
	chartObjs := helmTemplate(t, helm, kubeVersion, "callback-router", ns)
	chartRecv := installedReceivers(t, chartObjs)[0]
	recv := one(t, objs, "CallbackReceiver")
	if recv.GetName() != "default" || recv.GetNamespace() != ns ||
		!reflect.DeepEqual(normalize(t, recv.Object["spec"]), normalize(t, chartRecv.Object["spec"])) {
		t.Errorf("kustomize receiver %s/%s spec %v differs from the chart's default %v",
			recv.GetNamespace(), recv.GetName(), recv.Object["spec"], chartRecv.Object["spec"])
	}

	// The people's ClusterRoles are the chart's, name prefix aside.
	chartRoles := map[string]*unstructured.Unstructured{}
	for _, cr := range byKind(chartObjs, "ClusterRole") {
		chartRoles[strings.TrimPrefix(cr.GetName(), "callback-router-")] = cr
	}
	kustomizeRoles := map[string]*unstructured.Unstructured{}
	for _, cr := range byKind(objs, "ClusterRole") {
		kustomizeRoles[strings.TrimPrefix(cr.GetName(), "callback-router-")] = cr
	}
	aggLabels := func(o *unstructured.Unstructured) map[string]string {
		out := map[string]string{}
		for key, v := range o.GetLabels() {
			if strings.HasPrefix(key, "rbac.authorization.k8s.io/") {
				out[key] = v
			}
		}
		return out
	}
	for _, name := range []string{"view", "route-editor", "app-editor", "receiver-editor"} {
		k, c := kustomizeRoles[name], chartRoles[name]
		if k == nil || c == nil {
			t.Errorf("ClusterRole %s: in kustomize %v, in the chart %v", name, k != nil, c != nil)
			continue
		}
		if !reflect.DeepEqual(k.Object["rules"], c.Object["rules"]) || !reflect.DeepEqual(aggLabels(k), aggLabels(c)) {
			t.Errorf("ClusterRole %s differs between config/rbac and the chart", name)
		}
	}

}
