package controllers

import (
	"context"
	"sync"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// secretData caches the data of the Secrets that routes reference. The manager watches
// Secrets metadata-only (cluster-wide, cheap: no data), so it does not hold every Secret
// of the cluster in memory; it reads the data of a referenced Secret from the API server
// once, and again only when the metadata cache shows a new resourceVersion.
type secretData struct {
	// meta reads Secret metadata (the manager's metadata-only cache).
	meta client.Reader
	// api reads whole Secrets, uncached.
	api client.Reader

	mu      sync.Mutex
	entries map[types.NamespacedName]*corev1.Secret
}

func newSecretData(meta, api client.Reader) *secretData {
	return &secretData{meta: meta, api: api, entries: map[types.NamespacedName]*corev1.Secret{}}
}

// get returns Secret key, or nil when it does not exist. The returned Secret is shared:
// callers must not modify it.
func (s *secretData) get(ctx context.Context, key types.NamespacedName) (*corev1.Secret, error) {
	m := &metav1.PartialObjectMetadata{}
	m.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
	if err := s.meta.Get(ctx, key, m); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		return nil, err
	}
	s.mu.Lock()
	cached := s.entries[key]
	s.mu.Unlock()
	if cached != nil && cached.ResourceVersion == m.ResourceVersion {
		return cached, nil
	}
	sec := &corev1.Secret{}
	if err := s.api.Get(ctx, key, sec); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		return nil, err
	}
	// Keep only what the compiler reads.
	sec.ManagedFields, sec.Annotations, sec.Labels = nil, nil, nil
	s.mu.Lock()
	s.entries[key] = sec
	s.mu.Unlock()
	return sec, nil
}

// retain drops every entry not in keep, so Secrets no longer referenced leave memory.
func (s *secretData) retain(keep map[types.NamespacedName]bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k := range s.entries {
		if !keep[k] {
			delete(s.entries, k)
		}
	}
}
