package receiver

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/callback-router/callback-router/webhook/samples"
)

// FuzzParseTencentQuery checks the allocation-free query parser against net/url on every
// query net/url accepts, with a further '?' read as '&'.
func FuzzParseTencentQuery(f *testing.F) {
	f.Add("SdkAppid=1400000001&CallbackCommand=C2C.CallbackAfterSendMsg&contenttype=json&ClientIP=1.2.3.4&OptPlatform=iOS&Sign=ab&RequestTime=1")
	f.Add("SdkAppid=1&SdkAppid=2&CallbackCommand=a%2Eb+c")
	f.Add("Sign=%zz")
	f.Add("=&&=x&RequestTime")
	f.Add("SdkAppid=1?SdkAppid=1&CallbackCommand=C2C.X")
	f.Fuzz(func(t *testing.T, raw string) {
		app, cmd, sign, rt, err := parseTencentQuery(raw)
		vals, uerr := url.ParseQuery(strings.ReplaceAll(raw, "?", "&"))
		if uerr != nil {
			return // net/url rejects it (e.g. ';'); ours may be more lenient
		}
		if err != nil {
			t.Fatalf("rejected %q that net/url accepts: %v", raw, err)
		}
		for k, got := range map[string]string{"SdkAppid": app, "CallbackCommand": cmd, "Sign": sign, "RequestTime": rt} {
			if want := vals.Get(k); got != want {
				t.Fatalf("%s of %q: %q, net/url says %q", k, raw, got, want)
			}
		}
	})
}

const fuzzYAML = `
apiVersion: v1
kind: Secret
metadata: {name: tok, namespace: ns}
stringData: {token: xxxxyyyy}
---
apiVersion: v1
kind: Secret
metadata: {name: hook, namespace: ns}
stringData: {username: u, password: p}
---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackRoute
metadata: {name: signed, namespace: ns}
spec:
  provider: TencentIM
  appID: "1400000001"
  commands: ["C2C.*", Group.CallbackAfterSendMsg]
  backend: {url: "http://127.0.0.1:1"}
  verify: {tokenSecretRef: {name: tok}}
---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackRoute
metadata: {name: basic, namespace: ns}
spec:
  provider: OpenIM
  appID: prod
  commands: ["*"]
  backend: {url: "http://127.0.0.1:1"}
  verify: {basicAuthSecretRef: {name: hook}}
`

// FuzzServeCallback feeds arbitrary URLs, bodies and Authorization headers to the
// handler. Properties: it never panics, it always answers JSON in an envelope with a
// status of the contract, and it stores a copy only for a callback that passes the
// route's checks, recomputed here independently.
func FuzzServeCallback(f *testing.F) {
	rt := strconv.FormatInt(now.Unix(), 10)
	goodSign := sign(testToken, rt)
	for _, s := range samples.All() {
		f.Add("/tencent?SdkAppid=1400000001&CallbackCommand="+s.Command+"&Sign="+goodSign+"&RequestTime="+rt, s.Body, "")
		f.Add("/openim/prod/"+s.Command, s.Body, "Basic "+base64.StdEncoding.EncodeToString([]byte("u:p")))
	}
	f.Add("/tencent?SdkAppid=1400000001&CallbackCommand=C2C.X&Sign="+samples.SignExampleSign+"&RequestTime="+samples.SignExampleRequestTime, []byte(`{}`), "")
	f.Add("/openim/prod//x", []byte(`[]`), "Basic dTpw")
	f.Add("/tencent?SdkAppid=1400000001&CallbackCommand=C2C.X&Sign=&RequestTime=-9223372036854775808", []byte(`"x"`), "")
	f.Add("/openim/", []byte(`{`), "Basic !!!")

	sink := &recordingSink{}
	h, err := New(Options{Sink: sink, Now: func() time.Time { return now }})
	if err != nil {
		f.Fatal(err)
	}
	h.SetTable(table(f, fuzzYAML))
	allowed := map[int]bool{200: true, 400: true, 401: true, 403: true, 404: true, 405: true, 413: true}

	f.Fuzz(func(t *testing.T, target string, body []byte, auth string) {
		if !strings.HasPrefix(target, "/") {
			target = "/" + target
		}
		u, err := url.ParseRequestURI(target)
		if err != nil {
			return
		}
		req := &http.Request{Method: http.MethodPost, URL: u, Header: http.Header{}, Body: http.NoBody, RemoteAddr: "192.0.2.1:1234"}
		req.Body = readCloser{strings.NewReader(string(body))}
		req.ContentLength = int64(len(body))
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		sink.take()
		w := newRecorder()
		h.ServeHTTP(w, req)
		isCallback := u.Path == PathTencent || u.Path == PathTencent+"/" || strings.HasPrefix(u.Path, PathOpenIMPrefix)
		if !isCallback {
			return
		}
		if !allowed[w.status] {
			t.Fatalf("status %d for %q", w.status, target)
		}
		if !json.Valid(w.body.Bytes()) || !strings.HasPrefix(w.hdr.Get("Content-Type"), "application/json") {
			t.Fatalf("answer is not JSON: %q", w.body.String())
		}
		for _, c := range sink.take() {
			if !json.Valid(c.cb.Body) {
				t.Fatalf("stored a body that is not JSON")
			}
			switch c.targets[0].Route {
			case "ns/signed":
				q, _ := url.ParseQuery(u.RawQuery)
				rts := q.Get("RequestTime")
				got, _ := hex.DecodeString(q.Get("Sign"))
				want := sha256.Sum256([]byte(testToken + rts))
				rtv, perr := strconv.ParseInt(rts, 10, 64)
				if string(got) != string(want[:]) || perr != nil || rtv < now.Unix()-300 || rtv > now.Unix()+300 {
					t.Fatalf("stored a callback with a bad or stale Sign: %q", target)
				}
			case "ns/basic":
				user, pass, ok := req.BasicAuth()
				if !ok || user != "u" || pass != "p" {
					t.Fatalf("stored a callback with wrong Basic auth %q", auth)
				}
			}
		}
	})
}

type readCloser struct{ *strings.Reader }

func (readCloser) Close() error { return nil }
