package callback

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/callback-router/callback-router/api/v1alpha1"
)

func TestConversationKey(t *testing.T) {
	tencent, openim := v1alpha1.ProviderTencentIM, v1alpha1.ProviderOpenIM
	cases := []struct {
		name     string
		provider v1alpha1.Provider
		body     string
		want     string
	}{
		{"c2c", tencent, `{"From_Account":"jared","To_Account":"Jonh","MsgKey":"1_2_3"}`, "c2c:4:Jonh_jared"},
		{"c2c reply shares the key", tencent, `{"From_Account":"Jonh","To_Account":"jared"}`, "c2c:4:Jonh_jared"},
		{"c2c ids that would collide without the length", tencent, `{"From_Account":"a_b","To_Account":"c"}`, "c2c:3:a_b_c"},
		{"c2c ids that would collide without the length, other split", tencent, `{"From_Account":"a","To_Account":"b_c"}`, "c2c:1:a_b_c"},
		{"group", tencent, `{"GroupId":"@TGS#2J4SZEAEL","From_Account":"jared","MsgSeq":123}`, "group:@TGS#2J4SZEAEL"},
		{"group member join (no sender pair)", tencent, `{"GroupId":"@TGS#1","Operator_Account":"admin"}`, "group:@TGS#1"},
		{"official account", tencent, `{"Official_Account":"@TOA#_2J4SZEAEL","MsgKey":"71_1_1698741698"}`, "oa:@TOA#_2J4SZEAEL"},
		{"push batch: no conversation", tencent, `{"Events":[{"From_Account":"a","To_Account":"b"}]}`, ""},
		{"state change: no conversation", tencent, `{"Info":{"Action":"Login","To_Account":"a"}}`, ""},
		{"only one account", tencent, `{"From_Account":"a"}`, ""},
		{"numeric account is not an id", tencent, `{"From_Account":1,"To_Account":"b"}`, ""},
		{"not an object", tencent, `[1,2]`, ""},
		{"openim single", openim, `{"sendID":"user123","recvID":"user456","sessionType":1}`, "si_7:user123_user456"},
		{"openim single reply", openim, `{"sendID":"user456","recvID":"user123","sessionType":1}`, "si_7:user123_user456"},
		{"openim group", openim, `{"sendID":"u1","groupID":"g1","sessionType":3}`, "sg_g1"},
		{"openim write group", openim, `{"sendID":"u1","groupID":"g1","sessionType":2}`, "sg_g1"},
		{"openim group without sessionType", openim, `{"sendID":"u1","groupID":"g1"}`, "sg_g1"},
		{"openim notification", openim, `{"sendID":"sys","recvID":"u1","sessionType":4}`, "sn_3:sys_u1"},
		{"openim single without sessionType", openim, `{"sendID":"b","recvID":"a"}`, "si_1:a_b"},
		{"openim user online: no conversation", openim, `{"userID":"u1","platformID":1}`, ""},
		{"openim unknown session type", openim, `{"sendID":"a","recvID":"b","sessionType":9}`, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := ConversationKey(c.provider, []byte(c.body)); got != c.want {
				t.Errorf("ConversationKey(%s) = %q, want %q", c.body, got, c.want)
			}
		})
	}
}

// TestConversationKeySamples computes the key of every shared sample callback.
func TestConversationKeySamples(t *testing.T) {
	want := map[string]struct {
		provider v1alpha1.Provider
		key      string
	}{
		"tencent-c2c-after-send.json":              {v1alpha1.ProviderTencentIM, "c2c:4:Jonh_jared"},
		"tencent-group-after-send.json":            {v1alpha1.ProviderTencentIM, "group:@TGS#2J4SZEAEL"},
		"tencent-official-account-after-send.json": {v1alpha1.ProviderTencentIM, "oa:@TOA#_2J4SZEAEL"},
		"tencent-push-offline-push.json":           {v1alpha1.ProviderTencentIM, ""},
		"openim-after-send-single.json":            {v1alpha1.ProviderOpenIM, "si_7:user123_user456"},
	}
	for file, w := range want {
		body, err := os.ReadFile(filepath.Join("..", "samples", "data", file))
		if err != nil {
			t.Fatal(err)
		}
		if got := ConversationKey(w.provider, body); got != w.key {
			t.Errorf("%s: key %q, want %q", file, got, w.key)
		}
	}
}
