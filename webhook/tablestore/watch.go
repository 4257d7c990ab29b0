package tablestore

import (
	"context"
	"errors"
	"fmt"
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

// WatchBytes watches the table Secrets of table name in namespace and calls onTable with
// the table JSON and its sha256 each time a complete, consistent table with new content is
// stored. It blocks until ctx is done. API errors (the API server unreachable, a table
// being written) never retract a table: the last good one stays in use, and the informer
// keeps retrying. onTable is called from one goroutine at a time.
func WatchBytes(ctx context.Context, cfg *rest.Config, namespace, name string, onTable func(data []byte, sum string)) error {
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
	lister := inf.Lister()
	factory.Start(ctx.Done())
	defer factory.Shutdown()

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
