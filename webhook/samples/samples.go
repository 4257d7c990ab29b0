// Package samples embeds the documented sample callbacks (the request bodies from the
// platforms' own documentation) for `callback-router send`, the tests and the benchmark.
package samples

import (
	"embed"
	"fmt"
	"sort"
	"strings"

	"github.com/callback-router/callback-router/api/v1alpha1"
)

//go:embed data/*.json
var files embed.FS

// Sample is one documented callback.
type Sample struct {
	// Name is the file name without ".json", e.g. "tencent-c2c-after-send".
	Name     string
	Provider v1alpha1.Provider
	// Command is the callback command the body belongs to.
	Command string
	// Body is the JSON body, byte for byte as documented.
	Body []byte
}

// commands maps each sample to its provider and command (see data/ and the protocols doc).
var commands = map[string]struct {
	provider v1alpha1.Provider
	command  string
}{
	"tencent-c2c-after-send":              {v1alpha1.ProviderTencentIM, "C2C.CallbackAfterSendMsg"},
	"tencent-group-after-send":            {v1alpha1.ProviderTencentIM, "Group.CallbackAfterSendMsg"},
	"tencent-official-account-after-send": {v1alpha1.ProviderTencentIM, "OfficialAccount.CallbackAfterSendMsg"},
	"tencent-push-offline-push":           {v1alpha1.ProviderTencentIM, "Push.OfflinePush"},
	"openim-after-send-single":            {v1alpha1.ProviderOpenIM, "callbackAfterSendSingleMsgCommand"},
}

// SignExample is Tencent's documented signature example.
const (
	SignExampleToken       = "xxxxyyyy"
	SignExampleRequestTime = "1669872112"
	SignExampleSign        = "17773bc39a671d7b9aa835458704d2a6db81360a5940292b587d6d760d484061"
)

// All returns every sample, sorted by name. It panics if a file has no entry in the
// command map: the map and data/ must stay in step (a test checks it).
func All() []Sample {
	entries, err := files.ReadDir("data")
	if err != nil {
		panic(err)
	}
	out := make([]Sample, 0, len(entries))
	for _, e := range entries {
		name := strings.TrimSuffix(e.Name(), ".json")
		c, ok := commands[name]
		if !ok {
			panic(fmt.Sprintf("samples: %s has no command entry", e.Name()))
		}
		body, err := files.ReadFile("data/" + e.Name())
		if err != nil {
			panic(err)
		}
		out = append(out, Sample{Name: name, Provider: c.provider, Command: c.command, Body: body})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Get returns the sample with the given name.
func Get(name string) (Sample, bool) {
	for _, s := range All() {
		if s.Name == name {
			return s, true
		}
	}
	return Sample{}, false
}

// ForCommand returns the sample of a provider's command, or the provider's first sample
// when none documents that command (the caller then rewrites the command).
func ForCommand(p v1alpha1.Provider, command string) (s Sample, exact bool) {
	var first *Sample
	all := All()
	for i := range all {
		if all[i].Provider != p {
			continue
		}
		if all[i].Command == command {
			return all[i], true
		}
		if first == nil {
			first = &all[i]
		}
	}
	if first == nil {
		return Sample{}, false
	}
	return *first, false
}
