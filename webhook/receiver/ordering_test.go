package receiver

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/callback-router/callback-router/webhook/callback"
	"github.com/callback-router/callback-router/webhook/routing"
	"github.com/callback-router/callback-router/webhook/spool"
)

// TestOrderedRouteThroughTheDoor: the receiver computes each callback's conversation at
// the door and the spool keeps an ordered route's copies of one conversation in order: the
// first message of the chat jared<->Jonh fails twice, the chat's later messages (sent in
// both directions: one conversation) wait for it, and another chat is not held up.
func TestOrderedRouteThroughTheDoor(t *testing.T) {
	var mu sync.Mutex
	var got []string // "<from>-><to> #<MsgSeq>" in arrival order
	failures := 0
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		// The fixture's backend has read the body: the message is named by its MsgKey,
		// "<from>-><to> #<seq>", which X-Callback-Id carries after the command.
		_, msg, _ := strings.Cut(r.Header.Get(callback.HeaderID), ":")
		mu.Lock()
		got = append(got, msg)
		fail := strings.HasSuffix(msg, " #1") && failures < 2
		if fail {
			failures++
		}
		mu.Unlock()
		if fail {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	})
	sp, err := spool.Open(t.TempDir(), spool.Options{Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sp.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
		_ = sp.Close()
	})
	yaml := strings.ReplaceAll(`
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackRoute
metadata: {name: archive, namespace: a}
spec: {provider: TencentIM, appID: "1", commands: ["C2C.*"], backend: {url: BACKEND, path: /a}}
`, "BACKEND", be.URL)
	f := newFixture(t, "", func(o *Options) { o.Sink = sp })
	f.h.SetTable(tableWith(t, yaml, func(r *routing.CompiledRoute) {
		r.Ordered, r.InitialBackoff, r.MaxBackoff = true, 50*time.Millisecond, 50*time.Millisecond
	}))
	send := func(from, to string, seq int) {
		body := fmt.Appendf(nil, `{"From_Account":%q,"To_Account":%q,"MsgSeq":%d,"MsgKey":"%s->%s #%d"}`, from, to, seq, from, to, seq)
		if status, b, _ := post(t, tencentURL(f.url, "1", "C2C.CallbackAfterSendMsg", "", now), body, nil); status != 200 {
			t.Fatalf("got %d %s", status, b)
		}
	}
	send("jared", "Jonh", 1)
	send("Jonh", "jared", 2)
	send("jared", "Jonh", 3)
	send("ann", "bob", 7)
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n == 6 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("backend got %v", got)
		}
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	var chat []string
	annAt, firstOK := -1, -1
	for i, g := range got {
		if strings.HasPrefix(g, "ann") {
			annAt = i
			continue
		}
		chat = append(chat, g)
		if g == "jared->Jonh #1" {
			firstOK = i // the last of its three attempts
		}
	}
	want := "jared->Jonh #1, jared->Jonh #1, jared->Jonh #1, Jonh->jared #2, jared->Jonh #3"
	if strings.Join(chat, ", ") != want {
		t.Errorf("the chat reached the backend as %v, want %s", chat, want)
	}
	if annAt > firstOK {
		t.Errorf("another chat was delivered at %d, after the failing head succeeded at %d: %v", annAt, firstOK, got)
	}
}
