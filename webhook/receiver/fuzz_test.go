package receiver

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/callback-router/callback-router/webhook/callback"
	"github.com/callback-router/callback-router/webhook/samples"
)

// FuzzParseTencentQuery checks the allocation-free query parser against net/url: a query
// it accepts reads the same to net/url, taking the first value of a name as Go's Get does
// or the last as many frameworks do, in the form backends get it (callback.BackendQuery,
// with and without Sign and RequestTime).
func FuzzParseTencentQuery(f *testing.F) {
	f.Add("SdkAppid=1400000001&CallbackCommand=C2C.CallbackAfterSendMsg&contenttype=json&ClientIP=1.2.3.4&OptPlatform=iOS&Sign=ab&RequestTime=1")
	f.Add("SdkAppid=1&SdkAppid=2&CallbackCommand=a%2Eb+c")
	f.Add("Sign=%zz")
	f.Add("=&&=x&RequestTime")
	f.Add("SdkAppid=1?SdkAppid=1&CallbackCommand=C2C.X")
	f.Add("Sdk%41ppid=1400000999&SdkAppid=1400000001")
	f.Add("x=1?SdkAppid=A&SdkAppid=B")
	f.Add("Callback%43ommand=x&CallbackCommand=y")
	f.Fuzz(func(t *testing.T, raw string) {
		q, err := parseTencentQuery(raw)
		if err != nil {
			return
		}
		got := map[string]string{"SdkAppid": q.app, "CallbackCommand": q.command, "Sign": q.sign, "RequestTime": q.requestTime}
		for _, keep := range []bool{true, false} {
			vals, _ := url.ParseQuery(callback.BackendQuery(raw, keep))
			for k, v := range got {
				want := v
				if !keep && (k == "Sign" || k == "RequestTime") {
					want = ""
				}
				all := vals[k]
				first, last := "", ""
				if len(all) > 0 {
					first, last = all[0], all[len(all)-1]
				}
				if first != want || last != want {
					t.Fatalf("%s of %q (keep Sign %v): receiver %q, net/url first %q last %q", k, raw, keep, want, first, last)
				}
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

	fx := newFixture(f, fuzzYAML, nil)
	allowed := map[int]bool{200: true, 400: true, 401: true, 403: true, 404: true, 405: true, 413: true}

	f.Fuzz(func(t *testing.T, target string, body []byte, auth string) {
		if !strings.HasPrefix(target, "/") {
			target = "/" + target
		}
		// What an HTTP request line and header can carry, and no fragment (net/url,
		// the independent check below, does not cut the query at '#').
		if strings.ContainsAny(target, " \r\n#") || strings.ContainsAny(auth, "\r\n") {
			return
		}
		u, err := url.ParseRequestURI(target)
		if err != nil {
			return
		}
		fx.sink.take()
		status, hdr, answer := rawPost(t, fx, target, auth, body)
		isCallback := u.Path == PathTencent || u.Path == PathTencent+"/" || strings.HasPrefix(u.Path, PathOpenIMPrefix)
		if !isCallback {
			return
		}
		if !allowed[status] {
			t.Fatalf("status %d for %q", status, target)
		}
		if !json.Valid(answer) || !strings.HasPrefix(hdr, "application/json") {
			t.Fatalf("answer is not JSON: %q", answer)
		}
		for _, c := range fx.sink.take() {
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
				req := http.Request{Header: http.Header{"Authorization": {auth}}}
				user, pass, ok := req.BasicAuth()
				if !ok || user != "u" || pass != "p" {
					t.Fatalf("stored a callback with wrong Basic auth %q", auth)
				}
			}
		}
	})
}

// rawPost writes one POST with target as it is onto a new in-memory connection to the
// fixture and reads the answer: status, Content-Type and body.
func rawPost(t *testing.T, f *fixture, target, auth string, body []byte) (int, string, []byte) {
	c, err := f.mem.Dial()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	var b bytes.Buffer
	fmt.Fprintf(&b, "POST %s HTTP/1.1\r\nHost: receiver\r\nContent-Length: %d\r\n", target, len(body))
	if auth != "" {
		fmt.Fprintf(&b, "Authorization: %s\r\n", auth)
	}
	b.WriteString("\r\n")
	b.Write(body)
	if _, err := c.Write(b.Bytes()); err != nil {
		t.Fatal(err)
	}
	var resp fasthttp.Response
	if err := resp.Read(bufio.NewReader(c)); err != nil {
		t.Fatalf("%q: reading the answer: %v", target, err)
	}
	return resp.StatusCode(), string(resp.Header.ContentType()), append([]byte(nil), resp.Body()...)
}
