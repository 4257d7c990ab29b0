package receiver

import (
	"strings"
	"testing"
)

// TestOpenIMRevokeCommandName pins what docs/openim.md warns about: OpenIM's revoke
// after-callback is literally callbackBeforeAfterMsgCommand, so an Async route on
// callbackAfter* never gets it, while a Sync route on callbackBefore* answers it.
func TestOpenIMRevokeCommandName(t *testing.T) {
	be := newBackend(t, nil)
	routes := routesYAML(be.URL) + `---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackRoute
metadata: {name: openim-before-all, namespace: chat}
spec:
  provider: OpenIM
  appID: prod
  commands: ["callbackBefore*"]
  mode: Sync
  backend: {url: ` + be.URL + `, path: /before-all, timeout: 500ms}
  verify: {basicAuthSecretRef: {name: hook}}
`
	f := newFixture(t, routes, nil)
	auth := map[string]string{"Authorization": openIMAuth}
	status, body, _ := post(t, f.url+"/openim/prod/callbackBeforeAfterMsgCommand", []byte(`{"callbackCommand":"callbackBeforeAfterMsgCommand"}`), auth)
	if status != 200 {
		t.Fatalf("got %d %s", status, body)
	}
	for _, c := range f.sink.take() {
		for _, tg := range c.targets {
			if tg.Route == "chat/openim-all" {
				t.Error("the callbackAfter* Async route got the revoke after-callback")
			}
		}
	}
	reqs := be.take()
	if len(reqs) != 1 || !strings.HasSuffix(reqs[0].path, "/before-all") {
		t.Fatalf("backend got %d requests (%v), want the revoke on the callbackBefore* Sync route", len(reqs), reqs)
	}
	// The after-send callback does reach callbackAfter*.
	post(t, f.url+"/openim/prod/callbackAfterSendSingleMsgCommand", []byte(`{}`), auth)
	got := false
	for _, c := range f.sink.take() {
		for _, tg := range c.targets {
			got = got || tg.Route == "chat/openim-all"
		}
	}
	if !got {
		t.Error("the callbackAfter* Async route did not get callbackAfterSendSingleMsgCommand")
	}
}
