package install

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/callback-router/callback-router/controllers/dataplane"
	"github.com/callback-router/callback-router/internal/testenv"
	"github.com/callback-router/callback-router/webhook/tablestore"
)

// Limits of the manager runs.
const (
	// managerReadyTimeout bounds the wait for the manager to be ready, elected and done
	// with its first reconciles.
	managerReadyTimeout = 60 * time.Second
	// managerStopTimeout bounds the wait after SIGTERM before the manager is killed.
	managerStopTimeout = 15 * time.Second
)

// binary builds callback-router once per test process.
func binary(t *testing.T) string { return testenv.Binary(t) }

// TestMain removes the binary the tests built.
func TestMain(m *testing.M) {
	code := m.Run()
	testenv.RemoveBinary()
	os.Exit(code)
}

// freeLoopbackPort returns a TCP port free on 127.0.0.1 at the time of the call.
func freeLoopbackPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// serviceAccountKubeconfig is the admin kubeconfig impersonating a ServiceAccount, so that
// a process using it has exactly the ServiceAccount's RBAC.
func (cl *cluster) serviceAccountKubeconfig(t *testing.T, namespace, name string) string {
	t.Helper()
	cfg, err := clientcmd.LoadFromFile(cl.kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	user, groups := serviceAccountUser(namespace, name)
	for _, a := range cfg.AuthInfos {
		a.Impersonate, a.ImpersonateGroups = user, groups
	}
	p := filepath.Join(t.TempDir(), "kubeconfig-"+name)
	if err := clientcmd.WriteToFile(*cfg, p); err != nil {
		t.Fatal(err)
	}
	return p
}

// lockedBuffer is a bytes.Buffer safe for a process writing and a test reading.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// managerRun is a callback-router manager process started from an installed Deployment.
type managerRun struct {
	cmd     *exec.Cmd
	logs    *lockedBuffer
	healthz string
	done    chan error
}

// startManager runs the manager exactly as the installed Deployment would (its args and
// env), as its ServiceAccount, with the two listeners moved to loopback ports and the
// API server reached through a kubeconfig. The process is stopped when the test ends.
func (cl *cluster) startManager(t *testing.T, d *appsv1.Deployment) *managerRun {
	t.Helper()
	pod := d.Spec.Template.Spec
	c := pod.Containers[0]
	health := freeLoopbackPort(t)
	args := append(append([]string{}, c.Args...),
		"--kubeconfig", cl.serviceAccountKubeconfig(t, d.Namespace, pod.ServiceAccountName),
		"--metrics-bind-address", "127.0.0.1:"+strconv.Itoa(freeLoopbackPort(t)),
		"--health-probe-bind-address", "127.0.0.1:"+strconv.Itoa(health),
		"--zap-encoder", "console")
	env := []string{}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.namespace":
			env = append(env, e.Name+"="+d.Namespace)
		case e.ValueFrom == nil:
			env = append(env, e.Name+"="+e.Value)
		default:
			t.Fatalf("env %s: cannot emulate %+v", e.Name, e.ValueFrom)
		}
	}
	m := &managerRun{logs: &lockedBuffer{}, healthz: fmt.Sprintf("http://127.0.0.1:%d", health), done: make(chan error, 1)}
	m.cmd = exec.Command(binary(t), args...)
	m.cmd.Env = append(os.Environ(), env...)
	m.cmd.Stdout, m.cmd.Stderr = m.logs, m.logs
	if err := m.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { m.done <- m.cmd.Wait() }()
	t.Cleanup(func() { m.stop(t) })
	return m
}

// stop sends SIGTERM and waits, then kills; it is safe to call twice.
func (m *managerRun) stop(t *testing.T) {
	if m.cmd.ProcessState != nil || m.done == nil {
		return
	}
	_ = m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-m.done:
		if err != nil {
			t.Logf("manager exited after SIGTERM: %v", err)
		}
	case <-time.After(managerStopTimeout):
		_ = m.cmd.Process.Kill()
		err := <-m.done
		t.Errorf("manager did not stop within %s of SIGTERM (killed: %v)", managerStopTimeout, err)
	}
	m.done = nil
}

// ready reports whether the manager's /readyz answers 200.
func (m *managerRun) ready() bool {
	resp, err := http.Get(m.healthz + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// exited reports the manager's exit, if it exited.
func (m *managerRun) exited() (bool, error) {
	select {
	case err := <-m.done:
		m.done <- err
		return true, err
	default:
		return false, nil
	}
}

// checkManagerWorks runs the installed manager against the cluster and waits until it is
// ready, has won the leader election, runs the installation's CallbackReceiver (its
// objects, owned by it, and its routing table), and has routed an app and a route of
// another namespace (both Ready=True): the whole operator path under the installation's
// RBAC. It returns the receiver StatefulSet the manager created.
func (cl *cluster) checkManagerWorks(t *testing.T, d *appsv1.Deployment, receiverName, routeNS string) *appsv1.StatefulSet {
	t.Helper()
	ctx := context.Background()
	ns := d.Namespace
	flags := flagValues(d.Spec.Template.Spec.Containers[0].Args)
	objectName := dataplane.ObjectName(receiverName)

	// The platform team's app next to the receiver (the default allowedApps is Same),
	// admitting routes of routeNS; a team's Sync route there, with the Service it uses.
	app := decode(t, fmt.Sprintf(`
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackApp
metadata: {name: chat-prod, namespace: %[1]s}
spec:
  provider: TencentIM
  appID: "1400000001"
  receiverRef: {name: %[2]s}
  verify:
    tokenSecretRef: {name: tencent-im, key: token}
  allowedRoutes:
    - namespaces: {from: Selector, selector: {matchLabels: {kubernetes.io/metadata.name: %[3]s}}}
`, ns, receiverName, routeNS))[0]
	route := decode(t, readFile(t, filepath.Join(repoRoot, "config", "samples", "callbacks_v1alpha1_callbackroute_moderation.yaml")))[0]
	route.SetNamespace(routeNS)
	_ = unstructured.SetNestedStringMap(route.Object, map[string]string{"name": "chat-prod", "namespace": ns}, "spec", "appRef")
	for _, o := range []client.Object{
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "tencent-im"},
			StringData: map[string]string{"token": "xxxxyyyy"}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: routeNS, Name: "moderation"},
			Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}}},
	} {
		if err := cl.c.Create(ctx, o); client.IgnoreAlreadyExists(err) != nil {
			t.Fatal(err)
		}
	}
	for _, o := range []*unstructured.Unstructured{app, route} {
		if err := cl.c.Apply(ctx, client.ApplyConfigurationFromUnstructured(o.DeepCopy()), client.FieldOwner(fieldOwner), client.ForceOwnership); err != nil {
			t.Fatalf("applying %s %s: %v", o.GetKind(), o.GetName(), err)
		}
	}

	m := cl.startManager(t, d)
	var receiver appsv1.StatefulSet
	var last string
	ready := func(o *unstructured.Unstructured) (bool, error) {
		got := &unstructured.Unstructured{}
		got.SetGroupVersionKind(o.GroupVersionKind())
		if err := cl.c.Get(ctx, client.ObjectKeyFromObject(o), got); err != nil {
			return false, err
		}
		conds, _, _ := unstructured.NestedSlice(got.Object, "status", "conditions")
		for _, c := range conds {
			cm := c.(map[string]any)
			if cm["type"] == "Ready" && cm["status"] == "True" {
				return true, nil
			}
		}
		last = fmt.Sprintf("%s %s conditions %v", o.GetKind(), o.GetName(), conds)
		return false, nil
	}
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, managerReadyTimeout, true, func(ctx context.Context) (bool, error) {
		if gone, err := m.exited(); gone {
			return false, fmt.Errorf("manager exited: %w", err)
		}
		if !m.ready() {
			last = "manager not ready"
			return false, nil
		}
		recv := &unstructured.Unstructured{}
		recv.SetGroupVersionKind(app.GroupVersionKind().GroupVersion().WithKind("CallbackReceiver"))
		if err := cl.c.Get(ctx, client.ObjectKey{Namespace: ns, Name: receiverName}, recv); err != nil {
			last = "CallbackReceiver: " + err.Error()
			return false, nil
		}
		if err := cl.c.Get(ctx, client.ObjectKey{Namespace: ns, Name: objectName}, &receiver); err != nil {
			last = "receiver StatefulSet: " + err.Error()
			return false, nil
		}
		for _, o := range []client.Object{&receiver, &corev1.Service{}, &corev1.ServiceAccount{}, &rbacv1.Role{}, &rbacv1.RoleBinding{}} {
			if err := cl.c.Get(ctx, client.ObjectKey{Namespace: ns, Name: objectName}, o); err != nil {
				last = fmt.Sprintf("receiver %T: %v", o, err)
				return false, nil
			}
			if refs := o.GetOwnerReferences(); len(refs) != 1 || refs[0].UID != recv.GetUID() || refs[0].Controller == nil || !*refs[0].Controller {
				return false, fmt.Errorf("receiver %T %s is not controlled by CallbackReceiver %s: %+v", o, objectName, receiverName, refs)
			}
		}
		if err := cl.c.Get(ctx, client.ObjectKey{Namespace: ns, Name: tablestore.ManifestName(dataplane.TableName(receiverName))}, &corev1.Secret{}); err != nil {
			last = "table manifest Secret: " + err.Error()
			return false, nil
		}
		for _, o := range []*unstructured.Unstructured{app, route} {
			if ok, err := ready(o); !ok || err != nil {
				return false, err
			}
		}
		return true, nil
	})
	if err != nil {
		t.Fatalf("the installed manager did not route an app and a route (%s): %v\nmanager log:\n%s", last, err, m.logs.String())
	}
	if flags["--leader-elect"] == "true" {
		if !cl.exists(t, "coordination.k8s.io/v1", "Lease", ns, "callback-router-manager.callback-router.dev") {
			t.Error("leader election is on but the manager holds no Lease in the release namespace")
		}
	}
	m.stop(t)
	if logs := m.logs.String(); strings.Contains(logs, "forbidden") {
		t.Errorf("the manager was refused something by RBAC:\n%s", logs)
	}
	return &receiver
}

// checkReceiverCompanions checks that the installation's companions select the pods of the
// receiver StatefulSet the manager created, and that those pods meet the restricted Pod
// Security Standard.
func (cl *cluster) checkReceiverCompanions(t *testing.T, receiver *appsv1.StatefulSet, companions []*unstructured.Unstructured) {
	t.Helper()
	podLabels := receiver.Spec.Template.Labels
	matches := func(sel map[string]string) bool {
		for k, v := range sel {
			if podLabels[k] != v {
				return false
			}
		}
		return len(sel) > 0
	}
	for _, o := range companions {
		var path []string
		switch o.GetKind() {
		case "PodDisruptionBudget":
			path = []string{"spec", "selector", "matchLabels"}
		case "NetworkPolicy":
			path = []string{"spec", "podSelector", "matchLabels"}
		case "HorizontalPodAutoscaler":
			owner := receiver.OwnerReferences[0].Name
			ref, _, _ := unstructured.NestedStringMap(o.Object, "spec", "scaleTargetRef")
			if ref["kind"] != "CallbackReceiver" || ref["name"] != owner || ref["apiVersion"] != "callbacks.callback-router.dev/v1alpha1" {
				t.Errorf("HPA scales %v, not the CallbackReceiver %q", ref, owner)
			}
			continue
		case "ServiceMonitor":
			if o.GetName() != receiver.Name {
				continue
			}
			// It scrapes the receiver pods through the headless Service (never a
			// LoadBalancer), whose selector picks every receiver pod; never the callback Service.
			svc := &corev1.Service{}
			headless := dataplane.HeadlessName(receiver.OwnerReferences[0].Name)
			if err := cl.c.Get(context.Background(), client.ObjectKey{Namespace: receiver.Namespace, Name: headless}, svc); err != nil {
				t.Fatal(err)
			}
			endpoints, _, _ := unstructured.NestedSlice(o.Object, "spec", "endpoints")
			port := endpoints[0].(map[string]any)["port"]
			found := false
			for _, p := range svc.Spec.Ports {
				found = found || p.Name == port
			}
			if !found || svc.Spec.Type != corev1.ServiceTypeClusterIP {
				t.Errorf("ServiceMonitor scrapes port %q; the receiver metrics Service (%s) has %+v", port, svc.Spec.Type, svc.Spec.Ports)
			}
			if !matches(svc.Spec.Selector) {
				t.Errorf("receiver metrics Service selects %v; the receiver pods are labelled %v", svc.Spec.Selector, podLabels)
			}
			sel, _, _ := unstructured.NestedStringMap(o.Object, "spec", "selector", "matchLabels")
			for k, v := range sel {
				if svc.Labels[k] != v {
					t.Errorf("ServiceMonitor selects %v; the receiver metrics Service is labelled %v", sel, svc.Labels)
					break
				}
			}
			callbackSvc := &corev1.Service{}
			if err := cl.c.Get(context.Background(), client.ObjectKey{Namespace: receiver.Namespace, Name: receiver.Name}, callbackSvc); err != nil {
				t.Fatal(err)
			}
			for _, p := range callbackSvc.Spec.Ports {
				if p.Name == port {
					t.Errorf("the callback Service has the metrics port %q", port)
				}
			}
			continue
		case "Ingress":
			rules, _, _ := unstructured.NestedSlice(o.Object, "spec", "rules")
			paths, _, _ := unstructured.NestedSlice(rules[0].(map[string]any), "http", "paths")
			for _, p := range paths {
				name, _, _ := unstructured.NestedString(p.(map[string]any), "backend", "service", "name")
				port, _, _ := unstructured.NestedFieldNoCopy(p.(map[string]any), "backend", "service", "port", "number")
				svc := &corev1.Service{}
				if err := cl.c.Get(context.Background(), client.ObjectKey{Namespace: receiver.Namespace, Name: name}, svc); err != nil {
					t.Errorf("Ingress backend Service %s: %v", name, err)
					continue
				}
				if len(svc.Spec.Ports) == 0 || fmt.Sprint(svc.Spec.Ports[0].Port) != fmt.Sprint(port) {
					t.Errorf("Ingress sends to port %v; the receiver Service has %+v", port, svc.Spec.Ports)
				}
			}
			continue
		default:
			continue
		}
		sel, _, _ := unstructured.NestedStringMap(o.Object, path...)
		if !matches(sel) {
			t.Errorf("%s %s selects %v; the receiver pods are labelled %v", o.GetKind(), o.GetName(), sel, podLabels)
		}
	}
	createPodFromTemplate(t, cl, receiver.Namespace, receiver.Name, receiver.Spec.Template, receiver.Spec.VolumeClaimTemplates)
}
