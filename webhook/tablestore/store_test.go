package tablestore

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/callback-router/callback-router/internal/testenv"
)

// Test timeouts.
const (
	// waitTimeout bounds each wait for the watcher to see a write.
	waitTimeout = 20 * time.Second
)

var (
	cfg *rest.Config
	k8s client.Client
)

func TestMain(m *testing.M) {
	env, c, err := testenv.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	cfg = c
	k8s, err = client.New(cfg, client.Options{Scheme: scheme.Scheme})
	code := 1
	if err == nil {
		code = m.Run()
	} else {
		fmt.Fprintln(os.Stderr, err)
	}
	if err := env.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "stopping envtest:", err)
	}
	os.Exit(code)
}

func newNamespace(t *testing.T) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "table-"}}
	if err := k8s.Create(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
	return ns.Name
}

func newWriter(ns string) *Writer {
	return &Writer{Client: k8s, Reader: k8s, Namespace: ns, Name: "rx", FieldOwner: "test",
		Labels: map[string]string{"app.kubernetes.io/managed-by": "callback-router"}}
}

func TestWriterSkipsUnchangedAndShrinks(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := newNamespace(t)
	w := newWriter(ns)

	big := bigTable(t, 3<<20)
	res, err := w.Write(ctx, big)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(res).To(Equal(WriteResult{ShardsWritten: 3, ManifestWritten: true, Shards: 3, CompressedBytes: res.CompressedBytes}))
	got, err := Read(ctx, k8s, ns, "rx")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(got).To(Equal(big))

	res, err = w.Write(ctx, big)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(res.Changed()).To(BeFalse(), "an unchanged table is not rewritten: %+v", res)

	small := []byte(`{"routes":[]}`)
	res, err = w.Write(ctx, small)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(res.ShardsWritten).To(Equal(1))
	g.Expect(res.ShardsDeleted).To(Equal(2))
	got, err = Read(ctx, k8s, ns, "rx")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(got).To(Equal(small))

	list := &corev1.SecretList{}
	g.Expect(k8s.List(ctx, list, client.InNamespace(ns), client.MatchingLabels{LabelTable: "rx"})).To(Succeed())
	g.Expect(list.Items).To(HaveLen(2), "manifest and one shard remain")
	for _, s := range list.Items {
		g.Expect(s.Labels).To(HaveKeyWithValue("app.kubernetes.io/managed-by", "callback-router"))
		total := 0
		for _, v := range s.Data {
			total += len(v)
		}
		g.Expect(total).To(BeNumerically("<", 1<<20))
	}

	// A shard deleted behind the writer's back is restored by the next write.
	g.Expect(k8s.Delete(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: ShardName("rx", 0)}})).To(Succeed())
	res, err = w.Write(ctx, small)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(res.ShardsWritten).To(Equal(1))
	got, err = Read(ctx, k8s, ns, "rx")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(got).To(Equal(small))
}

// tables collects what WatchBytes delivers.
type tables struct {
	mu  sync.Mutex
	got [][]byte
}

func (tb *tables) add(data []byte, _ string) {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	tb.got = append(tb.got, data)
}

func (tb *tables) all() [][]byte {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	return append([][]byte(nil), tb.got...)
}

func TestWatchSeesOnlyCompleteTables(t *testing.T) {
	g := NewWithT(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ns := newNamespace(t)
	w := newWriter(ns)

	first := bigTable(t, 2<<20)
	_, err := w.Write(ctx, first)
	g.Expect(err).NotTo(HaveOccurred())

	tb := &tables{}
	done := make(chan error, 1)
	go func() { done <- WatchBytes(ctx, cfg, ns, "rx", 0, tb.add) }()
	g.Eventually(tb.all, waitTimeout).Should(Equal([][]byte{first}))

	// Half a write: the new table's first shard only, without its manifest. The watcher
	// must keep the first table rather than deliver a mix.
	second := bigTable(t, 2<<20)
	e, err := Encode(second)
	g.Expect(err).NotTo(HaveOccurred())
	shard := &corev1.Secret{}
	g.Expect(k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: ShardName("rx", 0)}, shard)).To(Succeed())
	shard.Data[DataKey] = e.Shards[0]
	g.Expect(k8s.Update(ctx, shard)).To(Succeed())
	g.Consistently(tb.all, 2*time.Second).Should(Equal([][]byte{first}))

	// The complete write is delivered once.
	_, err = w.Write(ctx, second)
	g.Expect(err).NotTo(HaveOccurred())
	g.Eventually(tb.all, waitTimeout).Should(Equal([][]byte{first, second}))

	// Unrelated Secrets in the namespace are not the table's business.
	other := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "unrelated"}, StringData: map[string]string{"a": "b"}}
	g.Expect(k8s.Create(ctx, other)).To(Succeed())
	g.Consistently(tb.all, time.Second).Should(HaveLen(2))

	// Deleting the whole table does not retract the last good one.
	g.Expect(k8s.DeleteAllOf(ctx, &corev1.Secret{}, client.InNamespace(ns), client.MatchingLabels{LabelTable: "rx"})).To(Succeed())
	g.Consistently(tb.all, time.Second).Should(HaveLen(2))

	cancel()
	g.Eventually(done, waitTimeout).Should(Receive(BeNil()))
}
