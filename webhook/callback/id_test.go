package callback

import (
	"crypto/sha256"
	"encoding/hex"
	"net/url"
	"testing"

	"github.com/callback-router/callback-router/api/v1alpha1"
)

// TestComputeID: the natural keys the design names, and the rules for bodies that are
// odd (the one implementation of X-Callback-Id, used by Sync and Async alike).
func TestComputeID(t *testing.T) {
	hash := func(body string) string {
		s := sha256.Sum256([]byte(body))
		return "Cmd:sha256:" + hex.EncodeToString(s[:16])
	}
	tencent, openim := v1alpha1.ProviderTencentIM, v1alpha1.ProviderOpenIM
	for _, c := range []struct {
		name     string
		provider v1alpha1.Provider
		body     string
		want     string
	}{
		{"C2C by MsgKey", tencent, `{"MsgKey":"48374_2837546_1557481126","MsgSeq":1}`, "Cmd:48374_2837546_1557481126"},
		{"group by GroupId and numeric MsgSeq", tencent, `{"GroupId":"@TGS#2J4SZEAEL","MsgSeq":123}`, "Cmd:@TGS#2J4SZEAEL_123"},
		{"group by GroupId and string MsgSeq", tencent, `{"GroupId":"@TGS#1","MsgSeq":"7"}`, "Cmd:@TGS#1_7"},
		{"escaped GroupId decoded", tencent, `{"GroupId":"@TGS\u00231","MsgSeq":7}`, "Cmd:@TGS#1_7"},
		{"one push event", tencent, `{"Events":[{"PushID":"p1"}]}`, "Cmd:p1"},
		{"OpenIM by serverMsgID", openim, `{"serverMsgID":"s1","MsgKey":"k"}`, "Cmd:s1"},
		{"OpenIM ignores MsgKey", openim, `{"MsgKey":"k"}`, hash(`{"MsgKey":"k"}`)},
		{"Tencent ignores serverMsgID", tencent, `{"serverMsgID":"s1"}`, hash(`{"serverMsgID":"s1"}`)},
		{"last of a repeated field wins", tencent, `{"MsgKey":"a","MsgKey":"b"}`, "Cmd:b"},
		{"names match exactly", tencent, `{"msgkey":"a"}`, hash(`{"msgkey":"a"}`)},
		{"a number is not a MsgKey", tencent, `{"MsgKey":5}`, hash(`{"MsgKey":5}`)},
		{"null MsgKey, GroupId without MsgSeq", tencent, `{"MsgKey":null,"GroupId":"g","MsgSeq":null}`, hash(`{"MsgKey":null,"GroupId":"g","MsgSeq":null}`)},
		{"MsgSeq of another type", tencent, `{"GroupId":"g","MsgSeq":{"a":1}}`, hash(`{"GroupId":"g","MsgSeq":{"a":1}}`)},
		{"first event without PushID", tencent, `{"Events":[null,{"PushID":"p2"}]}`, hash(`{"Events":[null,{"PushID":"p2"}]}`)},
		{"Events not an array", tencent, `{"Events":"x"}`, hash(`{"Events":"x"}`)},
		{"not an object", tencent, `[1,2]`, hash(`[1,2]`)},
		{"not JSON", tencent, `{`, hash(`{`)},
	} {
		if got := ComputeID(c.provider, "Cmd", []byte(c.body)); got != c.want {
			t.Errorf("%s: %s gives %q, want %q", c.name, c.body, got, c.want)
		}
	}
	// A batch of pushes: a hash of every PushID, in order, so the header stays short.
	h := sha256.New()
	for _, p := range []string{"p1", "p2"} {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	want := "Cmd:push:" + hex.EncodeToString(h.Sum(nil)[:16])
	if got := ComputeID(tencent, "Cmd", []byte(`{"Events":[{"PushID":"p1"},{"PushID":"p2","Other":{"PushID":"x"}}]}`)); got != want {
		t.Errorf("push batch: %q, want %q", got, want)
	}
}

func BenchmarkComputeID(b *testing.B) {
	body := []byte(`{"CallbackCommand":"C2C.CallbackAfterSendMsg","From_Account":"jared","To_Account":"Jonh","MsgSeq":48374,"MsgRandom":2837546,"MsgTime":1557481126,"MsgKey":"48374_2837546_1557481126","OnlineOnlyFlag":1,"SendMsgResult":0,"ErrorInfo":"send msg succeed","MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"red packet"}}],"CloudCustomData":"your cloud custom data","EventTime":1670574414123}`)
	b.ReportAllocs()
	for b.Loop() {
		ComputeID(v1alpha1.ProviderTencentIM, "C2C.CallbackAfterSendMsg", body)
	}
}

// TestBackendURL: the query a backend gets is read the same by every parser, and holds
// Sign and RequestTime only when asked to.
func TestBackendURL(t *testing.T) {
	const q = "SdkAppid=1?SdkAppid=1&CallbackCommand=C2C.X&Sign=ab&RequestTime=12&ClientIP=1.2.3.4"
	for _, c := range []struct {
		base    string
		forward bool
		want    string
	}{
		{"http://127.0.0.1:9000", false, "http://127.0.0.1:9000/?SdkAppid=1&SdkAppid=1&CallbackCommand=C2C.X&ClientIP=1.2.3.4"},
		{"http://127.0.0.1:9000/hook", true, "http://127.0.0.1:9000/hook?SdkAppid=1&SdkAppid=1&CallbackCommand=C2C.X&Sign=ab&RequestTime=12&ClientIP=1.2.3.4"},
		{"http://127.0.0.1:9000/hook?team=a", false, "http://127.0.0.1:9000/hook?team=a&SdkAppid=1&SdkAppid=1&CallbackCommand=C2C.X&ClientIP=1.2.3.4"},
		{"http://127.0.0.1:9000?team=a", false, "http://127.0.0.1:9000/?team=a&SdkAppid=1&SdkAppid=1&CallbackCommand=C2C.X&ClientIP=1.2.3.4"},
	} {
		got := BackendURL(c.base, q, c.forward)
		if got != c.want {
			t.Errorf("BackendURL(%q, forward %v) = %q, want %q", c.base, c.forward, got, c.want)
		}
		if _, err := url.Parse(got); err != nil {
			t.Errorf("%q: %v", got, err)
		}
	}
	if got := BackendURL("http://127.0.0.1:9000/x", "", false); got != "http://127.0.0.1:9000/x" {
		t.Errorf("no query: %q", got)
	}
	if got := BackendQuery("Sign=a&RequestTime=1", false); got != "" {
		t.Errorf("only credentials: %q", got)
	}
}
