package receiver

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/callback-router/callback-router/webhook/callback"
	"github.com/callback-router/callback-router/webhook/spool"
)

// TestOperationIDForwardedSync: OpenIM's operationID header reaches the Sync backend;
// an invalid one is not forwarded; Tencent IM callbacks never carry one.
func TestOperationIDForwardedSync(t *testing.T) { testOperationIDForwardedSync(t) }

func testOperationIDForwardedSync(t *testing.T) {
	be := newBackend(t, nil)
	f := newFixture(t, routesYAML(be.URL), nil)
	for _, c := range []struct{ sent, want string }{
		{"1700000000123-8675309", "1700000000123-8675309"},
		{strings.Repeat("x", MaxOperationIDBytes+1), ""},
		{"has space", ""},
		{"", ""},
	} {
		hdr := map[string]string{"Authorization": openIMAuth}
		if c.sent != "" {
			hdr["operationID"] = c.sent
		}
		if status, body, _ := post(t, f.url+"/openim/prod/callbackBeforeSendSingleMsgCommand", []byte(`{}`), hdr); status != 200 {
			t.Fatalf("got %d %s", status, body)
		}
		reqs := be.take()
		if len(reqs) != 1 {
			t.Fatalf("backend got %d requests", len(reqs))
		}
		if got := reqs[0].header.Get(callback.HeaderOperationID); got != c.want {
			t.Errorf("sent operationID %q: backend got %q, want %q", c.sent, got, c.want)
		}
	}
	post(t, tencentURL(f.url, "1400000001", "C2C.CallbackBeforeSendMsg", testToken, now), []byte(`{}`), map[string]string{"operationID": "op-1"})
	if reqs := be.take(); len(reqs) != 1 || reqs[0].header.Get(callback.HeaderOperationID) != "" {
		t.Errorf("Tencent IM callback: backend got %d requests, operationID %q", len(reqs), reqs[0].header.Get(callback.HeaderOperationID))
	}
}

// TestOperationIDForwardedAsync: an OpenIM Async copy keeps its operationID in the spool:
// acknowledged while its backend is down and the spool is not delivering, the receiver's
// spool closed and opened again (a restart), it is delivered with the header.
func TestOperationIDForwardedAsync(t *testing.T) {
	var mu sync.Mutex
	var got []string
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, r.Header.Get(callback.HeaderOperationID))
		mu.Unlock()
	})
	dir := t.TempDir()
	sp, err := spool.Open(dir, spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	// Not running: nothing is delivered before the restart.
	f := newFixture(t, routesYAML(be.URL), func(o *Options) { o.Sink = sp })
	hdr := map[string]string{"Authorization": openIMAuth, "operationID": "op-async-1"}
	if status, body, _ := post(t, f.url+"/openim/prod/callbackAfterSendSingleMsgCommand", []byte(`{"serverMsgID":"m1"}`), hdr); status != 200 {
		t.Fatalf("got %d %s", status, body)
	}
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}

	sp, err = spool.Open(dir, spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sp.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
		if err := sp.Close(); err != nil {
			t.Error(err)
		}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("not delivered after the restart")
		}
		time.Sleep(20 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if got[0] != "op-async-1" {
		t.Errorf("delivered after a restart with operationID %q, want op-async-1", got[0])
	}
}
