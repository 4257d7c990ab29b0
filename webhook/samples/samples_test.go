package samples

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"testing"

	"github.com/callback-router/callback-router/api/v1alpha1"
)

func TestSamples(t *testing.T) {
	all := All()
	documented := 0
	for _, s := range all {
		if s.Documented {
			documented++
		}
	}
	if documented != len(commands) {
		t.Fatalf("%d documented sample files, %d command entries", documented, len(commands))
	}
	for _, s := range all {
		if !json.Valid(s.Body) {
			t.Errorf("%s: not JSON", s.Name)
		}
		var f struct {
			TC     string `json:"CallbackCommand"`
			OC     string `json:"callbackCommand"`
			Events []struct {
				TC string `json:"CallbackCommand"`
			}
		}
		if err := json.Unmarshal(s.Body, &f); err != nil {
			t.Fatal(err)
		}
		got := f.TC + f.OC
		if len(f.Events) > 0 {
			got = f.Events[0].TC
		}
		if got != s.Command {
			t.Errorf("%s: body command %q, table says %q", s.Name, got, s.Command)
		}
	}
	// The default sample of each provider (no --command) is a documented one.
	for _, p := range []v1alpha1.Provider{v1alpha1.ProviderTencentIM, v1alpha1.ProviderOpenIM} {
		if s, exact := ForCommand(p, ""); exact || !s.Documented {
			t.Errorf("%s: default sample %s", p, s.Name)
		}
	}
	if s, exact := ForCommand(v1alpha1.ProviderTencentIM, "C2C.CallbackAfterSendMsg"); !exact || s.Name != "tencent-c2c-after-send" {
		t.Errorf("the documented sample wins: %s", s.Name)
	}
	if s, exact := ForCommand(v1alpha1.ProviderOpenIM, "callbackBeforeAfterMsgCommand"); !exact || s.Name != "openim-callbackBeforeAfterMsgCommand" {
		t.Errorf("per-command sample: %s", s.Name)
	}
	sum := sha256.Sum256([]byte(SignExampleToken + SignExampleRequestTime))
	if hex.EncodeToString(sum[:]) != SignExampleSign {
		t.Error("Tencent's sign example does not hold")
	}
}
