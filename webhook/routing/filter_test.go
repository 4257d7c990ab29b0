package routing

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/callback-router/callback-router/api/v1alpha1"
	"github.com/callback-router/callback-router/webhook/samples"
)

// Filters of the docs (docs/recipes.md, docs/delivery.md), named once here so the tests and
// the benchmark use exactly what the docs show.
const (
	filterImageOnly    = `body.MsgBody.exists(m, m.MsgType == "TIMImageElem")`
	filterOneGroup     = `body.GroupId == "@TGS#2J4SZEAEL"`
	filterFailedSends  = `body.SendMsgResult != 0`
	filterPushFailures = `body.Events.exists(e, e.ErrCode != 0)`
	filterTextOnly     = `body.MsgBody.all(m, m.MsgType == "TIMTextElem")`
)

// TestFiltersOnSamples evaluates filters on every documented sample callback: each row
// names the sample and the expected outcome, with an error expected where the filter
// refers to a field the sample does not have.
func TestFiltersOnSamples(t *testing.T) {
	type want int
	const (
		match want = iota
		noMatch
		evalError // a runtime error: the callback does not match, and it is counted
	)
	tests := []struct {
		sample string
		filter string
		want   want
	}{
		// Tencent C2C after-send: a text message, sent successfully.
		{"tencent-c2c-after-send", filterImageOnly, noMatch},
		{"tencent-c2c-after-send", filterTextOnly, match},
		{"tencent-c2c-after-send", filterFailedSends, noMatch},
		{"tencent-c2c-after-send", `body.SendMsgResult == 0 && body.MsgSeq == 48374`, match},
		{"tencent-c2c-after-send", `body.From_Account == "jared" && body.To_Account in ["Jonh", "x"]`, match},
		{"tencent-c2c-after-send", `body.MsgBody[0].MsgContent.Text.contains("packet")`, match},
		{"tencent-c2c-after-send", filterOneGroup, evalError}, // no GroupId in a C2C message
		{"tencent-c2c-after-send", `has(body.GroupId) && body.GroupId == "x"`, noMatch},
		{"tencent-c2c-after-send", `command == "C2C.CallbackAfterSendMsg" && app == "1400000001"`, match},
		{"tencent-c2c-after-send", `query.OptPlatform == "Web"`, match},
		{"tencent-c2c-after-send", `body.MsgTime > 1557481125.5`, match}, // int against double
		// Tencent group after-send.
		{"tencent-group-after-send", filterOneGroup, match},
		{"tencent-group-after-send", `body.GroupId == "@TGS#other"`, noMatch},
		{"tencent-group-after-send", filterImageOnly, noMatch},
		{"tencent-group-after-send", `body.GroupAtInfo.exists(a, has(a.GroupAt_Account) && a.GroupAt_Account == "tandy")`, match},
		{"tencent-group-after-send", `body.Type == "Public"`, match},
		// Tencent official account after-send.
		{"tencent-official-account-after-send", `body.Official_Account.startsWith("@TOA#")`, match},
		{"tencent-official-account-after-send", filterTextOnly, match},
		{"tencent-official-account-after-send", filterFailedSends, evalError},
		// Tencent Push.OfflinePush: both pushes succeeded.
		{"tencent-push-offline-push", filterPushFailures, noMatch},
		{"tencent-push-offline-push", `body.Events.exists(e, e.ErrCode == 0)`, match},
		{"tencent-push-offline-push", `body.Events.exists(e, has(e.GroupID))`, match},
		{"tencent-push-offline-push", `size(body.Events) == 2`, match},
		// OpenIM after-send single.
		{"openim-after-send-single", `body.contentType == 1 && body.recvID == "user456"`, match},
		{"openim-after-send-single", `"user789" in body.atUserList`, match},
		{"openim-after-send-single", `body.sessionType == 3`, noMatch},
		{"openim-after-send-single", `body.sendTime == 1673048592000`, match}, // exact 64-bit integer
		{"openim-after-send-single", filterImageOnly, evalError},
	}
	apps := map[v1alpha1.Provider]string{v1alpha1.ProviderTencentIM: "1400000001", v1alpha1.ProviderOpenIM: "openim"}
	seen := map[string]bool{}
	for _, tt := range tests {
		t.Run(tt.sample+"/"+tt.filter, func(t *testing.T) {
			s, ok := samples.Get(tt.sample)
			if !ok {
				t.Fatalf("no sample %s", tt.sample)
			}
			seen[s.Name] = true
			r := filteredRoute(t, tt.filter)
			in := &FilterInput{App: apps[s.Provider], Command: s.Command, Body: s.Body,
				RawQuery: "SdkAppid=1400000001&CallbackCommand=" + s.Command + "&contenttype=json&ClientIP=127.0.0.1&OptPlatform=Web"}
			got, err := r.Matches(in)
			switch tt.want {
			case match, noMatch:
				if err != nil {
					t.Fatalf("error: %v", err)
				}
				if got != (tt.want == match) {
					t.Fatalf("match = %v, want %v", got, tt.want == match)
				}
			case evalError:
				if err == nil || got {
					t.Fatalf("match = %v, err = %v; want no match and an error", got, err)
				}
			}
		})
	}
	for _, s := range samples.All() {
		if s.Documented && !seen[s.Name] {
			t.Errorf("documented sample %s has no filter row", s.Name)
		}
	}
}

// celIdent matches the JSON keys a filter can name as body.<key>.
var celIdent = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// TestFiltersOnEverySample derives filters from each sample callback of the catalogue
// (every command of both providers): for each top-level scalar field, body.<key> == its
// value matches and != does not; for each array, size() is its length; and command
// matches the sample's command. So every sample body is parsed the way filters see it
// (integers exact, strings, booleans, nested lists) and a filter over it behaves.
func TestFiltersOnEverySample(t *testing.T) {
	all := samples.All()
	if len(all) < 5 {
		t.Fatalf("only %d samples", len(all))
	}
	for _, s := range all {
		t.Run(s.Name, func(t *testing.T) {
			var raw map[string]json.RawMessage
			if err := json.Unmarshal(s.Body, &raw); err != nil {
				t.Fatalf("sample body: %v", err)
			}
			type row struct {
				filter string
				match  bool
			}
			rows := []row{{fmt.Sprintf("command == %q", s.Command), true}, {fmt.Sprintf("command != %q", s.Command), false}}
			for k, v := range raw {
				if !celIdent.MatchString(k) || reservedCEL[k] {
					continue
				}
				lit := strings.TrimSpace(string(v))
				switch {
				case strings.HasPrefix(lit, `"`), lit == "true", lit == "false":
				case strings.HasPrefix(lit, "["):
					var l []json.RawMessage
					if err := json.Unmarshal(v, &l); err != nil {
						t.Fatal(err)
					}
					rows = append(rows, row{fmt.Sprintf("size(body.%s) == %d", k, len(l)), true})
					continue
				case strings.HasPrefix(lit, "{"), lit == "null":
					rows = append(rows, row{fmt.Sprintf("has(body.%s)", k), true})
					continue
				default: // a number: exact when it is an integer
					if _, err := strconv.ParseInt(lit, 10, 64); err != nil {
						if _, err := strconv.ParseFloat(lit, 64); err != nil {
							t.Fatalf("%s: %s", k, lit)
						}
					}
				}
				rows = append(rows, row{fmt.Sprintf("body.%s == %s", k, lit), true}, row{fmt.Sprintf("body.%s != %s", k, lit), false})
			}
			if len(rows) < 3 {
				t.Fatalf("no field of %s to filter on", s.Body)
			}
			for _, r := range rows {
				rt := filteredRoute(t, r.filter)
				got, err := rt.Matches(&FilterInput{Command: s.Command, Body: s.Body})
				if err != nil || got != r.match {
					t.Errorf("%s: match = %v, err = %v; want %v", r.filter, got, err, r.match)
				}
			}
		})
	}
}

// reservedCEL are JSON keys that are CEL reserved words, which body.<key> cannot name.
var reservedCEL = map[string]bool{"in": true, "as": true, "break": true, "const": true, "continue": true, "else": true,
	"for": true, "function": true, "if": true, "import": true, "let": true, "loop": true, "package": true,
	"namespace": true, "return": true, "var": true, "void": true, "while": true, "true": true, "false": true, "null": true}

// filteredRoute builds a one-route table whose route has filter, and returns the route.
func filteredRoute(t testing.TB, filter string) *Route {
	t.Helper()
	rt := route("ns", "r", 0, "tencent-1", v1alpha1.ModeAsync, "*")
	rt.Spec.Filter = filter
	tab, err := NewTable(standalone(rt))
	if err != nil {
		t.Fatal(err)
	}
	if tab.Len() != 1 {
		t.Fatalf("route not in the table: %+v", tab.Snapshot())
	}
	return tab.Routes()[0]
}

// TestFilterCompileErrors: an invalid expression makes the route Accepted=False, reason
// Invalid, with CEL's message, and keeps it out of the table; the other routes stay.
func TestFilterCompileErrors(t *testing.T) {
	tests := map[string]struct {
		filter string
		// msg is a part of the expected status message.
		msg string
	}{
		"syntax":            {`body.MsgBody.exists(m, `, "Syntax error"},
		"undeclared":        {`bodyy.SendMsgResult != 0`, "undeclared reference to 'bodyy'"},
		"not bool":          {`body.SendMsgResult`, "must be a bool expression"},
		"not bool (string)": {`command + "x"`, "must be a bool expression"},
		"bad overload":      {`command > 1`, "found no matching overload"},
		"query type":        {`query.OptPlatform == 1`, "found no matching overload"},
		"too long":          {`command == "` + strings.Repeat("x", MaxFilterLength) + `"`, "more than the limit"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			bad := route("ns", "bad", 0, "tencent-1", v1alpha1.ModeAsync, "*")
			bad.Spec.Filter = tt.filter
			good := route("ns", "good", 0, "tencent-1", v1alpha1.ModeAsync, "*")
			good.Spec.Filter = filterFailedSends
			out := Compile(Input{Standalone: true, Routes: []v1alpha1.CallbackRoute{bad, good}, Apps: []v1alpha1.CallbackApp{
				appObj("ns", "tencent-1", 0, v1alpha1.ProviderTencentIM, "1", allGrant)}})
			st := out.Routes[0]
			if st.Accepted.True || st.Accepted.Reason != v1alpha1.ReasonInvalid {
				t.Fatalf("Accepted = %s, want False/Invalid", cond(st.Accepted))
			}
			if !strings.Contains(st.Accepted.Message, "spec.filter") || !strings.Contains(st.Accepted.Message, tt.msg) {
				t.Fatalf("message %q does not contain %q", st.Accepted.Message, tt.msg)
			}
			if !out.Routes[1].Routed() {
				t.Fatalf("the valid route is not routed: %+v", out.Routes[1])
			}
			tab := out.Tables[StandaloneReceiver]
			if len(tab.Routes) != 1 || tab.Routes[0].Name != "good" || tab.Routes[0].Filter != filterFailedSends {
				t.Fatalf("table = %+v", tab.Routes)
			}
		})
	}
}

// TestFilterCostLimit: an expression whose cost per callback exceeds FilterCostLimit is
// stopped with an error (so it does not match), and never runs away on a large body.
func TestFilterCostLimit(t *testing.T) {
	r := filteredRoute(t, `body.L.all(a, body.L.all(b, a + b >= 0))`)
	var sb strings.Builder
	sb.WriteString(`{"L":[`)
	for i := range 2000 {
		if i > 0 {
			sb.WriteByte(',')
		}
		fmt.Fprint(&sb, i)
	}
	sb.WriteString(`]}`)
	ok, err := r.Matches(&FilterInput{Body: []byte(sb.String())})
	if ok || err == nil || !strings.Contains(err.Error(), "cost limit") {
		t.Fatalf("match = %v, err = %v; want the cost limit error", ok, err)
	}
	// The same expression on a small list is well within the limit.
	ok, err = r.Matches(&FilterInput{Body: []byte(`{"L":[1,2,3]}`)})
	if !ok || err != nil {
		t.Fatalf("small list: match = %v, err = %v", ok, err)
	}
}

// TestFilterRoutesParsesOnce: the body is parsed only when a filter refers to it, and
// once for all the routes of a callback.
func TestFilterRoutesParsesOnce(t *testing.T) {
	s, _ := samples.Get("tencent-c2c-after-send")
	plain := filteredRoute(t, "")
	byCommand := filteredRoute(t, `command.startsWith("C2C.")`)
	in := &FilterInput{Command: s.Command, Body: s.Body}
	if got := FilterRoutes([]*Route{plain, byCommand}, in, nil); len(got) != 2 {
		t.Fatalf("kept %d routes, want 2", len(got))
	}
	if in.BodyParsed() {
		t.Fatal("the body was parsed though no filter refers to it")
	}
	image, text := filteredRoute(t, filterImageOnly), filteredRoute(t, filterTextOnly)
	var errs []error
	failing := filteredRoute(t, filterPushFailures)
	got := FilterRoutes([]*Route{plain, image, text, failing}, in, func(_ *Route, err error) { errs = append(errs, err) })
	if len(got) != 2 || got[0] != plain || got[1] != text {
		t.Fatalf("kept %v", got)
	}
	if !in.BodyParsed() || len(errs) != 1 {
		t.Fatalf("parsed = %v, errors = %v", in.BodyParsed(), errs)
	}
	if in.body == nil || in.bodyErr != nil {
		t.Fatalf("body = %v, err = %v", in.body, in.bodyErr)
	}
	if errors.Is(errs[0], ErrFilterNotBool) {
		t.Fatalf("unexpected error kind %v", errs[0])
	}
}

// BenchmarkFilterRecipes is ten docs filters on the C2C sample, the body parsed once.
func BenchmarkFilterRecipes(b *testing.B) {
	s, _ := samples.Get("tencent-c2c-after-send")
	var rs []*Route
	for i := range 10 {
		rs = append(rs, filteredRoute(b, []string{filterImageOnly, filterFailedSends, filterTextOnly, `body.From_Account == "jared"`, `has(body.CloudCustomData)`}[i%5]))
	}
	buf := make([]*Route, 0, len(rs))
	b.ReportAllocs()
	for b.Loop() {
		buf = append(buf[:0], rs...)
		FilterRoutes(buf, &FilterInput{Command: s.Command, Body: s.Body}, nil)
	}
}
