package catalog

import (
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/callback-router/callback-router/api/v1alpha1"
)

// Unknown is a route command the catalogue does not know for the app's provider.
type Unknown struct {
	// Command is the route's command: an exact name, or a prefix ending in "*" that matches
	// no known command.
	Command string
	// Suggestion is the known command (or, for a prefix, the known family prefix) it most
	// likely means; empty when nothing is close.
	Suggestion string
	// OtherProvider is set when the name is a command of the other provider (an OpenIM name
	// on a TencentIM app, or the reverse).
	OtherProvider v1alpha1.Provider
}

// String is the Unknown as the condition message and the event show it.
func (u Unknown) String() string {
	switch {
	case u.OtherProvider != "":
		return fmt.Sprintf("%s (a command of %s)", u.Command, u.OtherProvider)
	case u.Suggestion != "":
		return fmt.Sprintf("%s (did you mean %s?)", u.Command, u.Suggestion)
	}
	return u.Command
}

// FindUnknown returns the commands of a route (as written, selectors included) that
// provider p is not known to send, with a did-you-mean for each, in the route's order. A
// prefix is unknown when it matches no known command ("Grp.*"); "*" and selectors are never.
func FindUnknown(p v1alpha1.Provider, commands []string) []Unknown {
	var out []Unknown
	for _, c := range commands {
		if c == "*" || IsSelectorLike(c) {
			continue
		}
		if prefix, ok := strings.CutSuffix(c, "*"); ok {
			if !anyPrefixed(p, prefix) {
				out = append(out, Unknown{Command: c, Suggestion: suggestPrefix(p, prefix)})
			}
			continue
		}
		if _, ok := byName[p][c]; ok {
			continue
		}
		out = append(out, unknownName(p, c))
	}
	return out
}

// AfterOnly returns the commands of a route (as written) that can only match callbacks
// the catalogue knows are after-callbacks, whose answer the platform ignores: the @after
// selector, exact after-callback names, and prefixes whose every known match is one.
// A Sync route on them is warned about: it makes the platform wait for nothing.
func AfterOnly(p v1alpha1.Provider, commands []string) []string {
	var out []string
	for _, c := range commands {
		switch {
		case c == SelectAfter:
			out = append(out, c)
		case c == "*" || IsSelectorLike(c):
		case strings.HasSuffix(c, "*"):
			prefix := strings.TrimSuffix(c, "*")
			n, after := 0, 0
			for _, k := range byProvider[p] {
				if strings.HasPrefix(k.Name, prefix) {
					n++
					if k.Kind == After {
						after++
					}
				}
			}
			if n > 0 && n == after {
				out = append(out, c)
			}
		default:
			if k, ok := byName[p][c]; ok && k.Kind == After {
				out = append(out, c)
			}
		}
	}
	return out
}

// MaxMemoizedUnknown bounds how many verdicts on unknown names are remembered (the compiler
// asks about every route on every pass; the did-you-mean is a distance to every known
// command). Past it, verdicts are computed each time.
const MaxMemoizedUnknown = 4096

var (
	unknownMemo sync.Map // unknownKey -> Unknown
	memoized    atomic.Int64
)

type unknownKey struct {
	p    v1alpha1.Provider
	name string
}

// unknownName is the verdict on an exact name p does not know.
func unknownName(p v1alpha1.Provider, c string) Unknown {
	k := unknownKey{p, c}
	if v, ok := unknownMemo.Load(k); ok {
		return v.(Unknown)
	}
	u := Unknown{Command: c}
	for _, other := range Providers() {
		if _, ok := byName[other][c]; ok && other != p {
			u.OtherProvider = other
		}
	}
	if u.OtherProvider == "" {
		u.Suggestion = Suggest(p, c)
	}
	if memoized.Add(1) <= MaxMemoizedUnknown {
		unknownMemo.Store(k, u)
	}
	return u
}

func anyPrefixed(p v1alpha1.Provider, prefix string) bool {
	for _, c := range byProvider[p] {
		if strings.HasPrefix(c.Name, prefix) {
			return true
		}
	}
	return false
}

// maxDistance is how far (in edits, case ignored) a suggestion may be from what was
// written: a third of its length, at least 2.
func maxDistance(s string) int { return max(2, len(s)/3) }

// Suggest returns the command of provider p closest to name (Levenshtein distance over
// lower-cased names and the names it is also known as, ties broken by name), or "" when none is within maxDistance.
func Suggest(p v1alpha1.Provider, name string) string {
	best, bestD := "", maxDistance(name)+1
	lname := strings.ToLower(name)
	for _, c := range byProvider[p] {
		for _, n := range append([]string{c.Name}, c.AlsoKnownAs...) {
			if d := distance(lname, strings.ToLower(n), bestD); d < bestD {
				best, bestD = c.Name, d
			}
		}
	}
	return best
}

// suggestPrefix returns the known family prefix ("Group.*") closest to an unknown prefix.
func suggestPrefix(p v1alpha1.Provider, prefix string) string {
	fams := map[string]struct{}{}
	for _, c := range byProvider[p] {
		if i := strings.IndexByte(c.Name, '.'); i > 0 {
			fams[c.Name[:i+1]] = struct{}{}
		}
	}
	names := make([]string, 0, len(fams))
	for f := range fams {
		names = append(names, f)
	}
	sort.Strings(names)
	best, bestD := "", maxDistance(prefix)+1
	for _, f := range names {
		if d := distance(strings.ToLower(prefix), strings.ToLower(f), bestD); d < bestD {
			best, bestD = f+"*", d
		}
	}
	return best
}

// distance is the Levenshtein distance of a and b, or any value >= limit once it is
// certain to reach limit.
func distance(a, b string, limit int) int {
	if d := len(a) - len(b); d >= limit || -d >= limit {
		return limit
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		rowMin := cur[0]
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			rowMin = min(rowMin, cur[j])
		}
		if rowMin >= limit {
			return limit
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
