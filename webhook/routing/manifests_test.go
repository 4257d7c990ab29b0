package routing

import (
	"strings"
	"testing"
	"time"
)

func TestDecodeManifests(t *testing.T) {
	m, err := DecodeManifests(strings.NewReader(`
# only a comment
---
apiVersion: v1
kind: Secret
metadata: {name: s, namespace: im}
data: {token: dG9rZW4tZnJvbS1kYXRh}   # "token-from-data"
stringData: {previous: old}
---
apiVersion: v1
kind: Secret
metadata: {name: s}
stringData: {token: in-the-routes-namespace}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: unrelated, namespace: x}
---
apiVersion: v1
kind: Namespace
metadata: {name: analytics, labels: {im-callbacks: analytics}}
---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackReceiver
metadata: {name: default, namespace: callback-router-system}
spec: {replicas: 3}
---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackApp
metadata: {name: chat, namespace: im}
spec:
  provider: TencentIM
  appID: "1"
  receiverRef: {name: default, namespace: callback-router-system}
  verify: {tokenSecretRef: {name: s, previousKey: previous}}
  allowedRoutes:
    - namespaces: {from: Same}
    - namespaces: {from: Selector, selector: {matchLabels: {im-callbacks: analytics}}}
      modes: [Async]
---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackRoute
metadata: {name: first, namespace: im}
spec: {appRef: {name: chat}, commands: ["*"], mode: Sync, backend: {url: "http://127.0.0.1:9"}}
---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackRoute
metadata: {name: second, namespace: im}
spec: {appRef: {name: chat}, commands: ["*"], mode: Sync, backend: {url: "http://127.0.0.1:9"}}
---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackRoute
metadata: {name: stats, namespace: analytics}
spec: {appRef: {name: chat, namespace: im}, commands: ["Push.*"], backend: {url: "http://127.0.0.1:9"}}
---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackRoute
metadata: {name: sneaky}
spec: {appRef: {name: chat, namespace: im}, commands: ["*"], backend: {url: "http://127.0.0.1:9"}}
`))
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Apps) != 1 || len(m.Routes) != 4 || len(m.Secrets) != 2 || len(m.Skipped) != 2 ||
		m.Skipped[0] != "ConfigMap x/unrelated" || m.Skipped[1] != "CallbackReceiver callback-router-system/default" {
		t.Fatalf("got %d apps, %d routes, %d secrets, skipped %v", len(m.Apps), len(m.Routes), len(m.Secrets), m.Skipped)
	}
	if m.Routes[3].Namespace != DefaultNamespace || !m.Routes[0].CreationTimestamp.Before(&m.Routes[1].CreationTimestamp) ||
		!m.Apps[0].CreationTimestamp.Before(&m.Routes[0].CreationTimestamp) {
		t.Errorf("defaults: %s %v %v", m.Routes[3].Namespace, m.Routes[0].CreationTimestamp, m.Routes[1].CreationTimestamp)
	}
	out := Compile(m.Input())
	sts := out.Routes
	// File order decides the Sync tie: the first route wins. The labelled namespace may
	// attach Async routes; the default namespace is not allowed at all.
	if !sts[0].Routed() || sts[1].Routed() || sts[1].Accepted.Reason != "Conflict" || !sts[2].Routed() ||
		sts[3].Routed() || sts[3].Accepted.Reason != "NotAllowedByApp" {
		t.Errorf("statuses %+v", sts)
	}
	snap := out.Tables[StandaloneReceiver]
	if got := snap.Routes[0].Tokens; len(got) != 2 || got[0] != "token-from-data" || got[1] != "old" {
		t.Errorf("tokens %v", got)
	}
	if snap.Routes[0].CreatedAt.Sub(fileEpoch) == 0*time.Second {
		t.Errorf("createdAt %v: the app is the file's first object", snap.Routes[0].CreatedAt)
	}

	for name, doc := range map[string]string{
		"typo in a field": `apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackRoute
metadata: {name: a}
spec: {appRef: {name: x}, comands: ["*"], backend: {url: "http://x"}}`,
		"typo in an app": `apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackApp
metadata: {name: a}
spec: {provider: TencentIM, appID: "1", receiverRef: {name: r}, allowedRoute: []}`,
		"duplicate route": `apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackRoute
metadata: {name: a}
spec: {appRef: {name: x}, commands: ["*"], backend: {url: "http://x"}}
---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackRoute
metadata: {name: a, namespace: default}
spec: {appRef: {name: x}, commands: ["*"], backend: {url: "http://x"}}`,
		"not YAML": "kind: [",
	} {
		if _, err := DecodeManifests(strings.NewReader(doc)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestExamplesCompile keeps examples/routes.yaml (what `make run` serves) fully routable.
func TestExamplesCompile(t *testing.T) {
	m, err := LoadFile("../../examples/routes.yaml")
	if err != nil {
		t.Fatal(err)
	}
	out := Compile(m.Input())
	for _, st := range out.Apps {
		if !st.Ready.True {
			t.Errorf("app %s/%s not ready: %s", st.Namespace, st.Name, st.Ready.Message)
		}
	}
	for _, st := range out.Routes {
		if !st.Routed() {
			t.Errorf("%s/%s not routed: %s", st.Namespace, st.Name, st.Ready.Message)
		}
	}
	if _, err := NewTable(out.Tables[StandaloneReceiver]); err != nil {
		t.Fatal(err)
	}
	if len(out.Routes) < 4 || len(out.Apps) < 2 {
		t.Errorf("only %d example routes and %d apps", len(out.Routes), len(out.Apps))
	}
}
