package cli

import (
	"bytes"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/callback-router/callback-router/api/v1alpha1"
	"github.com/callback-router/callback-router/webhook/catalog"
)

// TestSendList: `send --list` prints every catalogue command once, with its kind and the
// sample `send --command` uses for it.
func TestSendList(t *testing.T) {
	var out bytes.Buffer
	if err := listCommands(&out, ""); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(out.String(), "\n")
	for _, p := range catalog.Providers() {
		for _, c := range catalog.Commands(p) {
			n := 0
			for _, l := range lines {
				f := strings.Fields(l)
				if len(f) >= 5 && f[2] == c.Name {
					n++
					if f[0] != string(p) || f[1] != string(c.Kind) || f[4] == "" {
						t.Errorf("row %q", l)
					}
				}
			}
			if n != 1 {
				t.Errorf("%s %s listed %d times", p, c.Name, n)
			}
		}
	}
	out.Reset()
	if err := listCommands(&out, v1alpha1.ProviderOpenIM); err != nil || strings.Contains(out.String(), "TencentIM") ||
		!strings.Contains(out.String(), "callbackBeforeAfterMsgCommand") {
		t.Errorf("OpenIM only: %v\n%s", err, out.String())
	}
	if err := listCommands(&out, "Slack"); err == nil {
		t.Error("unknown provider listed")
	}
}

// TestSendEveryCommand builds the request of every catalogue command as `send --command`
// does: the right URL for the provider and the command's own sample body.
func TestSendEveryCommand(t *testing.T) {
	now := time.Unix(1669872112, 0)
	for _, p := range catalog.Providers() {
		for _, c := range catalog.Commands(p) {
			o := sendOptions{url: "http://127.0.0.1:8080", provider: string(v1alpha1.ProviderTencentIM), command: c.Name, token: "t"}
			if note := resolveCommand(&o, false); note != "" || o.provider != string(p) {
				t.Errorf("%s: provider %s, note %q", c.Name, o.provider, note)
			}
			req, err := buildSendRequest(t.Context(), &o, now)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(req.Body)
			var f struct {
				TC     string `json:"CallbackCommand"`
				OC     string `json:"callbackCommand"`
				Events []struct {
					TC string `json:"CallbackCommand"`
				}
			}
			if err := json.Unmarshal(b, &f); err != nil {
				t.Fatalf("%s: %v", c.Name, err)
			}
			got := f.TC + f.OC
			if len(f.Events) > 0 {
				got = f.Events[0].TC
			}
			wantPath := "/tencent"
			if p == v1alpha1.ProviderOpenIM {
				wantPath = "/openim/" + DefaultSendOpenIMApp + "/" + c.Name
			}
			if got != c.Name || req.URL.Path != wantPath {
				t.Errorf("%s: body command %q, path %s", c.Name, got, req.URL.Path)
			}
		}
	}
}

func TestSendUnknownCommandNote(t *testing.T) {
	o := sendOptions{provider: string(v1alpha1.ProviderTencentIM), command: "C2C.CallbackAfterSendMessage"}
	if note := resolveCommand(&o, false); !strings.Contains(note, "did you mean C2C.CallbackAfterSendMsg?") {
		t.Errorf("note %q", note)
	}
	o = sendOptions{provider: string(v1alpha1.ProviderTencentIM), command: "callbackAfterSendSingleMsgCommand"}
	if note := resolveCommand(&o, true); !strings.Contains(note, "a command of OpenIM") || o.provider != string(v1alpha1.ProviderTencentIM) {
		t.Errorf("explicit --provider kept, note %q", note)
	}
}
