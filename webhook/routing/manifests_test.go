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
metadata: {name: s}
data: {token: dG9rZW4tZnJvbS1kYXRh}   # "token-from-data"
stringData: {previous: old}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: unrelated, namespace: x}
---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackRoute
metadata: {name: first}
spec: {provider: TencentIM, appID: "1", commands: ["*"], mode: Sync, backend: {url: "http://127.0.0.1:9"}, verify: {tokenSecretRef: {name: s, previousKey: previous}}}
---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackRoute
metadata: {name: second}
spec: {provider: TencentIM, appID: "1", commands: ["*"], mode: Sync, backend: {url: "http://127.0.0.1:9"}}
`))
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Routes) != 2 || len(m.Secrets) != 1 || len(m.Skipped) != 1 || m.Skipped[0] != "ConfigMap x/unrelated" {
		t.Fatalf("got %d routes, %d secrets, skipped %v", len(m.Routes), len(m.Secrets), m.Skipped)
	}
	if m.Routes[0].Namespace != DefaultNamespace || !m.Routes[0].CreationTimestamp.Before(&m.Routes[1].CreationTimestamp) {
		t.Errorf("defaults: %s %v %v", m.Routes[0].Namespace, m.Routes[0].CreationTimestamp, m.Routes[1].CreationTimestamp)
	}
	snap, sts := Compile(m.Input())
	// File order decides the Sync tie: the first route wins.
	if !sts[0].Routed || sts[1].Routed || sts[1].AcceptedReason != "Conflict" {
		t.Errorf("statuses %+v", sts)
	}
	if got := snap.Routes[0].Tokens; len(got) != 2 || got[0] != "token-from-data" || got[1] != "old" {
		t.Errorf("tokens %v", got)
	}
	if snap.Routes[0].CreatedAt.Sub(fileEpoch) != 0*time.Second {
		t.Errorf("createdAt %v", snap.Routes[0].CreatedAt)
	}

	for name, doc := range map[string]string{
		"typo in a field": `apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackRoute
metadata: {name: a}
spec: {provider: TencentIM, appID: "1", comands: ["*"], backend: {url: "http://x"}}`,
		"duplicate route": `apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackRoute
metadata: {name: a}
spec: {provider: TencentIM, appID: "1", commands: ["*"], backend: {url: "http://x"}}
---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackRoute
metadata: {name: a, namespace: default}
spec: {provider: TencentIM, appID: "1", commands: ["*"], backend: {url: "http://x"}}`,
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
	snap, sts := Compile(m.Input())
	for _, st := range sts {
		if !st.Routed {
			t.Errorf("%s/%s not routed: %s %s", st.Namespace, st.Name, st.AcceptedMessage, st.RefsMessage)
		}
	}
	if _, err := NewTable(snap); err != nil {
		t.Fatal(err)
	}
	if len(sts) < 4 {
		t.Errorf("only %d example routes", len(sts))
	}
}
