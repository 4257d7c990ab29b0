// Package routing turns CallbackRoutes and their Secrets into an immutable routing table.
// The controller and the standalone receiver share it: Compile validates and resolves
// routes into a serializable Snapshot (stored in a Secret by the controller), and NewTable
// builds the lookup structures the receiver swaps in atomically.
package routing

import (
	"fmt"
	"net/netip"
	"net/url"
	"regexp"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/callback-router/callback-router/api/v1alpha1"
)

// SecretGetter returns the Secret namespace/name, or false when it does not exist.
type SecretGetter func(namespace, name string) (*corev1.Secret, bool)

// ServiceResolver returns the base URL ("http://host:port") of a Service backend, or an
// error (which becomes ResolvedRefs=False, reason ServiceNotFound, with err.Error() as the
// message).
type ServiceResolver func(namespace string, svc v1alpha1.ServiceReference) (string, error)

// Input is what Compile works on.
type Input struct {
	Routes  []v1alpha1.CallbackRoute
	Secret  SecretGetter
	Service ServiceResolver // nil: "http://<name>.<namespace>.svc:<port>" (standalone default)
}

// RouteStatus is the outcome of compiling one route, for its status conditions.
type RouteStatus struct {
	Namespace, Name string
	// Accepted is false when the route is Invalid or in Conflict.
	Accepted        bool
	AcceptedReason  string // v1alpha1.ReasonAccepted | ReasonConflict | ReasonInvalid
	AcceptedMessage string
	ResolvedRefs    bool
	RefsReason      string // v1alpha1.ReasonResolved | ReasonSecretNotFound | ReasonServiceNotFound
	RefsMessage     string
	// Routed is true when the route is in the snapshot.
	Routed bool
	// URL is what to configure on the IM side, e.g. "/tencent?SdkAppid=1400000001" or
	// "/openim/prod".
	URL string
}

// Snapshot is the compiled table in serializable form (JSON). It contains secrets (tokens,
// Basic auth), so it is stored only in Secrets. It is deterministic: the same input gives
// byte-identical JSON, so the controller can skip no-op writes.
type Snapshot struct {
	Routes []CompiledRoute `json:"routes"`
}

// BasicAuth is the OpenIM Basic auth credential a route requires.
type BasicAuth struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

// CompiledRoute is one routable CallbackRoute with its references resolved.
type CompiledRoute struct {
	Namespace string            `json:"namespace"`
	Name      string            `json:"name"`
	Provider  v1alpha1.Provider `json:"provider"`
	AppID     string            `json:"appID"`
	// Commands are sorted and de-duplicated; a trailing "*" marks a prefix.
	Commands []string      `json:"commands"`
	Mode     v1alpha1.Mode `json:"mode"`
	// URL is the backend base URL plus backend.path; the callback's query is appended.
	URL           string                 `json:"url"`
	Timeout       time.Duration          `json:"timeout"`
	FailurePolicy v1alpha1.FailurePolicy `json:"failurePolicy"`
	// Tokens are the valid Tencent IM callback tokens, the current one first.
	Tokens        []string      `json:"tokens,omitempty"`
	MaxRequestAge time.Duration `json:"maxRequestAge,omitempty"`
	BasicAuth     *BasicAuth    `json:"basicAuth,omitempty"`
	// SourceCIDRs are canonical prefixes ("203.0.113.0/24").
	SourceCIDRs    []string      `json:"sourceCIDRs,omitempty"`
	MaxAttempts    int           `json:"maxAttempts,omitempty"`
	InitialBackoff time.Duration `json:"initialBackoff,omitempty"`
	MaxBackoff     time.Duration `json:"maxBackoff,omitempty"`
	// CreatedAt is the route's creationTimestamp, used to break Sync ties (oldest wins).
	CreatedAt time.Time `json:"createdAt"`
	// ForwardSignature sends Tencent IM's Sign and RequestTime on to the backend in the
	// query. False (the default) leaves them out: the receiver has verified them, and a
	// backend does not need the platform's credentials.
	ForwardSignature bool `json:"forwardSignature,omitempty"`
}

// Key is the route's "namespace/name", as sent in X-Callback-Route.
func (c *CompiledRoute) Key() string { return c.Namespace + "/" + c.Name }

// Limits of values that never went through the API server's schema (standalone mode).
const (
	// MaxCommands is the most commands one route may list.
	MaxCommands = 256
	// MaxCommandLength is the longest command or prefix accepted.
	MaxCommandLength = 128
	// MaxSourceCIDRs is the most sourceCIDRs one route may list.
	MaxSourceCIDRs = 64
	// MaxTencentSyncTimeout is the exclusive upper bound of a TencentIM Sync route's timeout.
	MaxTencentSyncTimeout = 2 * time.Second
	// MaxOpenIMSyncTimeout is the inclusive upper bound of an OpenIM Sync route's timeout:
	// OpenIM never waits longer, whatever its webhooks.yml timeout says. The receiver cuts
	// every OpenIM Sync wait at its --openim-timeout anyway (receiver.OpenIMTimeoutMargin
	// before it).
	MaxOpenIMSyncTimeout = 15 * time.Second
	// MaxBackendTimeout is the inclusive upper bound of any backend timeout.
	MaxBackendTimeout = 60 * time.Second
)

var (
	appIDPattern   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
	digitsPattern  = regexp.MustCompile(`^[0-9]+$`)
	commandPattern = regexp.MustCompile(`^[A-Za-z0-9_.-]*\*?$`)
	pathPattern    = regexp.MustCompile(`^/[^?#]*$`)
)

// StatusURL is where the IM platform must send callbacks for a provider and app, relative
// to the receiver's base URL.
func StatusURL(p v1alpha1.Provider, appID string) string {
	if p == v1alpha1.ProviderOpenIM {
		return "/openim/" + appID
	}
	return "/tencent?SdkAppid=" + url.QueryEscape(appID)
}

// DefaultServiceResolver resolves a Service to its cluster DNS name.
func DefaultServiceResolver(namespace string, svc v1alpha1.ServiceReference) (string, error) {
	return fmt.Sprintf("http://%s.%s.svc:%d", svc.Name, namespace, svc.Port), nil
}

// candidate is a route that passed validation and reference resolution.
type candidate struct {
	idx   int
	route CompiledRoute
}

// Compile validates every route again (objects from a file never saw the API server's CEL
// rules), resolves references, resolves Sync conflicts (same provider+appID+command
// pattern: oldest creationTimestamp wins, then namespace/name; losers are excluded with
// reason Conflict naming the winner "ns/name"), and returns the serializable snapshot plus
// one status per input route, in input order. One bad route never affects the others.
//
// Only valid routes whose references resolve compete for a Sync command, so a route whose
// Secret is missing never keeps a working route out of the table.
func Compile(in Input) (*Snapshot, []RouteStatus) {
	resolve := in.Service
	if resolve == nil {
		resolve = DefaultServiceResolver
	}
	statuses := make([]RouteStatus, len(in.Routes))
	var cands []candidate
	for i := range in.Routes {
		r := &in.Routes[i]
		st := &statuses[i]
		st.Namespace, st.Name = r.Namespace, r.Name
		st.URL = StatusURL(r.Spec.Provider, r.Spec.AppID)
		if err := validate(r); err != nil {
			st.AcceptedReason, st.AcceptedMessage = v1alpha1.ReasonInvalid, err.Error()
			st.RefsReason, st.RefsMessage = v1alpha1.ReasonInvalid, "not resolved: the route is invalid"
			continue
		}
		st.Accepted, st.AcceptedReason, st.AcceptedMessage = true, v1alpha1.ReasonAccepted, "The route is valid"
		cr, reason, err := resolveRefs(r, in.Secret, resolve)
		if err != nil {
			st.RefsReason, st.RefsMessage = reason, err.Error()
			continue
		}
		st.ResolvedRefs, st.RefsReason, st.RefsMessage = true, v1alpha1.ReasonResolved, "All references resolved"
		cands = append(cands, candidate{idx: i, route: cr})
	}

	// Oldest first, then namespace/name: the first Sync route to claim a pattern keeps it.
	sort.SliceStable(cands, func(a, b int) bool { return olderThan(&cands[a].route, &cands[b].route) })
	owner := map[string]string{} // provider \x00 appID \x00 pattern -> winner ns/name
	snap := &Snapshot{Routes: []CompiledRoute{}}
	for _, c := range cands {
		cr := c.route
		st := &statuses[c.idx]
		if cr.Mode == v1alpha1.ModeSync {
			var lost []string
			var winner string
			for _, cmd := range cr.Commands {
				if w, ok := owner[string(cr.Provider)+"\x00"+cr.AppID+"\x00"+cmd]; ok {
					lost, winner = append(lost, cmd), w
				}
			}
			if len(lost) > 0 {
				st.Accepted, st.AcceptedReason = false, v1alpha1.ReasonConflict
				st.AcceptedMessage = fmt.Sprintf("Sync command %s of %s app %s is already answered by the older route %s",
					strings.Join(lost, ", "), cr.Provider, cr.AppID, winner)
				continue
			}
			for _, cmd := range cr.Commands {
				owner[string(cr.Provider)+"\x00"+cr.AppID+"\x00"+cmd] = cr.Key()
			}
		}
		st.Routed = true
		snap.Routes = append(snap.Routes, cr)
	}
	sort.Slice(snap.Routes, func(a, b int) bool { return snap.Routes[a].Key() < snap.Routes[b].Key() })
	return snap, statuses
}

func olderThan(a, b *CompiledRoute) bool {
	if !a.CreatedAt.Equal(b.CreatedAt) {
		return a.CreatedAt.Before(b.CreatedAt)
	}
	return a.Key() < b.Key()
}

// validate repeats the CRD's schema and CEL rules. The checks run in this order, so the
// first rule a route breaks is the one reported.
func validate(r *v1alpha1.CallbackRoute) error {
	s := &r.Spec
	if r.Name == "" {
		return fmt.Errorf("metadata.name is required")
	}
	if err := validateMatch(s); err != nil {
		return err
	}
	mode := s.EffectiveMode()
	if err := validateMode(s, mode); err != nil {
		return err
	}
	if err := validateBackend(s, mode); err != nil {
		return err
	}
	if err := validateVerify(s); err != nil {
		return err
	}
	return validateRetry(s.Retry)
}

// validateMatch checks the provider, appID and commands.
func validateMatch(s *v1alpha1.CallbackRouteSpec) error {
	switch s.Provider {
	case v1alpha1.ProviderTencentIM, v1alpha1.ProviderOpenIM:
	default:
		return fmt.Errorf("spec.provider must be TencentIM or OpenIM, not %q", s.Provider)
	}
	if len(s.AppID) == 0 || len(s.AppID) > 64 || !appIDPattern.MatchString(s.AppID) {
		return fmt.Errorf("spec.appID %q must be 1-64 characters of letters, digits, '.', '_' and '-'", s.AppID)
	}
	if s.Provider == v1alpha1.ProviderTencentIM && !digitsPattern.MatchString(s.AppID) {
		return fmt.Errorf("appID of a TencentIM route is the SDKAppID and must be all digits")
	}
	if len(s.Commands) == 0 || len(s.Commands) > MaxCommands {
		return fmt.Errorf("spec.commands must list 1 to %d commands", MaxCommands)
	}
	for _, c := range s.Commands {
		if c == "" || len(c) > MaxCommandLength || !commandPattern.MatchString(c) {
			return fmt.Errorf("spec.commands: %q must be a command name or a prefix ending in '*'", c)
		}
	}
	return nil
}

// validateMode checks the mode, the failure policy and what each mode allows.
func validateMode(s *v1alpha1.CallbackRouteSpec, mode v1alpha1.Mode) error {
	if mode != v1alpha1.ModeAsync && mode != v1alpha1.ModeSync {
		return fmt.Errorf("spec.mode must be Async or Sync, not %q", s.Mode)
	}
	fp := s.EffectiveFailurePolicy()
	if fp != v1alpha1.FailurePolicyAllow && fp != v1alpha1.FailurePolicyReject {
		return fmt.Errorf("spec.failurePolicy must be Allow or Reject, not %q", s.FailurePolicy)
	}
	if s.Retry != nil && mode != v1alpha1.ModeAsync {
		return fmt.Errorf("retry applies only to Async routes; a Sync route answers once, inside the platform's deadline")
	}
	if mode != v1alpha1.ModeSync && fp != v1alpha1.FailurePolicyAllow {
		return fmt.Errorf("failurePolicy Reject applies only to Sync routes; Async routes are acknowledged before delivery")
	}
	return nil
}

// validateBackend checks the backend: its service or URL, path and timeout.
func validateBackend(s *v1alpha1.CallbackRouteSpec, mode v1alpha1.Mode) error {
	b := &s.Backend
	if (b.Service != nil) == (b.URL != "") {
		return fmt.Errorf("exactly one of backend.service or backend.url must be set")
	}
	if b.URL != "" {
		u, err := url.Parse(b.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" || len(b.URL) > 2048 {
			return fmt.Errorf("backend.url must be an absolute http or https URL, not %q", b.URL)
		}
	}
	if b.Service != nil {
		if b.Service.Name == "" || b.Service.Port < 1 || b.Service.Port > 65535 {
			return fmt.Errorf("backend.service needs a name and a port in 1-65535")
		}
	}
	if b.Path != "" && (len(b.Path) > 1024 || !pathPattern.MatchString(b.Path)) {
		return fmt.Errorf("backend.path %q must start with '/' and hold no '?' or '#'", b.Path)
	}
	if b.Timeout != nil {
		d := b.Timeout.Duration
		if d <= 0 || d > MaxBackendTimeout {
			return fmt.Errorf("backend.timeout must be positive and at most %s", MaxBackendTimeout)
		}
		if mode == v1alpha1.ModeSync && s.Provider == v1alpha1.ProviderTencentIM && d >= MaxTencentSyncTimeout {
			return fmt.Errorf("backend.timeout of a Sync TencentIM route must be under 2s: Tencent IM waits 2s for the answer")
		}
		if mode == v1alpha1.ModeSync && s.Provider == v1alpha1.ProviderOpenIM && d > MaxOpenIMSyncTimeout {
			return fmt.Errorf("backend.timeout of a Sync OpenIM route must be at most 15s, the most OpenIM ever waits; " +
				"OpenIM waits only its webhooks.yml timeout (default 5s), and the receiver answers 500ms before its --openim-timeout whatever this says")
		}
	}
	return nil
}

// validateVerify checks verify, if set, against the provider.
func validateVerify(s *v1alpha1.CallbackRouteSpec) error {
	v := s.Verify
	if v == nil {
		return nil
	}
	if v.TokenSecretRef != nil && s.Provider != v1alpha1.ProviderTencentIM {
		return fmt.Errorf("verify.tokenSecretRef applies only to TencentIM routes; OpenIM sends no signature")
	}
	if v.BasicAuthSecretRef != nil && s.Provider != v1alpha1.ProviderOpenIM {
		return fmt.Errorf("verify.basicAuthSecretRef applies only to OpenIM routes; Tencent IM sends no Basic auth")
	}
	if v.TokenSecretRef != nil && v.TokenSecretRef.Name == "" {
		return fmt.Errorf("verify.tokenSecretRef.name is required")
	}
	if v.BasicAuthSecretRef != nil && v.BasicAuthSecretRef.Name == "" {
		return fmt.Errorf("verify.basicAuthSecretRef.name is required")
	}
	if a := v.MaxRequestAge; a != nil && (a.Duration < time.Second || a.Duration > 24*time.Hour) {
		return fmt.Errorf("verify.maxRequestAge must be between 1s and 24h")
	}
	if len(v.SourceCIDRs) > MaxSourceCIDRs {
		return fmt.Errorf("verify.sourceCIDRs may list at most %d networks", MaxSourceCIDRs)
	}
	for _, c := range v.SourceCIDRs {
		if _, err := netip.ParsePrefix(c); err != nil {
			return fmt.Errorf("each of verify.sourceCIDRs must be a CIDR such as 203.0.113.0/24, not %q", c)
		}
	}
	return nil
}

// validateRetry checks retry, if set.
func validateRetry(r *v1alpha1.RetryPolicy) error {
	if r == nil {
		return nil
	}
	if r.MaxAttempts != 0 && (r.MaxAttempts < 1 || r.MaxAttempts > 100) {
		return fmt.Errorf("retry.maxAttempts must be between 1 and 100")
	}
	if d := r.InitialBackoff; d != nil && (d.Duration < 10*time.Millisecond || d.Duration > time.Hour) {
		return fmt.Errorf("retry.initialBackoff must be between 10ms and 1h")
	}
	if d := r.MaxBackoff; d != nil && (d.Duration < 10*time.Millisecond || d.Duration > 24*time.Hour) {
		return fmt.Errorf("retry.maxBackoff must be between 10ms and 24h")
	}
	if r.InitialBackoff != nil && r.MaxBackoff != nil && r.InitialBackoff.Duration > r.MaxBackoff.Duration {
		return fmt.Errorf("retry.initialBackoff must not exceed retry.maxBackoff")
	}
	return nil
}

// resolveRefs builds the compiled route; on failure it returns the RefsReason and why.
func resolveRefs(r *v1alpha1.CallbackRoute, getSecret SecretGetter, resolve ServiceResolver) (CompiledRoute, string, error) {
	s := &r.Spec
	cr := CompiledRoute{
		Namespace:     r.Namespace,
		Name:          r.Name,
		Provider:      s.Provider,
		AppID:         s.AppID,
		Commands:      dedupSorted(s.Commands),
		Mode:          s.EffectiveMode(),
		Timeout:       s.EffectiveTimeout(),
		FailurePolicy: s.EffectiveFailurePolicy(),
		CreatedAt:     r.CreationTimestamp.UTC(),
	}
	base := s.Backend.URL
	if svc := s.Backend.Service; svc != nil {
		u, err := resolve(r.Namespace, *svc)
		if err != nil {
			return cr, v1alpha1.ReasonServiceNotFound, err
		}
		base = u
	}
	cr.URL = base
	if s.Backend.Path != "" {
		cr.URL = strings.TrimSuffix(base, "/") + s.Backend.Path
	}
	if cr.Mode == v1alpha1.ModeAsync {
		cr.MaxAttempts, cr.InitialBackoff, cr.MaxBackoff = s.EffectiveRetry()
	}
	if v := s.Verify; v != nil {
		for _, c := range v.SourceCIDRs {
			p, _ := netip.ParsePrefix(c) // validated
			cr.SourceCIDRs = append(cr.SourceCIDRs, p.Masked().String())
		}
		sort.Strings(cr.SourceCIDRs)
		if ref := v.TokenSecretRef; ref != nil {
			sec, ok := lookupSecret(getSecret, r.Namespace, ref.Name)
			if !ok {
				return cr, v1alpha1.ReasonSecretNotFound, fmt.Errorf("secret %s/%s not found", r.Namespace, ref.Name)
			}
			tok, ok := secretValue(sec, ref.EffectiveTokenKey())
			if !ok || tok == "" {
				return cr, v1alpha1.ReasonSecretNotFound, fmt.Errorf("secret %s/%s has no key %q", r.Namespace, ref.Name, ref.EffectiveTokenKey())
			}
			cr.Tokens = []string{tok}
			if ref.PreviousKey != "" {
				if prev, ok := secretValue(sec, ref.PreviousKey); ok && prev != "" && prev != tok {
					cr.Tokens = append(cr.Tokens, prev)
				}
			}
			cr.MaxRequestAge = s.EffectiveMaxRequestAge()
		}
		if ref := v.BasicAuthSecretRef; ref != nil {
			sec, ok := lookupSecret(getSecret, r.Namespace, ref.Name)
			if !ok {
				return cr, v1alpha1.ReasonSecretNotFound, fmt.Errorf("secret %s/%s not found", r.Namespace, ref.Name)
			}
			user, uok := secretValue(sec, "username")
			pass, pok := secretValue(sec, "password")
			if !uok || !pok || user == "" {
				return cr, v1alpha1.ReasonSecretNotFound, fmt.Errorf("secret %s/%s needs the keys username and password", r.Namespace, ref.Name)
			}
			cr.BasicAuth = &BasicAuth{Username: user, Password: pass}
		}
	}
	return cr, "", nil
}

func lookupSecret(get SecretGetter, ns, name string) (*corev1.Secret, bool) {
	if get == nil {
		return nil, false
	}
	s, ok := get(ns, name)
	return s, ok && s != nil
}

// secretValue reads a key from data, or from stringData for Secrets that never went
// through an API server (standalone files).
func secretValue(s *corev1.Secret, key string) (string, bool) {
	if v, ok := s.Data[key]; ok {
		return string(v), true
	}
	v, ok := s.StringData[key]
	return v, ok
}

func dedupSorted(in []string) []string {
	out := append([]string(nil), in...)
	sort.Strings(out)
	n := 0
	for i, c := range out {
		if i == 0 || c != out[n-1] {
			out[n] = c
			n++
		}
	}
	return out[:n]
}
