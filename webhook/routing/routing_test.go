package routing

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/callback-router/callback-router/api/v1alpha1"
	"github.com/callback-router/callback-router/internal/apicases"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// allGrant admits routes of every namespace, every mode and command.
var allGrant = v1alpha1.RouteGrant{Namespaces: v1alpha1.Namespaces{From: v1alpha1.NamespacesFromAll}}

func at(age int) metav1.Time { return metav1.NewTime(t0.Add(time.Duration(age) * time.Second)) }

// appObj is an app on the receiver "recv/default" without verification.
func appObj(ns, name string, age int, p v1alpha1.Provider, appID string, grants ...v1alpha1.RouteGrant) v1alpha1.CallbackApp {
	return v1alpha1.CallbackApp{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, CreationTimestamp: at(age)},
		Spec: v1alpha1.CallbackAppSpec{Provider: p, AppID: appID, AllowedRoutes: grants,
			ReceiverRef: v1alpha1.ObjectReference{Name: "default", Namespace: "recv"}},
	}
}

// route is a route to a loopback URL backend; appRef is "name" or "namespace/name".
func route(ns, name string, age int, appRef string, mode v1alpha1.Mode, cmds ...string) v1alpha1.CallbackRoute {
	ref := v1alpha1.ObjectReference{Name: appRef}
	if a, b, ok := strings.Cut(appRef, "/"); ok {
		ref = v1alpha1.ObjectReference{Namespace: a, Name: b}
	}
	return v1alpha1.CallbackRoute{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, CreationTimestamp: at(age)},
		Spec: v1alpha1.CallbackRouteSpec{
			AppRef: ref, Commands: cmds, Mode: mode,
			Backend: v1alpha1.Backend{URL: "http://127.0.0.1:9000", Path: "/" + name},
		},
	}
}

// standalone compiles routes against the apps ns/tencent-1 (TencentIM "1") and ns/openim-1
// (OpenIM "1"), both admitting every namespace, and returns the one table.
func standalone(routes ...v1alpha1.CallbackRoute) *Snapshot {
	out := Compile(Input{Standalone: true, Routes: routes, Apps: []v1alpha1.CallbackApp{
		appObj("ns", "tencent-1", 0, v1alpha1.ProviderTencentIM, "1", allGrant),
		appObj("ns", "openim-1", 0, v1alpha1.ProviderOpenIM, "1", allGrant),
	}})
	return out.Tables[StandaloneReceiver]
}

func secrets(m map[string]*corev1.Secret) SecretGetter {
	return func(ns, name string) (*corev1.Secret, bool) {
		s, ok := m[ns+"/"+name]
		return s, ok
	}
}

// receiverObj is a receiver admitting apps of the given namespaces selection.
func receiverObj(ns, name string, from v1alpha1.Namespaces) v1alpha1.CallbackReceiver {
	return v1alpha1.CallbackReceiver{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       v1alpha1.CallbackReceiverSpec{AllowedApps: &v1alpha1.AllowedApps{Namespaces: from}},
	}
}

func cond(c Cond) string { return fmt.Sprintf("%v/%s", c.True, c.Reason) }

// TestCompileStatuses compiles apps and routes in every state and checks each status, then
// the table they produce.
//
//nolint:gocyclo // one scenario told in order; the branches are its checks
func TestCompileStatuses(t *testing.T) {
	signed := appObj("im", "signed", 0, v1alpha1.ProviderTencentIM, "1400000001", allGrant)
	signed.Spec.Verify = &v1alpha1.AppVerification{
		TokenSecretRef: &v1alpha1.TokenSecretReference{Name: "tencent", PreviousKey: "previous"},
		SourceCIDRs:    []string{"203.0.113.7/24"}, ForwardSignature: true,
	}
	noSecret := appObj("im", "no-secret", 0, v1alpha1.ProviderTencentIM, "1400000002", allGrant)
	noSecret.Spec.Verify = &v1alpha1.AppVerification{TokenSecretRef: &v1alpha1.TokenSecretReference{Name: "nope"}}
	openim := appObj("im", "openim", 0, v1alpha1.ProviderOpenIM, "prod", allGrant)
	openim.Spec.Verify = &v1alpha1.AppVerification{BasicAuthSecretRef: &v1alpha1.LocalObjectReference{Name: "hook"}}
	badApp := appObj("im", "bad", 0, v1alpha1.ProviderTencentIM, "not-digits", allGrant)

	svc := route("chat", "svc", 0, "im/openim", v1alpha1.ModeAsync, "*")
	svc.Spec.Backend = v1alpha1.Backend{Service: &v1alpha1.ServiceReference{Name: "archiver", Port: 8080}, Path: "/cb"}
	svcMissing := route("chat", "svc-missing", 0, "im/openim", v1alpha1.ModeAsync, "*")
	svcMissing.Spec.Backend = v1alpha1.Backend{Service: &v1alpha1.ServiceReference{Name: "gone", Port: 8080}}
	invalid := route("chat", "invalid", 0, "im/signed", v1alpha1.ModeAsync, "a*b")

	in := Input{
		Standalone: true,
		Apps:       []v1alpha1.CallbackApp{signed, noSecret, openim, badApp},
		Routes: []v1alpha1.CallbackRoute{
			route("chat", "async", 1, "im/signed", v1alpha1.ModeAsync, "C2C.*"),
			route("chat", "sync-old", 10, "im/signed", v1alpha1.ModeSync, "C2C.CallbackBeforeSendMsg"),
			route("chat", "sync-new", 20, "im/signed", v1alpha1.ModeSync, "C2C.CallbackBeforeSendMsg", "Group.*"),
			// Same age as sync-old: namespace/name breaks the tie, "a-ns" < "chat".
			route("a-ns", "sync-tie", 10, "im/signed", v1alpha1.ModeSync, "C2C.CallbackBeforeSendMsg"),
			route("chat", "no-app", 0, "im/nothing", v1alpha1.ModeAsync, "*"),
			route("chat", "app-no-secret", 0, "im/no-secret", v1alpha1.ModeAsync, "*"),
			route("chat", "bad-app", 0, "im/bad", v1alpha1.ModeAsync, "*"),
			invalid, svc, svcMissing,
		},
		Secret: secrets(map[string]*corev1.Secret{
			"im/tencent": {Data: map[string][]byte{"token": []byte("new"), "previous": []byte("old")}},
			"im/hook":    {Data: map[string][]byte{"username": []byte("u"), "password": []byte("p")}},
		}),
		Service: func(ns string, s v1alpha1.ServiceReference) (string, error) {
			if s.Name == "gone" {
				return "", errors.New("service chat/gone not found")
			}
			return fmt.Sprintf("http://127.0.0.1:%d", s.Port), nil
		},
	}
	out := Compile(in)
	// accepted, resolvedRefs, ready as "bool/Reason"
	wantRoutes := map[string][3]string{
		"async":         {"true/Accepted", "true/ResolvedRefs", "true/Routed"},
		"sync-old":      {"false/Conflict", "true/ResolvedRefs", "false/NotRouted"},
		"sync-new":      {"false/Conflict", "true/ResolvedRefs", "false/NotRouted"},
		"sync-tie":      {"true/Accepted", "true/ResolvedRefs", "true/Routed"},
		"no-app":        {"false/AppNotFound", "false/Invalid", "false/NotRouted"},
		"app-no-secret": {"true/Accepted", "true/ResolvedRefs", "false/AppNotReady"},
		"bad-app":       {"false/NotAllowedByApp", "false/Invalid", "false/NotRouted"},
		"invalid":       {"false/Invalid", "false/Invalid", "false/NotRouted"},
		"svc":           {"true/Accepted", "true/ResolvedRefs", "true/Routed"},
		"svc-missing":   {"true/Accepted", "false/BackendNotFound", "false/NotRouted"},
	}
	for i, st := range out.Routes {
		if st.Name != in.Routes[i].Name {
			t.Fatalf("status %d is for %s, want %s (input order)", i, st.Name, in.Routes[i].Name)
		}
		got := [3]string{cond(st.Accepted), cond(st.ResolvedRefs), cond(st.Ready)}
		if got != wantRoutes[st.Name] {
			t.Errorf("route %s: got %v, want %v (%s; %s; %s)", st.Name, got, wantRoutes[st.Name], st.Accepted.Message, st.ResolvedRefs.Message, st.Ready.Message)
		}
	}
	wantApps := map[string][3]string{
		"signed":    {"true/Accepted", "true/ResolvedRefs", "true/Routed"},
		"no-secret": {"true/Accepted", "false/SecretNotFound", "false/NotRouted"},
		"openim":    {"true/Accepted", "true/ResolvedRefs", "true/Routed"},
		"bad":       {"false/Invalid", "false/Invalid", "false/NotRouted"},
	}
	for _, st := range out.Apps {
		got := [3]string{cond(st.Accepted), cond(st.ResolvedRefs), cond(st.Ready)}
		if got != wantApps[st.Name] {
			t.Errorf("app %s: got %v, want %v (%s; %s)", st.Name, got, wantApps[st.Name], st.Accepted.Message, st.ResolvedRefs.Message)
		}
	}
	if out.Apps[0].AttachedRoutes != 2 || out.Apps[2].AttachedRoutes != 1 || out.Apps[1].AttachedRoutes != 0 {
		t.Errorf("attachedRoutes %d %d %d", out.Apps[0].AttachedRoutes, out.Apps[1].AttachedRoutes, out.Apps[2].AttachedRoutes)
	}
	if m := out.Routes[1].Accepted.Message; m != "Sync command C2C.CallbackBeforeSendMsg of TencentIM app 1400000001 is already answered by the older route a-ns/sync-tie" {
		t.Errorf("conflict message: %q", m)
	}
	if m := out.Routes[5].Ready.Message; !strings.Contains(m, "secret im/nope not found") {
		t.Errorf("AppNotReady message does not say why: %q", m)
	}
	if out.Routes[0].URL != "/tencent?SdkAppid=1400000001" || out.Routes[8].URL != "/openim/prod" || out.Apps[2].URL != "/openim/prod" {
		t.Errorf("urls: %q %q %q", out.Routes[0].URL, out.Routes[8].URL, out.Apps[2].URL)
	}
	snap := out.Tables[StandaloneReceiver]
	if len(snap.Routes) != 3 || len(snap.Apps) != 2 {
		t.Fatalf("snapshot has %d routes and %d apps, want 3 and 2", len(snap.Routes), len(snap.Apps))
	}
	for _, r := range snap.Routes {
		switch r.Name {
		case "async":
			if fmt.Sprint(r.Tokens) != "[new old]" || r.MaxRequestAge != v1alpha1.DefaultMaxRequestAge ||
				fmt.Sprint(r.SourceCIDRs) != "[203.0.113.0/24]" || !r.ForwardSignature || r.App != "im/signed" {
				t.Errorf("async: the app's verification was not copied: %+v", r)
			}
			if r.MaxAttempts != v1alpha1.DefaultMaxAttempts || r.Timeout != v1alpha1.DefaultAsyncTimeout {
				t.Errorf("async: defaults not applied: %+v", r)
			}
		case "svc":
			if r.URL != "http://127.0.0.1:8080/cb" || r.BasicAuth == nil || r.BasicAuth.Username != "u" || r.ForwardSignature {
				t.Errorf("svc: %+v", r)
			}
		case "sync-tie":
			if r.Timeout != v1alpha1.DefaultSyncTimeout || r.FailurePolicy != v1alpha1.FailurePolicyAllow {
				t.Errorf("sync defaults: %+v", r)
			}
		}
	}
}

// TestAllowedRoutesMatrix: the first allowedRoutes entry whose namespaces match the
// route's namespace decides; Same, All and Selector; the modes and commands limits.
func TestAllowedRoutesMatrix(t *testing.T) {
	labels := map[string]map[string]string{
		"analytics": {"im-callbacks": "analytics"},
		"chat":      {"im-callbacks": "chat"},
		"other":     {"team": "other"},
	}
	sel := func(v string) v1alpha1.Namespaces {
		return v1alpha1.Namespaces{From: v1alpha1.NamespacesFromSelector,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"im-callbacks": v}}}
	}
	tests := map[string]struct {
		grants []v1alpha1.RouteGrant
		route  v1alpha1.CallbackRoute
		// reason of the route's Accepted condition
		want string
		// part of the message that says why
		msg string
	}{
		"default is Same: own namespace": {
			route: route("im", "r", 0, "app", v1alpha1.ModeSync, "*"), want: "Accepted",
		},
		"default is Same: other namespace": {
			route: route("chat", "r", 0, "im/app", v1alpha1.ModeAsync, "*"), want: "NotAllowedByApp",
			msg: "namespace chat is not allowed by CallbackApp im/app",
		},
		"All admits any namespace": {
			grants: []v1alpha1.RouteGrant{allGrant},
			route:  route("other", "r", 0, "im/app", v1alpha1.ModeSync, "*"), want: "Accepted",
		},
		"Selector admits a labelled namespace": {
			grants: []v1alpha1.RouteGrant{{Namespaces: sel("chat")}},
			route:  route("chat", "r", 0, "im/app", v1alpha1.ModeSync, "*"), want: "Accepted",
		},
		"Selector refuses an unlabelled namespace": {
			grants: []v1alpha1.RouteGrant{{Namespaces: sel("chat")}},
			route:  route("other", "r", 0, "im/app", v1alpha1.ModeAsync, "*"), want: "NotAllowedByApp",
			msg: "namespace other is not allowed",
		},
		"Selector refuses a namespace it knows nothing of": {
			grants: []v1alpha1.RouteGrant{{Namespaces: sel("chat")}},
			route:  route("unknown", "r", 0, "im/app", v1alpha1.ModeAsync, "*"), want: "NotAllowedByApp",
		},
		"Async only: an Async route is admitted": {
			grants: []v1alpha1.RouteGrant{{Namespaces: sel("analytics"), Modes: []v1alpha1.Mode{v1alpha1.ModeAsync}}},
			route:  route("analytics", "r", 0, "im/app", v1alpha1.ModeAsync, "C2C.CallbackBeforeSendMsg"), want: "Accepted",
		},
		"Async only: a Sync route is not": {
			grants: []v1alpha1.RouteGrant{{Namespaces: sel("analytics"), Modes: []v1alpha1.Mode{v1alpha1.ModeAsync}}},
			route:  route("analytics", "r", 0, "im/app", v1alpha1.ModeSync, "C2C.CallbackBeforeSendMsg"), want: "NotAllowedByApp",
			msg: "mode Sync is not allowed for namespace analytics by CallbackApp im/app (allowedRoutes[0] allows Async)",
		},
		"commands: exact and within a granted prefix": {
			grants: []v1alpha1.RouteGrant{{Namespaces: sel("analytics"), Commands: []string{"Push.*", "C2C.CallbackAfterSendMsg"}}},
			route:  route("analytics", "r", 0, "im/app", v1alpha1.ModeAsync, "Push.OfflinePush", "Push.All*", "C2C.CallbackAfterSendMsg"), want: "Accepted",
		},
		"commands: a wider prefix than granted": {
			grants: []v1alpha1.RouteGrant{{Namespaces: sel("analytics"), Commands: []string{"Push.*", "C2C.CallbackAfterSendMsg"}}},
			route:  route("analytics", "r", 0, "im/app", v1alpha1.ModeAsync, "Push.*", "C2C.*", "*"), want: "NotAllowedByApp",
			msg: "commands C2C.*, * are not allowed",
		},
		"commands: an exact grant does not admit a prefix": {
			grants: []v1alpha1.RouteGrant{{Namespaces: sel("analytics"), Commands: []string{"C2C.CallbackAfterSendMsg"}}},
			route:  route("analytics", "r", 0, "im/app", v1alpha1.ModeAsync, "C2C.CallbackAfterSendMsg*"), want: "NotAllowedByApp",
		},
		"first matching entry decides, even when a later one is wider": {
			grants: []v1alpha1.RouteGrant{
				{Namespaces: sel("analytics"), Modes: []v1alpha1.Mode{v1alpha1.ModeAsync}},
				allGrant,
			},
			route: route("analytics", "r", 0, "im/app", v1alpha1.ModeSync, "*"), want: "NotAllowedByApp",
			msg: "allowedRoutes[0]",
		},
		"an entry that does not match is skipped": {
			grants: []v1alpha1.RouteGrant{
				{Namespaces: sel("analytics"), Modes: []v1alpha1.Mode{v1alpha1.ModeAsync}},
				{Namespaces: v1alpha1.Namespaces{From: v1alpha1.NamespacesFromSame}},
				{Namespaces: sel("chat")},
			},
			route: route("chat", "r", 0, "im/app", v1alpha1.ModeSync, "*"), want: "Accepted",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			out := Compile(Input{
				Standalone: true,
				Apps:       []v1alpha1.CallbackApp{appObj("im", "app", 0, v1alpha1.ProviderOpenIM, "prod", tc.grants...)},
				Routes:     []v1alpha1.CallbackRoute{tc.route},
				Namespace: func(n string) (map[string]string, bool) {
					l, ok := labels[n]
					return l, ok
				},
			})
			st := out.Routes[0]
			if st.Accepted.Reason != tc.want || !strings.Contains(st.Accepted.Message, tc.msg) {
				t.Fatalf("got %s %q, want %s containing %q", st.Accepted.Reason, st.Accepted.Message, tc.want, tc.msg)
			}
			inTable := len(out.Tables[StandaloneReceiver].Routes) == 1
			if inTable != (tc.want == "Accepted") || st.Routed() != inTable {
				t.Errorf("in table %v, routed %v, for a route %s", inTable, st.Routed(), tc.want)
			}
		})
	}
}

// TestReceiversAndAppConflicts: apps bind to their receiver if its allowedApps admit
// them; one table per receiver with only its apps; two apps claiming one provider+appID
// on one receiver: the younger is Conflict, on two receivers both are fine.
func TestReceiversAndAppConflicts(t *testing.T) {
	onRecv := func(a v1alpha1.CallbackApp, ns, name string) v1alpha1.CallbackApp {
		a.Spec.ReceiverRef = v1alpha1.ObjectReference{Namespace: ns, Name: name}
		return a
	}
	in := Input{
		Receivers: []v1alpha1.CallbackReceiver{
			receiverObj("recv", "public", v1alpha1.Namespaces{From: v1alpha1.NamespacesFromAll}),
			receiverObj("recv", "internal", v1alpha1.Namespaces{From: v1alpha1.NamespacesFromSelector,
				Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"internal": "yes"}}}),
			receiverObj("recv", "same", v1alpha1.Namespaces{}),
		},
		Apps: []v1alpha1.CallbackApp{
			onRecv(appObj("team-a", "chat", 10, v1alpha1.ProviderTencentIM, "1400000001", allGrant), "recv", "public"),
			onRecv(appObj("team-b", "chat-copy", 20, v1alpha1.ProviderTencentIM, "1400000001", allGrant), "recv", "public"),
			onRecv(appObj("team-b", "chat-internal", 30, v1alpha1.ProviderTencentIM, "1400000001", allGrant), "recv", "internal"),
			onRecv(appObj("team-a", "refused", 0, v1alpha1.ProviderOpenIM, "x", allGrant), "recv", "internal"),
			onRecv(appObj("team-a", "lost", 0, v1alpha1.ProviderOpenIM, "y", allGrant), "recv", "missing"),
			onRecv(appObj("team-a", "same-refused", 0, v1alpha1.ProviderOpenIM, "z", allGrant), "recv", "same"),
			onRecv(appObj("recv", "same-ok", 0, v1alpha1.ProviderOpenIM, "z", allGrant), "", "same"),
		},
		Routes: []v1alpha1.CallbackRoute{
			route("team-a", "r1", 0, "chat", v1alpha1.ModeAsync, "*"),
			route("team-b", "r2", 0, "chat-copy", v1alpha1.ModeAsync, "*"),
			route("team-b", "r3", 0, "chat-internal", v1alpha1.ModeAsync, "*"),
		},
		Namespace: func(n string) (map[string]string, bool) {
			return map[string]string{"internal": map[bool]string{true: "yes"}[n == "team-b"]}, true
		},
	}
	for i := range in.Routes {
		in.Routes[i].Spec.Backend = v1alpha1.Backend{Service: &v1alpha1.ServiceReference{Name: "svc", Port: 80}}
	}
	out := Compile(in)
	want := map[string]string{
		"chat": "true/Accepted", "chat-copy": "false/Conflict", "chat-internal": "true/Accepted",
		"refused": "false/NotAllowedByReceiver", "lost": "false/ReceiverNotFound",
		"same-refused": "false/NotAllowedByReceiver", "same-ok": "true/Accepted",
	}
	for _, st := range out.Apps {
		if got := cond(st.Accepted); got != want[st.Name] {
			t.Errorf("app %s: %s, want %s (%s)", st.Name, got, want[st.Name], st.Accepted.Message)
		}
	}
	if m := out.Apps[1].Accepted.Message; m != "TencentIM app 1400000001 on receiver recv/public is already claimed by the older CallbackApp team-a/chat" {
		t.Errorf("conflict message %q", m)
	}
	if r := out.Routes[1]; r.Ready.Reason != v1alpha1.ReasonAppNotReady || !strings.Contains(r.Ready.Message, "already claimed") {
		t.Errorf("route of the conflicting app: %+v", r.Ready)
	}
	pub := out.Tables[types.NamespacedName{Namespace: "recv", Name: "public"}]
	internal := out.Tables[types.NamespacedName{Namespace: "recv", Name: "internal"}]
	if len(out.Tables) != 3 || len(pub.Routes) != 1 || pub.Routes[0].Name != "r1" || len(internal.Routes) != 1 || internal.Routes[0].Name != "r3" {
		t.Errorf("tables: %d; public %+v; internal %+v", len(out.Tables), pub, internal)
	}
	if len(pub.Apps) != 1 || pub.Apps[0].Name != "chat" {
		t.Errorf("public table apps: %+v", pub.Apps)
	}
}

// TestBackendURLs: in a cluster a url backend must lie under one of the app's backendURLs
// (RefNotPermitted otherwise); in a file none are needed.
func TestBackendURLs(t *testing.T) {
	a := appObj("im", "app", 0, v1alpha1.ProviderOpenIM, "prod", allGrant)
	a.Spec.BackendURLs = []string{"https://hooks.example.com/im/", "http://127.0.0.1:9000"}
	tests := map[string]struct {
		url  string
		path string
		ok   bool
	}{
		"under the prefix":            {"https://hooks.example.com/im/archive", "", true},
		"the prefix itself":           {"https://hooks.example.com/im", "", true},
		"prefix by path":              {"https://hooks.example.com", "/im/x", true},
		"host-only prefix, any path":  {"http://127.0.0.1:9000/anything", "", true},
		"a sibling path":              {"https://hooks.example.com/imposter", "", false},
		"another host":                {"https://hooks.example.com.evil.test/im/", "", false},
		"user info hiding the host":   {"https://hooks.example.com@evil.test/im/", "", false},
		"another scheme":              {"http://hooks.example.com/im/", "", false},
		"another port":                {"http://127.0.0.1:9001/", "", false},
		"dot-dot out of the prefix":   {"https://hooks.example.com/im/../admin", "", false},
		"dot-dot by path":             {"https://hooks.example.com/im", "/../admin", false},
		"percent-encoded dot-dot too": {"https://hooks.example.com/im/%2e%2e/admin", "", false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			r := route("chat", "r", 0, "im/app", v1alpha1.ModeAsync, "*")
			r.Spec.Backend = v1alpha1.Backend{URL: tc.url, Path: tc.path}
			out := Compile(Input{
				Receivers: []v1alpha1.CallbackReceiver{receiverObj("recv", "default", v1alpha1.Namespaces{From: v1alpha1.NamespacesFromAll})},
				Apps:      []v1alpha1.CallbackApp{a}, Routes: []v1alpha1.CallbackRoute{r},
			})
			st := out.Routes[0]
			if st.ResolvedRefs.True != tc.ok || (!tc.ok && st.ResolvedRefs.Reason != v1alpha1.ReasonRefNotPermitted) || st.Routed() != tc.ok {
				t.Errorf("%s: %s %q", tc.url+tc.path, cond(st.ResolvedRefs), st.ResolvedRefs.Message)
			}
			// Standalone: the same route needs no backendURLs.
			noURLs := a.DeepCopy()
			noURLs.Spec.BackendURLs = nil
			if out := Compile(Input{Standalone: true, Apps: []v1alpha1.CallbackApp{*noURLs}, Routes: []v1alpha1.CallbackRoute{r}}); !out.Routes[0].Routed() {
				t.Errorf("standalone: %+v", out.Routes[0])
			}
		})
	}
}

// TestSecretsOnlyInAppNamespace: the compiler asks only for Secrets of the app's own
// namespace, never the route's, even when a Secret of the same name is there.
func TestSecretsOnlyInAppNamespace(t *testing.T) {
	a := appObj("im", "app", 0, v1alpha1.ProviderTencentIM, "1", allGrant)
	a.Spec.Verify = &v1alpha1.AppVerification{TokenSecretRef: &v1alpha1.TokenSecretReference{Name: "tok"}}
	var asked []string
	get := func(ns, name string) (*corev1.Secret, bool) {
		asked = append(asked, ns+"/"+name)
		if ns == "chat" { // the route's namespace has one; it must never be read
			return &corev1.Secret{Data: map[string][]byte{"token": []byte("planted")}}, true
		}
		return nil, false
	}
	out := Compile(Input{Standalone: true, Apps: []v1alpha1.CallbackApp{a},
		Routes: []v1alpha1.CallbackRoute{route("chat", "r", 0, "im/app", v1alpha1.ModeAsync, "*")}, Secret: get})
	if fmt.Sprint(asked) != "[im/tok]" {
		t.Errorf("asked for %v, want only im/tok", asked)
	}
	if out.Apps[0].ResolvedRefs.Reason != v1alpha1.ReasonSecretNotFound || out.Routes[0].Routed() {
		t.Errorf("app %+v, route %+v", out.Apps[0].ResolvedRefs, out.Routes[0].Ready)
	}
}

// TestSharedInvalidCases runs the table of invalid specs that the API server's tests also
// run (internal/apicases) through the compiler.
func TestSharedInvalidCases(t *testing.T) {
	for _, tc := range apicases.Invalid() {
		t.Run(tc.Name, func(t *testing.T) {
			app, route := apicases.ValidApp(), apicases.ValidRoute()
			var st AppStatus
			var rst RouteStatus
			switch o := tc.Object.(type) {
			case *v1alpha1.CallbackApp:
				app = o
			case *v1alpha1.CallbackRoute:
				route = o
			case *v1alpha1.CallbackReceiver:
				if tc.Compiler {
					t.Fatal("the compiler does not validate receivers")
				}
				return
			}
			// ValidRoute's appRef names ValidApp, in the same namespace.
			out := Compile(Input{Standalone: true, Apps: []v1alpha1.CallbackApp{*app}, Routes: []v1alpha1.CallbackRoute{*route},
				Secret: secrets(map[string]*corev1.Secret{apicases.Namespace + "/tencent-im": {Data: map[string][]byte{"token": []byte("t")}}})})
			st, rst = out.Apps[0], out.Routes[0]
			var got Cond
			if _, ok := tc.Object.(*v1alpha1.CallbackApp); ok {
				got = st.Accepted
			} else {
				got = rst.Accepted
			}
			if !tc.Compiler {
				if !got.True {
					t.Fatalf("the case says only the API server rejects this; the compiler did too: %s", got.Message)
				}
				return
			}
			if got.True || got.Reason != v1alpha1.ReasonInvalid || !strings.Contains(got.Message, tc.WantCompilerMessage()) {
				t.Fatalf("got %s %q, want Invalid containing %q", cond(got), got.Message, tc.WantCompilerMessage())
			}
		})
	}
	// And the valid objects compile and route.
	app, route := apicases.ValidApp(), apicases.ValidRoute()
	out := Compile(Input{Standalone: true, Apps: []v1alpha1.CallbackApp{*app}, Routes: []v1alpha1.CallbackRoute{*route},
		Secret: secrets(map[string]*corev1.Secret{apicases.Namespace + "/tencent-im": {Data: map[string][]byte{"token": []byte("t")}}})})
	if !out.Routes[0].Routed() {
		t.Errorf("the valid route of apicases does not route: %+v", out.Routes[0])
	}
}

func TestCompileDeterministic(t *testing.T) {
	var routes []v1alpha1.CallbackRoute
	for i := range 50 {
		routes = append(routes, route("ns", fmt.Sprintf("r%02d", i), i%7, []string{"tencent-1", "openim-1"}[i%2], v1alpha1.ModeAsync, "b", "a", "c*"))
	}
	s1 := standalone(routes...)
	rev := make([]v1alpha1.CallbackRoute, len(routes))
	for i := range routes {
		rev[len(routes)-1-i] = routes[i]
	}
	s2 := standalone(rev...)
	j1, _ := json.Marshal(s1)
	j2, _ := json.Marshal(s2)
	if string(j1) != string(j2) {
		t.Fatalf("snapshot depends on input order")
	}
	if got := s1.Routes[0].Commands; fmt.Sprint(got) != "[a b c*]" {
		t.Errorf("commands not sorted: %v", got)
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

func TestTableLookup(t *testing.T) {
	routes := []v1alpha1.CallbackRoute{
		route("ns", "all-async", 0, "tencent-1", v1alpha1.ModeAsync, "*"),
		route("ns", "group-async", 0, "tencent-1", v1alpha1.ModeAsync, "Group.*", "Group.CallbackAfterSendMsg"),
		route("ns", "c2c-exact-sync", 5, "tencent-1", v1alpha1.ModeSync, "C2C.CallbackBeforeSendMsg"),
		route("ns", "c2c-prefix-sync", 1, "tencent-1", v1alpha1.ModeSync, "C2C.*"),
		route("ns", "catch-all-sync", 0, "tencent-1", v1alpha1.ModeSync, "*"),
		route("ns", "openim", 0, "openim-1", v1alpha1.ModeAsync, "callbackAfterSendSingleMsgCommand"),
	}
	tab, err := NewTable(standalone(routes...))
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
	a := appObj("ns", "app", 0, v1alpha1.ProviderTencentIM, "1", allGrant)
	a.Spec.Verify = &v1alpha1.AppVerification{TokenSecretRef: &v1alpha1.TokenSecretReference{Name: "s", PreviousKey: "old"}}
	out := Compile(Input{Standalone: true, Apps: []v1alpha1.CallbackApp{a},
		Routes: []v1alpha1.CallbackRoute{
			route("ns", "a", 0, "app", v1alpha1.ModeAsync, "*"),
			route("other", "b", 0, "ns/app", v1alpha1.ModeAsync, "*"),
		},
		Secret: secrets(map[string]*corev1.Secret{"ns/s": {StringData: map[string]string{"token": "t1", "old": "t0"}}}),
	})
	tab, err := NewTable(out.Tables[StandaloneReceiver])
	if err != nil {
		t.Fatal(err)
	}
	app := tab.App(v1alpha1.ProviderTencentIM, "1")
	if fmt.Sprint(app.Tokens) != "[t1 t0]" || fmt.Sprint(app.Routes[0].TokenIdx) != "[0 1]" || fmt.Sprint(app.Routes[1].TokenIdx) != "[0 1]" {
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
		routes = append(routes, route("ns", fmt.Sprintf("r%05d", i), i, "tencent-1", v1alpha1.ModeAsync,
			fmt.Sprintf("Cmd%d.Exact", i), fmt.Sprintf("P%d.*", i)))
	}
	tab, err := NewTable(standalone(routes...))
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
