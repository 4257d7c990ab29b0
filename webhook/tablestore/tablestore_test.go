package tablestore

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"testing"

	. "github.com/onsi/gomega"
)

// bigTable returns n bytes of JSON-ish data that compress poorly enough to need shards.
func bigTable(t *testing.T, n int) []byte {
	t.Helper()
	raw := make([]byte, n/2)
	if _, err := rand.Read(raw); err != nil {
		t.Fatal(err)
	}
	return []byte(hex.EncodeToString(raw))
}

func TestEncodeDecode(t *testing.T) {
	tests := map[string]struct {
		// data is the table.
		data []byte
		// shards is the expected shard count.
		shards int
	}{
		"small table in one shard": {data: []byte(`{"routes":[]}`), shards: 1},
		"repetitive 5 MB compresses into one shard": {
			data: bytes.Repeat([]byte(`{"namespace":"team","name":"route","provider":"TencentIM"},`), 90_000), shards: 1},
		"incompressible 3 MB needs several shards": {data: bigTable(t, 3<<20), shards: 3},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			g := NewWithT(t)
			e, err := Encode(tc.data)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(e.Shards).To(HaveLen(tc.shards))
			for _, s := range e.Shards {
				g.Expect(len(s)).To(BeNumerically("<=", MaxShardBytes))
			}
			again, err := Encode(tc.data)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(again).To(Equal(e), "encoding is deterministic")

			m, err := ParseManifest(e.Annotations())
			g.Expect(err).NotTo(HaveOccurred())
			got, err := Decode(m, func(i int) ([]byte, bool) { return e.Shards[i], true })
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(got).To(Equal(tc.data))
		})
	}
}

func TestDecodeRejectsInconsistentShards(t *testing.T) {
	data := bigTable(t, 2<<20)
	e, err := Encode(data)
	if err != nil {
		t.Fatal(err)
	}
	other, err := Encode(bigTable(t, 2<<20))
	if err != nil {
		t.Fatal(err)
	}
	m, err := ParseManifest(e.Annotations())
	if err != nil {
		t.Fatal(err)
	}
	tests := map[string]func(i int) ([]byte, bool){
		"a shard is missing": func(i int) ([]byte, bool) { return e.Shards[i], i != 1 },
		"a shard is from another table (write in progress)": func(i int) ([]byte, bool) {
			if i == 1 {
				return other.Shards[1], true
			}
			return e.Shards[i], true
		},
		"a shard is truncated": func(i int) ([]byte, bool) { return e.Shards[i][:10], true },
	}
	for name, shard := range tests {
		t.Run(name, func(t *testing.T) {
			g := NewWithT(t)
			_, err := Decode(m, shard)
			g.Expect(errors.Is(err, errIncomplete)).To(BeTrue(), "got %v", err)
		})
	}
	t.Run("manifest hash differs from the content", func(t *testing.T) {
		g := NewWithT(t)
		bad := *m
		bad.SHA256 = other.SHA256
		_, err := Decode(&bad, func(i int) ([]byte, bool) { return e.Shards[i], true })
		g.Expect(errors.Is(err, errIncomplete)).To(BeTrue(), "got %v", err)
	})
}

func TestParseManifest(t *testing.T) {
	sum := hexSHA([]byte("x"))
	tests := map[string]struct {
		annotations map[string]string
		// ok says whether the manifest parses.
		ok bool
	}{
		"complete":        {annotations: map[string]string{AnnotationSHA256: sum, AnnotationShards: sum + "," + sum}, ok: true},
		"no annotations":  {annotations: nil},
		"short hash":      {annotations: map[string]string{AnnotationSHA256: "abc", AnnotationShards: sum}},
		"no shard list":   {annotations: map[string]string{AnnotationSHA256: sum}},
		"too many shards": {annotations: map[string]string{AnnotationSHA256: sum, AnnotationShards: manyShards(MaxShards + 1)}},
		"max shard count": {annotations: map[string]string{AnnotationSHA256: sum, AnnotationShards: manyShards(MaxShards)}, ok: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := ParseManifest(tc.annotations)
			NewWithT(t).Expect(err == nil).To(Equal(tc.ok), "err: %v", err)
		})
	}
}

func manyShards(n int) string {
	var b bytes.Buffer
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%064x", i)
	}
	return b.String()
}

func BenchmarkEncode10kRoutes(b *testing.B) {
	var buf bytes.Buffer
	buf.WriteString(`{"routes":[`)
	for i := range 10_000 {
		if i > 0 {
			buf.WriteByte(',')
		}
		fmt.Fprintf(&buf, `{"namespace":"team-%d","name":"route-%d","provider":"TencentIM","appID":"14000%05d","commands":["C2C.CallbackAfterSendMsg","Group.*"],"mode":"Async","url":"http://svc-%d.team-%d.svc:8080/im","timeout":10000000000,"failurePolicy":"Allow","tokens":["%064x"],"maxRequestAge":300000000000,"maxAttempts":10,"initialBackoff":1000000000,"maxBackoff":300000000000,"createdAt":"2026-11-22T02:00:00Z"}`, i%100, i, i, i, i%100, i)
	}
	buf.WriteString(`]}`)
	data := buf.Bytes()
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	var e *Encoded
	for b.Loop() {
		var err error
		if e, err = Encode(data); err != nil {
			b.Fatal(err)
		}
	}
	total := 0
	for _, s := range e.Shards {
		total += len(s)
	}
	b.ReportMetric(float64(total), "compressed-bytes")
	b.ReportMetric(float64(len(e.Shards)), "shards")
}
