package tablestore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corev1listers "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
)

// WatchResync is the informer resync period: a periodic re-check of the assembled table,
// in case an event was coalesced away.
const WatchResync = 5 * time.Minute

// ErrWatchNotStarted is returned by WatchBytes when the first list of the table Secrets
// did not succeed within its startTimeout.
var ErrWatchNotStarted = errors.New("could not start watching the routing table")

// WatchBytes watches the table Secrets of table name in namespace and calls onTable with
// the table JSON and its sha256 each time a complete, consistent table with new content is
// stored. It blocks until ctx is done. API errors (the API server unreachable, a table
// being written) never retract a table: the last good one stays in use, and the informer
// keeps retrying. onTable is called from one goroutine at a time.
//
// The watch must start, though: when startTimeout is positive and the Secrets could not be
// listed once within it (the API server unreachable, the receiver not allowed to read
// Secrets in namespace), WatchBytes returns an error wrapping ErrWatchNotStarted and the
// last list error, so that the process can exit and be restarted instead of staying
// unready forever. A successful list with no table in it is not a failure: the manager
// has not written one yet.
func WatchBytes(ctx context.Context, cfg *rest.Config, namespace, name string, startTimeout time.Duration, onTable func(data []byte, sum string)) error {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("creating clientset: %w", err)
	}
	selector := labels.Set{LabelTable: name}.String()
	factory := informers.NewSharedInformerFactoryWithOptions(cs, WatchResync,
		informers.WithNamespace(namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = selector }))
	inf := factory.Core().V1().Secrets()
	changed := make(chan struct{}, 1)
	notify := func() {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	if _, err := inf.Informer().AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { notify() },
		UpdateFunc: func(any, any) { notify() },
		DeleteFunc: func(any) { notify() },
	}); err != nil {
		return fmt.Errorf("adding secret event handler: %w", err)
	}
	lastErr := &listErrors{}
	if err := inf.Informer().SetWatchErrorHandlerWithContext(func(ctx context.Context, r *toolscache.Reflector, err error) {
		lastErr.set(err)
		toolscache.DefaultWatchErrorHandler(ctx, r, err) // logs it, as without a handler
	}); err != nil {
		return fmt.Errorf("setting the watch error handler: %w", err)
	}
	lister := inf.Lister()
	// Shutdown waits for the informers, which stop when their channel closes: cancel
	// it first on every return, including a failed start.
	ictx, stop := context.WithCancel(ctx)
	factory.Start(ictx.Done())
	defer factory.Shutdown()
	defer stop()
	if startTimeout > 0 {
		probe := func(ctx context.Context) error {
			_, err := cs.CoreV1().Secrets(namespace).List(ctx, metav1.ListOptions{LabelSelector: selector, Limit: 1})
			return err
		}
		if err := waitStarted(ctx, inf.Informer().HasSynced, startTimeout, lastErr, probe); err != nil {
			return err
		}
	}

	log := ctrllog.FromContext(ctx).WithValues("namespace", namespace, "table", name)
	var last string
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		}
		data, sum, err := assemble(lister, namespace, name)
		switch {
		case errors.Is(err, errIncomplete) || apierrors.IsNotFound(err):
			// A write in progress, or no table yet: its last Secret brings another event.
			log.V(1).Info("Waiting for a complete table", "reason", err.Error())
			continue
		case err != nil:
			log.Error(err, "Ignored an unreadable table; keeping the last good one")
			continue
		case sum == last:
			continue
		}
		last = sum
		onTable(data, sum)
	}
}

// assemble builds the table from the informer's store.
func assemble(lister corev1listers.SecretLister, namespace, name string) ([]byte, string, error) {
	secrets := lister.Secrets(namespace)
	manifest, err := secrets.Get(ManifestName(name))
	if err != nil {
		return nil, "", fmt.Errorf("reading table manifest: %w", err)
	}
	m, err := ParseManifest(manifest.Annotations)
	if err != nil {
		return nil, "", err
	}
	data, err := Decode(m, func(i int) ([]byte, bool) {
		s, err := secrets.Get(ShardName(name, i))
		if err != nil {
			return nil, false
		}
		return shardData(s)
	})
	if err != nil {
		return nil, "", err
	}
	return data, m.SHA256, nil
}

func shardData(s *corev1.Secret) ([]byte, bool) {
	b, ok := s.Data[DataKey]
	return b, ok
}

// listErrors keeps the informer's last list or watch error.
type listErrors struct {
	mu  sync.Mutex
	err error
}

func (l *listErrors) set(err error) {
	l.mu.Lock()
	l.err = err
	l.mu.Unlock()
}

func (l *listErrors) get() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// startProbeTimeout bounds the one list made, once the start timeout has passed, to say
// why the watch did not start.
const startProbeTimeout = 5 * time.Second

// waitStarted waits until synced reports true (the informer's first list succeeded), ctx
// is done (nil), or timeout passes (ErrWatchNotStarted with the cause). The cause is the
// informer's last error or, when it reported none (it retries some errors, such as a
// refused connection, without reporting them), the error of one more list by probe.
func waitStarted(ctx context.Context, synced func() bool, timeout time.Duration, lastErr *listErrors, probe func(context.Context) error) error {
	tctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if toolscache.WaitForCacheSync(tctx.Done(), synced) || ctx.Err() != nil {
		return nil
	}
	cause := lastErr.get()
	if cause == nil {
		pctx, cancel := context.WithTimeout(ctx, startProbeTimeout)
		cause = probe(pctx)
		cancel()
	}
	if cause == nil {
		cause = errors.New("the API server answered a list only after the timeout")
	}
	return fmt.Errorf("%w: the table Secrets could not be listed within %s: %w", ErrWatchNotStarted, timeout, cause)
}
