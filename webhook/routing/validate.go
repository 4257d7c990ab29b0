package routing

import (
	"fmt"
	"net/netip"
	"net/url"
	"regexp"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/callback-router/callback-router/api/v1alpha1"
)

// Limits of values that never went through the API server's schema (standalone mode).
// They repeat the CRDs' limits; internal/apicases holds the one list of invalid specs that
// both the API server and the compiler are tested against.
const (
	// MaxCommands is the most commands one route (or one allowedRoutes entry) may list.
	MaxCommands = 256
	// MaxCommandLength is the longest command or prefix accepted.
	MaxCommandLength = 128
	// MaxSourceCIDRs is the most sourceCIDRs one app may list.
	MaxSourceCIDRs = 64
	// MaxAllowedRoutes is the most allowedRoutes entries one app may list.
	MaxAllowedRoutes = 32
	// MaxBackendURLs is the most backendURLs one app may list.
	MaxBackendURLs = 64
	// MaxTencentSyncTimeout is the exclusive upper bound of a TencentIM Sync route's timeout.
	MaxTencentSyncTimeout = 2 * time.Second
	// MaxSyncTimeout is the inclusive upper bound of any Sync route's timeout: OpenIM never
	// waits longer, whatever its webhooks.yml timeout says. The receiver cuts every OpenIM
	// Sync wait at its --openim-timeout anyway (receiver.OpenIMTimeoutMargin before it).
	MaxSyncTimeout = 15 * time.Second
	// MaxBackendTimeout is the inclusive upper bound of any backend timeout.
	MaxBackendTimeout = 60 * time.Second
	// MaxDeliveryConcurrency is the largest delivery.maxConcurrency of a route.
	MaxDeliveryConcurrency = 1024
	// MaxDeliveryPerSecond is the largest delivery.maxPerSecond of a route.
	MaxDeliveryPerSecond = 100000
)

// The URL schemes a backend may use.
const (
	schemeHTTP  = "http"
	schemeHTTPS = "https"
)

var (
	appIDPattern     = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
	digitsPattern    = regexp.MustCompile(`^[0-9]+$`)
	commandPattern   = regexp.MustCompile(`^(@before|@after|[A-Za-z0-9_.-]*\*?)$`)
	pathPattern      = regexp.MustCompile(`^/[^?#]*$`)
	namespacePattern = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
)

// grant is a compiled allowedRoutes entry.
type grant struct {
	namespaces func(ns string) bool
	modes      []v1alpha1.Mode
	commands   []string
}

// namespaceMatcher compiles a Namespaces selection relative to the namespace of the
// object that holds it.
func namespaceMatcher(n v1alpha1.Namespaces, owner string, nsLabels NamespaceLabels) (func(string) bool, error) {
	switch n.EffectiveFrom() {
	case v1alpha1.NamespacesFromSame:
		if n.Selector != nil {
			return nil, fmt.Errorf("namespaces.selector must be set when, and only when, namespaces.from is Selector")
		}
		return func(ns string) bool { return ns == owner }, nil
	case v1alpha1.NamespacesFromAll:
		if n.Selector != nil {
			return nil, fmt.Errorf("namespaces.selector must be set when, and only when, namespaces.from is Selector")
		}
		return func(string) bool { return true }, nil
	case v1alpha1.NamespacesFromSelector:
		if n.Selector == nil {
			return nil, fmt.Errorf("namespaces.selector must be set when, and only when, namespaces.from is Selector")
		}
		sel, err := metav1.LabelSelectorAsSelector(n.Selector)
		if err != nil {
			return nil, fmt.Errorf("namespaces.selector: %w", err)
		}
		return func(ns string) bool {
			if nsLabels == nil {
				return false
			}
			l, ok := nsLabels(ns)
			return ok && sel.Matches(labels.Set(l))
		}, nil
	default:
		return nil, fmt.Errorf("namespaces.from must be Same, All or Selector, not %q", n.From)
	}
}

// validateApp repeats the CallbackApp CRD's schema and CEL rules, and parses what the
// schema cannot check (label selectors). It returns the compiled allowedRoutes.
func validateApp(a *v1alpha1.CallbackApp, nsLabels NamespaceLabels) ([]grant, error) {
	s := &a.Spec
	if a.Name == "" {
		return nil, fmt.Errorf("metadata.name is required")
	}
	switch s.Provider {
	case v1alpha1.ProviderTencentIM, v1alpha1.ProviderOpenIM:
	default:
		return nil, fmt.Errorf("spec.provider must be TencentIM or OpenIM, not %q", s.Provider)
	}
	if len(s.AppID) == 0 || len(s.AppID) > 64 || !appIDPattern.MatchString(s.AppID) {
		return nil, fmt.Errorf("spec.appID %q must be 1-64 characters of letters, digits, '.', '_' and '-'", s.AppID)
	}
	if s.Provider == v1alpha1.ProviderTencentIM && !digitsPattern.MatchString(s.AppID) {
		return nil, fmt.Errorf("appID of a TencentIM app is the SDKAppID and must be all digits")
	}
	if err := validateRef("spec.receiverRef", s.ReceiverRef); err != nil {
		return nil, err
	}
	if err := validateVerify(s); err != nil {
		return nil, err
	}
	grants, err := validateGrants(s.AllowedRoutes, a.Namespace, nsLabels)
	if err != nil {
		return nil, err
	}
	if len(s.BackendURLs) > MaxBackendURLs {
		return nil, fmt.Errorf("spec.backendURLs may list at most %d URLs", MaxBackendURLs)
	}
	seen := map[string]bool{}
	for _, b := range s.BackendURLs {
		u, err := url.Parse(b)
		if err != nil || (u.Scheme != schemeHTTP && u.Scheme != schemeHTTPS) || u.Hostname() == "" || u.RawQuery != "" ||
			u.ForceQuery || u.Fragment != "" || len(b) > 2048 {
			return nil, fmt.Errorf("each of backendURLs must be an absolute http or https URL without query or fragment, not %q", b)
		}
		if seen[b] {
			return nil, fmt.Errorf("spec.backendURLs: Duplicate value: %q", b)
		}
		seen[b] = true
	}
	return grants, nil
}

func validateRef(field string, r v1alpha1.ObjectReference) error {
	if r.Name == "" {
		return fmt.Errorf("%s.name is required", field)
	}
	if len(r.Name) > 253 {
		return fmt.Errorf("%s.name is longer than 253 characters", field)
	}
	if r.Namespace != "" && (len(r.Namespace) > 63 || !namespacePattern.MatchString(r.Namespace)) {
		return fmt.Errorf("%s.namespace %q is not a namespace name", field, r.Namespace)
	}
	return nil
}

// validateVerify checks verify, if set, against the provider.
func validateVerify(s *v1alpha1.CallbackAppSpec) error {
	v := s.Verify
	if v == nil {
		return nil
	}
	if v.TokenSecretRef != nil && s.Provider != v1alpha1.ProviderTencentIM {
		return fmt.Errorf("verify.tokenSecretRef applies only to TencentIM apps; OpenIM sends no signature")
	}
	if v.BasicAuthSecretRef != nil && s.Provider != v1alpha1.ProviderOpenIM {
		return fmt.Errorf("verify.basicAuthSecretRef applies only to OpenIM apps; Tencent IM sends no Basic auth")
	}
	if v.ForwardSignature && s.Provider != v1alpha1.ProviderTencentIM {
		return fmt.Errorf("verify.forwardSignature applies only to TencentIM apps; OpenIM sends no signature")
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

// validateGrants checks and compiles allowedRoutes (the default when empty).
func validateGrants(in []v1alpha1.RouteGrant, owner string, nsLabels NamespaceLabels) ([]grant, error) {
	if len(in) > MaxAllowedRoutes {
		return nil, fmt.Errorf("spec.allowedRoutes may list at most %d entries", MaxAllowedRoutes)
	}
	if len(in) == 0 {
		in = (&v1alpha1.CallbackAppSpec{}).EffectiveAllowedRoutes()
	}
	out := make([]grant, 0, len(in))
	for i := range in {
		g := &in[i]
		m, err := namespaceMatcher(g.Namespaces, owner, nsLabels)
		if err != nil {
			return nil, fmt.Errorf("allowedRoutes[%d].%w", i, err)
		}
		for _, mode := range g.Modes {
			if mode != v1alpha1.ModeAsync && mode != v1alpha1.ModeSync {
				return nil, fmt.Errorf("allowedRoutes[%d].modes: %q is not Async or Sync", i, mode)
			}
		}
		if err := checkUnique(fmt.Sprintf("allowedRoutes[%d].modes", i), modeStrings(g.Modes)); err != nil {
			return nil, err
		}
		if err := validateCommands(fmt.Sprintf("allowedRoutes[%d].commands", i), g.Commands, 0); err != nil {
			return nil, err
		}
		out = append(out, grant{namespaces: m, modes: g.Modes, commands: g.Commands})
	}
	return out, nil
}

func modeStrings(ms []v1alpha1.Mode) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = string(m)
	}
	return out
}

// validateCommands checks a list of commands or prefixes: at least minItems, at most
// MaxCommands, each well-formed, none twice.
func validateCommands(field string, cmds []string, minItems int) error {
	if len(cmds) < minItems || len(cmds) > MaxCommands {
		return fmt.Errorf("%s must list %d to %d commands", field, minItems, MaxCommands)
	}
	for _, c := range cmds {
		if c == "" || len(c) > MaxCommandLength || !commandPattern.MatchString(c) {
			return fmt.Errorf("%s: %q must be a command name, a prefix ending in '*', @before or @after", field, c)
		}
	}
	return checkUnique(field, cmds)
}

// checkUnique rejects repeated items, as the API server does for a listType=set.
func checkUnique(field string, items []string) error {
	seen := make(map[string]bool, len(items))
	for i, s := range items {
		if seen[s] {
			return fmt.Errorf("%s[%d]: Duplicate value: %q", field, i, s)
		}
		seen[s] = true
	}
	return nil
}

// validateRoute repeats the CallbackRoute CRD's schema and CEL rules. The checks run in
// this order, so the first rule a route breaks is the one reported.
func validateRoute(r *v1alpha1.CallbackRoute) error {
	s := &r.Spec
	if r.Name == "" {
		return fmt.Errorf("metadata.name is required")
	}
	if err := validateRef("spec.appRef", s.AppRef); err != nil {
		return err
	}
	if err := validateCommands("spec.commands", s.Commands, 1); err != nil {
		return err
	}
	mode := s.EffectiveMode()
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
	if s.Ordering != nil && mode != v1alpha1.ModeAsync {
		return fmt.Errorf("ordering applies only to Async routes; a Sync route answers each callback as it comes")
	}
	if s.Delivery != nil && mode != v1alpha1.ModeAsync {
		return fmt.Errorf("delivery applies only to Async routes; a Sync route's rate is the IM platform's")
	}
	if err := validateBackend(s, mode); err != nil {
		return err
	}
	if err := validateRetry(s.Retry); err != nil {
		return err
	}
	return validateDelivery(s)
}

// validateDelivery checks ordering and delivery, if set.
func validateDelivery(s *v1alpha1.CallbackRouteSpec) error {
	if o := s.Ordering; o != nil && o.Key != v1alpha1.OrderingKeyConversation {
		return fmt.Errorf("ordering.key must be Conversation, not %q", o.Key)
	}
	d := s.Delivery
	if d == nil {
		return nil
	}
	if d.MaxConcurrency == nil && d.MaxPerSecond == nil {
		return fmt.Errorf("delivery needs maxConcurrency, maxPerSecond or both")
	}
	if c := d.MaxConcurrency; c != nil && (*c < 1 || *c > MaxDeliveryConcurrency) {
		return fmt.Errorf("delivery.maxConcurrency must be between 1 and %d", MaxDeliveryConcurrency)
	}
	if r := d.MaxPerSecond; r != nil && (*r < 1 || *r > MaxDeliveryPerSecond) {
		return fmt.Errorf("delivery.maxPerSecond must be between 1 and %d", MaxDeliveryPerSecond)
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
		if err != nil || (u.Scheme != schemeHTTP && u.Scheme != schemeHTTPS) || u.Hostname() == "" || len(b.URL) > 2048 {
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
			return fmt.Errorf("backend.timeout must be positive and at most 60s")
		}
		if mode == v1alpha1.ModeSync && d > MaxSyncTimeout {
			return fmt.Errorf("backend.timeout of a Sync route must be at most 15s, the most OpenIM ever waits; OpenIM waits only its webhooks.yml timeout (default 5s) and Tencent IM 2s, and the receiver answers within its --openim-timeout or --sync-budget whatever this says")
		}
	}
	return nil
}

// validateRouteForProvider checks what depends on the app's provider, which a route's CEL
// rules cannot see.
func validateRouteForProvider(r *v1alpha1.CallbackRoute, p v1alpha1.Provider) error {
	s := &r.Spec
	if p == v1alpha1.ProviderTencentIM && s.EffectiveMode() == v1alpha1.ModeSync &&
		s.Backend.Timeout != nil && s.Backend.Timeout.Duration >= MaxTencentSyncTimeout {
		return fmt.Errorf("backend.timeout of a Sync route of a TencentIM app must be under 2s: Tencent IM waits 2s for the answer")
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
