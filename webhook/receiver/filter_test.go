package receiver

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/callback-router/callback-router/api/v1alpha1"
	"github.com/callback-router/callback-router/webhook/callback"
	"github.com/callback-router/callback-router/webhook/samples"
)

// filterRoutes are Async routes with the docs' recipe filters on one Tencent IM app and
// one OpenIM app, plus a Sync route that answers only one group's before-callbacks.
const filterRoutes = `
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackRoute
metadata: {name: all, namespace: ns}
spec: {provider: TencentIM, appID: "1", commands: ["*"], backend: {url: BACKEND}}
---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackRoute
metadata: {name: images, namespace: ns}
spec:
  provider: TencentIM
  appID: "1"
  commands: ["C2C.*", "Group.*"]
  backend: {url: BACKEND}
  filter: 'body.MsgBody.exists(m, m.MsgType == "TIMImageElem")'
---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackRoute
metadata: {name: text, namespace: ns}
spec:
  provider: TencentIM
  appID: "1"
  commands: ["*"]
  backend: {url: BACKEND}
  filter: 'has(body.MsgBody) && body.MsgBody.all(m, m.MsgType == "TIMTextElem")'
---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackRoute
metadata: {name: one-group, namespace: ns}
spec:
  provider: TencentIM
  appID: "1"
  commands: ["Group.CallbackAfterSendMsg"]
  backend: {url: BACKEND}
  filter: 'body.GroupId == "@TGS#2J4SZEAEL"'
---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackRoute
metadata: {name: failed-sends, namespace: ns}
spec:
  provider: TencentIM
  appID: "1"
  commands: ["C2C.CallbackAfterSendMsg"]
  backend: {url: BACKEND}
  filter: 'body.SendMsgResult != 0'
---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackRoute
metadata: {name: push-failures, namespace: ns}
spec:
  provider: TencentIM
  appID: "1"
  commands: ["Push.OfflinePush"]
  backend: {url: BACKEND}
  filter: 'body.Events.exists(e, e.ErrCode != 0)'
---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackRoute
metadata: {name: ios-only, namespace: ns}
spec:
  provider: TencentIM
  appID: "1"
  commands: ["*"]
  backend: {url: BACKEND}
  filter: 'query.OptPlatform == "iOS" && command.endsWith("AfterSendMsg")'
---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackRoute
metadata: {name: group-gate, namespace: ns}
spec:
  provider: TencentIM
  appID: "1"
  commands: ["Group.CallbackBeforeSendMsg"]
  mode: Sync
  backend: {url: BACKEND}
  filter: 'body.GroupId == "@TGS#moderated"'
---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackRoute
metadata: {name: mentions, namespace: ns}
spec:
  provider: OpenIM
  appID: "im"
  commands: ["*"]
  backend: {url: BACKEND}
  filter: '"user789" in body.atUserList && app == "im"'
---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackRoute
metadata: {name: group-chats, namespace: ns}
spec:
  provider: OpenIM
  appID: "im"
  commands: ["*"]
  backend: {url: BACKEND}
  filter: 'body.sessionType == 3'
`

// TestFiltersThroughReceiver sends every sample callback through a receiver whose routes
// have the docs' filters and checks which Async routes got a copy; then a Sync route's
// filter decides whether it answers, and a filter that fails at run time is counted.
func TestFiltersThroughReceiver(t *testing.T) {
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"","route":%q}`, r.Header.Get(callback.HeaderRoute))
	})
	f := newFixture(t, strings.ReplaceAll(filterRoutes, "BACKEND", be.URL), nil)
	want := map[string][]string{
		// ios-only: tencentURL sends OptPlatform=iOS.
		"tencent-c2c-after-send":              {"ns/all", "ns/ios-only", "ns/text"},
		"tencent-group-after-send":            {"ns/all", "ns/ios-only", "ns/one-group", "ns/text"},
		"tencent-official-account-after-send": {"ns/all", "ns/ios-only", "ns/text"},
		"tencent-push-offline-push":           {"ns/all"},
		"openim-after-send-single":            {"ns/mentions"},
	}
	for _, s := range samples.All() {
		if !s.Documented {
			continue // the catalogue's per-command samples: see routing.TestFiltersOnEverySample
		}
		u := tencentURL(f.url, "1", s.Command, "", now)
		if s.Provider == v1alpha1.ProviderOpenIM {
			u = f.url + "/openim/im/" + s.Command
		}
		status, body, _ := post(t, u, s.Body, nil)
		if status != http.StatusOK {
			t.Fatalf("%s: %d %s", s.Name, status, body)
		}
		calls := f.sink.take()
		if len(calls) != 1 {
			t.Fatalf("%s: %d enqueues, want 1", s.Name, len(calls))
		}
		var got []string
		for _, tg := range calls[0].targets {
			got = append(got, tg.Route)
		}
		slices.Sort(got)
		if !slices.Equal(got, want[s.Name]) {
			t.Errorf("%s reached %v, want %v", s.Name, got, want[s.Name])
		}
	}

	// A failed send and a failed push reach their routes.
	c2c, _ := samples.Get("tencent-c2c-after-send")
	failed := []byte(strings.Replace(string(c2c.Body), `"SendMsgResult":0`, `"SendMsgResult":20006`, 1))
	push, _ := samples.Get("tencent-push-offline-push")
	pushFailed := []byte(strings.Replace(string(push.Body), `"ErrCode":0,"ErrInfo":"OK"}]`, `"ErrCode":1,"ErrInfo":"token expired"}]`, 1))
	image := []byte(strings.Replace(string(c2c.Body), `"MsgType":"TIMTextElem"`, `"MsgType":"TIMImageElem"`, 1))
	for _, c := range []struct {
		command string
		body    []byte
		route   string
	}{
		{c2c.Command, failed, "ns/failed-sends"},
		{push.Command, pushFailed, "ns/push-failures"},
		{c2c.Command, image, "ns/images"},
	} {
		if status, body, _ := post(t, tencentURL(f.url, "1", c.command, "", now), c.body, nil); status != http.StatusOK {
			t.Fatalf("%s: %d %s", c.route, status, body)
		}
		calls := f.sink.take()
		if len(calls) != 1 || !slices.ContainsFunc(calls[0].targets, func(tg callback.Target) bool { return tg.Route == c.route }) {
			t.Errorf("%s did not get its copy: %+v", c.route, calls)
		}
	}

	// Sync: the route answers its group only; other groups hear the OK envelope.
	be.take()
	status, body, _ := post(t, tencentURL(f.url, "1", "Group.CallbackBeforeSendMsg", "", now), []byte(`{"GroupId":"@TGS#moderated"}`), nil)
	if status != http.StatusOK || !strings.Contains(string(body), `"route":"ns/group-gate"`) {
		t.Errorf("moderated group: %d %s, want group-gate's answer", status, body)
	}
	status, body, _ = post(t, tencentURL(f.url, "1", "Group.CallbackBeforeSendMsg", "", now), []byte(`{"GroupId":"@TGS#other"}`), nil)
	if status != http.StatusOK || string(body) != string(OKEnvelope(v1alpha1.ProviderTencentIM)) {
		t.Errorf("other group: %d %s, want the OK envelope", status, body)
	}
	if got := len(be.take()); got != 1 {
		t.Errorf("the Sync backend got %d requests, want 1", got)
	}
	f.sink.take() // the "all" and "text" copies of the two before-callbacks

	// Runtime errors are counted per route: the C2C sample has no GroupId... but one-group
	// takes only group callbacks, so send one without GroupId.
	before := testutil.ToFloat64(f.h.metrics.filterErrors.WithLabelValues("ns/one-group"))
	if status, body, _ := post(t, tencentURL(f.url, "1", "Group.CallbackAfterSendMsg", "", now), []byte(`{"MsgBody":[]}`), nil); status != http.StatusOK {
		t.Fatalf("%d %s", status, body)
	}
	if got := testutil.ToFloat64(f.h.metrics.filterErrors.WithLabelValues("ns/one-group")) - before; got != 1 {
		t.Errorf("filter errors of ns/one-group: +%v, want +1", got)
	}
	calls := f.sink.take()
	if len(calls) != 1 || slices.ContainsFunc(calls[0].targets, func(tg callback.Target) bool { return tg.Route == "ns/one-group" }) {
		t.Errorf("a callback whose filter failed reached the route: %+v", calls)
	}
}
