package routing

import (
	"slices"
	"strings"
	"testing"

	"github.com/callback-router/callback-router/api/v1alpha1"
	"github.com/callback-router/callback-router/webhook/catalog"
)

// TestSelectorsExpand: @after selects every after-callback of the app's provider whatever
// its name, and the receiver's table then routes them, and only them.
func TestSelectorsExpand(t *testing.T) {
	out := Compile(Input{Standalone: true, Apps: []v1alpha1.CallbackApp{
		appObj("ns", "openim-1", 0, v1alpha1.ProviderOpenIM, "1", allGrant),
		appObj("ns", "tencent-1", 0, v1alpha1.ProviderTencentIM, "1", allGrant),
	}, Routes: []v1alpha1.CallbackRoute{
		route("ns", "openim-after", 0, "openim-1", v1alpha1.ModeAsync, "@after"),
		route("ns", "tencent-before", 0, "tencent-1", v1alpha1.ModeSync, "@before", "Push.*"),
	}})
	for _, st := range out.Routes {
		if !st.Routed() || !st.CommandsChecked || st.UnknownCommands.True {
			t.Fatalf("%s: %s %s unknown %+v", st.Name, cond(st.Accepted), st.Accepted.Message, st.UnknownCommands)
		}
	}
	tbl, err := NewTable(out.Tables[StandaloneReceiver])
	if err != nil {
		t.Fatal(err)
	}
	oim := tbl.App(v1alpha1.ProviderOpenIM, "1")
	for _, tc := range []struct {
		cmd  string
		want bool
	}{
		{"callbackBeforeAfterMsgCommand", true}, // OpenIM's revoke after-callback
		{"callbackAfterSendSingleMsgCommand", true},
		{"callbackBeforeSendSingleMsgCommand", false},
		{"callbackAfterSomethingNewCommand", false}, // not in the catalogue: @after cannot know it
	} {
		if m := oim.Lookup(tc.cmd); (m != nil) != tc.want {
			t.Errorf("OpenIM %s routed %v, want %v", tc.cmd, m != nil, tc.want)
		}
	}
	tc := tbl.App(v1alpha1.ProviderTencentIM, "1")
	if m := tc.Lookup("C2C.CallbackBeforeSendMsg"); m == nil || m.Sync == nil {
		t.Error("Tencent C2C.CallbackBeforeSendMsg not answered by the @before route")
	}
	if m := tc.Lookup("C2C.CallbackAfterSendMsg"); m != nil {
		t.Error("an after-callback matched @before")
	}
	compiled := out.Tables[StandaloneReceiver].Routes
	for _, r := range compiled {
		if slices.Contains(r.Commands, "@after") || slices.Contains(r.Commands, "@before") {
			t.Errorf("%s: selector left in the table: %v", r.Name, r.Commands)
		}
	}
}

// TestSelectorsInAllowedRoutes: an app may grant a namespace only its after-callbacks.
func TestSelectorsInAllowedRoutes(t *testing.T) {
	grant := v1alpha1.RouteGrant{Namespaces: v1alpha1.Namespaces{From: v1alpha1.NamespacesFromAll}, Commands: []string{"@after"}}
	out := Compile(Input{Standalone: true, Apps: []v1alpha1.CallbackApp{
		appObj("im", "chat", 0, v1alpha1.ProviderTencentIM, "1400000001", grant),
	}, Routes: []v1alpha1.CallbackRoute{
		route("analytics", "all-after", 0, "im/chat", v1alpha1.ModeAsync, "@after"),
		route("analytics", "one-after", 0, "im/chat", v1alpha1.ModeAsync, "C2C.CallbackAfterSendMsg"),
		route("analytics", "before", 0, "im/chat", v1alpha1.ModeAsync, "C2C.CallbackBeforeSendMsg"),
		route("analytics", "prefix", 0, "im/chat", v1alpha1.ModeAsync, "Group.*"),
	}})
	want := map[string]string{"all-after": "true/Accepted", "one-after": "true/Accepted", "before": "false/NotAllowedByApp", "prefix": "false/NotAllowedByApp"}
	for _, st := range out.Routes {
		if got := cond(st.Accepted); got != want[st.Name] {
			t.Errorf("%s: %s (%s), want %s", st.Name, got, st.Accepted.Message, want[st.Name])
		}
	}
}

// TestUnknownCommands: a typo stays Accepted and routed, with a did-you-mean in the
// UnknownCommands condition; a Sync route on an after-callback is warned about.
func TestUnknownCommands(t *testing.T) {
	out := Compile(Input{Standalone: true, Apps: []v1alpha1.CallbackApp{
		appObj("ns", "tencent-1", 0, v1alpha1.ProviderTencentIM, "1", allGrant),
	}, Routes: []v1alpha1.CallbackRoute{
		route("ns", "typo", 0, "tencent-1", v1alpha1.ModeAsync, "C2C.CallbackAfterSendMessage", "Group.*"),
		route("ns", "sync-after", 0, "tencent-1", v1alpha1.ModeSync, "C2C.CallbackAfterSendMsg"),
		route("ns", "fine", 0, "tencent-1", v1alpha1.ModeSync, "C2C.CallbackBeforeSendMsg"),
		route("ns", "no-app", 0, "missing", v1alpha1.ModeAsync, "C2C.Whatever"),
	}})
	st := map[string]RouteStatus{}
	for _, s := range out.Routes {
		st[s.Name] = s
	}
	typo := st["typo"]
	if !typo.Routed() || !typo.CommandsChecked || !typo.UnknownCommands.True || typo.UnknownCommands.Reason != v1alpha1.ReasonUnknownCommands ||
		!strings.Contains(typo.UnknownCommands.Message, "C2C.CallbackAfterSendMessage (did you mean C2C.CallbackAfterSendMsg?)") {
		t.Errorf("typo: routed %v, %+v", typo.Routed(), typo.UnknownCommands)
	}
	sa := st["sync-after"]
	if !sa.Routed() || len(sa.Warnings) != 1 || sa.Warnings[0].Reason != v1alpha1.ReasonSyncOnAfterCallback ||
		!strings.Contains(sa.Accepted.Message, "warning: mode Sync on C2C.CallbackAfterSendMsg") {
		t.Errorf("sync-after: %+v %q", sa.Warnings, sa.Accepted.Message)
	}
	if f := st["fine"]; !f.CommandsChecked || f.UnknownCommands.True || f.UnknownCommands.Reason != v1alpha1.ReasonCommandsKnown || len(f.Warnings) > 0 {
		t.Errorf("fine: %+v %+v", f.UnknownCommands, f.Warnings)
	}
	if n := st["no-app"]; n.CommandsChecked {
		t.Errorf("no app, no provider: no verdict expected, got %+v", n.UnknownCommands)
	}
	// Every catalogue command of each provider is known.
	for _, p := range catalog.Providers() {
		var all []string
		for _, c := range catalog.Commands(p) {
			all = append(all, c.Name)
		}
		if u, _ := checkCommands(p, &v1alpha1.CallbackRoute{Spec: v1alpha1.CallbackRouteSpec{Commands: all}}); u.True {
			t.Errorf("%s: %s", p, u.Message)
		}
	}
}

// TestCheckCommandsAllocations: a route whose commands are all known costs the compiler
// no allocation for the catalogue's verdict (it runs for every route on every pass).
func TestCheckCommandsAllocations(t *testing.T) {
	r := route("ns", "r", 0, "tencent-1", v1alpha1.ModeAsync, "C2C.CallbackAfterSendMsg", "Group.*", "*")
	if n := testing.AllocsPerRun(100, func() { checkCommands(v1alpha1.ProviderTencentIM, &r) }); n != 0 {
		t.Errorf("%v allocations per known route", n)
	}
	sync := route("ns", "s", 0, "tencent-1", v1alpha1.ModeSync, "C2C.CallbackBeforeSendMsg")
	if n := testing.AllocsPerRun(100, func() { checkCommands(v1alpha1.ProviderTencentIM, &sync) }); n != 0 {
		t.Errorf("%v allocations per known Sync route", n)
	}
}
