// Command controller is the operator's benchmark (`make bench`). Against a real
// kube-apiserver and etcd (envtest) with the manager and a receiver running as processes
// of the freshly built binary, it measures:
//
//  1. apply to first delivery: the time from creating a CallbackRoute (the API call
//     returning) to the first signed callback through it arriving at a loopback backend,
//     over -applies repeated applies (p50, p99, max); each apply attaches to an app of
//     its own, created (untimed) just before, whose callbacks are unknown (404) until the
//     route is live;
//  2. scale: -routes routes across -namespaces namespaces, attached to -apps apps of the
//     platform namespace that admit every namespace, created while the manager is
//     stopped, then the time from the manager's start until every route is Ready for its
//     generation, the manager's peak RSS, and the compressed table size;
//  3. one more apply with that many routes present: apply to Ready, and apply to first
//     delivery (every change recompiles the whole table).
//
// Every loop is bounded by a count and by -timeout. The result is a markdown table.
//
//	KUBEBUILDER_ASSETS=$(hack/envtest-assets.sh) go run ./hack/bench/controller [-applies 50] [-routes 10000]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/callback-router/callback-router/api/v1alpha1"
	"github.com/callback-router/callback-router/controllers"
	"github.com/callback-router/callback-router/controllers/dataplane"
	"github.com/callback-router/callback-router/test/e2e"
	"github.com/callback-router/callback-router/webhook/samples"
	"github.com/callback-router/callback-router/webhook/tablestore"
)

// Bench settings that are not flags.
const (
	// receiverNamespace holds the receiver and its table.
	receiverNamespace = "callback-router-system"
	// platformNamespace holds the scale case's apps and their token Secret.
	platformNamespace = "im-platform"
	// token is the Tencent IM token of every bench route.
	token = "bench-token"
	// probeInterval is the wait between probes while a route is not live yet.
	probeInterval = 5 * time.Millisecond
	// createWorkers is how many routes are created at once in the scale case.
	createWorkers = 32
	// keptLog is where the last manager's log is copied for a look after the run.
	keptLog = "/tmp/callback-router-bench-manager.log"
	// pollInterval is how often the scale case counts Ready routes.
	pollInterval = 50 * time.Millisecond
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "controller bench:", err)
		os.Exit(1)
	}
}

func run() error {
	applies := flag.Int("applies", 50, "repeated applies measured for apply-to-first-delivery")
	routes := flag.Int("routes", 10000, "routes in the scale case (0 skips it)")
	namespaces := flag.Int("namespaces", 100, "namespaces the scale case's routes spread over")
	nApps := flag.Int("apps", 10, "apps the scale case's routes attach to")
	timeout := flag.Duration("timeout", 10*time.Minute, "bound on the whole run")
	statusWorkers := flag.Int("status-workers", controllers.DefaultStatusWorkers, "the manager's --status-workers")
	flag.Parse()
	ctrllog.SetLogger(logr.Discard())
	if *applies < 1 || *namespaces < 1 || *nApps < 1 || *routes < 0 {
		return errors.New("-applies, -namespaces and -apps must be positive, -routes not negative")
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	dir, err := os.MkdirTemp("", "callback-router-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	fmt.Fprintln(os.Stderr, "starting kube-apiserver and etcd, building callback-router")
	cl, err := e2e.StartCluster(dir)
	if err != nil {
		return err
	}
	defer func() {
		if err := cl.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stopping envtest:", err)
		}
	}()

	b := &bench{cl: cl, backend: e2e.NewBackend(), managerArgs: []string{"--status-workers", strconv.Itoa(*statusWorkers)}}
	defer b.backend.Close()
	sample, _ := samples.Get("tencent-c2c-after-send")
	b.body = sample.Body

	var rows [][2]string
	add := func(k, v string) { rows = append(rows, [2]string{k, v}); fmt.Fprintf(os.Stderr, "%s: %s\n", k, v) }

	// 1. Apply to first delivery, small table.
	if err := b.startManager(ctx); err != nil {
		return err
	}
	if err := b.startReceiver(ctx); err != nil {
		return err
	}
	if err := cl.EnsureNamespace(ctx, "apply"); err != nil {
		return err
	}
	if err := cl.Client.Create(ctx, tokenSecret("apply")); err != nil {
		return err
	}
	var lat []time.Duration
	for i := range *applies {
		d, err := b.applyToDelivery(ctx, "apply", fmt.Sprintf("apply-%d", i), strconv.Itoa(1500000000+i))
		if err != nil {
			return fmt.Errorf("apply %d: %w", i, err)
		}
		lat = append(lat, d)
	}
	add(fmt.Sprintf("apply to first delivery, %d applies: p50 / p99 / max", *applies), percentiles(lat))

	if *routes > 0 {
		// 2. Scale: routes created with the manager stopped, then one full reconcile.
		if err := b.stopManager(); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "creating %d routes in %d namespaces\n", *routes, *namespaces)
		created := time.Now()
		if err := b.createRoutes(ctx, *routes, *namespaces, *nApps); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "created in %s\n", time.Since(created).Round(time.Millisecond))
		total := *routes + *applies
		start := time.Now()
		if err := b.startManager(ctx); err != nil {
			return err
		}
		first, all, err := b.waitAllReady(ctx, total, start)
		if err != nil {
			return err
		}
		add(fmt.Sprintf("%d routes in %d namespaces, %d apps: manager start to table published", *routes, *namespaces, *nApps), first.Round(time.Millisecond).String())
		add(fmt.Sprintf("%d routes in %d namespaces, %d apps: manager start to all Ready", *routes, *namespaces, *nApps), all.Round(time.Millisecond).String())
		if rss, err := peakRSS(b.mgrPID()); err == nil {
			add(fmt.Sprintf("manager peak RSS with %d routes", total), fmt.Sprintf("%.0f MiB", float64(rss)/(1<<20)))
		}
		if m := b.tableSize(ctx); m != "" {
			add(fmt.Sprintf("routing table with %d routes", total), m)
		}

		// 3. One more apply with the big table in place.
		var ready, deliver []time.Duration
		for i := range 5 {
			app := strconv.Itoa(1600000000 + i)
			d, r, err := b.applyToDeliveryAndReady(ctx, "apply", fmt.Sprintf("late-%d", i), app)
			if err != nil {
				return fmt.Errorf("late apply %d: %w", i, err)
			}
			deliver, ready = append(deliver, d), append(ready, r)
			if d > 2*time.Second {
				fmt.Fprintf(os.Stderr, "slow apply %d (%s); manager log tail:\n%s\n", i, d, b.mgr.Tail())
			}
		}
		add(fmt.Sprintf("with %d routes, one more apply: to Ready (p50 / max of 5)", total), p50max(ready))
		add(fmt.Sprintf("with %d routes, one more apply: to first delivery (p50 / max of 5)", total), p50max(deliver))
	}
	if b.mgr != nil {
		if log, err := os.ReadFile(b.mgr.Log); err == nil {
			_ = os.WriteFile(keptLog, log, 0o600)
			fmt.Fprintln(os.Stderr, "manager log kept in", keptLog)
		}
	}
	_ = b.stopManager()
	_ = b.rx.Stop()

	fmt.Println("| measurement | result |")
	fmt.Println("|---|---|")
	for _, r := range rows {
		fmt.Printf("| %s | %s |\n", r[0], r[1])
	}
	return nil
}

type bench struct {
	cl      *e2e.Cluster
	backend *e2e.Backend
	body    []byte
	mgr     *e2e.Process
	rx      *e2e.Receiver
	probe   atomic.Int64
	// managerArgs are extra manager flags.
	managerArgs []string
}

func (b *bench) startManager(ctx context.Context) error {
	m, err := b.cl.StartManager(ctx, receiverNamespace, b.managerArgs...)
	if err != nil {
		return err
	}
	b.mgr = m
	return nil
}

func (b *bench) stopManager() error {
	if b.mgr == nil {
		return nil
	}
	err := b.mgr.Stop()
	b.mgr = nil
	return err
}

func (b *bench) mgrPID() int { return b.mgr.PID() }

func (b *bench) startReceiver(ctx context.Context) error {
	d, err := b.cl.WaitForStatefulSet(ctx, receiverNamespace, dataplane.ObjectName(controllers.DefaultReceiverName))
	if err != nil {
		return err
	}
	spool, err := os.MkdirTemp(b.cl.Dir, "spool-")
	if err != nil {
		return err
	}
	if b.rx, err = b.cl.StartReceiver(d, spool); err != nil {
		return err
	}
	return b.rx.WaitReady(ctx)
}

func tokenSecret(ns string) *corev1.Secret {
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "tencent-im"},
		StringData: map[string]string{"token": token}}
}

// app is a TencentIM app on the bench's receiver, admitting routes of every namespace,
// with the loopback backend allowed as backend.url.
func (b *bench) app(ns, name, appID string) *v1alpha1.CallbackApp {
	return &v1alpha1.CallbackApp{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: v1alpha1.CallbackAppSpec{
			Provider: v1alpha1.ProviderTencentIM, AppID: appID,
			ReceiverRef:   v1alpha1.ObjectReference{Namespace: receiverNamespace, Name: controllers.DefaultReceiverName},
			Verify:        &v1alpha1.AppVerification{TokenSecretRef: &v1alpha1.TokenSecretReference{Name: "tencent-im"}},
			AllowedRoutes: []v1alpha1.RouteGrant{{Namespaces: v1alpha1.Namespaces{From: v1alpha1.NamespacesFromAll}}},
			BackendURLs:   []string{b.backend.URL},
		},
	}
}

func (b *bench) route(ns, name, appNs, app string) *v1alpha1.CallbackRoute {
	return &v1alpha1.CallbackRoute{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: v1alpha1.CallbackRouteSpec{
			AppRef:   v1alpha1.ObjectReference{Namespace: appNs, Name: app},
			Commands: []string{"C2C.CallbackAfterSendMsg", "Group.*"},
			Mode:     v1alpha1.ModeAsync,
			Backend:  v1alpha1.Backend{URL: b.backend.URL, Path: "/" + ns + "/" + name},
		},
	}
}

// applyToDelivery creates a route for a new app and probes until a callback through it
// arrives; it returns the time from the create call's return to the arrival.
func (b *bench) applyToDelivery(ctx context.Context, ns, name, app string) (time.Duration, error) {
	d, _, err := b.applyAndMeasure(ctx, ns, name, app, false)
	return d, err
}

func (b *bench) applyToDeliveryAndReady(ctx context.Context, ns, name, app string) (time.Duration, time.Duration, error) {
	return b.applyAndMeasure(ctx, ns, name, app, true)
}

func (b *bench) applyAndMeasure(ctx context.Context, ns, name, app string, ready bool) (time.Duration, time.Duration, error) {
	if err := b.cl.Client.Create(ctx, b.app(ns, name, app)); err != nil {
		return 0, 0, err
	}
	r := b.route(ns, name, ns, name)
	if err := b.cl.Client.Create(ctx, r); err != nil {
		return 0, 0, err
	}
	applied := time.Now()
	var readyAt time.Duration
	readyDone := make(chan error, 1)
	if ready {
		go func() {
			for ctx.Err() == nil {
				got := &v1alpha1.CallbackRoute{}
				if err := b.cl.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, got); err != nil {
					readyDone <- err
					return
				}
				if c := meta.FindStatusCondition(got.Status.Conditions, v1alpha1.ConditionReady); c != nil && c.Status == metav1.ConditionTrue {
					readyAt = time.Since(applied)
					readyDone <- nil
					return
				}
				time.Sleep(probeInterval)
			}
			readyDone <- ctx.Err()
		}()
	} else {
		readyDone <- nil
	}
	for ctx.Err() == nil {
		probe := "probe=" + strconv.FormatInt(b.probe.Add(1), 10)
		status, _, err := e2e.SendTencent(ctx, b.rx.URL, app, "C2C.CallbackAfterSendMsg", token, probe, b.body)
		if err != nil {
			return 0, 0, err
		}
		if status == http.StatusOK {
			wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			d, err := b.backend.WaitFor(wctx, func(d e2e.Delivery) bool { return strings.HasSuffix(d.RawQuery, "&"+probe) })
			cancel()
			if err != nil {
				return 0, 0, fmt.Errorf("accepted callback not delivered: %w", err)
			}
			if err := <-readyDone; err != nil {
				return 0, 0, err
			}
			return d.At.Sub(applied), readyAt, nil
		}
		time.Sleep(probeInterval)
	}
	return 0, 0, ctx.Err()
}

// createRoutes creates the given number of apps in the platform namespace (with their
// token Secret) and n routes over ns namespaces attached to them; a tenth of the routes are Sync routes with
// commands of their own, a tenth use a Service.
func (b *bench) createRoutes(ctx context.Context, n, nsCount, apps int) error {
	if err := b.cl.EnsureNamespace(ctx, platformNamespace); err != nil {
		return err
	}
	if err := b.cl.Client.Create(ctx, tokenSecret(platformNamespace)); err != nil {
		return err
	}
	for i := range apps {
		if err := b.cl.Client.Create(ctx, b.app(platformNamespace, fmt.Sprintf("app-%02d", i), strconv.Itoa(1400000000+i))); err != nil {
			return err
		}
	}
	for i := range nsCount {
		ns := fmt.Sprintf("team-%03d", i)
		if err := b.cl.EnsureNamespace(ctx, ns); err != nil {
			return err
		}
		svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "backend"},
			Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 8080}}}}
		if err := b.cl.Client.Create(ctx, svc); err != nil {
			return err
		}
	}
	work := make(chan int)
	var wg sync.WaitGroup
	var firstErr error
	var mu sync.Mutex
	for range createWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				ns := fmt.Sprintf("team-%03d", i%nsCount)
				r := b.route(ns, fmt.Sprintf("route-%05d", i), platformNamespace, fmt.Sprintf("app-%02d", i%apps))
				switch i % 10 {
				case 0:
					r.Spec.Mode = v1alpha1.ModeSync
					r.Spec.Commands = []string{fmt.Sprintf("C2C.CallbackBeforeSendMsg.%d", i)}
				case 1:
					r.Spec.Backend = v1alpha1.Backend{Service: &v1alpha1.ServiceReference{Name: "backend", Port: 8080}}
				}
				if err := b.cl.Client.Create(ctx, r); err != nil {
					mu.Lock()
					firstErr = errors.Join(firstErr, err)
					mu.Unlock()
				}
			}
		}()
	}
	for i := 0; i < n && ctx.Err() == nil; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	return errors.Join(firstErr, ctx.Err())
}

// waitAllReady watches routes (an informer: no repeated full lists loading the API
// server under test) until total are Ready for their generation; it returns when the
// table first listed them all and when the last route became Ready.
func (b *bench) waitAllReady(ctx context.Context, total int, start time.Time) (time.Duration, time.Duration, error) {
	c, err := cache.New(b.cl.Config, cache.Options{Scheme: b.cl.Client.Scheme()})
	if err != nil {
		return 0, 0, err
	}
	var mu sync.Mutex
	ready := map[types.NamespacedName]bool{}
	track := func(obj any) {
		r, ok := obj.(*v1alpha1.CallbackRoute)
		if !ok {
			return
		}
		cond := meta.FindStatusCondition(r.Status.Conditions, v1alpha1.ConditionReady)
		mu.Lock()
		ready[client.ObjectKeyFromObject(r)] = cond != nil && cond.Status == metav1.ConditionTrue && cond.ObservedGeneration == r.Generation
		mu.Unlock()
	}
	inf, err := c.GetInformer(ctx, &v1alpha1.CallbackRoute{})
	if err != nil {
		return 0, 0, err
	}
	if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc: track, UpdateFunc: func(_, n any) { track(n) },
	}); err != nil {
		return 0, 0, err
	}
	cctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() { _ = c.Start(cctx) }()

	var published time.Duration
	var lastSum string
	last := time.Now()
	for ctx.Err() == nil {
		if published == 0 {
			m := &corev1.Secret{}
			key := client.ObjectKey{Namespace: receiverNamespace, Name: tablestore.ManifestName(controllers.DefaultReceiverName)}
			if err := b.cl.Client.Get(ctx, key, m); err == nil && m.Annotations[tablestore.AnnotationSHA256] != lastSum {
				lastSum = m.Annotations[tablestore.AnnotationSHA256]
				if s, err := tablestore.ReadSnapshot(ctx, b.cl.Client, receiverNamespace, controllers.DefaultReceiverName); err == nil && len(s.Routes) >= total {
					published = time.Since(start)
				}
			}
		}
		mu.Lock()
		n := 0
		for _, ok := range ready {
			if ok {
				n++
			}
		}
		mu.Unlock()
		if n >= total {
			if published == 0 {
				published = time.Since(start)
			}
			return published, time.Since(start), nil
		}
		if time.Since(last) > 5*time.Second {
			fmt.Fprintf(os.Stderr, "%s: %d/%d Ready\n", time.Since(start).Round(time.Second), n, total)
			last = time.Now()
		}
		if exited, err := b.mgr.Exited(); exited {
			return 0, 0, fmt.Errorf("manager exited: %w\n%s", err, b.mgr.Tail())
		}
		select {
		case <-ctx.Done():
		case <-time.After(pollInterval):
		}
	}
	return 0, 0, ctx.Err()
}

func (b *bench) tableSize(ctx context.Context) string {
	m := &corev1.Secret{}
	if err := b.cl.Client.Get(ctx, client.ObjectKey{Namespace: receiverNamespace, Name: tablestore.ManifestName(controllers.DefaultReceiverName)}, m); err != nil {
		return ""
	}
	mf, err := tablestore.ParseManifest(m.Annotations)
	if err != nil {
		return ""
	}
	size := 0
	for i := range mf.ShardSHA256 {
		s := &corev1.Secret{}
		if err := b.cl.Client.Get(ctx, client.ObjectKey{Namespace: receiverNamespace, Name: tablestore.ShardName(controllers.DefaultReceiverName, i)}, s); err == nil {
			size += len(s.Data[tablestore.DataKey])
		}
	}
	raw, err := tablestore.Read(ctx, b.cl.Client, receiverNamespace, controllers.DefaultReceiverName)
	if err != nil {
		return ""
	}
	return fmt.Sprintf("%d shard(s), %.0f KiB compressed (%.1f MiB JSON)", len(mf.ShardSHA256), float64(size)/1024, float64(len(raw))/(1<<20))
}

// peakRSS reads VmHWM of a process from /proc.
func peakRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			return kb * 1024, err
		}
	}
	return 0, errors.New("no VmHWM")
}

func percentiles(d []time.Duration) string {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	at := func(p float64) time.Duration { return s[min(len(s)-1, int(p*float64(len(s))))] }
	r := func(x time.Duration) string { return x.Round(time.Millisecond).String() }
	return r(at(0.50)) + " / " + r(at(0.99)) + " / " + r(s[len(s)-1])
}

func p50max(d []time.Duration) string {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2].Round(time.Millisecond).String() + " / " + s[len(s)-1].Round(time.Millisecond).String()
}
