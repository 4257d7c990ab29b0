package routing

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/callback-router/callback-router/api/v1alpha1"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func route(ns, name string, age int, p v1alpha1.Provider, app string, mode v1alpha1.Mode, cmds ...string) v1alpha1.CallbackRoute {
	return v1alpha1.CallbackRoute{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, CreationTimestamp: metav1.NewTime(t0.Add(time.Duration(age) * time.Second))},
		Spec: v1alpha1.CallbackRouteSpec{
			Provider: p, AppID: app, Commands: cmds, Mode: mode,
			Backend: v1alpha1.Backend{URL: "http://127.0.0.1:9000", Path: "/" + name},
		},
	}
}

func secrets(m map[string]*corev1.Secret) SecretGetter {
	return func(ns, name string) (*corev1.Secret, bool) {
		s, ok := m[ns+"/"+name]
		return s, ok
	}
}

func TestCompileStatuses(t *testing.T) {
	tok := route("chat", "signed", 1, v1alpha1.ProviderTencentIM, "1400000001", v1alpha1.ModeAsync, "C2C.*")
	tok.Spec.Verify = &v1alpha1.Verification{TokenSecretRef: &v1alpha1.TokenSecretReference{Name: "tencent", PreviousKey: "previous"}}
	missing := route("chat", "missing", 2, v1alpha1.ProviderTencentIM, "1400000001", v1alpha1.ModeAsync, "C2C.*")
	missing.Spec.Verify = &v1alpha1.Verification{TokenSecretRef: &v1alpha1.TokenSecretReference{Name: "nope"}}
	badKey := route("chat", "badkey", 2, v1alpha1.ProviderTencentIM, "1400000001", v1alpha1.ModeAsync, "C2C.*")
	badKey.Spec.Verify = &v1alpha1.Verification{TokenSecretRef: &v1alpha1.TokenSecretReference{Name: "tencent", Key: "other"}}
	invalid := route("chat", "invalid", 0, v1alpha1.ProviderTencentIM, "not-digits", v1alpha1.ModeAsync, "*")
	syncOld := route("chat", "sync-old", 10, v1alpha1.ProviderTencentIM, "1400000001", v1alpha1.ModeSync, "C2C.CallbackBeforeSendMsg")
	syncNew := route("chat", "sync-new", 20, v1alpha1.ProviderTencentIM, "1400000001", v1alpha1.ModeSync, "C2C.CallbackBeforeSendMsg", "Group.*")
	// Same age as sync-old: namespace/name breaks the tie, "a-ns" < "chat".
	syncTie := route("a-ns", "sync-tie", 10, v1alpha1.ProviderTencentIM, "1400000001", v1alpha1.ModeSync, "C2C.CallbackBeforeSendMsg")
	otherApp := route("chat", "other-app", 30, v1alpha1.ProviderTencentIM, "1400000002", v1alpha1.ModeSync, "C2C.CallbackBeforeSendMsg")
	svc := route("chat", "svc", 0, v1alpha1.ProviderOpenIM, "prod", v1alpha1.ModeAsync, "*")
	svc.Spec.Backend = v1alpha1.Backend{Service: &v1alpha1.ServiceReference{Name: "archiver", Port: 8080}, Path: "/cb"}
	svcMissing := route("chat", "svc-missing", 0, v1alpha1.ProviderOpenIM, "prod", v1alpha1.ModeAsync, "*")
	svcMissing.Spec.Backend = v1alpha1.Backend{Service: &v1alpha1.ServiceReference{Name: "gone", Port: 8080}}

	in := Input{
		Routes: []v1alpha1.CallbackRoute{tok, missing, badKey, invalid, syncOld, syncNew, syncTie, otherApp, svc, svcMissing},
		Secret: secrets(map[string]*corev1.Secret{"chat/tencent": {Data: map[string][]byte{"token": []byte("new"), "previous": []byte("old")}}}),
		Service: func(ns string, s v1alpha1.ServiceReference) (string, error) {
			if s.Name == "gone" {
				return "", errors.New("Service chat/gone not found")
			}
			return fmt.Sprintf("http://10.0.0.1:%d", s.Port), nil
		},
	}
	snap, sts := Compile(in)
	type want struct {
		accepted, resolved, routed bool
		reason, refsReason         string
	}
	wants := map[string]want{
		"signed":      {true, true, true, v1alpha1.ReasonAccepted, v1alpha1.ReasonResolved},
		"missing":     {true, false, false, v1alpha1.ReasonAccepted, v1alpha1.ReasonSecretNotFound},
		"badkey":      {true, false, false, v1alpha1.ReasonAccepted, v1alpha1.ReasonSecretNotFound},
		"invalid":     {false, false, false, v1alpha1.ReasonInvalid, v1alpha1.ReasonInvalid},
		"sync-old":    {false, true, false, v1alpha1.ReasonConflict, v1alpha1.ReasonResolved},
		"sync-new":    {false, true, false, v1alpha1.ReasonConflict, v1alpha1.ReasonResolved},
		"sync-tie":    {true, true, true, v1alpha1.ReasonAccepted, v1alpha1.ReasonResolved},
		"other-app":   {true, true, true, v1alpha1.ReasonAccepted, v1alpha1.ReasonResolved},
		"svc":         {true, true, true, v1alpha1.ReasonAccepted, v1alpha1.ReasonResolved},
		"svc-missing": {true, false, false, v1alpha1.ReasonAccepted, v1alpha1.ReasonServiceNotFound},
	}
	if len(sts) != len(in.Routes) {
		t.Fatalf("got %d statuses for %d routes", len(sts), len(in.Routes))
	}
	for i, st := range sts {
		if st.Name != in.Routes[i].Name {
			t.Fatalf("status %d is for %s, want %s (input order)", i, st.Name, in.Routes[i].Name)
		}
		w := wants[st.Name]
		got := want{st.Accepted, st.ResolvedRefs, st.Routed, st.AcceptedReason, st.RefsReason}
		if got != w {
			t.Errorf("%s: got %+v, want %+v (%s; %s)", st.Name, got, w, st.AcceptedMessage, st.RefsMessage)
		}
	}
	if m := sts[4].AcceptedMessage; m != "Sync command C2C.CallbackBeforeSendMsg of TencentIM app 1400000001 is already answered by the older route a-ns/sync-tie" {
		t.Errorf("conflict message: %q", m)
	}
	if sts[0].URL != "/tencent?SdkAppid=1400000001" || sts[8].URL != "/openim/prod" {
		t.Errorf("urls: %q %q", sts[0].URL, sts[8].URL)
	}
	if len(snap.Routes) != 4 {
		t.Fatalf("snapshot has %d routes, want 4", len(snap.Routes))
	}
	for _, r := range snap.Routes {
		switch r.Name {
		case "signed":
			if len(r.Tokens) != 2 || r.Tokens[0] != "new" || r.Tokens[1] != "old" || r.MaxRequestAge != v1alpha1.DefaultMaxRequestAge {
				t.Errorf("signed: tokens %v age %v", r.Tokens, r.MaxRequestAge)
			}
			if r.MaxAttempts != v1alpha1.DefaultMaxAttempts || r.Timeout != v1alpha1.DefaultAsyncTimeout {
				t.Errorf("signed: defaults not applied: %+v", r)
			}
		case "svc":
			if r.URL != "http://10.0.0.1:8080/cb" {
				t.Errorf("svc url %q", r.URL)
			}
		case "sync-tie":
			if r.Timeout != v1alpha1.DefaultSyncTimeout || r.FailurePolicy != v1alpha1.FailurePolicyAllow {
				t.Errorf("sync defaults: %+v", r)
			}
		}
	}
}

func TestCompileDeterministic(t *testing.T) {
	var routes []v1alpha1.CallbackRoute
	for i := range 50 {
		routes = append(routes, route("ns", fmt.Sprintf("r%02d", i), i%7, v1alpha1.ProviderOpenIM, fmt.Sprintf("app%d", i%3), v1alpha1.ModeAsync, "b", "a", "a", "c*"))
	}
	s1, _ := Compile(Input{Routes: routes})
	rev := make([]v1alpha1.CallbackRoute, len(routes))
	for i := range routes {
		rev[len(routes)-1-i] = routes[i]
	}
	s2, _ := Compile(Input{Routes: rev})
	j1, _ := json.Marshal(s1)
	j2, _ := json.Marshal(s2)
	if string(j1) != string(j2) {
		t.Fatalf("snapshot depends on input order")
	}
	if got := s1.Routes[0].Commands; fmt.Sprint(got) != "[a b c*]" {
		t.Errorf("commands not sorted and de-duplicated: %v", got)
	}
	var back Snapshot
	if err := json.Unmarshal(j1, &back); err != nil {
		t.Fatal(err)
	}
	j3, _ := json.Marshal(&back)
	if string(j3) != string(j1) {
		t.Errorf("snapshot does not round-trip through JSON")
	}
}

func TestCompileInvalid(t *testing.T) {
	base := route("ns", "r", 0, v1alpha1.ProviderTencentIM, "1400000001", v1alpha1.ModeSync, "C2C.*")
	cases := map[string]func(r *v1alpha1.CallbackRoute){
		"unknown provider":   func(r *v1alpha1.CallbackRoute) { r.Spec.Provider = "Slack" },
		"no commands":        func(r *v1alpha1.CallbackRoute) { r.Spec.Commands = nil },
		"star in the middle": func(r *v1alpha1.CallbackRoute) { r.Spec.Commands = []string{"C2C*.x"} },
		"both backends": func(r *v1alpha1.CallbackRoute) {
			r.Spec.Backend.Service = &v1alpha1.ServiceReference{Name: "a", Port: 1}
		},
		"no backend":              func(r *v1alpha1.CallbackRoute) { r.Spec.Backend.URL = "" },
		"ftp url":                 func(r *v1alpha1.CallbackRoute) { r.Spec.Backend.URL = "ftp://x" },
		"path with query":         func(r *v1alpha1.CallbackRoute) { r.Spec.Backend.Path = "/a?b" },
		"tencent sync timeout 2s": func(r *v1alpha1.CallbackRoute) { r.Spec.Backend.Timeout = &metav1.Duration{Duration: 2 * time.Second} },
		"retry on sync":           func(r *v1alpha1.CallbackRoute) { r.Spec.Retry = &v1alpha1.RetryPolicy{MaxAttempts: 3} },
		"reject on async": func(r *v1alpha1.CallbackRoute) {
			r.Spec.Mode, r.Spec.FailurePolicy = v1alpha1.ModeAsync, v1alpha1.FailurePolicyReject
		},
		"basic auth on tencent": func(r *v1alpha1.CallbackRoute) {
			r.Spec.Verify = &v1alpha1.Verification{BasicAuthSecretRef: &v1alpha1.LocalObjectReference{Name: "x"}}
		},
		"bad cidr": func(r *v1alpha1.CallbackRoute) {
			r.Spec.Verify = &v1alpha1.Verification{SourceCIDRs: []string{"10.0.0.0/33"}}
		},
		"request age 0.5s": func(r *v1alpha1.CallbackRoute) {
			r.Spec.Verify = &v1alpha1.Verification{MaxRequestAge: &metav1.Duration{Duration: 500 * time.Millisecond}}
		},
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			r := *base.DeepCopy()
			mutate(&r)
			good := route("ns", "good", 0, v1alpha1.ProviderOpenIM, "prod", v1alpha1.ModeAsync, "*")
			snap, sts := Compile(Input{Routes: []v1alpha1.CallbackRoute{r, good}})
			if sts[0].Accepted || sts[0].AcceptedReason != v1alpha1.ReasonInvalid || sts[0].AcceptedMessage == "" {
				t.Errorf("got %+v, want Invalid", sts[0])
			}
			if !sts[1].Routed || len(snap.Routes) != 1 {
				t.Errorf("a bad route affected a good one: %+v", sts[1])
			}
		})
	}
}

func TestTableLookup(t *testing.T) {
	routes := []v1alpha1.CallbackRoute{
		route("ns", "all-async", 0, v1alpha1.ProviderTencentIM, "1", v1alpha1.ModeAsync, "*"),
		route("ns", "group-async", 0, v1alpha1.ProviderTencentIM, "1", v1alpha1.ModeAsync, "Group.*", "Group.CallbackAfterSendMsg"),
		route("ns", "c2c-exact-sync", 5, v1alpha1.ProviderTencentIM, "1", v1alpha1.ModeSync, "C2C.CallbackBeforeSendMsg"),
		route("ns", "c2c-prefix-sync", 1, v1alpha1.ProviderTencentIM, "1", v1alpha1.ModeSync, "C2C.*"),
		route("ns", "catch-all-sync", 0, v1alpha1.ProviderTencentIM, "1", v1alpha1.ModeSync, "*"),
		route("ns", "openim", 0, v1alpha1.ProviderOpenIM, "1", v1alpha1.ModeAsync, "callbackAfterSendSingleMsgCommand"),
	}
	snap, _ := Compile(Input{Routes: routes})
	tab, err := NewTable(snap)
	if err != nil {
		t.Fatal(err)
	}
	names := func(rs []*Route) string {
		var s []string
		for _, r := range rs {
			s = append(s, r.Name)
		}
		return fmt.Sprint(s)
	}
	cases := []struct {
		command    string
		sync, asyn string
	}{
		{"C2C.CallbackBeforeSendMsg", "[c2c-exact-sync c2c-prefix-sync catch-all-sync]", "[all-async]"},
		{"C2C.CallbackFutureCommand", "[c2c-prefix-sync catch-all-sync]", "[all-async]"},
		{"Group.CallbackAfterSendMsg", "[catch-all-sync]", "[all-async group-async]"},
		{"Group.Unknown", "[catch-all-sync]", "[all-async group-async]"},
		{"State.StateChange", "[catch-all-sync]", "[all-async]"},
		{"", "[catch-all-sync]", "[all-async]"},
	}
	app := tab.App(v1alpha1.ProviderTencentIM, "1")
	for _, c := range cases {
		m := app.Lookup(c.command)
		if m == nil {
			t.Fatalf("%s: no match", c.command)
		}
		if got := names(m.Sync); got != c.sync {
			t.Errorf("%s: sync %s, want %s", c.command, got, c.sync)
		}
		if got := names(m.Async); got != c.asyn {
			t.Errorf("%s: async %s, want %s", c.command, got, c.asyn)
		}
	}
	if tab.App(v1alpha1.ProviderTencentIM, "2") != nil {
		t.Error("unknown app found")
	}
	oi := tab.App(v1alpha1.ProviderOpenIM, "1")
	if oi.Lookup("callbackBeforeSendSingleMsgCommand") != nil {
		t.Error("an exact-only app matched another command")
	}
	if m := oi.Lookup("callbackAfterSendSingleMsgCommand"); m == nil || names(m.Async) != "[openim]" {
		t.Error("exact OpenIM command not found")
	}
}

func TestTableSharesTokens(t *testing.T) {
	a := route("ns", "a", 0, v1alpha1.ProviderTencentIM, "1", v1alpha1.ModeAsync, "*")
	a.Spec.Verify = &v1alpha1.Verification{TokenSecretRef: &v1alpha1.TokenSecretReference{Name: "s", PreviousKey: "old"}}
	b := route("ns", "b", 0, v1alpha1.ProviderTencentIM, "1", v1alpha1.ModeAsync, "*")
	b.Spec.Verify = &v1alpha1.Verification{TokenSecretRef: &v1alpha1.TokenSecretReference{Name: "s"}}
	snap, _ := Compile(Input{Routes: []v1alpha1.CallbackRoute{a, b}, Secret: secrets(map[string]*corev1.Secret{
		"ns/s": {StringData: map[string]string{"token": "t1", "old": "t0"}},
	})})
	tab, err := NewTable(snap)
	if err != nil {
		t.Fatal(err)
	}
	app := tab.App(v1alpha1.ProviderTencentIM, "1")
	if fmt.Sprint(app.Tokens) != "[t1 t0]" || fmt.Sprint(app.Routes[0].TokenIdx) != "[0 1]" || fmt.Sprint(app.Routes[1].TokenIdx) != "[0]" {
		t.Errorf("tokens %v, idx %v %v", app.Tokens, app.Routes[0].TokenIdx, app.Routes[1].TokenIdx)
	}
}

func TestNewTableRejectsBadSnapshot(t *testing.T) {
	for name, cr := range map[string]CompiledRoute{
		"bad url":      {Namespace: "n", Name: "a", Provider: v1alpha1.ProviderOpenIM, AppID: "x", Commands: []string{"*"}, Mode: v1alpha1.ModeAsync, URL: "::"},
		"bad cidr":     {Namespace: "n", Name: "a", Provider: v1alpha1.ProviderOpenIM, AppID: "x", Commands: []string{"*"}, Mode: v1alpha1.ModeAsync, URL: "http://a", SourceCIDRs: []string{"x"}},
		"bad provider": {Namespace: "n", Name: "a", Provider: "X", AppID: "x", Commands: []string{"*"}, Mode: v1alpha1.ModeAsync, URL: "http://a"},
	} {
		if _, err := NewTable(&Snapshot{Routes: []CompiledRoute{cr}}); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// BenchmarkLookup measures a lookup in an app with many routes: it must not grow with them.
func BenchmarkLookup(b *testing.B) {
	var routes []v1alpha1.CallbackRoute
	for i := range 10000 {
		routes = append(routes, route("ns", fmt.Sprintf("r%05d", i), i, v1alpha1.ProviderTencentIM, "1", v1alpha1.ModeAsync,
			fmt.Sprintf("Cmd%d.Exact", i), fmt.Sprintf("P%d.*", i)))
	}
	snap, _ := Compile(Input{Routes: routes})
	tab, err := NewTable(snap)
	if err != nil {
		b.Fatal(err)
	}
	app := tab.App(v1alpha1.ProviderTencentIM, "1")
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if app.Lookup("P9999.Future") == nil {
			b.Fatal("no match")
		}
	}
}
