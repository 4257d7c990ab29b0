package tablestore

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Writer writes a table into Secrets of one namespace.
type Writer struct {
	// Client writes (server-side apply, delete).
	Client client.Client
	// Reader reads Secret metadata (metav1.PartialObjectMetadata), typically a
	// metadata-only cache: the writer never needs existing Secret data.
	Reader client.Reader
	// Namespace holds the table Secrets.
	Namespace string
	// Name is the table name (the receiver name).
	Name string
	// FieldOwner is the server-side apply field manager.
	FieldOwner string
	// Labels are added to every table Secret (e.g. app.kubernetes.io/managed-by).
	Labels map[string]string
	// Owner, when set, becomes the controller owner reference of every table Secret (the
	// CallbackReceiver), so that deleting the owner deletes its table.
	Owner *metav1.OwnerReference
}

// WriteResult says what a Write did.
type WriteResult struct {
	// ShardsWritten counts shard Secrets written; 0 with ManifestWritten false means no change.
	ShardsWritten int
	// ManifestWritten is true when the manifest changed.
	ManifestWritten bool
	// ShardsDeleted counts shards left over from a larger table.
	ShardsDeleted int
	// Shards is the table's shard count.
	Shards int
	// CompressedBytes is the size of all shards.
	CompressedBytes int
}

// Changed reports whether anything was written or deleted.
func (r WriteResult) Changed() bool {
	return r.ShardsWritten > 0 || r.ManifestWritten || r.ShardsDeleted > 0
}

func secretMeta() *metav1.PartialObjectMetadata {
	m := &metav1.PartialObjectMetadata{}
	m.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
	return m
}

// annotation returns one annotation of Secret name, "" when the Secret does not exist.
func (w *Writer) annotation(ctx context.Context, name, key string) (string, error) {
	m := secretMeta()
	err := w.Reader.Get(ctx, types.NamespacedName{Namespace: w.Namespace, Name: name}, m)
	if apierrors.IsNotFound(err) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("reading secret %s/%s: %w", w.Namespace, name, err)
	}
	return m.GetAnnotations()[key], nil
}

func (w *Writer) labels(role string) map[string]string {
	l := map[string]string{LabelTable: w.Name, LabelRole: role}
	for k, v := range w.Labels {
		l[k] = v
	}
	return l
}

func (w *Writer) apply(ctx context.Context, s *corev1ac.SecretApplyConfiguration) error {
	if o := w.Owner; o != nil {
		s.WithOwnerReferences(metav1ac.OwnerReference().WithAPIVersion(o.APIVersion).WithKind(o.Kind).
			WithName(o.Name).WithUID(o.UID).WithController(true).WithBlockOwnerDeletion(true))
	}
	if err := w.Client.Apply(ctx, s, client.FieldOwner(w.FieldOwner), client.ForceOwnership); err != nil {
		return fmt.Errorf("applying secret %s/%s: %w", w.Namespace, *s.Name, err)
	}
	return nil
}

// Write stores data (the table JSON) unless the stored table already has the same content.
// Shards whose hash is unchanged are not rewritten, the manifest is written last, and
// shards beyond the new count are deleted after it.
func (w *Writer) Write(ctx context.Context, data []byte) (WriteResult, error) {
	e, err := Encode(data)
	if err != nil {
		return WriteResult{}, err
	}
	res := WriteResult{Shards: len(e.Shards)}
	for i, shard := range e.Shards {
		res.CompressedBytes += len(shard)
		name := ShardName(w.Name, i)
		have, err := w.annotation(ctx, name, AnnotationShardSHA256)
		if err != nil {
			return res, err
		}
		if have == e.ShardSHA256[i] {
			continue
		}
		s := corev1ac.Secret(name, w.Namespace).
			WithLabels(w.labels(RoleShard)).
			WithAnnotations(map[string]string{AnnotationShardSHA256: e.ShardSHA256[i]}).
			WithType(corev1.SecretTypeOpaque).
			WithData(map[string][]byte{DataKey: shard})
		if err := w.apply(ctx, s); err != nil {
			return res, err
		}
		res.ShardsWritten++
	}
	want := e.Annotations()
	have, err := w.annotation(ctx, ManifestName(w.Name), AnnotationShards)
	if err != nil {
		return res, err
	}
	haveSum, err := w.annotation(ctx, ManifestName(w.Name), AnnotationSHA256)
	if err != nil {
		return res, err
	}
	if have != want[AnnotationShards] || haveSum != want[AnnotationSHA256] {
		s := corev1ac.Secret(ManifestName(w.Name), w.Namespace).
			WithLabels(w.labels(RoleManifest)).
			WithAnnotations(want).
			WithType(corev1.SecretTypeOpaque)
		if err := w.apply(ctx, s); err != nil {
			return res, err
		}
		res.ManifestWritten = true
	}
	n, err := w.deleteExtraShards(ctx, len(e.Shards))
	res.ShardsDeleted = n
	return res, err
}

// deleteExtraShards deletes shard Secrets with an index of keep or more.
func (w *Writer) deleteExtraShards(ctx context.Context, keep int) (int, error) {
	list := &metav1.PartialObjectMetadataList{}
	list.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("SecretList"))
	if err := w.Reader.List(ctx, list, client.InNamespace(w.Namespace),
		client.MatchingLabels{LabelTable: w.Name, LabelRole: RoleShard}); err != nil {
		return 0, fmt.Errorf("listing table shards in %s: %w", w.Namespace, err)
	}
	prefix := ShardName(w.Name, 0)
	prefix = prefix[:len(prefix)-1]
	deleted := 0
	for i := range list.Items {
		m := &list.Items[i]
		idx, err := strconv.Atoi(strings.TrimPrefix(m.Name, prefix))
		if !strings.HasPrefix(m.Name, prefix) || err != nil || idx < keep {
			continue
		}
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: m.Namespace, Name: m.Name}}
		if err := w.Client.Delete(ctx, s); client.IgnoreNotFound(err) != nil {
			return deleted, fmt.Errorf("deleting table shard %s/%s: %w", m.Namespace, m.Name, err)
		}
		deleted++
	}
	return deleted, nil
}

// Read returns the stored table (its JSON) through a client, checking it against the
// manifest like the receiver does; for tests and tools. r must be able to read whole
// Secrets (an uncached reader in the manager).
func Read(ctx context.Context, r client.Reader, namespace, name string) ([]byte, error) {
	manifest := &corev1.Secret{}
	if err := r.Get(ctx, types.NamespacedName{Namespace: namespace, Name: ManifestName(name)}, manifest); err != nil {
		return nil, fmt.Errorf("reading table manifest %s/%s: %w", namespace, ManifestName(name), err)
	}
	m, err := ParseManifest(manifest.Annotations)
	if err != nil {
		return nil, err
	}
	var readErr error
	data, err := Decode(m, func(i int) ([]byte, bool) {
		s := &corev1.Secret{}
		if err := r.Get(ctx, types.NamespacedName{Namespace: namespace, Name: ShardName(name, i)}, s); err != nil {
			readErr = err
			return nil, false
		}
		return shardData(s)
	})
	if err != nil {
		if readErr != nil && !apierrors.IsNotFound(readErr) {
			return nil, fmt.Errorf("reading table shard: %w", readErr)
		}
		return nil, err
	}
	return data, nil
}
