package receiver

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/callback-router/callback-router/api/v1alpha1"
	"github.com/callback-router/callback-router/webhook/callback"
)

// routesYAML routes every sample: Async copies for the after-callbacks, a Sync route for
// before-callbacks, with Sign, Basic auth and source checks.
func routesYAML(backendURL string) string {
	return strings.NewReplacer("BACKEND", backendURL).Replace(`
apiVersion: v1
kind: Secret
metadata: {name: tok, namespace: chat}
stringData: {token: xxxxyyyy, previous: old-token}
---
apiVersion: v1
kind: Secret
metadata: {name: hook, namespace: chat}
stringData: {username: openim, password: pass}
---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackRoute
metadata: {name: archive, namespace: chat}
spec:
  provider: TencentIM
  appID: "1400000001"
  commands: [C2C.CallbackAfterSendMsg, "Group.*", OfficialAccount.CallbackAfterSendMsg, "Push.*"]
  backend: {url: BACKEND, path: /archive}
  verify: {tokenSecretRef: {name: tok, previousKey: previous}}
---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackRoute
metadata: {name: moderation, namespace: chat}
spec:
  provider: TencentIM
  appID: "1400000001"
  commands: [C2C.CallbackBeforeSendMsg]
  mode: Sync
  backend: {url: BACKEND, path: /moderate, timeout: 500ms}
  verify: {tokenSecretRef: {name: tok}}
---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackRoute
metadata: {name: strict, namespace: chat}
spec:
  provider: TencentIM
  appID: "1400000001"
  commands: [Group.CallbackBeforeSendMsg]
  mode: Sync
  failurePolicy: Reject
  backend: {url: BACKEND, path: /strict, timeout: 500ms}
  verify: {tokenSecretRef: {name: tok}}
---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackRoute
metadata: {name: office-only, namespace: chat}
spec:
  provider: TencentIM
  appID: "1400000009"
  commands: ["*"]
  backend: {url: BACKEND}
  verify: {sourceCIDRs: ["198.51.100.0/24"]}
---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackRoute
metadata: {name: openim-all, namespace: chat}
spec:
  provider: OpenIM
  appID: prod
  commands: ["callbackAfter*"]
  backend: {url: BACKEND, path: /openim}
  verify: {basicAuthSecretRef: {name: hook}}
---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackRoute
metadata: {name: openim-allow, namespace: chat}
spec:
  provider: OpenIM
  appID: prod
  commands: [callbackBeforeSendSingleMsgCommand]
  mode: Sync
  backend: {url: BACKEND, path: /openim-sync, timeout: 500ms}
  verify: {basicAuthSecretRef: {name: hook}}
---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackRoute
metadata: {name: openim-reject, namespace: chat}
spec:
  provider: OpenIM
  appID: prod
  commands: [callbackBeforeSendGroupMsgCommand]
  mode: Sync
  failurePolicy: Reject
  backend: {url: BACKEND, path: /openim-strict, timeout: 500ms}
  verify: {basicAuthSecretRef: {name: hook}}
`)
}

// TestSamplesRouted sends every sample, signed, and checks the Async copy: the body byte
// for byte, the query, the target and the idempotency key.
func TestSamplesRouted(t *testing.T) {
	be := newBackend(t, nil)
	f := newFixture(t, routesYAML(be.URL), nil)
	wantIDs := map[string]string{
		"tencent-c2c-after-send.json":              "C2C.CallbackAfterSendMsg:48374_2837546_1557481126",
		"tencent-group-after-send.json":            "Group.CallbackAfterSendMsg:@TGS#2J4SZEAEL_123",
		"tencent-official-account-after-send.json": "OfficialAccount.CallbackAfterSendMsg:71_1_1698741698",
		"openim-after-send-single.json":            "callbackAfterSendSingleMsgCommand:serverMsg123",
	}
	for _, s := range loadSamples(t) {
		t.Run(s.name, func(t *testing.T) {
			var u string
			hdr := map[string]string{"Content-Type": "application/json"}
			if s.provider == v1alpha1.ProviderTencentIM {
				u = tencentURL(f.url, "1400000001", s.command, testToken, now)
			} else {
				u = f.url + "/openim/prod/" + s.command
				hdr["Authorization"] = "Basic b3BlbmltOnBhc3M=" // openim:pass
			}
			status, body, rh := post(t, u, s.body, hdr)
			if status != http.StatusOK || !bytes.Equal(body, OKEnvelope(s.provider)) {
				t.Fatalf("got %d %s", status, body)
			}
			if ct := rh.Get("Content-Type"); ct != "application/json" {
				t.Errorf("content type %q", ct)
			}
			calls := f.sink.take()
			if len(calls) != 1 || len(calls[0].targets) != 1 {
				t.Fatalf("sink got %+v", calls)
			}
			cb, tg := calls[0].cb, calls[0].targets[0]
			if !bytes.Equal(cb.Body, s.body) {
				t.Errorf("body changed")
			}
			if cb.Provider != s.provider || cb.Command != s.command || cb.ReceivedAt != now {
				t.Errorf("callback %+v", cb)
			}
			if want := wantIDs[s.name]; want != "" && cb.ID != want {
				t.Errorf("id %q, want %q", cb.ID, want)
			}
			if want := callback.ComputeID(s.provider, s.command, s.body); cb.ID != want {
				t.Errorf("id %q, want %q", cb.ID, want)
			}
			wantRoute, wantURL := "chat/archive", be.URL+"/archive"
			if s.provider == v1alpha1.ProviderOpenIM {
				wantRoute, wantURL = "chat/openim-all", be.URL+"/openim"
			} else if !strings.Contains(cb.RawQuery, "Sign=") || !strings.Contains(cb.RawQuery, "ClientIP=203.0.113.7") {
				t.Errorf("query not kept: %q", cb.RawQuery)
			}
			if tg.Route != wantRoute || tg.URL != wantURL || tg.MaxAttempts != v1alpha1.DefaultMaxAttempts {
				t.Errorf("target %+v", tg)
			}
		})
	}
}

// TestAnswerTable walks every row of the contract's answer table, for both providers.
func TestAnswerTable(t *testing.T) {
	c2c := loadSamples(t)[1].body // tencent-c2c-after-send.json
	if !bytes.Contains(c2c, []byte("C2C.CallbackAfterSendMsg")) {
		t.Fatal("sample order changed")
	}
	oim := loadSamples(t)[0].body
	custom := `{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"","MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"***"}}]}`
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/moderate":
			w.Header().Set("Content-Type", "application/json; charset=utf-8")
			w.WriteHeader(http.StatusOK)
			_, _ = io.WriteString(w, custom)
		case "/openim-sync":
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusAccepted)
			_, _ = io.WriteString(w, `{"actionCode":0,"errCode":5001,"errMsg":"no","errDlt":"","nextCode":1}`)
		default: // /strict, /openim-strict: broken
			w.WriteHeader(http.StatusInternalServerError)
		}
	})
	basic := map[string]string{"Authorization": "Basic b3BlbmltOnBhc3M="}
	wrongBasic := map[string]string{"Authorization": "Basic b3BlbmltOndyb25n"}
	tencentFail := func(t *testing.T, b []byte) {
		m := envelope(t, b)
		if m["ActionStatus"] != "FAIL" || m["ErrorCode"] != float64(1) || m["ErrorInfo"] == "" {
			t.Errorf("not a FAIL envelope: %s", b)
		}
	}
	openIMFail := func(code float64) func(t *testing.T, b []byte) {
		return func(t *testing.T, b []byte) {
			m := envelope(t, b)
			if m["errCode"] != code || m["nextCode"] != float64(1) || m["actionCode"] != float64(0) || m["errMsg"] == "" {
				t.Errorf("not an OpenIM reject with errCode %v: %s", code, b)
			}
		}
	}
	exactly := func(want string) func(t *testing.T, b []byte) {
		return func(t *testing.T, b []byte) {
			if string(b) != want {
				t.Errorf("got %s, want %s", b, want)
			}
		}
	}
	big := []byte(`{"x":"` + strings.Repeat("a", DefaultMaxBodyBytes) + `"}`)
	cases := []struct {
		name    string
		url     string // relative to the receiver; "T:" builds a signed Tencent URL for app 1400000001
		body    []byte
		hdr     map[string]string
		sinkErr error
		status  int
		check   func(t *testing.T, b []byte)
		copies  int // Async copies stored
	}{
		{"tencent async stored", "T:C2C.CallbackAfterSendMsg", c2c, nil, nil, 200, exactly(string(tencentOK)), 1},
		{"tencent unknown command, nothing routed", "T:Sns.CallbackFriendAdd", c2c, nil, nil, 200, exactly(string(tencentOK)), 0},
		{"tencent future group command by prefix", "T:Group.CallbackFutureThing", c2c, nil, nil, 200, exactly(string(tencentOK)), 1},
		{"tencent sync answered", "T:C2C.CallbackBeforeSendMsg", c2c, nil, nil, 200, exactly(custom), 0},
		// Group.* of the Async archive route matches too: its copy is stored, then the Sync route fails.
		{"tencent sync failed, Reject", "T:Group.CallbackBeforeSendMsg", c2c, nil, nil, 200, tencentFail, 1},
		{"tencent no route for app", "/tencent?SdkAppid=1499999999&CallbackCommand=C2C.CallbackAfterSendMsg", c2c, nil, nil, 404, tencentFail, 0},
		{"tencent unsigned", "/tencent?SdkAppid=1400000001&CallbackCommand=C2C.CallbackAfterSendMsg", c2c, nil, nil, 401, tencentFail, 0},
		{"tencent bad sign", "/tencent?SdkAppid=1400000001&CallbackCommand=C2C.CallbackAfterSendMsg&RequestTime=1669872112&Sign=" + sign("nope", "1669872112"), c2c, nil, nil, 401, tencentFail, 0},
		{"tencent unsigned, nothing routed", "/tencent?SdkAppid=1400000001&CallbackCommand=Sns.CallbackFriendAdd", c2c, nil, nil, 401, tencentFail, 0},
		{"tencent source not allowed", "/tencent?SdkAppid=1400000009&CallbackCommand=C2C.CallbackAfterSendMsg", c2c, nil, nil, 403, tencentFail, 0},
		{"tencent not JSON", "T:C2C.CallbackAfterSendMsg", []byte("MsgKey=1"), nil, nil, 400, tencentFail, 0},
		{"tencent too large", "T:C2C.CallbackAfterSendMsg", big, nil, nil, 413, tencentFail, 0},
		{"tencent store failed", "T:C2C.CallbackAfterSendMsg", c2c, nil, errDiskFull, 503, tencentFail, 0},
		{"tencent no SdkAppid", "/tencent?CallbackCommand=C2C.CallbackAfterSendMsg", c2c, nil, nil, 400, tencentFail, 0},
		{"openim async stored", "/openim/prod/callbackAfterSendSingleMsgCommand", oim, basic, nil, 200, exactly(string(openIMAllow)), 1},
		{"openim trailing slash in its URL", "/openim/prod//callbackAfterSendGroupMsgCommand", oim, basic, nil, 200, exactly(string(openIMAllow)), 1},
		{"openim nothing routed", "/openim/prod/callbackBeforeAddFriendCommand", oim, basic, nil, 200, exactly(string(openIMAllow)), 0},
		{"openim sync answered, status passed back", "/openim/prod/callbackBeforeSendSingleMsgCommand", oim, basic, nil, 202, exactly(`{"actionCode":0,"errCode":5001,"errMsg":"no","errDlt":"","nextCode":1}`), 0},
		{"openim sync failed, Reject", "/openim/prod/callbackBeforeSendGroupMsgCommand", oim, basic, nil, 200, openIMFail(OpenIMRejectErrCode), 0},
		{"openim no route for app", "/openim/staging/callbackAfterSendSingleMsgCommand", oim, basic, nil, 404, openIMFail(5404), 0},
		{"openim wrong basic auth", "/openim/prod/callbackAfterSendSingleMsgCommand", oim, wrongBasic, nil, 401, openIMFail(5401), 0},
		{"openim no basic auth", "/openim/prod/callbackAfterSendSingleMsgCommand", oim, nil, nil, 401, openIMFail(5401), 0},
		{"openim not JSON", "/openim/prod/callbackAfterSendSingleMsgCommand", []byte("{"), basic, nil, 400, openIMFail(5400), 0},
		{"openim too large", "/openim/prod/callbackAfterSendSingleMsgCommand", big, basic, nil, 413, openIMFail(5413), 0},
		{"openim store failed", "/openim/prod/callbackAfterSendSingleMsgCommand", oim, basic, errDiskFull, 503, openIMFail(5503), 0},
		{"openim no command", "/openim/prod", oim, basic, nil, 400, openIMFail(5400), 0},
	}
	f := newFixture(t, routesYAML(be.URL), nil)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			u := f.url + c.url
			if cmd, ok := strings.CutPrefix(c.url, "T:"); ok {
				u = tencentURL(f.url, "1400000001", cmd, testToken, now)
			}
			f.sink.err = c.sinkErr
			defer func() { f.sink.err = nil }()
			status, body, hdr := post(t, u, c.body, c.hdr)
			if status != c.status {
				t.Errorf("status %d, want %d (%s)", status, c.status, body)
			}
			if !strings.HasPrefix(hdr.Get("Content-Type"), "application/json") {
				t.Errorf("content type %q", hdr.Get("Content-Type"))
			}
			c.check(t, body)
			if got := len(f.sink.take()); got != c.copies {
				t.Errorf("%d copies stored, want %d", got, c.copies)
			}
		})
	}
}

func TestNotReadyAndDraining(t *testing.T) {
	f := newFixture(t, "", nil)
	get := func(p string) int {
		resp, err := http.Get(f.url + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if s := get(PathReadyz); s != 503 {
		t.Errorf("readyz before a table: %d", s)
	}
	if s := get(PathHealthz); s != 200 {
		t.Errorf("healthz: %d", s)
	}
	status, body, _ := post(t, tencentURL(f.url, "1400000001", "C2C.X", "", now), []byte(`{}`), nil)
	if status != 503 || envelope(t, body)["ActionStatus"] != "FAIL" {
		t.Errorf("callback before a table: %d %s", status, body)
	}
	f.h.SetTable(table(t, routesYAML("http://127.0.0.1:1")))
	if s := get(PathReadyz); s != 200 {
		t.Errorf("readyz with a table: %d", s)
	}
	f.h.SetDraining(true)
	if s := get(PathReadyz); s != 503 {
		t.Errorf("readyz draining: %d", s)
	}
	// Draining still serves callbacks until the listener closes.
	status, _, _ = post(t, tencentURL(f.url, "1400000001", "C2C.CallbackAfterSendMsg", testToken, now), []byte(`{}`), nil)
	if status != 200 {
		t.Errorf("callback while draining: %d", status)
	}
	resp, err := http.Get(tencentURL(f.url, "1400000001", "C2C.X", "", now))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET callback: %d", resp.StatusCode)
	}
}

// TestSyncPrecedence: exact beats prefix, a route is reached only by callbacks passing its
// own checks, and only the winning Sync candidate answers: a callback failing it is not
// answered by a lower one.
func TestSyncPrecedence(t *testing.T) {
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `{"ActionStatus":"OK","ErrorCode":0,"route":%q}`, r.Header.Get(callback.HeaderRoute))
	})
	yaml := strings.ReplaceAll(`
apiVersion: v1
kind: Secret
metadata: {name: a, namespace: ns}
stringData: {token: token-a}
---
apiVersion: v1
kind: Secret
metadata: {name: b, namespace: ns}
stringData: {token: token-b}
---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackRoute
metadata: {name: prefix-a, namespace: ns, creationTimestamp: "2020-01-01T00:00:00Z"}
spec:
  provider: TencentIM
  appID: "1"
  commands: ["C2C.*"]
  mode: Sync
  backend: {url: BACKEND}
  verify: {tokenSecretRef: {name: a}}
---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackRoute
metadata: {name: exact-a, namespace: ns, creationTimestamp: "2024-01-01T00:00:00Z"}
spec:
  provider: TencentIM
  appID: "1"
  commands: [C2C.CallbackBeforeSendMsg]
  mode: Sync
  backend: {url: BACKEND}
  verify: {tokenSecretRef: {name: a}}
---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackRoute
metadata: {name: all-b, namespace: ns}
spec:
  provider: TencentIM
  appID: "1"
  commands: ["*"]
  mode: Sync
  backend: {url: BACKEND}
  verify: {tokenSecretRef: {name: b}}
`, "BACKEND", be.URL)
	f := newFixture(t, yaml, nil)
	for _, c := range []struct{ token, command, route string }{
		{"token-a", "C2C.CallbackBeforeSendMsg", "ns/exact-a"},
		{"token-a", "C2C.CallbackFuture", "ns/prefix-a"},
		{"token-b", "Group.X", "ns/all-b"},
	} {
		status, body, _ := post(t, tencentURL(f.url, "1", c.command, c.token, now), []byte(`{}`), nil)
		if status != 200 || string(body) != fmt.Sprintf(`{"ActionStatus":"OK","ErrorCode":0,"route":%q}`, c.route) {
			t.Errorf("%s with %s: %d %s, want %s", c.command, c.token, status, body, c.route)
		}
	}
	status, _, _ := post(t, tencentURL(f.url, "1", "Group.X", "token-a", now), []byte(`{}`), nil)
	if status != 401 {
		t.Errorf("token-a on a command only token-b routes reach: %d, want 401", status)
	}
	// exact-a wins C2C.CallbackBeforeSendMsg; token-b fails it and all-b does not answer.
	status, body, _ := post(t, tencentURL(f.url, "1", "C2C.CallbackBeforeSendMsg", "token-b", now), []byte(`{}`), nil)
	if status != 401 {
		t.Errorf("token-b on exact-a's command: %d %s, want 401 (no fall-through to all-b)", status, body)
	}
}

// TestSyncNoFallThrough: an unsigned before-callback that fails the verified exact Sync
// route is not answered by an unverified prefix Sync route; an Async route it passes still
// gets its copy.
func TestSyncNoFallThrough(t *testing.T) {
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `{"ActionStatus":"OK","ErrorCode":0,"route":%q}`, r.Header.Get(callback.HeaderRoute))
	})
	yaml := strings.ReplaceAll(`
apiVersion: v1
kind: Secret
metadata: {name: tok, namespace: ns}
stringData: {token: xxxxyyyy}
---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackRoute
metadata: {name: exact, namespace: ns}
spec:
  provider: TencentIM
  appID: "1"
  commands: [C2C.CallbackBeforeSendMsg]
  mode: Sync
  failurePolicy: Reject
  backend: {url: BACKEND}
  verify: {tokenSecretRef: {name: tok}}
---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackRoute
metadata: {name: catch-all, namespace: ns}
spec:
  provider: TencentIM
  appID: "1"
  commands: ["C2C.*"]
  mode: Sync
  backend: {url: BACKEND}
---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackRoute
metadata: {name: audit, namespace: ns}
spec:
  provider: TencentIM
  appID: "2"
  commands: [C2C.CallbackBeforeSendMsg]
  mode: Sync
  backend: {url: BACKEND}
  verify: {tokenSecretRef: {name: tok}}
---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackRoute
metadata: {name: audit-copy, namespace: ns}
spec:
  provider: TencentIM
  appID: "2"
  commands: ["C2C.*"]
  backend: {url: BACKEND}
`, "BACKEND", be.URL)
	f := newFixture(t, yaml, nil)
	status, body, _ := post(t, tencentURL(f.url, "1", "C2C.CallbackBeforeSendMsg", "", now), []byte(`{}`), nil)
	if status != 401 {
		t.Errorf("unsigned before-send: %d %s, want 401", status, body)
	}
	if got := be.take(); len(got) != 0 {
		t.Errorf("a backend was called for an unsigned before-send: %v", got[0].header.Get(callback.HeaderRoute))
	}
	status, body, _ = post(t, tencentURL(f.url, "1", "C2C.CallbackBeforeSendMsg", testToken, now), []byte(`{}`), nil)
	if status != 200 || string(body) != `{"ActionStatus":"OK","ErrorCode":0,"route":"ns/exact"}` {
		t.Errorf("signed before-send: %d %s, want the exact route's answer", status, body)
	}
	status, body, _ = post(t, tencentURL(f.url, "1", "C2C.CallbackFuture", "", now), []byte(`{}`), nil)
	if status != 200 || string(body) != `{"ActionStatus":"OK","ErrorCode":0,"route":"ns/catch-all"}` {
		t.Errorf("unsigned other C2C command: %d %s, want the catch-all's answer", status, body)
	}
	// App 2: the Sync route fails, the unverified Async route still gets its copy.
	be.take()
	f.sink.take()
	status, body, _ = post(t, tencentURL(f.url, "2", "C2C.CallbackBeforeSendMsg", "", now), []byte(`{}`), nil)
	if status != 200 || !bytes.Equal(body, tencentOK) {
		t.Errorf("unsigned before-send with an Async route: %d %s, want the OK acknowledgement", status, body)
	}
	if calls := f.sink.take(); len(calls) != 1 || calls[0].targets[0].Route != "ns/audit-copy" {
		t.Errorf("Async copies: %+v, want one for ns/audit-copy", calls)
	}
	if got := be.take(); len(got) != 0 {
		t.Errorf("the Sync backend was called for an unsigned callback")
	}
}

// TestSyncBudget: a slow backend never makes Tencent wait past the budget; the answer is
// the failurePolicy fallback.
func TestSyncBudget(t *testing.T) {
	release := make(chan struct{})
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	defer close(release)
	budget := 300 * time.Millisecond
	f := newFixture(t, routesYAML(be.URL), func(o *Options) { o.SyncBudget = budget; o.Now = time.Now })
	start := time.Now()
	status, body, _ := post(t, tencentURL(f.url, "1400000001", "C2C.CallbackBeforeSendMsg", testToken, time.Now()), []byte(`{}`), nil)
	elapsed := time.Since(start)
	if status != 200 || !bytes.Equal(body, tencentOK) {
		t.Errorf("got %d %s, want the Allow envelope", status, body)
	}
	if elapsed < budget || elapsed > budget+400*time.Millisecond {
		t.Errorf("answered after %s, budget %s", elapsed, budget)
	}
	// OpenIM uses the route timeout (500ms), Reject policy.
	start = time.Now()
	status, body, _ = post(t, f.url+"/openim/prod/callbackBeforeSendGroupMsgCommand", []byte(`{}`), map[string]string{"Authorization": "Basic b3BlbmltOnBhc3M="})
	elapsed = time.Since(start)
	if status != 200 || envelope(t, body)["nextCode"] != float64(1) {
		t.Errorf("got %d %s, want the reject envelope", status, body)
	}
	if elapsed < 500*time.Millisecond || elapsed > 900*time.Millisecond {
		t.Errorf("OpenIM answered after %s, route timeout 500ms", elapsed)
	}
}
