package install

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/callback-router/callback-router/controllers/dataplane"
	"github.com/callback-router/callback-router/webhook/tablestore"
)

// Contract of the receiver's pods (design: the manager's flags): the chart's companions
// select them by these labels.
const (
	labelName      = "app.kubernetes.io/name"
	labelComponent = "app.kubernetes.io/component"
)

// managerFlagsContract are the flags the chart must always pass to `callback-router manager`.
var managerFlagsContract = []string{
	"--metrics-bind-address", "--health-probe-bind-address", "--leader-elect",
	"--receiver-namespace", "--receiver-namespaces", "--receiver-image", "--installed-receivers",
}

// helmTemplate renders the chart.
func helmTemplate(t *testing.T, helm, kubeVersion, release, namespace string, extra ...string) []*unstructured.Unstructured {
	t.Helper()
	args := append([]string{"template", release, chartDir, "--namespace", namespace, "--kube-version", kubeVersion}, extra...)
	return decode(t, mustRun(t, helmEnv(t), helm, args...))
}

func TestChartLint(t *testing.T) {
	helm := tool(t, "HELM")
	for name, args := range map[string][]string{
		"default values":    nil,
		"production values": {"-f", productionValue},
	} {
		t.Run(name, func(t *testing.T) {
			mustRun(t, helmEnv(t), helm, append([]string{"lint", "--strict", chartDir}, args...)...)
		})
	}
	// values.schema.json and the templates' own checks must refuse these. helm lint
	// reports a template's `fail` only as INFO, so rendering is what is checked.
	for name, set := range map[string]string{
		"unknown value (typo)":          "receiver.replica=3",
		"bad Service type":              "receiver.service.type=External",
		"bad quantity":                  "receiver.spoolSize=lots",
		"bad trusted proxy":             "receiver.trustedProxies[0]=proxy.example.com",
		"TLS without host":              "ingress.enabled=true,ingress.tls.enabled=true,ingress.tls.secretName=x",
		"TLS without secret":            "ingress.enabled=true,ingress.tls.enabled=true,ingress.host=im.example.com",
		"HPA without a metric":          "receiver.autoscaling.enabled=true,receiver.autoscaling.targetCPUUtilizationPercentage=0",
		"receiver name not a DNS label": "receiver.name=Receiver_1",
		"receiver name over 43 chars":   "receiver.name=" + strings.Repeat("r", 44),
		"Selector without a selector":   "receiver.allowedApps.namespaces.from=Selector",
		"extra receiver without a name": "extraReceivers[0].spec.replicas=1",
		"Kubernetes older than 1.31":    "",
	} {
		t.Run("rejects "+name, func(t *testing.T) {
			args := []string{"template", "x", chartDir, "--kube-version", kubeVersion}
			if set != "" {
				args = append(args, "--set", set)
			} else {
				args[len(args)-1] = "v1.30.4"
			}
			if out, err := run(t, helmEnv(t), helm, args...); err == nil {
				t.Fatalf("helm %v rendered, want a failure:\n%.500s", args, out)
			}
		})
	}
	t.Run("lint validates the schema", func(t *testing.T) {
		if _, err := run(t, helmEnv(t), helm, "lint", chartDir, "--set", "receiver.service.type=External"); err == nil {
			t.Fatal("helm lint accepted a Service type the schema forbids")
		}
	})
}

func TestChartCRDMatchesGenerated(t *testing.T) {
	entries, err := os.ReadDir(crdBasesDir)
	if err != nil {
		t.Fatal(err)
	}
	chartCRDs := filepath.Join(chartDir, "files", "crds")
	chartEntries, err := os.ReadDir(chartCRDs)
	if err != nil {
		t.Fatal(err)
	}
	if len(chartEntries) != len(entries) {
		t.Fatalf("%s has %d files, %s has %d: run 'make chart'", chartCRDs, len(chartEntries), crdBasesDir, len(entries))
	}
	for _, e := range entries {
		want, err := os.ReadFile(filepath.Join(crdBasesDir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(chartCRDs, e.Name()))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s differs from config/crd/bases/%s (generated): run 'make chart' (err %v)", filepath.Join(chartCRDs, e.Name()), e.Name(), err)
		}
	}
}

func TestChartReadmeDocumentsEveryValue(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(chartDir, "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var values map[string]any
	if err := yaml.Unmarshal(data, &values); err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join(chartDir, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	var walk func(prefix string, v any)
	walk = func(prefix string, v any) {
		m, ok := v.(map[string]any)
		if !ok || len(m) == 0 || prefix == "receiver.autoscaling.behavior" {
			keys = append(keys, prefix)
			return
		}
		// Maps that are passed through whole (resources, security contexts, selectors)
		// are documented as one value.
		if slices.Contains([]string{"manager.resources", "manager.podSecurityContext", "manager.securityContext",
			"manager.livenessProbe", "manager.readinessProbe", "grafanaDashboard.labels"}, prefix) || strings.HasSuffix(prefix, "Selector") {
			keys = append(keys, prefix)
			return
		}
		for k, sub := range m {
			p := k
			if prefix != "" {
				p = prefix + "." + k
			}
			walk(p, sub)
		}
	}
	walk("", values)
	sort.Strings(keys)
	for _, k := range keys {
		if !bytes.Contains(readme, []byte("| "+k+" |")) {
			t.Errorf("value %s is not documented in charts/callback-router/README.md: run 'make chart'", k)
		}
	}
	if len(keys) < 50 {
		t.Fatalf("found only %d value keys; the walk is broken", len(keys))
	}

	// With the pinned generator at hand, the README must be exactly what it generates.
	helmDocs := os.Getenv("HELM_DOCS")
	if helmDocs == "" {
		t.Log("HELM_DOCS is not set: only checked that every value is documented")
		return
	}
	tmp := t.TempDir()
	copyDir(t, chartDir, filepath.Join(tmp, "callback-router"))
	mustRun(t, nil, helmDocs, "--chart-search-root", tmp, "--template-files", "README.md.gotmpl", "--log-level", "warning")
	generated, err := os.ReadFile(filepath.Join(tmp, "callback-router", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(generated, readme) {
		t.Fatal("charts/callback-router/README.md is not what helm-docs generates from values.yaml: run 'make chart'")
	}
}

// copyDir copies a directory tree of regular files.
func copyDir(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(to, rel), 0o755)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(to, rel), data, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// managerDeployment converts the rendered manager Deployment.
func managerDeployment(t *testing.T, objs []*unstructured.Unstructured) *appsv1.Deployment {
	t.Helper()
	d := &appsv1.Deployment{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(one(t, objs, "Deployment").Object, d); err != nil {
		t.Fatal(err)
	}
	return d
}

// flagValues maps each --flag=value argument to its value.
func flagValues(args []string) map[string]string {
	out := map[string]string{}
	for _, a := range args {
		if k, v, ok := strings.Cut(a, "="); ok {
			out[k] = v
		} else if strings.HasPrefix(a, "--") {
			out[a] = "true"
		}
	}
	return out
}

func TestChartTemplate(t *testing.T) {
	helm := tool(t, "HELM")
	const kube = kubeVersion

	t.Run("default values", func(t *testing.T) {
		checkDefaultRender(t, helmTemplate(t, helm, kube, "cr", "callback-router-system"))
	})

	t.Run("production values", func(t *testing.T) {
		checkProductionRender(t, helmTemplate(t, helm, kube, "cr", "im", "-f", productionValue))
	})

	t.Run("CRD disabled", func(t *testing.T) {
		objs := helmTemplate(t, helm, kube, "cr", "callback-router-system", "--set", "crds.enabled=false")
		if n := len(byKind(objs, "CustomResourceDefinition")); n != 0 {
			t.Fatalf("crds.enabled=false still renders %d CRDs", n)
		}
	})
}

// TestChartInstall installs the chart with helm into a real API server, upgrades it to the
// production values, checks the result works (RBAC, Pod Security), and uninstalls it.
func TestChartInstall(t *testing.T) {
	helm := tool(t, "HELM")
	cl := startCluster(t)
	ctx := context.Background()
	const ns, release, routeNS = "callback-router-system", "cr", "team-a"

	// Namespaces as an administrator would make them: restricted Pod Security enforced.
	for _, name := range []string{ns, routeNS} {
		n := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{
			"pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/warn": "restricted",
		}}}
		if err := cl.c.Create(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	helmArgs := func(args ...string) []string {
		return append(args, "--kubeconfig", cl.kubeconfig, "--namespace", ns)
	}
	env := helmEnv(t)

	cl.warn.take()
	notes := mustRun(t, env, helm, helmArgs("install", release, chartDir)...)
	if want := "default-receiver.callback-router-system.svc:8080/openim/<appID>"; !strings.Contains(notes, want) {
		t.Errorf("helm install notes lack the OpenIM URL %s:\n%s", want, notes)
	}
	if w := cl.warn.take(); len(w) > 0 {
		t.Errorf("API server warned during install: %v", w)
	}
	// Everything the chart rendered is there, as a client sees it.
	rendered := decode(t, mustRun(t, env, helm, helmArgs("get", "manifest", release)...))
	for _, o := range rendered {
		if !cl.exists(t, o.GetAPIVersion(), o.GetKind(), o.GetNamespace(), o.GetName()) {
			t.Errorf("%s %s/%s was not installed", o.GetKind(), o.GetNamespace(), o.GetName())
		}
	}
	for _, crd := range crdNames {
		cl.waitEstablished(t, crd)
	}
	// The garbage collector, which deletes a receiver's objects after their CallbackReceiver;
	// started once the CRDs are served, so that its first discovery sees them.
	cl.startControllerManager(t, gcController)

	// The CRDs served are the generated ones, and they validate: a sample route is accepted.
	sample := decode(t, readFile(t, filepath.Join(repoRoot, "config", "samples", "callbacks_v1alpha1_callbackroute_archive.yaml")))[0]
	sample.SetNamespace(routeNS)
	if err := cl.c.Create(ctx, sample); err != nil {
		t.Fatalf("the installed CRD refused the archive sample: %v", err)
	}

	t.Run("manager RBAC", func(t *testing.T) {
		user, groups := serviceAccountUser(ns, "cr-callback-router-manager")
		for _, a := range managerNeeds(ns, routeNS) {
			if !cl.allowed(t, user, groups, a) {
				t.Errorf("manager may not %s", a)
			}
		}
		for _, a := range managerMustNot(ns, routeNS) {
			if cl.allowed(t, user, groups, a) {
				t.Errorf("manager may %s: more than least privilege", a)
			}
		}
		// Whatever the controllers' markers ask for must be granted, at least in the
		// release namespace, or the manager fails at run time.
		for _, a := range markerAccesses(t, ns) {
			if !cl.allowed(t, user, groups, a) {
				t.Errorf("config/rbac/role.yaml (markers) needs %s; the chart does not grant it", a)
			}
		}
	})

	t.Run("manager runs under the chart's RBAC", func(t *testing.T) {
		d := &appsv1.Deployment{}
		if err := cl.c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "cr-callback-router-manager"}, d); err != nil {
			t.Fatal(err)
		}
		createPodFromTemplate(t, cl, ns, d.Name, d.Spec.Template, nil)
		receiver := cl.checkManagerWorks(t, d, "default", routeNS)
		cl.checkReceiverCompanions(t, receiver, rendered)
	})

	// Upgrade to the production values, which rename the receiver to im-callbacks; the
	// ServiceMonitor and PrometheusRule CRDs stand in for prometheus-operator.
	cl.applyAll(t, decode(t, readFile(t, serviceMonitorC)))
	cl.warn.take()
	mustRun(t, env, helm, helmArgs("upgrade", release, chartDir, "-f", productionValue)...)
	if w := cl.warn.take(); len(w) > 0 {
		t.Errorf("API server warned during upgrade: %v", w)
	}
	cl.resetMapper(t)
	upgraded := decode(t, mustRun(t, env, helm, helmArgs("get", "manifest", release)...))
	for _, o := range upgraded {
		if !cl.exists(t, o.GetAPIVersion(), o.GetKind(), o.GetNamespace(), o.GetName()) {
			t.Errorf("%s %s/%s was not installed by the upgrade", o.GetKind(), o.GetNamespace(), o.GetName())
		}
	}
	t.Run("manager runs with the production values", func(t *testing.T) {
		d := &appsv1.Deployment{}
		if err := cl.c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "cr-callback-router-manager"}, d); err != nil {
			t.Fatal(err)
		}
		receiver := cl.checkManagerWorks(t, d, "im-callbacks", routeNS)
		cl.checkReceiverCompanions(t, receiver, upgraded)
	})
	for _, kind := range []struct{ apiVersion, kind string }{
		{"autoscaling/v2", "HorizontalPodAutoscaler"}, {"networking.k8s.io/v1", "NetworkPolicy"},
		{"networking.k8s.io/v1", "Ingress"}, {"monitoring.coreos.com/v1", "ServiceMonitor"},
	} {
		if !cl.exists(t, kind.apiVersion, kind.kind, ns, "im-callbacks-receiver") {
			t.Errorf("the production upgrade did not create %s im-callbacks-receiver", kind.kind)
		}
	}
	t.Run("renaming the receiver leaves no orphans", func(t *testing.T) {
		cl.waitGone(t, ns, "default")
	})

	// Uninstall removes the release's objects, and the garbage collector the receiver's
	// (owned by the receiver, owned by the release's ConfigMap), but keeps the CRDs and so
	// the routes.
	mustRun(t, env, helm, helmArgs("uninstall", release)...)
	for _, crd := range crdNames {
		if !cl.exists(t, "apiextensions.k8s.io/v1", "CustomResourceDefinition", "", crd) {
			t.Errorf("uninstall deleted the CRD %s despite crds.keep", crd)
		}
	}
	if !cl.exists(t, "callbacks.callback-router.dev/v1alpha1", "CallbackRoute", routeNS, sample.GetName()) {
		t.Error("uninstall deleted a CallbackRoute")
	}
	if cl.exists(t, "apps/v1", "Deployment", ns, "cr-callback-router-manager") {
		t.Error("uninstall left the manager Deployment")
	}
	t.Run("uninstall leaves no receiver behind", func(t *testing.T) {
		cl.waitGone(t, ns, "im-callbacks")
		cl.waitGone(t, ns, "internal")
	})
}

// crdNames are the CRDs an installation brings.
var crdNames = []string{
	"callbackreceivers.callbacks.callback-router.dev",
	"callbackapps.callbacks.callback-router.dev",
	"callbackroutes.callbacks.callback-router.dev",
}

// waitGone waits until the CallbackReceiver named receiver and everything it owned (its
// StatefulSet, Services, ServiceAccount, Role, RoleBinding and routing table Secrets) are
// gone: deleted by the manager or the garbage collector, nothing left for anyone to clean.
func (cl *cluster) waitGone(t *testing.T, ns, receiver string) {
	t.Helper()
	name := dataplane.ObjectName(receiver)
	var left []string
	err := wait.PollUntilContextTimeout(context.Background(), 200*time.Millisecond, gcTimeout, true, func(ctx context.Context) (bool, error) {
		left = nil
		for _, k := range []struct{ apiVersion, kind, name string }{
			{"callbacks.callback-router.dev/v1alpha1", "CallbackReceiver", receiver},
			{"apps/v1", "StatefulSet", name}, {"v1", "Service", name}, {"v1", "Service", dataplane.HeadlessName(receiver)}, {"v1", "ServiceAccount", name},
			{"rbac.authorization.k8s.io/v1", "Role", name}, {"rbac.authorization.k8s.io/v1", "RoleBinding", name},
		} {
			if cl.exists(t, k.apiVersion, k.kind, ns, k.name) {
				left = append(left, k.kind+" "+k.name)
			}
		}
		secrets := &corev1.SecretList{}
		if err := cl.c.List(ctx, secrets, client.InNamespace(ns), client.MatchingLabels{tablestore.LabelTable: dataplane.TableName(receiver)}); err != nil {
			return false, err
		}
		for _, s := range secrets.Items {
			left = append(left, "table Secret "+s.Name)
		}
		return len(left) == 0, nil
	})
	if err != nil {
		t.Fatalf("receiver %s left %v behind: %v", receiver, left, err)
	}
}

// createPodFromTemplate creates a Pod from a workload's template (with a volume per claim
// template, as the statefulset controller adds) in a namespace that enforces the
// restricted Pod Security Standard: admission rejects it otherwise. No kubelet runs it;
// acceptance is what is tested.
func createPodFromTemplate(t *testing.T, cl *cluster, ns, name string, tmpl corev1.PodTemplateSpec, claims []corev1.PersistentVolumeClaim) {
	t.Helper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, GenerateName: name + "-", Labels: tmpl.Labels},
		Spec:       *tmpl.Spec.DeepCopy(),
	}
	for _, c := range claims {
		pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{Name: c.Name, VolumeSource: corev1.VolumeSource{
			PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: c.Name + "-" + name + "-0"}}})
	}
	if err := cl.c.Create(context.Background(), pod); err != nil {
		t.Fatalf("a pod of %s is refused in a restricted namespace: %v", name, err)
	}
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// installedReceivers parses the receivers the chart asks the manager to install.
func installedReceivers(t *testing.T, objs []*unstructured.Unstructured) []*unstructured.Unstructured {
	t.Helper()
	for _, cm := range byKind(objs, "ConfigMap") {
		if !strings.HasSuffix(cm.GetName(), "-receivers") {
			continue
		}
		data, _, _ := unstructured.NestedString(cm.Object, "data", dataplane.InstalledReceiversKey)
		recvs, err := dataplane.ParseInstalledReceivers(data)
		if err != nil {
			t.Fatalf("the chart's receivers do not parse as the manager parses them: %v\n%s", err, data)
		}
		return recvs
	}
	t.Fatal("the chart renders no receivers ConfigMap")
	return nil
}

// checkDefaultRender checks the chart rendered with its default values.
func checkDefaultRender(t *testing.T, objs []*unstructured.Unstructured) {
	var kinds []string
	for _, o := range objs {
		kinds = append(kinds, o.GetKind())
	}
	sort.Strings(kinds)
	want := []string{"ClusterRole", "ClusterRole", "ClusterRole", "ClusterRole", "ClusterRole", "ClusterRoleBinding",
		"ConfigMap", "CustomResourceDefinition", "CustomResourceDefinition", "CustomResourceDefinition", "CustomResourceDefinition", "Deployment",
		"PodDisruptionBudget", "Role", "RoleBinding", "Service", "ServiceAccount"}
	if !reflect.DeepEqual(kinds, want) {
		t.Fatalf("default values render %v, want %v", kinds, want)
	}
	for _, crd := range byKind(objs, "CustomResourceDefinition") {
		if crd.GetAnnotations()["helm.sh/resource-policy"] != "keep" {
			t.Errorf("the CRD %s lacks helm.sh/resource-policy: keep with crds.keep=true", crd.GetName())
		}
	}
	d := managerDeployment(t, objs)
	c := d.Spec.Template.Spec.Containers[0]
	flags := flagValues(c.Args)
	if c.Args[0] != "manager" {
		t.Errorf("manager container args start with %q, want the subcommand manager", c.Args[0])
	}
	for _, f := range managerFlagsContract {
		if _, ok := flags[f]; !ok {
			t.Errorf("manager args lack %s: %v", f, c.Args)
		}
	}
	for f, want := range map[string]string{
		"--leader-elect": "true", "--receiver-namespace": "callback-router-system", "--receiver-namespaces": "callback-router-system",
		"--installed-receivers": "cr-callback-router-receivers",
		"--receiver-image":      c.Image, "--health-probe-bind-address": ":8081",
	} {
		if flags[f] != want {
			t.Errorf("%s=%q, want %q", f, flags[f], want)
		}
	}
	checkRestrictedSecurity(t, d)
	if c.LivenessProbe == nil || c.LivenessProbe.HTTPGet.Path != "/healthz" ||
		c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet.Path != "/readyz" {
		t.Error("manager probes are not /healthz and /readyz")
	}
	pdb := one(t, objs, "PodDisruptionBudget")
	sel, _, _ := unstructured.NestedStringMap(pdb.Object, "spec", "selector", "matchLabels")
	if !reflect.DeepEqual(sel, map[string]string{labelName: "default-receiver", labelComponent: "receiver"}) {
		t.Errorf("PDB selects %v, not the receiver pods", sel)
	}

	// The default receiver is the values' receiver, as a CallbackReceiver spec.
	recvs := installedReceivers(t, objs)
	if len(recvs) != 1 || recvs[0].GetName() != "default" {
		t.Fatalf("the chart installs %d receivers, want only \"default\"", len(recvs))
	}
	spec, _, _ := unstructured.NestedMap(recvs[0].Object, "spec")
	want2 := map[string]any{
		"replicas":    int64(2),
		"allowedApps": map[string]any{"namespaces": map[string]any{"from": "Same"}},
		"service":     map[string]any{"type": "ClusterIP", "port": int64(8080)},
		"spool":       map[string]any{"embedded": map[string]any{"size": "1Gi"}},
		"resources": map[string]any{
			"requests": map[string]any{"cpu": "100m", "memory": "64Mi"},
			"limits":   map[string]any{"memory": "256Mi"},
		},
	}
	if !reflect.DeepEqual(normalize(t, spec), normalize(t, want2)) {
		t.Errorf("default receiver spec\n%v\nwant\n%v", spec, want2)
	}

	// The people's ClusterRoles carry the aggregation labels.
	agg := map[string][]string{}
	for _, cr := range byKind(objs, "ClusterRole") {
		for k, v := range cr.GetLabels() {
			if strings.HasPrefix(k, "rbac.authorization.k8s.io/aggregate-to-") && v == "true" {
				agg[cr.GetName()] = append(agg[cr.GetName()], strings.TrimPrefix(k, "rbac.authorization.k8s.io/aggregate-to-"))
			}
		}
	}
	for name := range agg {
		sort.Strings(agg[name])
	}
	if wantAgg := map[string][]string{
		"cr-callback-router-view":         {"admin", "edit", "view"},
		"cr-callback-router-route-editor": {"admin", "edit"},
		"cr-callback-router-app-editor":   {"admin"},
	}; !reflect.DeepEqual(agg, wantAgg) {
		t.Errorf("aggregation labels %v, want %v", agg, wantAgg)
	}
}

// normalize round-trips a value through JSON so that numbers compare alike.
func normalize(t *testing.T, v any) any {
	t.Helper()
	data, err := yaml.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	if err := yaml.Unmarshal(data, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// checkProductionRender checks the chart rendered with ci/production-values.yaml.
func checkProductionRender(t *testing.T, objs []*unstructured.Unstructured) {
	receiverSel := map[string]string{labelName: "im-callbacks-receiver", labelComponent: "receiver"}
	recvs := installedReceivers(t, objs)
	if len(recvs) != 2 || recvs[0].GetName() != "im-callbacks" || recvs[1].GetName() != "internal" {
		t.Fatalf("production values install %d receivers, want im-callbacks and internal", len(recvs))
	}
	if _, found, _ := unstructured.NestedFieldNoCopy(recvs[0].Object, "spec", "replicas"); found {
		t.Error("with the HPA on, the installed receiver must leave spec.replicas to it")
	}
	if tp, _, _ := unstructured.NestedStringSlice(recvs[0].Object, "spec", "trustedProxies"); !reflect.DeepEqual(tp, []string{"10.244.0.0/16"}) {
		t.Errorf("receiver trustedProxies %v", tp)
	}
	hpa := one(t, objs, "HorizontalPodAutoscaler")
	ref, _, _ := unstructured.NestedStringMap(hpa.Object, "spec", "scaleTargetRef")
	if !reflect.DeepEqual(ref, map[string]string{"apiVersion": "callbacks.callback-router.dev/v1alpha1", "kind": "CallbackReceiver", "name": "im-callbacks"}) {
		t.Errorf("HPA targets %v, not the CallbackReceiver im-callbacks", ref)
	}
	np := one(t, objs, "NetworkPolicy")
	if sel, _, _ := unstructured.NestedStringMap(np.Object, "spec", "podSelector", "matchLabels"); !reflect.DeepEqual(sel, receiverSel) {
		t.Errorf("NetworkPolicy selects %v", sel)
	}
	rules, _, _ := unstructured.NestedSlice(np.Object, "spec", "ingress")
	if len(rules) != 3 {
		t.Fatalf("NetworkPolicy has %d ingress rules, want the callback port's, the manager's to the metrics port and monitoring's", len(rules))
	}
	callbackPeers, _, _ := unstructured.NestedSlice(rules[0].(map[string]any), "from")
	managerPeers, _, _ := unstructured.NestedSlice(rules[1].(map[string]any), "from")
	managerPorts, _, _ := unstructured.NestedSlice(rules[1].(map[string]any), "ports")
	managerSel, _, _ := unstructured.NestedStringMap(managerPeers[0].(map[string]any), "podSelector", "matchLabels")
	metricsPeers, _, _ := unstructured.NestedSlice(rules[2].(map[string]any), "from")
	metricsPorts, _, _ := unstructured.NestedSlice(rules[2].(map[string]any), "ports")
	if len(callbackPeers) != 2 || len(metricsPeers) != 1 || fmt.Sprint(metricsPorts[0].(map[string]any)["port"]) != "9090" {
		t.Errorf("NetworkPolicy admits %d peers to callbacks (want ingress controller and OpenIM) and %d to metrics port %v (want monitoring to 9090)",
			len(callbackPeers), len(metricsPeers), metricsPorts)
	}
	// The manager reads each pod's pending count from its /metrics (drain before scale-down).
	mgrPod := managerDeployment(t, objs).Spec.Template.Labels
	for k, v := range managerSel {
		if mgrPod[k] != v {
			t.Errorf("NetworkPolicy admits pods %v to the metrics port; the manager's pods are %v", managerSel, mgrPod)
		}
	}
	if len(managerPeers) != 1 || len(managerSel) == 0 || fmt.Sprint(managerPorts[0].(map[string]any)["port"]) != "9090" {
		t.Errorf("NetworkPolicy admits %v on %v, want the manager's pods on 9090", managerPeers, managerPorts)
	}
	ing := one(t, objs, "Ingress")
	ingRules, _, _ := unstructured.NestedSlice(ing.Object, "spec", "rules")
	paths, _, _ := unstructured.NestedSlice(ingRules[0].(map[string]any), "http", "paths")
	p := paths[0].(map[string]any)
	svc, _, _ := unstructured.NestedString(p, "backend", "service", "name")
	if p["path"] != "/tencent" || svc != "im-callbacks-receiver" {
		t.Errorf("Ingress routes %v to %q, want /tencent to the receiver Service", p["path"], svc)
	}
	if tls, _, _ := unstructured.NestedSlice(ing.Object, "spec", "tls"); len(tls) != 1 {
		t.Error("Ingress has no TLS")
	}
	if got := len(byKind(objs, "ServiceMonitor")); got != 2 {
		t.Errorf("%d ServiceMonitors, want the receiver's and the manager's", got)
	}
	for _, sm := range byKind(objs, "ServiceMonitor") {
		if sm.GetName() != "im-callbacks-receiver" {
			continue
		}
		// The headless Service, which alone carries the metrics port.
		headlessSel := map[string]string{labelName: "im-callbacks-pods", labelComponent: "receiver"}
		if sel, _, _ := unstructured.NestedStringMap(sm.Object, "spec", "selector", "matchLabels"); !reflect.DeepEqual(sel, headlessSel) {
			t.Errorf("receiver ServiceMonitor selects %v, want the headless Service's %v", sel, headlessSel)
		}
	}
}

// checkRestrictedSecurity checks the manager's pod and container security contexts against
// the restricted Pod Security Standard and the read-only root filesystem.
func checkRestrictedSecurity(t *testing.T, d *appsv1.Deployment) {
	t.Helper()
	sc := d.Spec.Template.Spec.Containers[0].SecurityContext
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Errorf("manager container security context is not restricted: %+v", sc)
	}
	psc := d.Spec.Template.Spec.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.SeccompProfile == nil ||
		psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("manager pod security context is not restricted: %+v", psc)
	}
}
