package samples

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"testing"
)

func TestSamples(t *testing.T) {
	all := All()
	if len(all) != len(commands) {
		t.Fatalf("%d sample files, %d command entries", len(all), len(commands))
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
	sum := sha256.Sum256([]byte(SignExampleToken + SignExampleRequestTime))
	if hex.EncodeToString(sum[:]) != SignExampleSign {
		t.Error("Tencent's sign example does not hold")
	}
}
