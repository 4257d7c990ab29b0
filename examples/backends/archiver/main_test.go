package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

func deliver(t *testing.T, url, id string, body []byte, attempt string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if id != "" {
		req.Header.Set("X-Callback-Id", id)
	}
	req.Header.Set("X-Callback-Provider", "TencentIM")
	req.Header.Set("X-Callback-Command", "C2C.CallbackAfterSendMsg")
	req.Header.Set("X-Callback-Route", "chat/archive-messages")
	req.Header.Set("X-Callback-Attempt", attempt)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func stored(t *testing.T, dir string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func TestArchiverDedupesOnCallbackID(t *testing.T) {
	dir := t.TempDir()
	srv := httptest.NewServer(&Archive{Dir: dir})
	defer srv.Close()
	body, err := os.ReadFile("testdata/tencent-c2c-after-send.json")
	if err != nil {
		t.Fatal(err)
	}
	const id = "C2C.CallbackAfterSendMsg:48374_2837546_1557481126" // the X-Callback-Id of this C2C message

	// A retry (attempt 2) and eight concurrent duplicates, as several receiver replicas or
	// a platform-side retry could produce: stored once, every delivery acknowledged.
	if code := deliver(t, srv.URL, id, body, "1"); code != http.StatusNoContent {
		t.Fatalf("first delivery: %d", code)
	}
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if code := deliver(t, srv.URL, id, body, "2"); code != http.StatusNoContent {
				t.Errorf("duplicate delivery: %d, want 204 (a duplicate is a success)", code)
			}
		}()
	}
	wg.Wait()
	files := stored(t, dir)
	if len(files) != 1 {
		t.Fatalf("%d files stored for one callback, want 1", len(files))
	}
	got, err := os.ReadFile(files[0])
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("stored body differs from the delivered one (err %v)", err)
	}
	if code := deliver(t, srv.URL, "another-id", body, "1"); code != http.StatusNoContent || len(stored(t, dir)) != 2 {
		t.Fatalf("a different X-Callback-Id was not stored separately (status %d)", code)
	}
	if code := deliver(t, srv.URL, "", body, "1"); code != http.StatusBadRequest {
		t.Fatalf("no X-Callback-Id: %d, want 400", code)
	}
}

func TestArchiverAsksForRetryWhenStorageFails(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "missing") // never created: every write fails
	srv := httptest.NewServer(&Archive{Dir: dir})
	defer srv.Close()
	if code := deliver(t, srv.URL, "id-1", []byte(`{}`), "1"); code != http.StatusServiceUnavailable {
		t.Fatalf("storage failure answered %d, want 503 so that callback-router retries", code)
	}
}
