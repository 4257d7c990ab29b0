// Package e2e runs callback-router end to end against a real kube-apiserver (envtest):
// the manager and receivers run as processes of the freshly built binary, a receiver with
// the arguments the manager put in its StatefulSet (StatefulPods runs all of a
// StatefulSet's pods, each on a directory as its claim), and backends are loopback HTTP
// servers. The harness here is shared by the tests and by hack/bench/controller.
package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/callback-router/callback-router/api/v1alpha1"
	"github.com/callback-router/callback-router/controllers"
	"github.com/callback-router/callback-router/internal/testenv"
	"github.com/callback-router/callback-router/webhook/callback"
)

// Limits of the harness.
const (
	// StopTimeout is how long a process gets after SIGTERM before it is killed.
	StopTimeout = 15 * time.Second
	// ReceiverImage is the image the harness's manager puts in the receiver StatefulSet.
	ReceiverImage = "registry.example/callback-router:e2e"
)

// Cluster is a kube-apiserver and etcd with the CRDs installed, a kubeconfig for them,
// and the callback-router binary built from this checkout.
type Cluster struct {
	Env    *envtest.Environment
	Config *rest.Config
	Client client.Client
	// Dir holds the kubeconfig, the binary and the process logs.
	Dir string
	// Kubeconfig is the path of an admin kubeconfig.
	Kubeconfig string
	// Bin is the callback-router binary.
	Bin string
	// Kubectl is the kubectl binary (KUBEBUILDER_ASSETS or PATH).
	Kubectl string
}

// StartCluster starts the control plane and builds the binary into dir.
func StartCluster(dir string) (*Cluster, error) {
	return StartClusterWithBinary(dir, "")
}

// StartClusterWithBinary starts the control plane; bin is a callback-router binary
// already built, or "" to build one into dir.
func StartClusterWithBinary(dir, bin string) (*Cluster, error) {
	env, cfg, err := testenv.Start()
	if err != nil {
		return nil, err
	}
	c := &Cluster{Env: env, Config: cfg, Dir: dir}
	fail := func(err error) (*Cluster, error) {
		_ = env.Stop()
		return nil, err
	}
	scheme, err := controllers.NewScheme()
	if err != nil {
		return fail(err)
	}
	if c.Client, err = client.New(cfg, client.Options{Scheme: scheme}); err != nil {
		return fail(err)
	}
	c.Kubeconfig = filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(c.Kubeconfig, env.KubeConfig, 0o600); err != nil {
		return fail(err)
	}
	c.Kubectl = filepath.Join(os.Getenv("KUBEBUILDER_ASSETS"), "kubectl")
	if _, err := os.Stat(c.Kubectl); err != nil { //nolint:gosec // the envtest assets directory, by design
		if c.Kubectl, err = exec.LookPath("kubectl"); err != nil {
			return fail(fmt.Errorf("kubectl not found in KUBEBUILDER_ASSETS nor PATH: %w", err))
		}
	}
	if bin != "" {
		c.Bin = bin
		return c, nil
	}
	if c.Bin, err = testenv.BuildBinary(context.Background(), dir); err != nil {
		return fail(err)
	}
	return c, nil
}

// Stop stops the control plane.
func (c *Cluster) Stop() error { return c.Env.Stop() }

// KubectlRun runs kubectl with the cluster's kubeconfig.
func (c *Cluster) KubectlRun(ctx context.Context, stdin []byte, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, c.Kubectl, append([]string{"--kubeconfig", c.Kubeconfig}, args...)...) //nolint:gosec // the test's own kubectl invocations
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("kubectl %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return out, nil
}

// EnsureNamespace creates namespace name unless it exists.
func (c *Cluster) EnsureNamespace(ctx context.Context, name string) error {
	err := c.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

// Process is a running callback-router subcommand.
type Process struct {
	cmd  *exec.Cmd
	done chan error
	// Log is the path of the process's combined output.
	Log string
}

// start runs the binary with args and env, output to dir/name.log.
func (c *Cluster) start(name string, env []string, args ...string) (*Process, error) {
	logPath := filepath.Join(c.Dir, name+".log")
	f, err := os.Create(logPath) //nolint:gosec // a log in the harness's own directory
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(context.Background(), c.Bin, args...) //nolint:gosec // the binary the harness built, with the workload's args
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), env...)
	if err := cmd.Start(); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &Process{cmd: cmd, done: make(chan error, 1), Log: logPath}
	go func() {
		p.done <- cmd.Wait()
		_ = f.Close()
	}()
	return p, nil
}

// Stop sends SIGTERM, waits up to StopTimeout, then kills.
func (p *Process) Stop() error {
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	select {
	case err := <-p.done:
		p.done <- err
		return err
	case <-time.After(StopTimeout):
		_ = p.cmd.Process.Kill()
		err := <-p.done
		p.done <- err
		return fmt.Errorf("killed after %s without exiting: %w", StopTimeout, err)
	}
}

// Kill sends SIGKILL (kill -9) and waits for the exit.
func (p *Process) Kill() {
	_ = p.cmd.Process.Kill()
	err := <-p.done
	p.done <- err
}

// Exited reports whether the process has exited, and how.
func (p *Process) Exited() (bool, error) {
	select {
	case err := <-p.done:
		p.done <- err
		return true, err
	default:
		return false, nil
	}
}

// Tail returns the end of the process's log, for failure messages.
func (p *Process) Tail() string {
	b, _ := os.ReadFile(p.Log)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// StartManager runs `callback-router manager` against the cluster with the receiver in
// namespace, plus extra flags. It first makes sure the CallbackReceiver whose table the
// receiver processes read exists there (named controllers.DefaultReceiverName, admitting
// apps of every namespace).
func (c *Cluster) StartManager(ctx context.Context, namespace string, extra ...string) (*Process, error) {
	if err := c.EnsureNamespace(ctx, namespace); err != nil {
		return nil, err
	}
	recv := &v1alpha1.CallbackReceiver{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: controllers.DefaultReceiverName},
		Spec: v1alpha1.CallbackReceiverSpec{AllowedApps: &v1alpha1.AllowedApps{
			Namespaces: v1alpha1.Namespaces{From: v1alpha1.NamespacesFromAll}}},
	}
	if err := c.Client.Create(ctx, recv); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("creating CallbackReceiver %s/%s: %w", namespace, recv.Name, err)
	}
	args := append([]string{"manager", "--kubeconfig", c.Kubeconfig,
		"--metrics-bind-address", "0", "--health-probe-bind-address", "0",
		"--receiver-namespace", namespace, "--receiver-image", ReceiverImage}, extra...)
	return c.start("manager", nil, args...)
}

// WaitForStatefulSet waits for the receiver StatefulSet the manager creates.
func (c *Cluster) WaitForStatefulSet(ctx context.Context, namespace, name string) (*appsv1.StatefulSet, error) {
	d := &appsv1.StatefulSet{}
	err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		err := c.Client.Get(ctx, types.NamespacedName{Namespace: namespace, Name: name}, d)
		return err == nil, client.IgnoreNotFound(err)
	})
	if err != nil {
		return nil, fmt.Errorf("waiting for StatefulSet %s/%s: %w", namespace, name, err)
	}
	return d, nil
}

// Receiver is a receiver process run as one pod of the StatefulSet would be.
type Receiver struct {
	*Process
	// URL is the receiver's base URL, http://127.0.0.1:<port>.
	URL string
	// Port and MetricsPort are its callback and metrics ports on 127.0.0.1.
	Port, MetricsPort int
	// MetricsURL is the base URL of its --metrics-listen (the manager always sets one).
	MetricsURL string
}

// freePort returns a loopback port that was free a moment ago.
func freePort() (int, error) {
	ln, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// StartReceiver runs the receiver container of d as a local process: the container's
// args with --listen moved to a free loopback port and --spool-dir to spoolDir, the
// container's env with field references resolved as the kubelet would, and KUBECONFIG in
// place of the in-cluster service account.
func (c *Cluster) StartReceiver(d *appsv1.StatefulSet, spoolDir string) (*Receiver, error) {
	return c.StartReceiverWithKubeconfig(d, spoolDir, c.Kubeconfig)
}

// StartReceiverWithKubeconfig is StartReceiver with another kubeconfig (e.g. one through
// a TCPProxy).
func (c *Cluster) StartReceiverWithKubeconfig(d *appsv1.StatefulSet, spoolDir, kubeconfig string) (*Receiver, error) {
	return c.startPod(d, d.Name+"-local", spoolDir, kubeconfig)
}

// startPod runs the receiver container of d as the pod named podName would: see
// StartReceiver. --metrics-listen moves to a free loopback port too (Receiver.MetricsPort).
func (c *Cluster) startPod(d *appsv1.StatefulSet, podName, spoolDir, kubeconfig string) (*Receiver, error) {
	if len(d.Spec.Template.Spec.Containers) != 1 {
		return nil, fmt.Errorf("statefulset %s has %d containers, want 1", d.Name, len(d.Spec.Template.Spec.Containers))
	}
	ctr := d.Spec.Template.Spec.Containers[0]
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	metricsPort, err := freePort()
	if err != nil {
		return nil, err
	}
	args := append([]string(nil), ctr.Args...)
	metricsURL := ""
	for i := 0; i+1 < len(args); i++ {
		switch args[i] {
		case "--listen":
			args[i+1] = "127.0.0.1:" + strconv.Itoa(port)
		case "--metrics-listen":
			args[i+1] = "127.0.0.1:" + strconv.Itoa(metricsPort)
			metricsURL = "http://" + args[i+1]
		case "--spool-dir":
			args[i+1] = spoolDir
		case "--admin-listen":
			// Loopback in every pod; here the pods share one loopback.
			adminPort, err := freePort()
			if err != nil {
				return nil, err
			}
			args[i+1] = "127.0.0.1:" + strconv.Itoa(adminPort)
		}
	}
	env := []string{"KUBECONFIG=" + kubeconfig}
	for _, e := range ctr.Env {
		switch {
		case e.ValueFrom == nil:
			env = append(env, e.Name+"="+e.Value)
		case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.namespace":
			env = append(env, e.Name+"="+d.Namespace)
		case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.name":
			env = append(env, e.Name+"="+podName)
		default:
			return nil, fmt.Errorf("env %s: unsupported valueFrom", e.Name)
		}
	}
	p, err := c.start("receiver-"+strconv.Itoa(port), env, args...)
	if err != nil {
		return nil, err
	}
	return &Receiver{Process: p, URL: "http://127.0.0.1:" + strconv.Itoa(port), Port: port, MetricsPort: metricsPort, MetricsURL: metricsURL}, nil
}

// WaitReady waits until /readyz answers 200 (the first table loaded).
func (r *Receiver) WaitReady(ctx context.Context) error {
	return wait.PollUntilContextCancel(ctx, 50*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		if exited, err := r.Exited(); exited {
			return false, fmt.Errorf("receiver exited: %w\n%s", err, r.Tail())
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.URL+"/readyz", nil)
		if err != nil {
			return false, err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false, nil
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
}

// Delivery is one request a Backend received.
type Delivery struct {
	Path     string
	RawQuery string
	Header   http.Header
	Body     []byte
	At       time.Time
}

// Backend is a loopback HTTP server that records what it receives and answers 200 with
// the Tencent OK envelope.
type Backend struct {
	*httptest.Server
	// down makes the backend answer 503 and record nothing (a backend outage).
	down       atomic.Bool
	mu         sync.Mutex
	deliveries []Delivery
	arrived    chan struct{}
}

// NewBackend starts a Backend on 127.0.0.1.
func NewBackend() *Backend {
	b := &Backend{arrived: make(chan struct{}, 1)}
	b.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if b.down.Load() {
			http.Error(w, "backend down", http.StatusServiceUnavailable)
			return
		}
		b.mu.Lock()
		b.deliveries = append(b.deliveries, Delivery{Path: r.URL.Path, RawQuery: r.URL.RawQuery, Header: r.Header.Clone(), Body: body, At: time.Now()})
		b.mu.Unlock()
		select {
		case b.arrived <- struct{}{}:
		default:
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":""}`)
	}))
	return b
}

// SetDown starts (true) or ends (false) an outage: while down the backend answers 503
// and records nothing.
func (b *Backend) SetDown(down bool) { b.down.Store(down) }

// Deliveries returns a copy of everything received so far.
func (b *Backend) Deliveries() []Delivery {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]Delivery(nil), b.deliveries...)
}

// WaitFor waits until a delivery matches, and returns it.
func (b *Backend) WaitFor(ctx context.Context, match func(Delivery) bool) (Delivery, error) {
	for {
		for _, d := range b.Deliveries() {
			if match(d) {
				return d, nil
			}
		}
		select {
		case <-ctx.Done():
			return Delivery{}, ctx.Err()
		case <-b.arrived:
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// SendTencent posts a signed Tencent IM callback, with extra appended to the query, and
// returns the status code and body.
func SendTencent(ctx context.Context, baseURL, appID, command, token, extra string, body []byte) (int, []byte, error) {
	rt := strconv.FormatInt(time.Now().Unix(), 10)
	q := "SdkAppid=" + url.QueryEscape(appID) + "&CallbackCommand=" + url.QueryEscape(command) +
		"&contenttype=json&ClientIP=127.0.0.1&OptPlatform=RESTAPI&Sign=" + callback.TencentSign(token, rt) + "&RequestTime=" + rt
	if extra != "" {
		q += "&" + extra
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, baseURL+"/tencent?"+q, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// PID is the process id.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// TCPProxy forwards loopback TCP connections to a target until Cut, to make the API
// server unreachable for one client without stopping it.
type TCPProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  []net.Conn
	cut    bool
}

// StartTCPProxy listens on a free loopback port and forwards to target (host:port).
func StartTCPProxy(target string) (*TCPProxy, error) {
	ln, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &TCPProxy{ln: ln, target: target}
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := (&net.Dialer{}).DialContext(context.Background(), "tcp", target)
			if err != nil {
				_ = in.Close()
				continue
			}
			p.mu.Lock()
			if p.cut {
				_ = in.Close()
				_ = out.Close()
			} else {
				p.conns = append(p.conns, in, out)
			}
			p.mu.Unlock()
			go func() { _, _ = io.Copy(out, in); _ = out.Close() }()
			go func() { _, _ = io.Copy(in, out); _ = in.Close() }()
		}
	}()
	return p, nil
}

// Addr is the proxy's host:port.
func (p *TCPProxy) Addr() string { return p.ln.Addr().String() }

// Cut closes the listener and every connection: the target is unreachable through it.
func (p *TCPProxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
	_ = p.ln.Close()
	for _, c := range p.conns {
		_ = c.Close()
	}
}

// KubeconfigVia writes a copy of the cluster's kubeconfig that reaches the API server
// through addr (a TCPProxy; TLS still ends at the API server) and returns its path.
func (c *Cluster) KubeconfigVia(addr string) (string, error) {
	u, err := url.Parse(c.Config.Host)
	if err != nil {
		return "", err
	}
	b, err := os.ReadFile(c.Kubeconfig)
	if err != nil {
		return "", err
	}
	if !bytes.Contains(b, []byte(u.Host)) {
		return "", fmt.Errorf("kubeconfig does not mention %s", u.Host)
	}
	path := filepath.Join(c.Dir, "kubeconfig-via-"+strings.ReplaceAll(addr, ":", "-"))
	return path, os.WriteFile(path, bytes.ReplaceAll(b, []byte(u.Host), []byte(addr)), 0o600) //nolint:gosec // the harness's own directory
}

// APIServerHostPort is the API server's host:port.
func (c *Cluster) APIServerHostPort() (string, error) {
	u, err := url.Parse(c.Config.Host)
	if err != nil {
		return "", err
	}
	return u.Host, nil
}
