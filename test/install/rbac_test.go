package install

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"
)

// access is one request the manager makes, as the authorizer sees it.
type access struct {
	group, resource, subresource, verb, namespace string
}

func (a access) String() string {
	r := a.resource
	if a.subresource != "" {
		r += "/" + a.subresource
	}
	if a.group != "" {
		r += "." + a.group
	}
	ns := a.namespace
	if ns == "" {
		ns = "<cluster>"
	}
	return fmt.Sprintf("%s %s in %s", a.verb, r, ns)
}

// serviceAccountUser is the user name and groups the API server gives a ServiceAccount.
func serviceAccountUser(namespace, name string) (string, []string) {
	return "system:serviceaccount:" + namespace + ":" + name,
		[]string{"system:serviceaccounts", "system:serviceaccounts:" + namespace, "system:authenticated"}
}

// allowed asks the API server's RBAC authorizer whether the user may do a.
func (cl *cluster) allowed(t *testing.T, user string, groups []string, a access) bool {
	t.Helper()
	sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User:   user,
		Groups: groups,
		ResourceAttributes: &authorizationv1.ResourceAttributes{
			Namespace: a.namespace, Verb: a.verb, Group: a.group,
			Resource: a.resource, Subresource: a.subresource,
		},
	}}
	if err := cl.c.Create(context.Background(), sar); err != nil {
		t.Fatalf("SubjectAccessReview for %s: %v", a, err)
	}
	return sar.Status.Allowed
}

// managerNeeds is what the manager does, derived from the design and the controllers:
// it reads apps and routes everywhere and writes their status, reads the Namespaces their
// grants select, the Services and Secrets they reference in any namespace, records events
// about them, and in the receiver (release) namespace runs the CallbackReceivers (reads
// them, writes their status, applies the installed ones from the release's ConfigMap) and
// owns their objects, the table Secrets and its leader-election Lease.
func managerNeeds(releaseNS, routeNS string) []access {
	const g = "callbacks.callback-router.dev"
	var out []access
	for _, ns := range []string{"", routeNS} {
		for _, kind := range []string{"callbackroutes", "callbackapps"} {
			for _, v := range []string{"get", "list", "watch"} {
				out = append(out, access{group: g, resource: kind, verb: v, namespace: ns})
			}
			for _, v := range []string{"get", "update", "patch"} {
				out = append(out, access{group: g, resource: kind, subresource: "status", verb: v, namespace: ns})
			}
		}
		for _, r := range []string{"services", "secrets"} {
			for _, v := range []string{"get", "list", "watch"} {
				out = append(out, access{resource: r, verb: v, namespace: ns})
			}
		}
	}
	for _, v := range []string{"get", "list", "watch"} {
		out = append(out, access{resource: "namespaces", verb: v})
	}
	for _, v := range []string{"create", "patch"} {
		out = append(out, access{group: "events.k8s.io", resource: "events", verb: v, namespace: routeNS},
			access{group: "events.k8s.io", resource: "events", verb: v, namespace: releaseNS},
			access{resource: "events", verb: v, namespace: releaseNS})
	}
	all := []string{"get", "list", "watch", "create", "update", "patch", "delete"}
	for _, gr := range [][2]string{{"", "secrets"}, {"", "services"}, {"", "serviceaccounts"},
		{"apps", "statefulsets"}, {"rbac.authorization.k8s.io", "roles"},
		{"rbac.authorization.k8s.io", "rolebindings"}, {"coordination.k8s.io", "leases"},
		{g, "callbackreceivers"}} {
		for _, v := range all {
			out = append(out, access{group: gr[0], resource: gr[1], verb: v, namespace: releaseNS})
		}
	}
	for _, v := range []string{"get", "update", "patch"} {
		out = append(out, access{group: g, resource: "callbackreceivers", subresource: "status", verb: v, namespace: releaseNS})
	}
	// The migration from a Deployment, and draining before a scale-down.
	for _, v := range []string{"get", "list", "watch", "delete"} {
		out = append(out, access{group: "apps", resource: "deployments", verb: v, namespace: releaseNS})
	}
	for _, v := range []string{"get", "list", "watch", "patch"} {
		out = append(out, access{resource: "pods", verb: v, namespace: releaseNS},
			access{resource: "persistentvolumeclaims", verb: v, namespace: releaseNS})
	}
	out = append(out, access{group: g, resource: "callbackreceivers", subresource: "finalizers", verb: "update", namespace: releaseNS})
	for _, v := range []string{"get", "list", "watch"} {
		out = append(out, access{resource: "configmaps", verb: v, namespace: releaseNS})
	}
	return out
}

// managerMustNot is what least privilege denies the manager: writes outside the release
// namespace, cluster-scoped writes, and anything it never needs.
func managerMustNot(releaseNS, routeNS string) []access {
	const g = "callbacks.callback-router.dev"
	return []access{
		{resource: "secrets", verb: "create", namespace: routeNS},
		{resource: "secrets", verb: "update", namespace: routeNS},
		{resource: "secrets", verb: "delete", namespace: routeNS},
		{resource: "services", verb: "create", namespace: routeNS},
		{resource: "configmaps", verb: "list", namespace: routeNS},
		{resource: "namespaces", verb: "update"},
		{group: "apps", resource: "deployments", verb: "create", namespace: releaseNS},
		{group: "apps", resource: "statefulsets", verb: "create", namespace: routeNS},
		{group: "apps", resource: "statefulsets", verb: "list", namespace: ""},
		{resource: "persistentvolumeclaims", verb: "delete", namespace: releaseNS},
		{resource: "pods", verb: "delete", namespace: releaseNS},
		{group: "rbac.authorization.k8s.io", resource: "roles", verb: "create", namespace: routeNS},
		{group: "rbac.authorization.k8s.io", resource: "clusterroles", verb: "create"},
		{group: "rbac.authorization.k8s.io", resource: "clusterrolebindings", verb: "create"},
		{group: "apiextensions.k8s.io", resource: "customresourcedefinitions", verb: "update"},
		{resource: "pods", subresource: "exec", verb: "create", namespace: routeNS},
		{resource: "nodes", verb: "get"},
		{group: g, resource: "callbackroutes", verb: "delete", namespace: routeNS},
		{group: g, resource: "callbackroutes", verb: "update", namespace: routeNS},
		{group: g, resource: "callbackapps", verb: "create", namespace: routeNS},
		{group: g, resource: "callbackapps", verb: "update", namespace: routeNS},
		{group: g, resource: "callbackreceivers", verb: "create", namespace: routeNS},
		{group: g, resource: "callbackreceivers", verb: "list", namespace: ""},
		{group: "coordination.k8s.io", resource: "leases", verb: "create", namespace: routeNS},
	}
}

// markerRules reads the rules that the controllers' +kubebuilder:rbac markers generate
// into config/rbac/role.yaml (`make manifests`).
func markerRules(t *testing.T) []rbacv1.PolicyRule {
	t.Helper()
	data, err := os.ReadFile(rbacRoleFile)
	if err != nil {
		t.Fatalf("reading %s (generated by 'make manifests'): %v", rbacRoleFile, err)
	}
	var rules []rbacv1.PolicyRule
	for _, doc := range strings.Split(string(data), "\n---") {
		var r struct {
			Rules []rbacv1.PolicyRule `json:"rules"`
		}
		if err := yaml.Unmarshal([]byte(doc), &r); err != nil {
			t.Fatalf("parsing %s: %v", rbacRoleFile, err)
		}
		rules = append(rules, r.Rules...)
	}
	if len(rules) == 0 {
		t.Fatalf("%s has no rules", rbacRoleFile)
	}
	return rules
}

// markerAccesses expands the marker rules into single accesses in the release namespace,
// where the manager uses every permission it has.
func markerAccesses(t *testing.T, releaseNS string) []access {
	var out []access
	for _, r := range markerRules(t) {
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				name, sub, _ := strings.Cut(res, "/")
				for _, v := range r.Verbs {
					out = append(out, access{group: g, resource: name, subresource: sub, verb: v, namespace: releaseNS})
				}
			}
		}
	}
	return out
}

// personAccess is one request a person makes, and whether least privilege allows it.
type personAccess struct {
	user    string
	access  access
	allowed bool
}

// TestPeopleRoles installs the chart's ClusterRoles into a real API server with the real
// ClusterRole aggregation controller (kube-controller-manager) and checks, user by user,
// that Kubernetes' built-in roles now mean what docs/tenancy.md says: `edit` in a
// namespace may write CallbackRoutes there but not CallbackApps, `admin` may write both,
// `view` reads all three kinds, nobody but cluster admins writes CallbackReceivers, and no
// one writes status. It then creates objects as those users (impersonation).
func TestPeopleRoles(t *testing.T) {
	helm := tool(t, "HELM")
	cl := startCluster(t)
	cl.startControllerManager(t, aggregationController)
	ctx := context.Background()
	const g = "callbacks.callback-router.dev"

	objs := helmTemplate(t, helm, kubeVersion, "cr", "callback-router-system")
	var install []*unstructured.Unstructured
	install = append(install, byKind(objs, "CustomResourceDefinition")...)
	install = append(install, byKind(objs, "ClusterRole")...)
	cl.applyAll(t, install)

	for _, ns := range []string{"team-a", "team-b"} {
		if err := cl.c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			t.Fatal(err)
		}
	}
	for user, role := range map[string]string{"dev": "edit", "lead": "admin", "auditor": "view"} {
		rb := &rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: user},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
			Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: "User", Name: user}},
		}
		if err := cl.c.Create(ctx, rb); err != nil {
			t.Fatal(err)
		}
	}

	// Aggregation is asynchronous: wait until edit carries the route rule.
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, gcTimeout, true, func(context.Context) (bool, error) {
		return cl.allowed(t, "dev", nil, access{group: g, resource: "callbackroutes", verb: "create", namespace: "team-a"}), nil
	})
	if err != nil {
		t.Fatalf("the built-in edit role never aggregated the route-editor rules: %v", err)
	}

	var checks []personAccess
	add := func(user string, allowed bool, resource, sub string, verbs ...string) {
		for _, v := range verbs {
			checks = append(checks, personAccess{user: user, allowed: allowed,
				access: access{group: g, resource: resource, subresource: sub, verb: v, namespace: "team-a"}})
		}
	}
	read := []string{"get", "list", "watch"}
	write := []string{"create", "update", "patch", "delete"}
	for _, user := range []string{"dev", "lead", "auditor"} {
		for _, kind := range []string{"callbackroutes", "callbackapps", "callbackreceivers", "callbackreplays"} {
			add(user, true, kind, "", read...)
			add(user, false, kind, "status", "update", "patch")
		}
		add(user, false, "callbackreceivers", "", write...)
		add(user, false, "callbackreceivers", "scale", "update")
	}
	add("dev", true, "callbackroutes", "", write...)
	add("dev", true, "callbackreplays", "", write...) // route editors replay their routes
	add("lead", true, "callbackreplays", "", write...)
	add("auditor", false, "callbackreplays", "", write...)
	add("dev", false, "callbackapps", "", write...)
	add("lead", true, "callbackroutes", "", write...)
	add("lead", true, "callbackapps", "", write...)
	add("auditor", false, "callbackroutes", "", write...)
	add("auditor", false, "callbackapps", "", write...)
	// Nothing in another namespace.
	for _, user := range []string{"dev", "lead", "auditor"} {
		checks = append(checks,
			personAccess{user: user, access: access{group: g, resource: "callbackroutes", verb: "get", namespace: "team-b"}},
			personAccess{user: user, access: access{group: g, resource: "callbackroutes", verb: "create", namespace: "team-b"}},
			personAccess{user: user, access: access{group: g, resource: "callbackapps", verb: "create", namespace: "team-b"}})
	}
	for _, c := range checks {
		if got := cl.allowed(t, c.user, []string{"system:authenticated"}, c.access); got != c.allowed {
			t.Errorf("%s may %s: %v, want %v", c.user, c.access, got, c.allowed)
		}
	}

	// The same through real requests, impersonating the users.
	route := decode(t, readFile(t, filepath.Join(repoRoot, "config", "samples", "callbacks_v1alpha1_callbackroute_archive.yaml")))[0]
	app := decode(t, readFile(t, filepath.Join(repoRoot, "config", "samples", "callbacks_v1alpha1_callbackapp_tencent.yaml")))[0]
	as := func(user string) client.Client {
		cfg := rest.CopyConfig(cl.cfg)
		cfg.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: []string{"system:authenticated"}}
		c, err := client.New(cfg, client.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	create := func(user string, o *unstructured.Unstructured, name string) error {
		o = o.DeepCopy()
		o.SetNamespace("team-a")
		o.SetName(name)
		return as(user).Create(ctx, o)
	}
	if err := create("dev", route, "dev-route"); err != nil {
		t.Errorf("edit may not create a CallbackRoute in its namespace: %v", err)
	}
	if err := create("dev", app, "dev-app"); !apierrors.IsForbidden(err) {
		t.Errorf("edit created a CallbackApp (err %v); only admin may", err)
	}
	if err := create("lead", app, "lead-app"); err != nil {
		t.Errorf("admin may not create a CallbackApp in its namespace: %v", err)
	}
	if err := create("lead", route, "lead-route"); err != nil {
		t.Errorf("admin may not create a CallbackRoute in its namespace: %v", err)
	}
	if err := create("auditor", route, "auditor-route"); !apierrors.IsForbidden(err) {
		t.Errorf("view created a CallbackRoute (err %v)", err)
	}
}
