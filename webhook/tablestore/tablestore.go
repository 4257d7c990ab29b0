// Package tablestore stores the compiled routing table in Secrets of the receiver's
// namespace and watches it from the receiver.
//
// The table (JSON of routing.Snapshot) is gzip-compressed and split into shards of at most
// MaxShardBytes, each in a Secret named <table>-table-<n>, so that any table fits the API
// server's 1 MiB object limit. A manifest Secret named <table>-table lists the shard count,
// each shard's sha256 and the sha256 of the whole uncompressed table. The writer writes
// changed shards first and the manifest last; the reader assembles a table only when every
// shard matches the manifest, so it never sees a half-written table. Writes whose content
// is unchanged are skipped.
package tablestore

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Labels, annotations and keys of the table Secrets.
const (
	// LabelTable is on every table Secret; its value is the table (receiver) name.
	LabelTable = "callback-router.dev/table"
	// LabelRole says whether a table Secret is the manifest or a shard.
	LabelRole = "callback-router.dev/table-role"
	// RoleManifest is the LabelRole value of the manifest Secret.
	RoleManifest = "manifest"
	// RoleShard is the LabelRole value of a shard Secret.
	RoleShard = "shard"
	// AnnotationSHA256 is the sha256 (hex) of the whole uncompressed table, on the manifest.
	AnnotationSHA256 = "callback-router.dev/table-sha256"
	// AnnotationShards is the comma-separated list of the shards' sha256, in order, on the manifest.
	AnnotationShards = "callback-router.dev/table-shards"
	// AnnotationShardSHA256 is the sha256 (hex) of a shard's data, on each shard.
	AnnotationShardSHA256 = "callback-router.dev/shard-sha256"
	// DataKey is the Secret data key of a shard's bytes.
	DataKey = "table.json.gz"
)

// Limits.
const (
	// MaxShardBytes is the most compressed bytes one shard Secret holds: well under the
	// API server's 1 MiB limit on a Secret's data, leaving room for metadata.
	MaxShardBytes = 700 * 1024
	// MaxShards bounds the shard count (about 70 MB compressed), so a corrupt manifest
	// cannot make the reader wait for thousands of Secrets.
	MaxShards = 100
	// MaxTableBytes bounds the uncompressed table the reader accepts, a guard against a
	// corrupt or hostile table decompressing without end.
	MaxTableBytes = 1 << 30
)

// compressionLevel trades a slightly larger table for a faster publish: every route
// change recompresses the whole table.
const compressionLevel = gzip.DefaultCompression

// ManifestName is the name of the manifest Secret of table name.
func ManifestName(name string) string { return name + "-table" }

// ShardName is the name of shard i of table name.
func ShardName(name string, i int) string { return name + "-table-" + strconv.Itoa(i) }

// Encoded is a table ready to be written: its shards and hashes.
type Encoded struct {
	// SHA256 is the hex sha256 of the uncompressed table.
	SHA256 string
	// Shards are the consecutive pieces of the gzip stream.
	Shards [][]byte
	// ShardSHA256 are the hex sha256 of each shard.
	ShardSHA256 []string
}

func hexSHA(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// Encode compresses data and splits it into shards. The same data always gives the same
// shards, so unchanged tables are recognised by their hashes.
func Encode(data []byte) (*Encoded, error) {
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, compressionLevel)
	if err != nil {
		return nil, fmt.Errorf("creating gzip writer: %w", err)
	}
	if _, err := zw.Write(data); err != nil {
		return nil, fmt.Errorf("compressing table: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("compressing table: %w", err)
	}
	z := buf.Bytes()
	e := &Encoded{SHA256: hexSHA(data)}
	for len(z) > 0 {
		n := min(len(z), MaxShardBytes)
		e.Shards = append(e.Shards, z[:n:n])
		e.ShardSHA256 = append(e.ShardSHA256, hexSHA(z[:n]))
		z = z[n:]
	}
	if len(e.Shards) > MaxShards {
		return nil, fmt.Errorf("table of %d bytes needs %d shards, more than %d", len(data), len(e.Shards), MaxShards)
	}
	return e, nil
}

// Manifest is what the manifest Secret's annotations say.
type Manifest struct {
	SHA256      string
	ShardSHA256 []string
}

// ParseManifest reads a manifest from the manifest Secret's annotations.
func ParseManifest(annotations map[string]string) (*Manifest, error) {
	sum := annotations[AnnotationSHA256]
	if len(sum) != sha256.Size*2 {
		return nil, fmt.Errorf("manifest annotation %s is missing or malformed", AnnotationSHA256)
	}
	list := annotations[AnnotationShards]
	if list == "" {
		return nil, fmt.Errorf("manifest annotation %s is missing", AnnotationShards)
	}
	shards := strings.Split(list, ",")
	if len(shards) > MaxShards {
		return nil, fmt.Errorf("manifest lists %d shards, more than %d", len(shards), MaxShards)
	}
	return &Manifest{SHA256: sum, ShardSHA256: shards}, nil
}

// Annotations are the manifest annotations of an encoded table.
func (e *Encoded) Annotations() map[string]string {
	return map[string]string{AnnotationSHA256: e.SHA256, AnnotationShards: strings.Join(e.ShardSHA256, ",")}
}

// errIncomplete says that the shards present do not (yet) match the manifest.
var errIncomplete = errors.New("table shards do not match the manifest")

// Decode checks shards against the manifest, joins and decompresses them, and checks the
// table's hash. shard(i) returns the data of shard i, or false when it does not exist.
func Decode(m *Manifest, shard func(i int) ([]byte, bool)) ([]byte, error) {
	parts := make([]io.Reader, 0, len(m.ShardSHA256))
	for i, want := range m.ShardSHA256 {
		b, ok := shard(i)
		if !ok {
			return nil, fmt.Errorf("shard %d is missing: %w", i, errIncomplete)
		}
		if hexSHA(b) != want {
			return nil, fmt.Errorf("shard %d has another hash: %w", i, errIncomplete)
		}
		parts = append(parts, bytes.NewReader(b))
	}
	zr, err := gzip.NewReader(io.MultiReader(parts...))
	if err != nil {
		return nil, fmt.Errorf("opening compressed table: %w", err)
	}
	data, err := io.ReadAll(io.LimitReader(zr, MaxTableBytes+1))
	if err != nil {
		return nil, fmt.Errorf("decompressing table: %w", err)
	}
	if len(data) > MaxTableBytes {
		return nil, fmt.Errorf("table is larger than %d bytes", MaxTableBytes)
	}
	if hexSHA(data) != m.SHA256 {
		return nil, fmt.Errorf("table hash differs from the manifest: %w", errIncomplete)
	}
	return data, nil
}
