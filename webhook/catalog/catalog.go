// Package catalog is the command catalogue: every callback command Tencent Cloud IM and
// OpenIM are known to send (../shared/protocols.md sections 1.5 and 2.6, kept in step with
// it), with its kind, what its answer may carry and the idempotency key the receiver gives
// it. `callback-router send` lists and samples it; the compiler uses it to expand the
// `@before` and `@after` selectors of a route's commands and to warn about commands no
// platform sends (a typo) and about Sync routes on after-callbacks (whose answer is ignored).
//
// The catalogue describes, it never filters: the receiver routes a command it does not know
// like any other (platforms add commands), so a route may name one; it is only warned about.
package catalog

import (
	"sort"
	"strings"

	"github.com/callback-router/callback-router/api/v1alpha1"
)

// Kind says whether the platform waits for the answer.
type Kind string

const (
	// Before callbacks are sent before the action; the platform waits for the answer, which
	// may allow, reject or modify it. Route them with mode Sync.
	Before Kind = "Before"
	// After callbacks are notifications; the platform ignores the answer. Route them with
	// mode Async.
	After Kind = "After"
)

// IDKey names what X-Callback-Id is made of for a command (callback.ComputeID): the
// platform's own message identity where the body carries one, else a hash of the body.
type IDKey string

const (
	// IDMsgKey is Tencent's MsgKey (MsgSeq_MsgRandom_MsgTime): C2C and official-account messages.
	IDMsgKey IDKey = "MsgKey"
	// IDGroupMsgSeq is Tencent's GroupId and MsgSeq: group messages once sequenced.
	IDGroupMsgSeq IDKey = "GroupId+MsgSeq"
	// IDPushID is the PushID of each event of a batched Tencent push callback.
	IDPushID IDKey = "PushID"
	// IDServerMsgID is OpenIM's serverMsgID: message callbacks.
	IDServerMsgID IDKey = "serverMsgID"
	// IDBodyHash is a SHA-256 of the body: callbacks without a message identity.
	IDBodyHash IDKey = "sha256(body)"
)

// Selectors a route's commands (and an app's allowedRoutes commands) may use instead of
// names: every callback of that kind the catalogue knows for the app's provider, whatever
// its name (OpenIM's revoke after-callback is called callbackBeforeAfterMsgCommand).
const (
	SelectBefore = "@before"
	SelectAfter  = "@after"
)

// Command is one callback command of one provider.
type Command struct {
	Provider v1alpha1.Provider
	// Name is the command word: Tencent's CallbackCommand, OpenIM's last path segment.
	Name string
	Kind Kind
	// AnswerFields are the fields an answer may carry beyond the provider's envelope (which
	// every Before answer has: allow or reject), e.g. a replaced MsgBody. Empty for After
	// callbacks, whose answer is ignored, and for Before callbacks that can only allow or
	// reject (or whose extra fields are not documented).
	AnswerFields []string
	// IDKey is what X-Callback-Id is made of.
	IDKey IDKey
	// Group is the command's family: Tencent's prefix (C2C, Group, Push, ...), OpenIM's
	// emitting service (msg, push, msggateway, friend, user, group, conversation).
	Group string
	// ConfigKey is the OpenIM webhooks.yml key that enables the command.
	ConfigKey string
	// AlsoKnownAs are names people write for this command that the platform never sends
	// (the constant's name in the platform's source, an older spelling): a route naming one
	// is told the real name.
	AlsoKnownAs []string
	// Note says what is special: the source when it is not the platform's own list, a
	// version, a naming quirk.
	Note string
}

// Answered reports whether the platform reads the answer (Before callbacks).
func (c *Command) Answered() bool { return c.Kind == Before }

var (
	byProvider = map[v1alpha1.Provider][]Command{}
	byName     = map[v1alpha1.Provider]map[string]*Command{}
)

func init() {
	for _, list := range [][]Command{tencent, openIM} {
		for i := range list {
			c := list[i]
			byProvider[c.Provider] = append(byProvider[c.Provider], c)
		}
	}
	for p, list := range byProvider {
		sort.Slice(list, func(i, j int) bool { return list[i].Name < list[j].Name })
		byName[p] = make(map[string]*Command, len(list))
		for i := range list {
			if _, dup := byName[p][list[i].Name]; dup {
				panic("catalog: duplicate command " + list[i].Name)
			}
			byName[p][list[i].Name] = &list[i]
		}
	}
}

// Providers are the providers the catalogue covers, in a fixed order.
func Providers() []v1alpha1.Provider {
	return []v1alpha1.Provider{v1alpha1.ProviderTencentIM, v1alpha1.ProviderOpenIM}
}

// Commands returns a provider's commands, sorted by name. The slice is shared: do not modify it.
func Commands(p v1alpha1.Provider) []Command { return byProvider[p] }

// Lookup returns a provider's command by its exact name.
func Lookup(p v1alpha1.Provider, name string) (Command, bool) {
	if c, ok := byName[p][name]; ok {
		return *c, true
	}
	return Command{}, false
}

// IsSelector reports whether a route command is one of the kind selectors.
func IsSelector(pattern string) bool { return pattern == SelectBefore || pattern == SelectAfter }

// IsSelectorLike reports whether a route command uses the selector syntax (a leading '@'),
// known selector or not.
func IsSelectorLike(pattern string) bool { return strings.HasPrefix(pattern, "@") }

// Select returns the names of a provider's commands of one kind, sorted.
func Select(p v1alpha1.Provider, k Kind) []string {
	var out []string
	for _, c := range byProvider[p] {
		if c.Kind == k {
			out = append(out, c.Name)
		}
	}
	return out
}

// Expand replaces the selectors in a route's commands by the exact names they stand for
// and returns the result sorted and without duplicates; names and prefixes are kept as
// they are. An unknown selector ("@aftr") is returned as is: callers reject it first
// (ValidateSelectors).
func Expand(p v1alpha1.Provider, commands []string) []string {
	set := make(map[string]struct{}, len(commands))
	for _, c := range commands {
		switch c {
		case SelectBefore:
			for _, n := range Select(p, Before) {
				set[n] = struct{}{}
			}
		case SelectAfter:
			for _, n := range Select(p, After) {
				set[n] = struct{}{}
			}
		default:
			set[c] = struct{}{}
		}
	}
	out := make([]string, 0, len(set))
	for c := range set {
		out = append(out, c)
	}
	sort.Strings(out)
	return out
}

// ValidateSelectors returns the commands that use the selector syntax but are not a
// selector ("@aftr"), which make a route Invalid.
func ValidateSelectors(commands []string) []string {
	var bad []string
	for _, c := range commands {
		if IsSelectorLike(c) && !IsSelector(c) {
			bad = append(bad, c)
		}
	}
	return bad
}

// Covers reports whether an allowance (an app's allowedRoutes commands: names, prefixes
// and selectors) admits a command name of provider p.
func Covers(p v1alpha1.Provider, allowed []string, name string) bool {
	for _, a := range allowed {
		switch {
		case a == SelectBefore || a == SelectAfter:
			if c, ok := byName[p][name]; ok && (c.Kind == Before) == (a == SelectBefore) {
				return true
			}
		case strings.HasSuffix(a, "*"):
			if strings.HasPrefix(name, strings.TrimSuffix(a, "*")) {
				return true
			}
		case a == name:
			return true
		}
	}
	return false
}
