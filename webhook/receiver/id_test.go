package receiver

import (
	"encoding/json"
	"testing"

	"github.com/callback-router/callback-router/api/v1alpha1"
	"github.com/callback-router/callback-router/webhook/callback"
)

var idSeeds = []string{
	`{"MsgKey":"1_2_3"}`,
	`{"msgkey":"1_2_3"}`,
	`{"MsgKey":"a","MsgKey":"b"}`,
	`{"MsgKey":5}`,
	`{"MsgKey":null,"GroupId":"g","MsgSeq":null}`,
	`{"GroupId":"@TGS#1","MsgSeq":"7"}`,
	`{"GroupId":"@TGS#1","MsgSeq":{"a":[1,2]}}`,
	`{"GroupId":"@TGS\u00231","MsgSeq":7}`,
	`{"Msg\u004bey":"x"}`,
	`{"MsgKey":"é"}`,
	`{"Events":[{"PushID":"p1"},{"PushID":"p2"}]}`,
	`{"Events":[{"pushid":"p1"}]}`,
	`{"Events":[null,{"PushID":"p2"}]}`,
	`{"Events":[1]}`,
	`{"Events":"x"}`,
	`{"Events":null,"serverMsgID":"s"}`,
	`{"serverMsgID":"s","serverMsgID":"t"}`,
	`[1,2]`,
	`"str"`,
	`{}`,
	`{"Events":[{"PushID":"a","PushID":"b"}]}`,
	`{"Events":[{"PushID":"a","Other":{"PushID":"x"}}]}`,
}

// TestCallbackIDMatchesComputeID runs the samples and the tricky seeds through both.
func TestCallbackIDMatchesComputeID(t *testing.T) {
	bodies := idSeeds
	for _, s := range loadSamples(t) {
		bodies = append(bodies, string(s.body))
	}
	fast := 0
	for _, b := range bodies {
		for _, p := range []v1alpha1.Provider{v1alpha1.ProviderTencentIM, v1alpha1.ProviderOpenIM} {
			want := callback.ComputeID(p, "Cmd", []byte(b))
			if got := callbackID(p, "Cmd", []byte(b)); got != want {
				t.Errorf("%s %s: %q, ComputeID says %q", p, b, got, want)
			}
			if _, ok := fastID(p, "Cmd", []byte(b)); ok {
				fast++
			}
		}
	}
	if fast < 2*len(loadSamples(t)) {
		t.Errorf("only %d bodies took the fast path: the samples must", fast)
	}
}

// FuzzCallbackID checks that the fast path never disagrees with callback.ComputeID.
func FuzzCallbackID(f *testing.F) {
	for _, s := range idSeeds {
		f.Add([]byte(s))
	}
	for _, s := range loadSamples(f) {
		f.Add(s.body)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if !json.Valid(body) {
			return
		}
		for _, p := range []v1alpha1.Provider{v1alpha1.ProviderTencentIM, v1alpha1.ProviderOpenIM} {
			if got, ok := fastID(p, "Cmd", body); ok {
				if want := callback.ComputeID(p, "Cmd", body); got != want {
					t.Fatalf("%s %q: fast %q, ComputeID %q", p, body, got, want)
				}
			}
		}
	})
}

func BenchmarkCallbackID(b *testing.B) {
	body := loadSamples(b)[1].body
	b.Run("ComputeID", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			callback.ComputeID(v1alpha1.ProviderTencentIM, "C2C.X", body)
		}
	})
	b.Run("callbackID", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			callbackID(v1alpha1.ProviderTencentIM, "C2C.X", body)
		}
	})
}
