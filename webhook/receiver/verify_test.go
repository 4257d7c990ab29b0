package receiver

import (
	"math"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/callback-router/callback-router/webhook/samples"
)

const verifyYAML = `
apiVersion: v1
kind: Secret
metadata: {name: tok, namespace: ns}
stringData: {token: xxxxyyyy, previous: old-token}
---
apiVersion: v1
kind: Secret
metadata: {name: hook, namespace: ns}
stringData: {username: openim, password: "p:ss"}
---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackRoute
metadata: {name: signed, namespace: ns}
spec:
  provider: TencentIM
  appID: "1400000001"
  commands: ["*"]
  backend: {url: "http://127.0.0.1:1"}
  verify: {tokenSecretRef: {name: tok, previousKey: previous}, maxRequestAge: 60s}
---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackRoute
metadata: {name: office, namespace: ns}
spec:
  provider: TencentIM
  appID: "1400000002"
  commands: ["*"]
  backend: {url: "http://127.0.0.1:1"}
  verify: {sourceCIDRs: ["198.51.100.0/24", "2001:db8::/32"]}
---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackRoute
metadata: {name: basic, namespace: ns}
spec:
  provider: OpenIM
  appID: prod
  commands: ["*"]
  backend: {url: "http://127.0.0.1:1"}
  verify: {basicAuthSecretRef: {name: hook}, sourceCIDRs: ["10.0.0.0/8"]}
`

// TestVerify checks each verification rule through the handler, on requests built
// directly (RemoteAddr and headers set as a proxy or the IM platform would).
func TestVerify(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}
	f := newFixture(t, verifyYAML, func(o *Options) { o.TrustedProxies = trusted })
	rt := strconv.FormatInt(now.Unix(), 10)
	q := func(app, sign, rt string) string {
		s := "/tencent?SdkAppid=" + app + "&CallbackCommand=C2C.CallbackAfterSendMsg"
		if sign != "" {
			s += "&Sign=" + sign
		}
		if rt != "" {
			s += "&RequestTime=" + rt
		}
		return s
	}
	at := func(d time.Duration) string { return strconv.FormatInt(now.Add(d).Unix(), 10) }
	far := strconv.FormatInt(now.Unix()+math.MaxInt64/int64(time.Second)+1, 10)
	cases := []struct {
		name       string
		target     string
		remote     string
		hdr        map[string]string
		status     int
		failReason string // verification failure reason counted, "" for none
	}{
		{"documented example", q("1400000001", samples.SignExampleSign, samples.SignExampleRequestTime), "203.0.113.1:5000", nil, 200, ""},
		{"uppercase hex sign", q("1400000001", strings.ToUpper(sign(testToken, rt)), rt), "203.0.113.1:5000", nil, 200, ""},
		{"previous token during rotation", q("1400000001", sign("old-token", rt), rt), "203.0.113.1:5000", nil, 200, ""},
		{"unknown token", q("1400000001", sign("guess", rt), rt), "203.0.113.1:5000", nil, 401, ReasonBadSign},
		{"sign of another time", q("1400000001", sign(testToken, at(-1)), rt), "203.0.113.1:5000", nil, 401, ReasonBadSign},
		{"no sign", q("1400000001", "", rt), "203.0.113.1:5000", nil, 401, ReasonMissingSign},
		{"no request time", q("1400000001", sign(testToken, rt), ""), "203.0.113.1:5000", nil, 401, ReasonMissingSign},
		{"sign not hex", q("1400000001", strings.Repeat("zz", 32), rt), "203.0.113.1:5000", nil, 401, ReasonBadSign},
		{"sign too short", q("1400000001", sign(testToken, rt)[:10], rt), "203.0.113.1:5000", nil, 401, ReasonBadSign},
		{"request time not a number", q("1400000001", sign(testToken, "abc"), "abc"), "203.0.113.1:5000", nil, 401, ReasonBadRequestTime},
		{"59s old", q("1400000001", sign(testToken, at(-59*time.Second)), at(-59*time.Second)), "203.0.113.1:5000", nil, 200, ""},
		{"61s old", q("1400000001", sign(testToken, at(-61*time.Second)), at(-61*time.Second)), "203.0.113.1:5000", nil, 401, ReasonStaleRequestTime},
		{"61s in the future", q("1400000001", sign(testToken, at(61*time.Second)), at(61*time.Second)), "203.0.113.1:5000", nil, 401, ReasonStaleRequestTime},
		// Ages whose nanoseconds overflow int64 and once wrapped into the window.
		{"far future (age overflows a Duration)", q("1400000001", sign(testToken, far), far), "203.0.113.1:5000", nil, 401, ReasonStaleRequestTime},
		{"MaxInt64", q("1400000001", sign(testToken, "9223372036854775807"), "9223372036854775807"), "203.0.113.1:5000", nil, 401, ReasonStaleRequestTime},
		{"MinInt64", q("1400000001", sign(testToken, "-9223372036854775808"), "-9223372036854775808"), "203.0.113.1:5000", nil, 401, ReasonStaleRequestTime},
		{"source allowed", q("1400000002", "", ""), "198.51.100.9:5000", nil, 200, ""},
		{"source allowed v6", q("1400000002", "", ""), "[2001:db8::1]:5000", nil, 200, ""},
		{"source denied", q("1400000002", "", ""), "203.0.113.1:5000", nil, 403, ReasonSourceIP},
		{"X-Forwarded-For ignored from an untrusted peer", q("1400000002", "", ""), "203.0.113.1:5000", map[string]string{"X-Forwarded-For": "198.51.100.9"}, 403, ReasonSourceIP},
		{"X-Forwarded-For from a trusted proxy", q("1400000002", "", ""), "10.1.2.3:5000", map[string]string{"X-Forwarded-For": "198.51.100.9"}, 200, ""},
		{"X-Forwarded-For spoofed left of the proxy's entry", q("1400000002", "", ""), "10.1.2.3:5000", map[string]string{"X-Forwarded-For": "198.51.100.9, 203.0.113.1"}, 403, ReasonSourceIP},
		{"X-Forwarded-For through two trusted proxies", q("1400000002", "", ""), "10.1.2.3:5000", map[string]string{"X-Forwarded-For": "198.51.100.9, 10.1.9.9"}, 200, ""},
		{"X-Forwarded-For garbage", q("1400000002", "", ""), "10.1.2.3:5000", map[string]string{"X-Forwarded-For": "nonsense"}, 403, ReasonSourceIP},
		{"basic auth with a colon in the password", "/openim/prod/callbackAfterSendSingleMsgCommand", "10.0.0.5:1", map[string]string{"Authorization": "Basic b3BlbmltOnA6c3M="}, 200, ""},
		{"basic auth wrong user", "/openim/prod/callbackAfterSendSingleMsgCommand", "10.0.0.5:1", map[string]string{"Authorization": "Basic b3Blbmk6cDpzcw=="}, 401, ReasonBadBasicAuth},
		{"basic auth missing", "/openim/prod/callbackAfterSendSingleMsgCommand", "10.0.0.5:1", nil, 401, ReasonMissingBasicAuth},
		{"basic auth right, source wrong", "/openim/prod/callbackAfterSendSingleMsgCommand", "192.0.2.1:1", map[string]string{"Authorization": "Basic b3BlbmltOnA6c3M="}, 403, ReasonSourceIP},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, body := f.do(t, c.remote, c.target, c.hdr, []byte(`{}`))
			if status != c.status {
				t.Errorf("status %d, want %d: %s", status, c.status, body)
			}
		})
	}
	// Each rejected case counted its reason once.
	want := map[string]int{}
	for _, c := range cases {
		if c.failReason != "" {
			want[c.failReason]++
		}
	}
	for reason, n := range want {
		got := 0.0
		for _, p := range []string{"TencentIM", "OpenIM"} {
			got += counterValue(t, f.h, "callback_router_verification_failures_total", map[string]string{"provider": p, "reason": reason})
		}
		if int(got) != n {
			t.Errorf("reason %s counted %v times, want %d", reason, got, n)
		}
	}
}

func TestParseTencentQuery(t *testing.T) {
	for _, c := range []struct {
		name, raw string
		want      tencentQuery
		err       bool // refused: 400 at the door
	}{
		{"plain", "SdkAppid=1&CallbackCommand=C2C.X&Sign=ab&RequestTime=12&contenttype=json",
			tencentQuery{"1", "C2C.X", "ab", "12"}, false},
		{"escaped value", "SdkAppid=1&CallbackCommand=Group%2EX+Y", tencentQuery{"1", "Group.X Y", "", ""}, false},
		{"bad escape", "SdkAppid=%zz", tencentQuery{}, true},
		// A console URL that already had a query: Tencent appends "?SdkAppid=..." anyway.
		{"further '?'", "x=1?SdkAppid=1400000001&CallbackCommand=C2C.X?Sign=ab&RequestTime=12",
			tencentQuery{"1400000001", "C2C.X", "ab", "12"}, false},
		{"console URL with ?SdkAppid, values agree", "SdkAppid=1400000001?SdkAppid=1400000001&CallbackCommand=C2C.X",
			tencentQuery{"1400000001", "C2C.X", "", ""}, false},
		{"same value, once escaped", "SdkAppid=1&SdkAppid=%31&CallbackCommand=C", tencentQuery{"1", "C", "", ""}, false},
		{"unrelated encoded name", "x%41=1&SdkAppid=1&CallbackCommand=C", tencentQuery{"1", "C", "", ""}, false},
		// What the issue found: verified by one value, read by the backend as another.
		{"encoded SdkAppid before the plain one", "Sdk%41ppid=1400000999&SdkAppid=1400000001&CallbackCommand=C", tencentQuery{}, true},
		{"'?' then two SdkAppids", "x=1?SdkAppid=A&SdkAppid=B&CallbackCommand=C", tencentQuery{}, true},
		{"encoded CallbackCommand", "SdkAppid=1&Callback%43ommand=C2C.X", tencentQuery{}, true},
		{"encoded Sign", "SdkAppid=1&CallbackCommand=C&%53ign=ab", tencentQuery{}, true},
		{"'+' in a name", "SdkAppid=1&CallbackCommand=C&Client+IP=x&ClientIP=y", tencentQuery{"1", "C", "", ""}, false},
		{"two commands", "SdkAppid=1&CallbackCommand=C2C.A&CallbackCommand=C2C.B", tencentQuery{}, true},
		{"two RequestTimes", "SdkAppid=1&CallbackCommand=C&RequestTime=1&RequestTime=2", tencentQuery{}, true},
		{"two ClientIPs", "SdkAppid=1&CallbackCommand=C&ClientIP=1.1.1.1&ClientIP=2.2.2.2", tencentQuery{}, true},
		{"semicolon", "SdkAppid=1;CallbackCommand=C", tencentQuery{}, true},
	} {
		got, err := parseTencentQuery(c.raw)
		if (err != nil) != c.err || (err == nil && got != c.want) {
			t.Errorf("%s: %q: got %+v, %v; want %+v (refused: %v)", c.name, c.raw, got, err, c.want, c.err)
		}
	}
}

func TestParseOpenIMPath(t *testing.T) {
	for p, want := range map[string]string{
		"/openim/prod/cmd":   "prod cmd",
		"/openim/prod//cmd":  "prod cmd",
		"/openim/prod/":      "",
		"/openim/prod":       "",
		"/openim//cmd":       "",
		"/openim/prod/a/cmd": "",
	} {
		app, cmd, ok := parseOpenIMPath(p)
		got := ""
		if ok {
			got = app + " " + cmd
		}
		if got != want {
			t.Errorf("%s: %q, want %q", p, got, want)
		}
	}
}

// TestTrustedProxyOverTheNetwork checks X-Forwarded-For through both servers: the test
// client is a loopback peer, trusted here, so the header names the source.
func TestTrustedProxyOverTheNetwork(t *testing.T) {
	{
		f := newFixture(t, verifyYAML, func(o *Options) {
			o.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
		})
		u := f.url + "/tencent?SdkAppid=1400000002&CallbackCommand=C2C.X"
		for _, c := range []struct {
			xff    string
			status int
		}{
			{"", 403},
			{"198.51.100.9", 200},
			{"198.51.100.9, 127.0.0.1", 200},
			{"198.51.100.9, 203.0.113.1", 403},
		} {
			hdr := map[string]string{}
			if c.xff != "" {
				hdr["X-Forwarded-For"] = c.xff
			}
			if status, body, _ := post(t, u, []byte(`{}`), hdr); status != c.status {
				t.Errorf("X-Forwarded-For %q: %d %s, want %d", c.xff, status, body, c.status)
			}
		}
	}
}

// TestDoubledQueryOverTheNetwork: a console URL configured as /tencent?SdkAppid=X, to
// which Tencent appends its own "?SdkAppid=X&...", is still routed and verified.
func TestDoubledQueryOverTheNetwork(t *testing.T) {
	{
		f := newFixture(t, verifyYAML, nil)
		u := strings.Replace(tencentURL(f.url, "1400000001", "C2C.CallbackAfterSendMsg", testToken, now),
			"/tencent?", "/tencent?SdkAppid=1400000001?", 1)
		if status, body, _ := post(t, u, []byte(`{}`), nil); status != http.StatusOK {
			t.Errorf("%s: %d %s, want 200", u, status, body)
		}
	}
}
