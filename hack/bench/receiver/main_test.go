package main

import (
	"strings"
	"testing"

	"github.com/callback-router/callback-router/webhook/routing"
)

// TestRSSManifestsRoute keeps the RSS case honest: every one of its routes is in the table.
func TestRSSManifestsRoute(t *testing.T) {
	m, err := routing.DecodeManifests(strings.NewReader(rssManifests()))
	if err != nil {
		t.Fatal(err)
	}
	out := routing.Compile(m.Input())
	tab := out.Tables[routing.StandaloneReceiver]
	if len(tab.Routes) != routeCount || len(tab.Apps) != routeCount/10 {
		for _, st := range out.Routes {
			if !st.Routed() {
				t.Fatalf("%s/%s: %s", st.Namespace, st.Name, st.Ready.Message)
			}
		}
		t.Fatalf("%d routes and %d apps in the table", len(tab.Routes), len(tab.Apps))
	}
}
