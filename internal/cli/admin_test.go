package cli

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/callback-router/callback-router/webhook/callback"
	"github.com/callback-router/callback-router/webhook/samples"
	"github.com/callback-router/callback-router/webhook/spool"
)

// runCLI runs a subcommand through the dispatcher and returns what it printed.
func runCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	old := deadLettersOut
	deadLettersOut = &out
	defer func() { deadLettersOut = old }()
	err := Run(args)
	return out.String(), err
}

// TestAdminAPI runs the real binary with --admin-listen and --retention: a callback its
// backend refuses (400) becomes a dead letter, which `deadletters list --admin` shows and
// `deadletters redrive --admin` sends again once the backend is fixed, while the receiver
// runs; the delivered callback is then kept and `replay --admin` sends it again by
// callback ID and by time range. Every resend carries the original X-Callback-Id and
// X-Callback-Replay: true.
//
//nolint:gocyclo // one end-to-end scenario told in order; the branches are its waits and checks
func TestAdminAPI(t *testing.T) {
	var broken atomic.Bool
	broken.Store(true)
	var mu sync.Mutex
	var got []http.Header
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, r.Header.Clone())
		mu.Unlock()
		if broken.Load() {
			http.Error(w, `{"error":"schema"}`, http.StatusBadRequest)
			return
		}
		_, _ = io.WriteString(w, `{}`)
	}))
	defer be.Close()
	dir := t.TempDir()
	routes := filepath.Join(dir, "routes.yaml")
	if err := os.WriteFile(routes, []byte(strings.ReplaceAll(tracingRoutes, "BACKEND", be.URL)), 0o600); err != nil {
		t.Fatal(err)
	}
	adminAddr := freeAddr(t)
	_, addr, _ := startReceiver(t, "--routes", routes, "--spool-dir", filepath.Join(dir, "spool"),
		"--admin-listen", adminAddr, "--retention", "1h")
	adminURL := "http://" + adminAddr

	before := time.Now().Add(-time.Second)
	rt := strconv.FormatInt(time.Now().Unix(), 10)
	q := url.Values{"SdkAppid": {"1400000001"}, "CallbackCommand": {"C2C.CallbackAfterSendMsg"}, "contenttype": {"json"},
		"RequestTime": {rt}, "Sign": {callback.TencentSign("cli-token", rt)}}
	c2c, _ := samples.Get("tencent-c2c-after-send")
	resp, err := http.Post("http://"+addr+"/tencent?"+q.Encode(), "application/json", bytes.NewReader(c2c.Body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	const id = "C2C.CallbackAfterSendMsg:48374_2837546_1557481126"

	var dls []spool.DeadLetter
	for deadline := time.Now().Add(10 * time.Second); len(dls) == 0; time.Sleep(50 * time.Millisecond) {
		out, err := runCLI(t, "deadletters", "list", "--admin", adminURL, "--route", "chat/archive", "--output", "json")
		if err != nil {
			t.Fatalf("list: %v", err)
		}
		if err := json.Unmarshal([]byte(out), &dls); err != nil {
			t.Fatalf("list output %q: %v", out, err)
		}
		if time.Now().After(deadline) {
			t.Fatal("no dead letter listed")
		}
	}
	if len(dls) != 1 || dls[0].ID != id || !strings.HasPrefix(dls[0].LastError, "HTTP 400") {
		t.Fatalf("dead letters %+v", dls)
	}

	waitHeaders := func(n int) []http.Header {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			mu.Lock()
			hs := append([]http.Header(nil), got...)
			mu.Unlock()
			if len(hs) >= n {
				return hs
			}
			if time.Now().After(deadline) {
				t.Fatalf("backend got %d requests, want %d", len(hs), n)
			}
		}
	}
	checkReplay := func(h http.Header, what string) {
		t.Helper()
		if h.Get(callback.HeaderID) != id || h.Get(callback.HeaderReplay) != "true" || h.Get(callback.HeaderAttempt) != "1" {
			t.Errorf("%s: headers %v, want X-Callback-Id %s, X-Callback-Replay true, attempt 1", what, h, id)
		}
	}
	if h := waitHeaders(1)[0]; h.Get(callback.HeaderReplay) != "" {
		t.Errorf("the first delivery is marked as a replay: %v", h)
	}

	broken.Store(false)
	out, err := runCLI(t, "deadletters", "redrive", "--admin", adminURL, "--route", "chat/archive")
	if err != nil || !strings.Contains(out, "Redrove 1 dead letters") {
		t.Fatalf("redrive: %v %s", err, out)
	}
	checkReplay(waitHeaders(2)[1], "redriven")

	// Delivered and retained: replay by ID, then by time range.
	var delivered []spool.DeadLetter
	for deadline := time.Now().Add(10 * time.Second); len(delivered) == 0; time.Sleep(50 * time.Millisecond) {
		if err := adminCall(adminURL, http.MethodGet, "/admin/v1/delivered", url.Values{"route": {"chat/archive"}}, nil, &delivered); err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatal("the delivered callback is not retained")
		}
	}
	out, err = runCLI(t, "replay", "--admin", adminURL, "--route", "chat/archive", "--source", "Delivered", "--id", id)
	if err != nil || !strings.Contains(out, "Matched 1, replayed 1") {
		t.Fatalf("replay by id: %v %s", err, out)
	}
	checkReplay(waitHeaders(3)[2], "replayed by id")

	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		out, err = runCLI(t, "replay", "--admin", adminURL, "--route", "chat/archive", "--source", "Delivered",
			"--from", before.UTC().Format(time.RFC3339), "--to", time.Now().Add(time.Minute).UTC().Format(time.RFC3339))
		if err != nil {
			t.Fatalf("replay by time: %v", err)
		}
		if strings.Contains(out, "Matched 1, replayed 1") {
			break
		}
		if time.Now().After(deadline) { // the previous replay's delivery must be recorded first
			t.Fatalf("replay by time: %s", out)
		}
	}
	checkReplay(waitHeaders(4)[3], "replayed by time range")
	out, _ = runCLI(t, "replay", "--admin", adminURL, "--route", "chat/other", "--source", "Delivered", "--id", id)
	if !strings.Contains(out, "Matched 0, replayed 0") {
		t.Errorf("replay of another route: %s", out)
	}
	if _, err := runCLI(t, "replay", "--admin", adminURL, "--route", "chat/archive", "--source", "Nope"); err == nil {
		t.Error("replay with a bad source: no error")
	}

	// The admin API never shares the callback port.
	p := freeAddr(t)
	b, err := exec.Command(binary(t), "receiver", "--listen", p, "--admin-listen", p, "--routes", routes,
		"--spool-dir", filepath.Join(dir, "other")).CombinedOutput()
	if err == nil || !strings.Contains(string(b), "must not share the callback port") {
		t.Errorf("--admin-listen on the callback port: %v %s", err, b)
	}
}
