package spool

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/go-logr/logr/funcr"

	"github.com/callback-router/callback-router/webhook/callback"
)

// fillSpool stores n callbacks in a spool in dir (pending: nothing delivers them) and
// closes it, returning the bytes its last transaction uses (bbolt's high-water mark; the
// file is longer, grown ahead in large steps).
func fillSpool(t *testing.T, dir string, n int) int64 {
	t.Helper()
	s, err := Open(dir, Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	tg := []callback.Target{target("ns/r", "http://"+downAddr(t), 3)}
	for i := range n {
		if err := s.Enqueue(context.Background(), sampleCallback(t, i), tg); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(dir, FileName))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m0, ok0 := readBoltMeta(f, 0)
	m1, ok1 := readBoltMeta(f, int64(m0.pageSize))
	if !ok0 || !ok1 {
		t.Fatal("meta pages not readable")
	}
	m := max(m0.pgid, m1.pgid)
	return int64(m) * int64(m0.pageSize)
}

// TestOpenTruncatedFile: a spool file that lost its tail is refused with an error naming
// it, wherever it was cut; bbolt alone dies of SIGBUS on it, on every start.
func TestOpenTruncatedFile(t *testing.T) {
	src := t.TempDir()
	size := fillSpool(t, src, 600)
	orig, err := os.ReadFile(filepath.Join(src, FileName))
	if err != nil {
		t.Fatal(err)
	}
	if size < 64<<10 {
		t.Fatalf("the spool uses only %d bytes; the test needs more", size)
	}
	for _, cut := range []int64{8 << 10, 64 << 10, size / 2, size - 4096} {
		dir := t.TempDir()
		path := filepath.Join(dir, FileName)
		if err := os.WriteFile(path, orig[:cut], 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := Open(dir, Options{})
		if err == nil {
			_ = s.Close()
			t.Errorf("cut at %d of %d bytes: opened", cut, size)
			continue
		}
		if !errors.Is(err, ErrTruncated) || !strings.Contains(err.Error(), path) {
			t.Errorf("cut at %d of %d bytes: %v; want ErrTruncated naming %s", cut, size, err, path)
		}
	}
	// Cut past the high-water mark (bbolt grows the file ahead of use), or whole: it
	// opens, with everything in it.
	if err := os.Truncate(filepath.Join(src, FileName), size); err != nil {
		t.Fatal(err)
	}
	s, reg := openSpool(t, src, Options{})
	if p := metricValue(t, reg, "callback_router_spool_depth", map[string]string{"route": "ns/r"}); p != 600 {
		t.Errorf("%v pending after reopening, want 600", p)
	}
	_ = s
}

// TestOpenEmptyFileWarns: a spool file of 0 bytes (found so at start) is used, and the
// start says so.
func TestOpenEmptyFileWarns(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, FileName), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var lines []string
	log := funcr.New(func(prefix, args string) {
		mu.Lock()
		lines = append(lines, args)
		mu.Unlock()
	}, funcr.Options{})
	s, err := Open(dir, Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	mu.Lock()
	defer mu.Unlock()
	for _, l := range lines {
		if strings.Contains(l, "Spool file was empty") && strings.Contains(l, filepath.Join(dir, FileName)) {
			return
		}
	}
	t.Errorf("no warning about the empty file; logged: %q", lines)
}
