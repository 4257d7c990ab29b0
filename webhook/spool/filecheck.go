package spool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"io/fs"
	"os"
)

// ErrTruncated is returned by Open for a spool file shorter than its own last
// transaction says it is (a disk or copy that lost its tail). bbolt maps the file into
// memory and would crash the process with SIGBUS on reading past its end, on every
// start; Open refuses it with an error naming the file instead.
var ErrTruncated = errors.New("spool file is truncated")

// bbolt's file layout (go.etcd.io/bbolt/internal/common): each of the first two pages
// holds a page header (16 bytes) then a meta record, whose pgid is the file's high-water
// mark: every page below it may be read.
const (
	boltPageHeaderSize = 16
	boltMetaSize       = 64 // magic, version, pageSize, flags, root (16), freelist, pgid, txid, checksum
	boltMetaChecksumAt = 56 // the checksum covers the meta record before it
	boltMagic          = 0xED0CDAED
	boltVersion        = 2
)

// boltMeta is what checkFile reads of a meta record.
type boltMeta struct {
	pageSize uint32
	pgid     uint64
	txid     uint64
}

// readBoltMeta reads and validates the meta record of the page at off.
func readBoltMeta(f io.ReaderAt, off int64) (boltMeta, bool) {
	var b [boltPageHeaderSize + boltMetaSize]byte
	if _, err := f.ReadAt(b[:], off); err != nil {
		return boltMeta{}, false
	}
	m := b[boltPageHeaderSize:]
	le := binary.LittleEndian // bbolt writes in the host's order; the receiver runs on little-endian hosts
	if le.Uint32(m[0:]) != boltMagic || le.Uint32(m[4:]) != boltVersion {
		return boltMeta{}, false
	}
	h := fnv.New64a()
	_, _ = h.Write(m[:boltMetaChecksumAt])
	if h.Sum64() != le.Uint64(m[boltMetaChecksumAt:]) {
		return boltMeta{}, false
	}
	return boltMeta{pageSize: le.Uint32(m[8:]), pgid: le.Uint64(m[40:]), txid: le.Uint64(m[48:])}, true
}

// checkFile looks at the spool file at path before bbolt maps it: empty reports a file
// of 0 bytes (bbolt starts a new spool in it); ErrTruncated a file shorter than its
// newest valid meta record's high-water mark. A file whose meta records are both
// invalid is left to bbolt, which refuses it with an error.
func checkFile(path string) (empty bool, err error) {
	f, err := os.Open(path) //nolint:gosec // the operator chooses the spool dir (--spool-dir)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer func() { _ = f.Close() }()
	st, err := f.Stat()
	if err != nil {
		return false, err
	}
	size := st.Size()
	if size == 0 {
		return true, nil
	}
	m0, ok0 := readBoltMeta(f, 0)
	pageSize := int64(os.Getpagesize())
	if ok0 {
		pageSize = int64(m0.pageSize)
	}
	m1, ok1 := readBoltMeta(f, pageSize)
	m := m0
	switch {
	case ok0 && ok1 && m1.txid > m0.txid, !ok0 && ok1:
		m = m1
	case !ok0 && !ok1:
		return false, nil
	}
	if need := int64(m.pgid) * int64(m.pageSize); size < need {
		return false, fmt.Errorf("%w: %s is %d bytes, but its last transaction (%d) uses %d bytes (%d pages of %d); "+
			"it cannot be read safely: move it aside to start with an empty spool (the callbacks it held are then lost unless the file is restored)",
			ErrTruncated, path, size, m.txid, need, m.pgid, m.pageSize)
	}
	return false, nil
}
