package routing

import (
	"fmt"
	"math"
	"net/netip"
	"net/url"
	"sort"
	"strings"

	"github.com/google/cel-go/cel"

	"github.com/callback-router/callback-router/api/v1alpha1"
	"github.com/callback-router/callback-router/webhook/callback"
)

// Route is one compiled route with everything the receiver needs per request already
// parsed, so that a request never parses URLs or CIDRs.
type Route struct {
	CompiledRoute
	// RouteKey is "namespace/name".
	RouteKey string
	// BackendURL is URL parsed; the receiver copies it and sets RawQuery per request.
	BackendURL *url.URL
	// Prefixes are SourceCIDRs parsed; empty admits every source.
	Prefixes []netip.Prefix
	// TokenIdx indexes App.Tokens: the route's valid tokens, shared between the routes of
	// one app so a request hashes each distinct token once.
	TokenIdx []int
	// Target is the route's Async delivery settings.
	Target callback.Target

	// filter is Filter compiled; nil when the route has none.
	filter cel.Program
}

// Match is the routes that a command of one app reaches, before verification.
type Match struct {
	// Sync are the Sync candidates in precedence order: exact pattern first, then longer
	// prefixes, then older routes, then namespace/name. Only the first may answer, and
	// only if it passes its verification; the others never answer in its place.
	Sync []*Route
	// Async get a copy each (fan-out), in namespace/name order.
	Async []*Route
	// Pattern is the command pattern the lookup matched: the exact command, or the
	// longest matching prefix followed by "*". It comes from the table, so it is safe as
	// a metric label whatever command the caller sent.
	Pattern string
}

// App is the routes of one provider and app ID.
type App struct {
	Provider v1alpha1.Provider
	AppID    string
	// Routes is every route of the app, in namespace/name order; a callback whose command
	// matches none of them must still pass one of their checks to be acknowledged.
	Routes []*Route
	// Tokens are the distinct Tencent IM tokens of the app's routes.
	Tokens []string

	exact      map[string]*Match
	prefixes   map[string]*Match // keyed by the prefix without its '*'
	prefixLens []int             // distinct prefix lengths, longest first
}

type appKey struct {
	provider v1alpha1.Provider
	appID    string
}

// Table is an immutable routing table. It is safe for concurrent use; the receiver
// replaces it as a whole.
type Table struct {
	snapshot *Snapshot
	routes   []*Route
	apps     map[appKey]*App
}

// NewTable builds the lookup structures of a snapshot: per provider+appID maps, an exact
// command map, and a prefix map probed once per distinct prefix length, so a lookup never
// scans the routes.
func NewTable(s *Snapshot) (*Table, error) {
	if s == nil {
		s = &Snapshot{}
	}
	t := &Table{snapshot: s, apps: map[appKey]*App{}}
	seen := map[string]bool{}
	for i := range s.Routes {
		cr := s.Routes[i]
		r, err := newRoute(cr)
		if err != nil {
			return nil, fmt.Errorf("route %s: %w", cr.Key(), err)
		}
		if seen[r.RouteKey] {
			return nil, fmt.Errorf("route %s appears twice", r.RouteKey)
		}
		seen[r.RouteKey] = true
		t.routes = append(t.routes, r)
		k := appKey{cr.Provider, cr.AppID}
		a := t.apps[k]
		if a == nil {
			a = &App{Provider: cr.Provider, AppID: cr.AppID}
			t.apps[k] = a
		}
		a.Routes = append(a.Routes, r)
	}
	for _, a := range t.apps {
		a.build()
	}
	return t, nil
}

func newRoute(cr CompiledRoute) (*Route, error) {
	if cr.Provider != v1alpha1.ProviderTencentIM && cr.Provider != v1alpha1.ProviderOpenIM {
		return nil, fmt.Errorf("unknown provider %q", cr.Provider)
	}
	if cr.Mode != v1alpha1.ModeSync && cr.Mode != v1alpha1.ModeAsync {
		return nil, fmt.Errorf("unknown mode %q", cr.Mode)
	}
	if len(cr.Commands) == 0 {
		return nil, fmt.Errorf("no commands")
	}
	u, err := url.Parse(cr.URL)
	if err != nil || (u.Scheme != schemeHTTP && u.Scheme != schemeHTTPS) || u.Host == "" {
		return nil, fmt.Errorf("backend URL %q is not an absolute http(s) URL", cr.URL)
	}
	r := &Route{CompiledRoute: cr, RouteKey: cr.Key(), BackendURL: u}
	if cr.Filter != "" {
		p, err := cachedFilter(cr.Filter)
		if err != nil {
			return nil, err
		}
		r.filter = p
	}
	for _, c := range cr.SourceCIDRs {
		p, err := netip.ParsePrefix(c)
		if err != nil {
			return nil, fmt.Errorf("parsing source CIDR: %w", err)
		}
		r.Prefixes = append(r.Prefixes, p.Masked())
	}
	r.Target = callback.Target{
		Route:          r.RouteKey,
		URL:            cr.URL,
		Timeout:        cr.Timeout,
		MaxAttempts:    cr.MaxAttempts,
		InitialBackoff: cr.InitialBackoff,
		MaxBackoff:     cr.MaxBackoff,

		ForwardSignature: cr.ForwardSignature,
		Ordered:          cr.Ordered,
		MaxConcurrency:   cr.MaxConcurrency,
		MaxPerSecond:     cr.MaxPerSecond,
	}
	return r, nil
}

// entryRoute is a route reached by a pattern of a given specificity.
type entryRoute struct {
	r    *Route
	spec int // length of the matching prefix; math.MaxInt for an exact name
}

func (a *App) build() {
	sort.Slice(a.Routes, func(i, j int) bool { return a.Routes[i].RouteKey < a.Routes[j].RouteKey })
	tokIdx := map[string]int{}
	exactRoutes := map[string][]*Route{}
	prefixRoutes := map[string][]*Route{}
	lens := map[int]bool{}
	for _, r := range a.Routes {
		for _, tok := range r.Tokens {
			i, ok := tokIdx[tok]
			if !ok {
				i = len(a.Tokens)
				tokIdx[tok] = i
				a.Tokens = append(a.Tokens, tok)
			}
			r.TokenIdx = append(r.TokenIdx, i)
		}
		for _, c := range r.Commands {
			if p, ok := strings.CutSuffix(c, "*"); ok {
				prefixRoutes[p] = append(prefixRoutes[p], r)
				lens[len(p)] = true
			} else {
				exactRoutes[c] = append(exactRoutes[c], r)
			}
		}
	}
	for l := range lens {
		a.prefixLens = append(a.prefixLens, l)
	}
	sort.Sort(sort.Reverse(sort.IntSlice(a.prefixLens)))

	// withPrefixes adds every prefix route whose prefix starts name (a prefix "Group."
	// also reaches everything "Group.Callback" reaches).
	withPrefixes := func(name string, es []entryRoute) []entryRoute {
		for _, l := range a.prefixLens {
			if l > len(name) {
				continue
			}
			for _, r := range prefixRoutes[name[:l]] {
				es = append(es, entryRoute{r, l})
			}
		}
		return es
	}
	a.exact = make(map[string]*Match, len(exactRoutes))
	for name, rs := range exactRoutes {
		es := make([]entryRoute, 0, len(rs))
		for _, r := range rs {
			es = append(es, entryRoute{r, math.MaxInt})
		}
		a.exact[name] = newMatch(withPrefixes(name, es))
		a.exact[name].Pattern = name
	}
	a.prefixes = make(map[string]*Match, len(prefixRoutes))
	for p := range prefixRoutes {
		a.prefixes[p] = newMatch(withPrefixes(p, nil))
		a.prefixes[p].Pattern = p + "*"
	}
}

// newMatch orders and de-duplicates the routes of one entry.
func newMatch(es []entryRoute) *Match {
	best := map[*Route]int{}
	for _, e := range es {
		if s, ok := best[e.r]; !ok || e.spec > s {
			best[e.r] = e.spec
		}
	}
	m := &Match{}
	for r := range best {
		if r.Mode == v1alpha1.ModeSync {
			m.Sync = append(m.Sync, r)
		} else {
			m.Async = append(m.Async, r)
		}
	}
	sort.Slice(m.Sync, func(i, j int) bool {
		a, b := m.Sync[i], m.Sync[j]
		if best[a] != best[b] {
			return best[a] > best[b]
		}
		return olderThan(&a.CompiledRoute, &b.CompiledRoute)
	})
	sort.Slice(m.Async, func(i, j int) bool { return m.Async[i].RouteKey < m.Async[j].RouteKey })
	return m
}

// App returns the routes of a provider and app ID, or nil when it has none.
func (t *Table) App(p v1alpha1.Provider, appID string) *App {
	if t == nil {
		return nil
	}
	return t.apps[appKey{p, appID}]
}

// Lookup returns the routes a command reaches: an exact name first, else the longest
// matching prefix (whose entry includes every shorter matching prefix). Unknown and future
// commands pass through by prefix. It returns nil when no route matches.
func (a *App) Lookup(command string) *Match {
	if m, ok := a.exact[command]; ok {
		return m
	}
	for _, l := range a.prefixLens {
		if l > len(command) {
			continue
		}
		if m, ok := a.prefixes[command[:l]]; ok {
			return m
		}
	}
	return nil
}

// IsExactCommand reports whether some route of the app names command exactly.
func (a *App) IsExactCommand(command string) bool {
	_, ok := a.exact[command]
	return ok
}

// Snapshot returns the snapshot the table was built from. Callers must not modify it.
func (t *Table) Snapshot() *Snapshot { return t.snapshot }

// Routes returns every route, in namespace/name order. Callers must not modify it.
func (t *Table) Routes() []*Route { return t.routes }

// Len is the number of routes.
func (t *Table) Len() int { return len(t.routes) }
