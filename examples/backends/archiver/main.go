// Command archiver is an example Async backend for callback-router: it stores every callback
// it receives exactly once, deduplicating on X-Callback-Id. callback-router delivers Async
// callbacks at least once (it retries until it sees a 2xx, and Tencent or OpenIM may send the
// same event twice), so a backend that must not double-count dedupes on that header: it is
// the same on every retry and from every receiver replica. See docs/backends.md.
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

// Limits of the example server.
const (
	// maxBody bounds a callback body; callback-router already caps them at 1 MiB.
	maxBody = 1 << 20
	// readTimeout bounds reading one request.
	readTimeout = 10 * time.Second
)

// Archive stores callbacks as files named after their X-Callback-Id, one per callback.
type Archive struct {
	// Dir holds one file per stored callback.
	Dir string
}

// Store writes body under id unless a callback with that id is already stored. It reports
// whether this call stored it. The file appears atomically and complete (write a temporary
// file, fsync, then hard-link it to its final name, which fails if the name exists), so two
// concurrent deliveries of the same callback store it once and a crash leaves no half file.
func (a *Archive) Store(id string, body []byte) (bool, error) {
	sum := sha256.Sum256([]byte(id))
	final := filepath.Join(a.Dir, hex.EncodeToString(sum[:])+".json")
	tmp, err := os.CreateTemp(a.Dir, ".incoming-*")
	if err != nil {
		return false, fmt.Errorf("creating temporary file: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(body); err != nil {
		_ = tmp.Close()
		return false, fmt.Errorf("writing %s: %w", tmp.Name(), err)
	}
	if err := tmp.Sync(); err != nil {
		_ = tmp.Close()
		return false, fmt.Errorf("syncing %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return false, fmt.Errorf("closing %s: %w", tmp.Name(), err)
	}
	if err := os.Link(tmp.Name(), final); err != nil {
		if errors.Is(err, os.ErrExist) {
			return false, nil // a duplicate: already archived
		}
		return false, fmt.Errorf("linking %s: %w", final, err)
	}
	return true, nil
}

// ServeHTTP archives one callback. 2xx tells callback-router the delivery succeeded; a 5xx
// (or 408/429, optionally with Retry-After) makes it retry later with backoff, so any
// failure to store durably must answer 5xx, never 2xx.
func (a *Archive) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id := r.Header.Get("X-Callback-Id")
	if id == "" {
		http.Error(w, "missing X-Callback-Id", http.StatusBadRequest)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody))
	if err != nil {
		http.Error(w, "reading body", http.StatusBadRequest)
		return
	}
	stored, err := a.Store(id, body)
	if err != nil {
		log.Printf("storing callback %q: %v", id, err) //nolint:gosec // %q escapes control characters: a header cannot forge log lines
		w.Header().Set("Retry-After", "30")
		http.Error(w, "storage unavailable", http.StatusServiceUnavailable)
		return
	}
	//nolint:gosec // %q escapes control characters: a header cannot forge log lines
	log.Printf("callback %q %q/%q route=%q attempt=%q stored=%t", id,
		r.Header.Get("X-Callback-Provider"), r.Header.Get("X-Callback-Command"),
		r.Header.Get("X-Callback-Route"), r.Header.Get("X-Callback-Attempt"), stored)
	w.WriteHeader(http.StatusNoContent)
}

func main() {
	listen := flag.String("listen", "127.0.0.1:8080", "address to serve on")
	dir := flag.String("dir", "archive", "directory to store callbacks in")
	flag.Parse()
	if err := os.MkdirAll(*dir, 0o750); err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Addr: *listen, Handler: &Archive{Dir: *dir}, ReadHeaderTimeout: readTimeout, ReadTimeout: readTimeout}
	log.Printf("archiver on %s, storing in %s", *listen, *dir)
	log.Fatal(srv.ListenAndServe())
}
