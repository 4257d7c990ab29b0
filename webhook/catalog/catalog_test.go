package catalog_test

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/callback-router/callback-router/api/v1alpha1"
	"github.com/callback-router/callback-router/webhook/callback"
	"github.com/callback-router/callback-router/webhook/catalog"
	"github.com/callback-router/callback-router/webhook/samples"
)

const (
	tencent = v1alpha1.ProviderTencentIM
	openIM  = v1alpha1.ProviderOpenIM
)

// TestEveryCommandHasASample: every catalogue command has exactly one sample body of its
// own, and every sample is of a catalogue command.
func TestEveryCommandHasASample(t *testing.T) {
	seen := map[v1alpha1.Provider]map[string]int{tencent: {}, openIM: {}}
	for _, s := range samples.All() {
		if _, ok := catalog.Lookup(s.Provider, s.Command); !ok {
			t.Errorf("sample %s: %s does not know %s", s.Name, s.Provider, s.Command)
		}
		seen[s.Provider][s.Command]++
	}
	for _, p := range catalog.Providers() {
		for _, c := range catalog.Commands(p) {
			if n := seen[p][c.Name]; n != 1 {
				t.Errorf("%s %s: %d samples, want 1", p, c.Name, n)
			}
		}
	}
	// protocols.md 1.5 lists 55 Tencent commands, 2.6 lists 52 OpenIM ones plus the
	// pre-v3.7 name of the modify command.
	if n := len(catalog.Commands(tencent)); n != 55 {
		t.Errorf("%d Tencent commands, protocols.md 1.5 lists 55", n)
	}
	if n := len(catalog.Commands(openIM)); n != 53 {
		t.Errorf("%d OpenIM commands, protocols.md 2.6 lists 53 with callbackMsgModifyCommand", n)
	}
}

// TestIDKeys checks each command's stated idempotency key against what the receiver
// really computes (callback.ComputeID) for its sample body.
func TestIDKeys(t *testing.T) {
	for _, s := range samples.All() {
		c, ok := catalog.Lookup(s.Provider, s.Command)
		if !ok {
			continue
		}
		var f struct {
			MsgKey, GroupId, ServerMsgID string //nolint:revive // the bodies' own names
			MsgSeq                       json.Number
			Events                       []struct{ PushID string }
		}
		if err := json.Unmarshal(s.Body, &f); err != nil {
			t.Fatalf("%s: %v", s.Name, err)
		}
		got := callback.ComputeID(s.Provider, s.Command, s.Body)
		want := ""
		switch c.IDKey {
		case catalog.IDMsgKey:
			want = s.Command + ":" + f.MsgKey
		case catalog.IDGroupMsgSeq:
			want = s.Command + ":" + f.GroupId + "_" + f.MsgSeq.String()
		case catalog.IDServerMsgID:
			want = s.Command + ":" + f.ServerMsgID
		case catalog.IDPushID:
			if !strings.HasPrefix(got, s.Command+":push:") || len(f.Events) < 2 {
				t.Errorf("%s: id %q is not the PushIDs' key", s.Name, got)
			}
			continue
		case catalog.IDBodyHash:
			if !strings.HasPrefix(got, s.Command+":sha256:") {
				t.Errorf("%s: catalogue says %s, receiver computes %q", s.Name, c.IDKey, got)
			}
			continue
		default:
			t.Fatalf("%s: unknown IDKey %q", s.Name, c.IDKey)
		}
		if got != want || strings.HasSuffix(want, ":") || strings.HasSuffix(want, "_") {
			t.Errorf("%s: catalogue says %s (%q), receiver computes %q", s.Name, c.IDKey, want, got)
		}
	}
}

func TestKindsAndAnswers(t *testing.T) {
	for _, tc := range []struct {
		p      v1alpha1.Provider
		name   string
		kind   catalog.Kind
		answer []string
	}{
		{tencent, "C2C.CallbackBeforeSendMsg", catalog.Before, []string{"MsgBody", "CloudCustomData"}},
		{tencent, "C2C.CallbackAfterSendMsg", catalog.After, nil},
		{tencent, "Group.CallbackBeforeInviteJoinGroup", catalog.Before, []string{"RefusedMembers_Account"}},
		{tencent, "Sns.CallbackPrevFriendAdd", catalog.Before, []string{"ResultItem"}},
		{tencent, "Push.OfflinePush", catalog.After, nil},
		{openIM, "callbackBeforeAfterMsgCommand", catalog.After, nil}, // the revoke after-callback
		{openIM, "callbackBeforeOfflinePushCommand", catalog.Before, []string{"userIDList", "offlinePushInfo"}},
		{openIM, "callbackBeforeInviteJoinGroupCommand", catalog.Before, []string{"refusedMembersAccount"}},
		{openIM, "callbackBeforeSendSingleMsgCommand", catalog.Before, nil},
	} {
		c, ok := catalog.Lookup(tc.p, tc.name)
		if !ok {
			t.Errorf("%s %s missing", tc.p, tc.name)
			continue
		}
		if c.Kind != tc.kind || c.Answered() != (tc.kind == catalog.Before) || !reflect.DeepEqual(c.AnswerFields, tc.answer) {
			t.Errorf("%s: kind %s answer %v, want %s %v", tc.name, c.Kind, c.AnswerFields, tc.kind, tc.answer)
		}
	}
	// Every Before command of OpenIM has a webhooks.yml key; After ones never carry answer fields.
	for _, p := range catalog.Providers() {
		for _, c := range catalog.Commands(p) {
			if c.Kind == catalog.After && len(c.AnswerFields) > 0 {
				t.Errorf("%s: an after-callback with answer fields", c.Name)
			}
			if p == openIM && c.ConfigKey == "" {
				t.Errorf("%s: no webhooks.yml key", c.Name)
			}
			if _, ok := catalog.Lookup(p, c.Name); !ok || c.Group == "" {
				t.Errorf("%s: lookup or group broken", c.Name)
			}
		}
	}
}

func TestExpand(t *testing.T) {
	after := catalog.Expand(openIM, []string{catalog.SelectAfter})
	if !contains(after, "callbackBeforeAfterMsgCommand") || contains(after, "callbackBeforeSendSingleMsgCommand") {
		t.Errorf("@after of OpenIM: %v", after)
	}
	before := catalog.Expand(tencent, []string{catalog.SelectBefore, "Push.*", "C2C.CallbackBeforeSendMsg"})
	want := append(catalog.Select(tencent, catalog.Before), "Push.*")
	if len(before) != len(want) || !contains(before, "Push.*") || !contains(before, "Sns.CallbackPrevFriendAdd") {
		t.Errorf("@before of Tencent: %v, want %v", before, want)
	}
	for _, c := range catalog.Expand(tencent, []string{catalog.SelectBefore}) {
		if k, _ := catalog.Lookup(tencent, c); k.Kind != catalog.Before {
			t.Errorf("@before expanded to %s (%s)", c, k.Kind)
		}
	}
	if n, m := len(catalog.Select(tencent, catalog.Before)), len(catalog.Select(tencent, catalog.After)); n+m != len(catalog.Commands(tencent)) || n != 11 {
		t.Errorf("Tencent: %d before + %d after", n, m)
	}
	if bad := catalog.ValidateSelectors([]string{"@after", "@aftr", "Group.*", "@"}); !reflect.DeepEqual(bad, []string{"@aftr", "@"}) {
		t.Errorf("ValidateSelectors: %v", bad)
	}
	if !catalog.Covers(openIM, []string{"@after"}, "callbackBeforeAfterMsgCommand") ||
		catalog.Covers(openIM, []string{"@after"}, "callbackBeforeSendSingleMsgCommand") ||
		!catalog.Covers(tencent, []string{"Push.*"}, "Push.OfflinePush") ||
		catalog.Covers(tencent, []string{"@before"}, "C2C.NotYetInvented") {
		t.Error("Covers")
	}
}

func TestFindUnknown(t *testing.T) {
	got := catalog.FindUnknown(tencent, []string{
		"C2C.CallbackAfterSendMessage", // the example
		"C2C.CallbackAfterSendMsg",
		"c2c.callbackbeforesendmsg",
		"callbackAfterSendSingleMsgCommand",
		"Grop.*",
		"Group.*",
		"*",
		"@after",
		"Nothing.LikeAnything",
	})
	want := []catalog.Unknown{
		{Command: "C2C.CallbackAfterSendMessage", Suggestion: "C2C.CallbackAfterSendMsg"},
		{Command: "c2c.callbackbeforesendmsg", Suggestion: "C2C.CallbackBeforeSendMsg"},
		{Command: "callbackAfterSendSingleMsgCommand", OtherProvider: openIM},
		{Command: "Grop.*", Suggestion: "Group.*"},
		{Command: "Nothing.LikeAnything"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got  %+v\nwant %+v", got, want)
	}
	if s := got[0].String(); s != "C2C.CallbackAfterSendMessage (did you mean C2C.CallbackAfterSendMsg?)" {
		t.Errorf("message %q", s)
	}
	if s := got[2].String(); s != "callbackAfterSendSingleMsgCommand (a command of OpenIM)" {
		t.Errorf("message %q", s)
	}
	// OpenIM's pre-v3.7 name is known; a plausible but wrong revoke name gets the real one.
	if u := catalog.FindUnknown(openIM, []string{"callbackMsgModifyCommand", "callbackAfterRevokeMsgCommand"}); len(u) != 1 ||
		u[0].Suggestion != "callbackBeforeAfterMsgCommand" {
		t.Errorf("OpenIM: %+v", u)
	}
}

func TestAfterOnly(t *testing.T) {
	got := catalog.AfterOnly(tencent, []string{"C2C.CallbackAfterSendMsg", "C2C.CallbackBeforeSendMsg", "Push.*", "Group.*", "@after", "@before", "*", "C2C.Unknown"})
	if want := []string{"C2C.CallbackAfterSendMsg", "Push.*", "@after"}; !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	if got := catalog.AfterOnly(openIM, []string{"callbackBeforeAfterMsgCommand"}); len(got) != 1 {
		t.Errorf("the revoke after-callback is an after-callback whatever its name: %v", got)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
