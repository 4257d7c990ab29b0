package receiver

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/callback-router/callback-router/api/v1alpha1"
)

// count is the number of log lines holding every one of substrs (logLines: door_test.go).
func (l *logLines) count(substrs ...string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
next:
	for _, line := range l.lines {
		for _, s := range substrs {
			if !strings.Contains(line, s) {
				continue next
			}
		}
		n++
	}
	return n
}

const openIMAuth = "Basic b3BlbmltOnBhc3M=" // openim:pass, routesYAML's OpenIM credentials

// TestSyncAnswerShape: a Sync answer the IM platform could not decode (numbers as
// strings, an array, a bare string, a missing field) is a backend failure: the route's
// failurePolicy answers, the outcome is counted and the failure logged. A well-formed
// answer is passed back unchanged.
func TestSyncAnswerShape(t *testing.T) { testSyncAnswerShape(t) }

func testSyncAnswerShape(t *testing.T) {
	cases := []struct {
		name     string
		provider v1alpha1.Provider
		answer   string
		valid    bool
	}{
		{"tencent envelope", v1alpha1.ProviderTencentIM, `{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":""}`, true},
		{"tencent reject with extras", v1alpha1.ProviderTencentIM, `{"ActionStatus":"FAIL","ErrorCode":120001,"ErrorInfo":"no","MsgBody":[]}`, true},
		{"tencent empty object", v1alpha1.ProviderTencentIM, `{}`, false},
		{"tencent ErrorCode as string", v1alpha1.ProviderTencentIM, `{"ActionStatus":"OK","ErrorCode":"0"}`, false},
		{"tencent ErrorCode fraction", v1alpha1.ProviderTencentIM, `{"ActionStatus":"OK","ErrorCode":0.5}`, false},
		{"tencent ActionStatus number", v1alpha1.ProviderTencentIM, `{"ActionStatus":0,"ErrorCode":0}`, false},
		{"tencent no ActionStatus", v1alpha1.ProviderTencentIM, `{"ErrorCode":2}`, false},
		{"tencent array", v1alpha1.ProviderTencentIM, `[]`, false},
		{"tencent string", v1alpha1.ProviderTencentIM, `"ok"`, false},
		{"openim envelope", v1alpha1.ProviderOpenIM, `{"actionCode":0,"errCode":0,"errMsg":"","errDlt":"","nextCode":0}`, true},
		{"openim empty object (allow)", v1alpha1.ProviderOpenIM, `{}`, true},
		{"openim nulls and extras", v1alpha1.ProviderOpenIM, `{"actionCode":null,"errMsg":null,"content":"{\"x\":1}"}`, true},
		{"openim actionCode as string", v1alpha1.ProviderOpenIM, `{"actionCode":"0","errCode":0,"nextCode":0}`, false},
		{"openim nextCode as string", v1alpha1.ProviderOpenIM, `{"actionCode":0,"nextCode":"1"}`, false},
		{"openim errCode over int32", v1alpha1.ProviderOpenIM, `{"errCode":3000000000}`, false},
		{"openim errCode exponent", v1alpha1.ProviderOpenIM, `{"errCode":5e3}`, false},
		{"openim key in other case", v1alpha1.ProviderOpenIM, `{"NextCode":"1"}`, false},
		{"openim errMsg number", v1alpha1.ProviderOpenIM, `{"errMsg":5}`, false},
		{"openim array", v1alpha1.ProviderOpenIM, `[]`, false},
		{"openim string", v1alpha1.ProviderOpenIM, `"ok"`, false},
		{"openim number", v1alpha1.ProviderOpenIM, `0`, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				_, _ = io.WriteString(w, c.answer)
			})
			var logs logLines
			f := newFixture(t, routesYAML(be.URL), func(o *Options) { o.Now = time.Now; logs.attach(o) })
			type target struct {
				url     string
				hdr     map[string]string
				command string
				reject  bool
			}
			var targets []target
			if c.provider == v1alpha1.ProviderTencentIM {
				targets = []target{
					{tencentURL(f.url, "1400000001", "C2C.CallbackBeforeSendMsg", testToken, time.Now()), nil, "C2C.CallbackBeforeSendMsg", false},
					{tencentURL(f.url, "1400000001", "Group.CallbackBeforeSendMsg", testToken, time.Now()), nil, "Group.CallbackBeforeSendMsg", true},
				}
			} else {
				auth := map[string]string{"Authorization": openIMAuth}
				targets = []target{
					{f.url + "/openim/prod/callbackBeforeSendSingleMsgCommand", auth, "callbackBeforeSendSingleMsgCommand", false},
					{f.url + "/openim/prod/callbackBeforeSendGroupMsgCommand", auth, "callbackBeforeSendGroupMsgCommand", true},
				}
			}
			for _, tg := range targets {
				status, body, _ := post(t, tg.url, []byte(`{"k":1}`), tg.hdr)
				outcome := OutcomeSyncAnswered
				switch {
				case c.valid:
					if status != 200 || string(body) != c.answer {
						t.Errorf("%s: got %d %s, want the answer passed back", tg.command, status, body)
					}
				case !tg.reject:
					outcome = OutcomeSyncFailedAllow
					if status != 200 || !bytes.Equal(body, OKEnvelope(c.provider)) {
						t.Errorf("%s: got %d %s, want the allow envelope", tg.command, status, body)
					}
				default:
					outcome = OutcomeSyncFailedReject
					m := envelope(t, body)
					if c.provider == v1alpha1.ProviderOpenIM {
						if status != 200 || m["nextCode"] != float64(1) || !strings.Contains(m["errMsg"].(string), "(bad answer)") {
							t.Errorf("%s: got %d %s, want the reject envelope naming a bad answer", tg.command, status, body)
						}
					} else if status != 200 || m["ActionStatus"] != "FAIL" || !strings.Contains(m["ErrorInfo"].(string), "(bad answer)") {
						t.Errorf("%s: got %d %s, want the reject envelope naming a bad answer", tg.command, status, body)
					}
				}
				if n := counterValue(t, f.h, "callback_router_requests_total", map[string]string{"outcome": outcome, "command": tg.command}); n != 1 {
					t.Errorf("%s: outcome %s counted %v times", tg.command, outcome, n)
				}
			}
			if n := logs.count("Sync backend failed", "answer shape"); !c.valid && n != 2 {
				t.Errorf("%d 'Sync backend failed' lines naming the answer shape, want 2", n)
			} else if c.valid && n != 0 {
				t.Errorf("%d failure lines for a valid answer", n)
			}
		})
	}
}

// TestOpenIMServerErrorAnswer: OpenIM ignores the HTTP status and acts on the body, so a
// 5xx whose body is an OpenIM answer with a decision (actionCode, errCode or nextCode) is
// passed back as the answer, while a 5xx with any other body, such as a framework's
// error page, is a backend failure. Tencent IM treats any non-200 as a failure: a 5xx
// is one whatever its body.
func TestOpenIMServerErrorAnswer(t *testing.T) { testOpenIMServerErrorAnswer(t) }

func testOpenIMServerErrorAnswer(t *testing.T) {
	const rejectAnswer = `{"actionCode":0,"errCode":5001,"errMsg":"blocked word","errDlt":"","nextCode":1}`
	cases := []struct {
		name, answer string
		status       int
		passed       bool
	}{
		{"500 with a reject answer", rejectAnswer, 500, true},
		{"503 with an allow answer", `{"actionCode":0,"errCode":0,"nextCode":0}`, 503, true},
		{"500 with an error page in JSON", `{"detail":"Internal Server Error"}`, 500, false},
		{"500 with an empty object", `{}`, 500, false},
		{"500 with a malformed answer", `{"nextCode":"1"}`, 500, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(c.status)
				_, _ = io.WriteString(w, c.answer)
			})
			f := newFixture(t, routesYAML(be.URL), func(o *Options) { o.Now = time.Now })
			auth := map[string]string{"Authorization": openIMAuth}
			// The Allow route: a passed answer is the backend's; a failure is the allow envelope.
			status, body, _ := post(t, f.url+"/openim/prod/callbackBeforeSendSingleMsgCommand", []byte(`{}`), auth)
			if c.passed {
				if status != c.status || string(body) != c.answer {
					t.Errorf("got %d %s, want %d %s passed back", status, body, c.status, c.answer)
				}
			} else if status != 200 || !bytes.Equal(body, openIMAllow) {
				t.Errorf("got %d %s, want the failurePolicy Allow envelope", status, body)
			}
			// The same answer on a Tencent route is always a failure (Tencent wants 200).
			status, body, _ = post(t, tencentURL(f.url, "1400000001", "Group.CallbackBeforeSendMsg", testToken, time.Now()), []byte(`{}`), nil)
			if m := envelope(t, body); status != 200 || m["ActionStatus"] != "FAIL" || !strings.Contains(m["ErrorInfo"].(string), "(bad answer)") {
				t.Errorf("Tencent: got %d %s, want the failurePolicy Reject envelope", status, body)
			}
		})
	}
}

// TestOpenIMSyncBudget: OpenIM waits only its webhooks.yml timeout for an answer, so an
// OpenIM Sync answer leaves OpenIMTimeoutMargin before Options.OpenIMTimeout even when
// the route's own timeout is longer, and it is the failurePolicy answer.
func TestOpenIMSyncBudget(t *testing.T) { testOpenIMSyncBudget(t) }

func testOpenIMSyncBudget(t *testing.T) {
	release := make(chan struct{})
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	defer close(release)
	routes := strings.ReplaceAll(routesYAML(be.URL), "/openim-strict, timeout: 500ms", "/openim-strict, timeout: 10s")
	openIMTimeout := OpenIMTimeoutMargin + 400*time.Millisecond
	f := newFixture(t, routes, func(o *Options) { o.OpenIMTimeout = openIMTimeout; o.Now = time.Now })
	start := time.Now()
	status, body, _ := post(t, f.url+"/openim/prod/callbackBeforeSendGroupMsgCommand", []byte(`{}`), map[string]string{"Authorization": openIMAuth})
	elapsed := time.Since(start)
	if m := envelope(t, body); status != 200 || m["nextCode"] != float64(1) || !strings.Contains(m["errMsg"].(string), "(timeout)") {
		t.Errorf("got %d %s, want the Reject envelope for a timeout", status, body)
	}
	budget := openIMTimeout - OpenIMTimeoutMargin
	if elapsed < budget || elapsed >= openIMTimeout {
		t.Errorf("answered after %s: want between the budget %s and OpenIM's timeout %s", elapsed, budget, openIMTimeout)
	}
	if _, err := New(Options{OpenIMTimeout: 16 * time.Second}); err == nil {
		t.Error("an OpenIM timeout over OpenIM's 15s cap was accepted")
	}
	if _, err := New(Options{OpenIMTimeout: OpenIMTimeoutMargin}); err == nil {
		t.Error("an OpenIM timeout that leaves no budget was accepted")
	}
}
