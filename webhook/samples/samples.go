// Package samples embeds sample callbacks for `callback-router send`, the tests and the
// benchmark: the documented ones (data/*.json, request bodies from the platforms' own
// documentation) and one realistic body for every other command of the catalogue
// (data/tencent/<CallbackCommand>.json, data/openim/<callbackCommand>.json, written from the
// field lists in the platforms' documentation and OpenIM's callbackstruct package).
package samples

import (
	"embed"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/callback-router/callback-router/api/v1alpha1"
)

//go:embed data/*.json data/tencent/*.json data/openim/*.json
var files embed.FS

// commandDirs are the per-command directories: the file name is the command.
var commandDirs = []struct {
	dir      string
	provider v1alpha1.Provider
	prefix   string
}{
	{"data/tencent", v1alpha1.ProviderTencentIM, "tencent-"},
	{"data/openim", v1alpha1.ProviderOpenIM, "openim-"},
}

// Sample is one documented callback.
type Sample struct {
	// Name is the documented sample's file name without ".json", e.g.
	// "tencent-c2c-after-send", or the provider and the command of a per-command sample,
	// e.g. "tencent-C2C.CallbackBeforeSendMsg".
	Name string
	// Documented is true for the bodies copied from the platforms' documentation.
	Documented bool
	Provider   v1alpha1.Provider
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

// All returns every sample, sorted by name. It panics if a documented file has no entry in
// the command map: the map and data/ must stay in step (a test checks it).
func All() []Sample {
	allOnce.Do(func() { all = load() })
	return append([]Sample(nil), all...)
}

var (
	allOnce sync.Once
	all     []Sample
)

func load() []Sample {
	entries, err := files.ReadDir("data")
	if err != nil {
		panic(err)
	}
	out := make([]Sample, 0, len(entries))
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		name := strings.TrimSuffix(e.Name(), ".json")
		c, ok := commands[name]
		if !ok {
			panic(fmt.Sprintf("samples: %s has no command entry", e.Name()))
		}
		body, err := files.ReadFile("data/" + e.Name())
		if err != nil {
			panic(err)
		}
		out = append(out, Sample{Name: name, Documented: true, Provider: c.provider, Command: c.command, Body: body})
	}
	for _, d := range commandDirs {
		entries, err := files.ReadDir(d.dir)
		if err != nil {
			panic(err)
		}
		for _, e := range entries {
			command := strings.TrimSuffix(e.Name(), ".json")
			body, err := files.ReadFile(d.dir + "/" + e.Name())
			if err != nil {
				panic(err)
			}
			out = append(out, Sample{Name: d.prefix + command, Provider: d.provider, Command: command, Body: body})
		}
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

// ForCommand returns the sample of a provider's command (the documented one where there is
// one), or the provider's first documented sample when the command has none (the caller then rewrites
// the command).
func ForCommand(p v1alpha1.Provider, command string) (s Sample, exact bool) {
	var first, exactSample *Sample
	all := All()
	for i := range all {
		if all[i].Provider != p {
			continue
		}
		if all[i].Command == command {
			if all[i].Documented {
				return all[i], true
			}
			if exactSample == nil {
				exactSample = &all[i]
			}
		}
		if first == nil && all[i].Documented {
			first = &all[i]
		}
	}
	if exactSample != nil {
		return *exactSample, true
	}
	if first == nil {
		return Sample{}, false
	}
	return *first, false
}
