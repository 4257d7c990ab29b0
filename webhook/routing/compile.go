// Package routing turns CallbackApps, CallbackRoutes and their Secrets into immutable
// routing tables, one per CallbackReceiver. The controller and the standalone receiver
// share it: Compile validates apps and routes, binds apps to receivers, attaches routes to
// apps by the apps' allowedRoutes, resolves references and conflicts, and returns one
// serializable Snapshot per receiver (stored in Secrets by the controller) plus every
// object's status; NewTable builds the lookup structures the receiver swaps in atomically.
package routing

import (
	"fmt"
	"net/netip"
	"net/url"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/callback-router/callback-router/api/v1alpha1"
)

// SecretGetter returns the Secret namespace/name, or false when it does not exist. The
// compiler asks only for Secrets of an app's own namespace.
type SecretGetter func(namespace, name string) (*corev1.Secret, bool)

// ServiceResolver returns the base URL ("http://host:port") of a Service backend, or an
// error (which becomes ResolvedRefs=False, reason BackendNotFound, with err.Error() as
// the message).
type ServiceResolver func(namespace string, svc v1alpha1.ServiceReference) (string, error)

// NamespaceLabels returns the labels of a namespace, and false when it is unknown (an
// unknown namespace matches no selector).
type NamespaceLabels func(name string) (map[string]string, bool)

// StandaloneReceiver is the key of the one table of standalone mode.
var StandaloneReceiver = types.NamespacedName{}

// Input is what Compile works on.
type Input struct {
	// Receivers are the cluster's CallbackReceivers: each app binds to the one its
	// receiverRef names, if the receiver's allowedApps admit the app's namespace.
	// Ignored when Standalone.
	Receivers []v1alpha1.CallbackReceiver
	// Standalone compiles for the one receiver of a routes file: receiverRef and
	// allowedApps are ignored, and backend.url needs no backendURLs (design.md).
	Standalone bool
	Apps       []v1alpha1.CallbackApp
	Routes     []v1alpha1.CallbackRoute
	Secret     SecretGetter
	Service    ServiceResolver // nil: "http://<name>.<namespace>.svc:<port>" (standalone default)
	// Namespace gives namespace labels for Selector grants; nil: no namespace has labels.
	Namespace NamespaceLabels
}

// Cond is one condition of an outcome.
type Cond struct {
	True    bool
	Reason  string
	Message string
}

// AppStatus is the outcome of compiling one app.
type AppStatus struct {
	Namespace, Name string
	// Accepted: valid, bound to its receiver, and not in conflict with an older app.
	Accepted Cond
	// ResolvedRefs: its verification Secrets and keys exist.
	ResolvedRefs Cond
	// Ready: in its receiver's table.
	Ready Cond
	// URL is what to configure on the IM side, after the receiver's address.
	URL string
	// AttachedRoutes counts the app's routes in the table.
	AttachedRoutes int32
	// Receiver is the receiver the app binds to (zero when it binds to none).
	Receiver types.NamespacedName
}

// RouteStatus is the outcome of compiling one route.
type RouteStatus struct {
	Namespace, Name string
	// Accepted: valid, admitted by its app, and not in conflict.
	Accepted Cond
	// ResolvedRefs: its backend resolves and is permitted.
	ResolvedRefs Cond
	// Ready: in its receiver's table.
	Ready Cond
	// URL is the app's callback path.
	URL string
	// UnknownCommands is the UnknownCommands condition, valid when CommandsChecked: once the
	// route's app (and so its provider) is known.
	UnknownCommands Cond
	// CommandsChecked says UnknownCommands is set.
	CommandsChecked bool
	// Warnings are said once, as Warning events, when they appear; their messages are also
	// in the Accepted message (SyncOnAfterCallback).
	Warnings []Cond
	// App is the CallbackApp the route refers to.
	App types.NamespacedName
	// Receiver is the receiver whose table holds the route (zero when none).
	Receiver types.NamespacedName
	// Ordering is the OrderingGuaranteed condition of a route with spec.ordering (nil
	// for a route without).
	Ordering *Cond
}

// Routed reports whether the route is in a table.
func (s *RouteStatus) Routed() bool { return s.Ready.True }

// Output is what Compile returns.
type Output struct {
	// Tables has one snapshot per receiver (every receiver of the input, possibly empty;
	// in standalone mode only StandaloneReceiver).
	Tables map[types.NamespacedName]*Snapshot
	// Apps and Routes are the statuses, in input order.
	Apps   []AppStatus
	Routes []RouteStatus
}

// Snapshot is one receiver's compiled table in serializable form (JSON). It contains
// secrets (tokens, Basic auth), so it is stored only in Secrets. It is deterministic: the
// same input gives byte-identical JSON, so the controller can skip no-op writes.
type Snapshot struct {
	// Apps are the apps in the table, in namespace/name order (no secrets).
	Apps   []CompiledApp   `json:"apps,omitempty"`
	Routes []CompiledRoute `json:"routes"`
	// Replays are the accepted CallbackReplays of the table's routes that are not yet
	// complete, in UID order; each pod runs each once (spool.ReplayOnce). The compiler
	// leaves it empty: the table controller adds them.
	Replays []Replay `json:"replays,omitempty"`
}

// Replay is a CallbackReplay as published to the receiver pods.
type Replay struct {
	// UID is the CallbackReplay's UID: a pod runs a UID once.
	UID string `json:"uid"`
	// Namespace and Name name the CallbackReplay (for logs).
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// Route is the route's key, "namespace/name" (CompiledRoute.Key).
	Route string `json:"route"`
	// Source is spool.SourceDeadLetters or spool.SourceDelivered.
	Source string `json:"source"`
	// IDs select by X-Callback-Id; else From (inclusive) and To (exclusive) by receive time.
	IDs  []string  `json:"ids,omitempty"`
	From time.Time `json:"from,omitzero"`
	To   time.Time `json:"to,omitzero"`
}

// CompiledApp names an app in a table.
type CompiledApp struct {
	Namespace string            `json:"namespace"`
	Name      string            `json:"name"`
	Provider  v1alpha1.Provider `json:"provider"`
	AppID     string            `json:"appID"`
}

// BasicAuth is the OpenIM Basic auth credential an app requires.
type BasicAuth struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

// CompiledRoute is one routable CallbackRoute with its references resolved and its app's
// verification copied in: every route of an app carries the same checks, so a callback
// that fails them reaches none of the app's routes.
type CompiledRoute struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// App is the CallbackApp's "namespace/name".
	App      string            `json:"app"`
	Provider v1alpha1.Provider `json:"provider"`
	AppID    string            `json:"appID"`
	// Commands are sorted and de-duplicated; a trailing "*" marks a prefix.
	Commands []string      `json:"commands"`
	Mode     v1alpha1.Mode `json:"mode"`
	// URL is the backend base URL plus backend.path; the callback's query is appended.
	URL           string                 `json:"url"`
	Timeout       time.Duration          `json:"timeout"`
	FailurePolicy v1alpha1.FailurePolicy `json:"failurePolicy"`
	// Tokens are the app's valid Tencent IM callback tokens, the current one first.
	Tokens        []string      `json:"tokens,omitempty"`
	MaxRequestAge time.Duration `json:"maxRequestAge,omitempty"`
	BasicAuth     *BasicAuth    `json:"basicAuth,omitempty"`
	// SourceCIDRs are canonical prefixes ("203.0.113.0/24").
	SourceCIDRs []string `json:"sourceCIDRs,omitempty"`
	// ForwardSignature is the app's verify.forwardSignature: it sends Tencent IM's Sign and
	// RequestTime on to the backend in the query. False (the default) leaves them out: the
	// receiver has verified them, and a backend does not need the platform's credentials.
	ForwardSignature bool          `json:"forwardSignature,omitempty"`
	MaxAttempts      int           `json:"maxAttempts,omitempty"`
	InitialBackoff   time.Duration `json:"initialBackoff,omitempty"`
	MaxBackoff       time.Duration `json:"maxBackoff,omitempty"`
	// Ordered is spec.ordering.key Conversation: copies with the same conversation key are
	// delivered one at a time, in arrival order.
	Ordered bool `json:"ordered,omitempty"`
	// MaxConcurrency and MaxPerSecond are spec.delivery (0: unset).
	MaxConcurrency int `json:"maxConcurrency,omitempty"`
	MaxPerSecond   int `json:"maxPerSecond,omitempty"`
	// CreatedAt is the route's creationTimestamp, used to break Sync ties (oldest wins).
	CreatedAt time.Time `json:"createdAt"`
	// Filter is the route's CEL filter (spec.filter), type-checked by Compile; NewTable
	// compiles it into the route's program.
	Filter string `json:"filter,omitempty"`
}

// Key is the route's "namespace/name", as sent in X-Callback-Route.
func (c *CompiledRoute) Key() string { return c.Namespace + "/" + c.Name }

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

// app is an app that passed validation, with what its routes need.
type app struct {
	idx      int
	key      types.NamespacedName
	spec     *v1alpha1.CallbackAppSpec
	created  time.Time
	receiver types.NamespacedName
	bound    bool // bound to a receiver (Accepted so far)
	live     bool // Accepted and ResolvedRefs: its routes may enter the table
	grants   []grant
	verify   verification
	// url, accepted and routed are the texts every route of the app shares, built once.
	url, accepted, routed string
}

// verification is an app's compiled checks, copied into each of its routes.
type verification struct {
	tokens           []string
	maxRequestAge    time.Duration
	basicAuth        *BasicAuth
	sourceCIDRs      []string
	forwardSignature bool
}

// candidate is a route that is admitted, resolved, and whose app is live.
type candidate struct {
	idx   int
	app   *app
	route CompiledRoute
}

// Compile compiles every app and route; one bad object never affects the others. In
// order:
//
//   - apps: validated (objects from a file never saw the API server's CEL rules), bound
//     to their receiver (ReceiverNotFound, NotAllowedByReceiver), their Secrets read in
//     their own namespace (SecretNotFound); two apps claiming one provider+appID on one
//     receiver: the older wins, the younger is Conflict.
//   - routes: validated, their app found (AppNotFound), admitted by the first of the
//     app's allowedRoutes whose namespaces match (NotAllowedByApp: namespace, mode or
//     commands), their backend resolved (BackendNotFound) and permitted
//     (RefNotPermitted: a backend.url outside the app's backendURLs, in a cluster);
//   - Sync conflicts among the admitted routes of a live app: for the same command
//     pattern the oldest route wins, then namespace/name; losers are Conflict, naming
//     the winner. (An exact command beats a prefix at lookup: see Table.)
func Compile(in Input) *Output {
	out := &Output{
		Tables: map[types.NamespacedName]*Snapshot{},
		Apps:   make([]AppStatus, len(in.Apps)),
		Routes: make([]RouteStatus, len(in.Routes)),
	}
	c := &compiler{in: in, out: out, apps: map[types.NamespacedName]*app{}}
	c.receivers()
	c.compileApps()
	cands := c.compileRoutes()
	c.resolveSyncConflicts(cands)
	c.orderingGuarantees()
	for _, s := range out.Tables {
		sort.Slice(s.Routes, func(a, b int) bool { return s.Routes[a].Key() < s.Routes[b].Key() })
		sort.Slice(s.Apps, func(a, b int) bool {
			return s.Apps[a].Namespace+"/"+s.Apps[a].Name < s.Apps[b].Namespace+"/"+s.Apps[b].Name
		})
	}
	return out
}

type compiler struct {
	in  Input
	out *Output
	// recvAllows admits app namespaces, per receiver; nil for a receiver whose
	// allowedApps cannot be parsed (it admits no app).
	recvAllows map[types.NamespacedName]func(ns string) bool
	recvErr    map[types.NamespacedName]error
	apps       map[types.NamespacedName]*app
	// invalidApps are apps that exist but failed validation: they admit no routes.
	invalidApps map[types.NamespacedName]string
}

func (c *compiler) receivers() {
	c.recvAllows = map[types.NamespacedName]func(string) bool{}
	c.recvErr = map[types.NamespacedName]error{}
	if c.in.Standalone {
		c.out.Tables[StandaloneReceiver] = &Snapshot{Routes: []CompiledRoute{}}
		return
	}
	for i := range c.in.Receivers {
		r := &c.in.Receivers[i]
		key := types.NamespacedName{Namespace: r.Namespace, Name: r.Name}
		c.out.Tables[key] = &Snapshot{Routes: []CompiledRoute{}}
		m, err := namespaceMatcher(r.Spec.EffectiveAllowedApps(), r.Namespace, c.in.Namespace)
		if err != nil {
			c.recvErr[key] = err
			continue
		}
		c.recvAllows[key] = m
	}
}

func notRouted(msg string) Cond { return Cond{Reason: v1alpha1.ReasonNotRouted, Message: msg} }

func (c *compiler) compileApps() {
	c.invalidApps = map[types.NamespacedName]string{}
	var bound []*app
	for i := range c.in.Apps {
		a := &c.in.Apps[i]
		st := &c.out.Apps[i]
		st.Namespace, st.Name = a.Namespace, a.Name
		st.URL = StatusURL(a.Spec.Provider, a.Spec.AppID)
		key := types.NamespacedName{Namespace: a.Namespace, Name: a.Name}
		grants, err := validateApp(a, c.in.Namespace)
		if err != nil {
			st.Accepted = Cond{Reason: v1alpha1.ReasonInvalid, Message: err.Error()}
			st.ResolvedRefs = Cond{Reason: v1alpha1.ReasonInvalid, Message: "Not resolved: the app is invalid"}
			st.Ready = notRouted("Not routed: the app is invalid")
			c.invalidApps[key] = err.Error()
			continue
		}
		expandGrants(a.Spec.Provider, grants)
		ap := &app{idx: i, key: key, spec: &a.Spec, created: a.CreationTimestamp.UTC(), grants: grants, url: st.URL,
			accepted: "The route is valid and admitted by CallbackApp " + key.String()}
		c.apps[key] = ap
		if !c.bind(a, ap, st) {
			st.Ready = notRouted("Not routed: " + st.Accepted.Message)
		} else {
			bound = append(bound, ap)
		}
		v, reason, err := c.appVerification(a)
		if err != nil {
			st.ResolvedRefs = Cond{Reason: reason, Message: err.Error()}
		} else {
			st.ResolvedRefs = Cond{True: true, Reason: v1alpha1.ReasonResolvedRefs, Message: "All references resolved"}
			ap.verify = v
		}
	}

	// Oldest first, then namespace/name: the first app to claim provider+appID on a
	// receiver keeps it, whatever the state of its Secrets (a younger app must not take
	// over while an older one's Secret is briefly missing).
	sort.SliceStable(bound, func(x, y int) bool {
		return olderApp(bound[x], bound[y])
	})
	owner := map[string]*app{}
	for _, ap := range bound {
		st := &c.out.Apps[ap.idx]
		claim := ap.receiver.String() + "\x00" + string(ap.spec.Provider) + "\x00" + ap.spec.AppID
		if w, ok := owner[claim]; ok {
			st.Accepted = Cond{Reason: v1alpha1.ReasonConflict, Message: fmt.Sprintf(
				"%s app %s on receiver %s is already claimed by the older CallbackApp %s",
				ap.spec.Provider, ap.spec.AppID, ap.receiver, w.key)}
			st.Ready = notRouted("Not routed: " + st.Accepted.Message)
			continue
		}
		owner[claim] = ap
		st.Accepted = Cond{True: true, Reason: v1alpha1.ReasonAccepted, Message: "The app is valid and bound to receiver " + c.receiverName(ap.receiver)}
		if !st.ResolvedRefs.True {
			st.Ready = notRouted("Not routed: " + st.ResolvedRefs.Message)
			continue
		}
		ap.live = true
		ap.routed = "The route is in the routing table of receiver " + c.receiverName(ap.receiver)
		st.Ready = Cond{True: true, Reason: v1alpha1.ReasonRouted, Message: "The app is in the routing table of receiver " + c.receiverName(ap.receiver)}
		t := c.out.Tables[ap.receiver]
		t.Apps = append(t.Apps, CompiledApp{Namespace: ap.key.Namespace, Name: ap.key.Name, Provider: ap.spec.Provider, AppID: ap.spec.AppID})
	}
}

func (c *compiler) receiverName(k types.NamespacedName) string {
	if c.in.Standalone {
		return "(standalone)"
	}
	return k.String()
}

func olderApp(a, b *app) bool {
	if !a.created.Equal(b.created) {
		return a.created.Before(b.created)
	}
	return a.key.String() < b.key.String()
}

// bind binds an app to its receiver, or sets why it cannot.
func (c *compiler) bind(a *v1alpha1.CallbackApp, ap *app, st *AppStatus) bool {
	if c.in.Standalone {
		ap.receiver, ap.bound = StandaloneReceiver, true
		st.Receiver = StandaloneReceiver
		return true
	}
	key := types.NamespacedName{Namespace: a.Spec.ReceiverRef.EffectiveNamespace(a.Namespace), Name: a.Spec.ReceiverRef.Name}
	if _, ok := c.out.Tables[key]; !ok {
		st.Accepted = Cond{Reason: v1alpha1.ReasonReceiverNotFound, Message: fmt.Sprintf("CallbackReceiver %s not found", key)}
		return false
	}
	if err := c.recvErr[key]; err != nil {
		st.Accepted = Cond{Reason: v1alpha1.ReasonNotAllowedByReceiver, Message: fmt.Sprintf(
			"CallbackReceiver %s admits no app: its allowedApps are invalid: %v", key, err)}
		return false
	}
	if !c.recvAllows[key](a.Namespace) {
		st.Accepted = Cond{Reason: v1alpha1.ReasonNotAllowedByReceiver, Message: fmt.Sprintf(
			"namespace %s is not allowed by CallbackReceiver %s (allowedApps)", a.Namespace, key)}
		return false
	}
	ap.receiver, ap.bound = key, true
	st.Receiver = key
	return true
}

// appVerification reads an app's Secrets, in the app's own namespace only.
func (c *compiler) appVerification(a *v1alpha1.CallbackApp) (verification, string, error) {
	var v verification
	vs := a.Spec.Verify
	if vs == nil {
		return v, "", nil
	}
	v.forwardSignature = vs.ForwardSignature
	for _, s := range vs.SourceCIDRs {
		p, _ := netip.ParsePrefix(s) // validated
		v.sourceCIDRs = append(v.sourceCIDRs, p.Masked().String())
	}
	sort.Strings(v.sourceCIDRs)
	if ref := vs.TokenSecretRef; ref != nil {
		sec, ok := lookupSecret(c.in.Secret, a.Namespace, ref.Name)
		if !ok {
			return v, v1alpha1.ReasonSecretNotFound, fmt.Errorf("secret %s/%s not found", a.Namespace, ref.Name)
		}
		tok, ok := secretValue(sec, ref.EffectiveTokenKey())
		if !ok || tok == "" {
			return v, v1alpha1.ReasonSecretNotFound, fmt.Errorf("secret %s/%s has no key %q", a.Namespace, ref.Name, ref.EffectiveTokenKey())
		}
		v.tokens = []string{tok}
		if ref.PreviousKey != "" {
			if prev, ok := secretValue(sec, ref.PreviousKey); ok && prev != "" && prev != tok {
				v.tokens = append(v.tokens, prev)
			}
		}
		v.maxRequestAge = a.Spec.EffectiveMaxRequestAge()
	}
	if ref := vs.BasicAuthSecretRef; ref != nil {
		sec, ok := lookupSecret(c.in.Secret, a.Namespace, ref.Name)
		if !ok {
			return v, v1alpha1.ReasonSecretNotFound, fmt.Errorf("secret %s/%s not found", a.Namespace, ref.Name)
		}
		user, uok := secretValue(sec, "username")
		pass, pok := secretValue(sec, "password")
		if !uok || !pok || user == "" {
			return v, v1alpha1.ReasonSecretNotFound, fmt.Errorf("secret %s/%s needs the keys username and password", a.Namespace, ref.Name)
		}
		v.basicAuth = &BasicAuth{Username: user, Password: pass}
	}
	return v, "", nil
}

func (c *compiler) compileRoutes() []candidate {
	resolve := c.in.Service
	if resolve == nil {
		resolve = DefaultServiceResolver
	}
	var cands []candidate
	for i := range c.in.Routes {
		r := &c.in.Routes[i]
		st := &c.out.Routes[i]
		st.Namespace, st.Name = r.Namespace, r.Name
		appKey := types.NamespacedName{Namespace: r.Spec.AppRef.EffectiveNamespace(r.Namespace), Name: r.Spec.AppRef.Name}
		st.App = appKey
		reject := func(reason, msg string) {
			st.Accepted = Cond{Reason: reason, Message: msg}
			st.ResolvedRefs = Cond{Reason: v1alpha1.ReasonInvalid, Message: "Not resolved: the route is not accepted"}
			st.Ready = notRouted("Not routed: " + msg)
		}
		if err := validateRoute(r); err != nil {
			reject(v1alpha1.ReasonInvalid, err.Error())
			continue
		}
		if r.Spec.Filter != "" {
			if _, err := cachedFilter(r.Spec.Filter); err != nil {
				reject(v1alpha1.ReasonInvalid, "spec.filter: "+err.Error())
				continue
			}
		}
		ap := c.apps[appKey]
		if ap == nil {
			if msg, ok := c.invalidApps[appKey]; ok {
				reject(v1alpha1.ReasonNotAllowedByApp, fmt.Sprintf("CallbackApp %s is invalid and admits no routes: %s", appKey, msg))
			} else {
				reject(v1alpha1.ReasonAppNotFound, fmt.Sprintf("CallbackApp %s not found", appKey))
			}
			continue
		}
		st.URL = ap.url
		if err := validateRouteForProvider(r, ap.spec.Provider); err != nil {
			reject(v1alpha1.ReasonInvalid, err.Error())
			continue
		}
		unknown, warnings := checkCommands(ap.spec.Provider, r)
		st.UnknownCommands, st.CommandsChecked, st.Warnings = unknown, true, warnings
		r = withExpandedCommands(r, ap.spec.Provider)
		if msg := admit(ap, r); msg != "" {
			reject(v1alpha1.ReasonNotAllowedByApp, msg)
			continue
		}
		st.Accepted = Cond{True: true, Reason: v1alpha1.ReasonAccepted, Message: ap.accepted}
		for _, w := range warnings {
			st.Accepted.Message += "; warning: " + w.Message
		}
		cr, reason, err := c.resolveBackend(r, ap, resolve)
		if err != nil {
			st.ResolvedRefs = Cond{Reason: reason, Message: err.Error()}
			st.Ready = notRouted("Not routed: " + err.Error())
			continue
		}
		st.ResolvedRefs = Cond{True: true, Reason: v1alpha1.ReasonResolvedRefs, Message: "All references resolved"}
		if !ap.live {
			as := &c.out.Apps[ap.idx]
			why := as.Accepted.Message
			if as.Accepted.True {
				why = as.ResolvedRefs.Message
			}
			st.Ready = Cond{Reason: v1alpha1.ReasonAppNotReady, Message: fmt.Sprintf("CallbackApp %s is not in a routing table: %s", appKey, why)}
			continue
		}
		cands = append(cands, candidate{idx: i, app: ap, route: cr})
	}
	return cands
}

// admit applies the app's allowedRoutes to a route: the first grant whose namespaces
// match the route's namespace decides. It returns why the route is not admitted, or "".
func admit(ap *app, r *v1alpha1.CallbackRoute) string {
	for gi := range ap.grants {
		g := &ap.grants[gi]
		if !g.namespaces(r.Namespace) {
			continue
		}
		mode := r.Spec.EffectiveMode()
		if len(g.modes) > 0 && !containsMode(g.modes, mode) {
			return fmt.Sprintf("mode %s is not allowed for namespace %s by CallbackApp %s (allowedRoutes[%d] allows %s)",
				mode, r.Namespace, ap.key, gi, joinModes(g.modes))
		}
		if len(g.commands) > 0 {
			var denied []string
			for _, cmd := range r.Spec.Commands {
				if !commandCovered(g.commands, cmd) {
					denied = append(denied, cmd)
				}
			}
			if len(denied) > 0 {
				return fmt.Sprintf("commands %s are not allowed for namespace %s by CallbackApp %s (allowedRoutes[%d] allows %s)",
					strings.Join(denied, ", "), r.Namespace, ap.key, gi, strings.Join(g.commands, ", "))
			}
		}
		return ""
	}
	return fmt.Sprintf("namespace %s is not allowed by CallbackApp %s (no entry of allowedRoutes matches it)", r.Namespace, ap.key)
}

func containsMode(ms []v1alpha1.Mode, m v1alpha1.Mode) bool {
	for _, x := range ms {
		if x == m {
			return true
		}
	}
	return false
}

func joinModes(ms []v1alpha1.Mode) string {
	s := make([]string, len(ms))
	for i, m := range ms {
		s[i] = string(m)
	}
	return strings.Join(s, ", ")
}

// commandCovered reports whether a route's command (exact, or a prefix ending in "*")
// lies within one of the granted patterns: an exact name equals a granted name or starts
// with a granted prefix; a route's prefix must start with a granted prefix.
func commandCovered(granted []string, cmd string) bool {
	routePrefix, isPrefix := strings.CutSuffix(cmd, "*")
	for _, g := range granted {
		if gp, ok := strings.CutSuffix(g, "*"); ok {
			if strings.HasPrefix(routePrefix, gp) {
				return true
			}
			continue
		}
		if !isPrefix && cmd == g {
			return true
		}
	}
	return false
}

// resolveBackend builds the compiled route; on failure it returns the ResolvedRefs reason
// and why.
func (c *compiler) resolveBackend(r *v1alpha1.CallbackRoute, ap *app, resolve ServiceResolver) (CompiledRoute, string, error) {
	s := &r.Spec
	cr := CompiledRoute{
		Namespace:     r.Namespace,
		Name:          r.Name,
		App:           ap.key.String(),
		Provider:      ap.spec.Provider,
		AppID:         ap.spec.AppID,
		Commands:      dedupSorted(s.Commands),
		Mode:          s.EffectiveMode(),
		Timeout:       s.EffectiveTimeout(),
		FailurePolicy: s.EffectiveFailurePolicy(),
		CreatedAt:     r.CreationTimestamp.UTC(),
		Filter:        s.Filter,
	}
	base := s.Backend.URL
	if svc := s.Backend.Service; svc != nil {
		u, err := resolve(r.Namespace, *svc)
		if err != nil {
			return cr, v1alpha1.ReasonBackendNotFound, err
		}
		base = u
	}
	cr.URL = base
	if s.Backend.Path != "" {
		cr.URL = strings.TrimSuffix(base, "/") + s.Backend.Path
	}
	if s.Backend.URL != "" && !c.in.Standalone {
		if err := permittedURL(ap.spec.BackendURLs, cr.URL); err != nil {
			return cr, v1alpha1.ReasonRefNotPermitted, fmt.Errorf("backend URL %s is not permitted by CallbackApp %s: %w", cr.URL, ap.key, err)
		}
	}
	if cr.Mode == v1alpha1.ModeAsync {
		cr.MaxAttempts, cr.InitialBackoff, cr.MaxBackoff = s.EffectiveRetry()
		cr.Ordered = s.Ordered()
		cr.MaxConcurrency, cr.MaxPerSecond = s.EffectiveDelivery()
	}
	v := &ap.verify
	cr.Tokens, cr.MaxRequestAge, cr.BasicAuth = v.tokens, v.maxRequestAge, v.basicAuth
	cr.SourceCIDRs, cr.ForwardSignature = v.sourceCIDRs, v.forwardSignature
	return cr, "", nil
}

// permittedURL checks a backend URL against an app's backendURLs: the same scheme and
// host[:port] as one of them, and a path equal to or below its path at a '/' boundary. A
// path with a ".." segment is never permitted (a server would resolve it out of the prefix).
func permittedURL(allowed []string, raw string) error {
	if len(allowed) == 0 {
		return fmt.Errorf("the app lists no backendURLs")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("parsing it: %w", err)
	}
	for _, seg := range strings.Split(u.Path, "/") {
		if seg == ".." {
			return fmt.Errorf("its path has a '..' segment")
		}
	}
	if u.User != nil {
		return fmt.Errorf("it carries user information")
	}
	for _, a := range allowed {
		p, err := url.Parse(a)
		if err != nil {
			continue
		}
		if !strings.EqualFold(p.Scheme, u.Scheme) || !strings.EqualFold(p.Host, u.Host) {
			continue
		}
		prefix := strings.TrimSuffix(p.Path, "/")
		if prefix == "" || u.Path == prefix || strings.HasPrefix(u.Path, prefix+"/") {
			return nil
		}
	}
	return fmt.Errorf("it is under none of %s", strings.Join(allowed, ", "))
}

// resolveSyncConflicts admits the candidates into their receivers' tables: for each Sync
// command pattern of a provider+appID on a receiver, the oldest route wins.
func (c *compiler) resolveSyncConflicts(cands []candidate) {
	sort.SliceStable(cands, func(a, b int) bool { return olderThan(&cands[a].route, &cands[b].route) })
	// Only one app per provider+appID is live on a receiver, so the app identifies the
	// (receiver, provider, appID) a pattern belongs to.
	type claim struct {
		app     *app
		pattern string
	}
	owner := map[claim]string{} // -> winner ns/name
	for _, cd := range cands {
		cr := cd.route
		st := &c.out.Routes[cd.idx]
		if cr.Mode == v1alpha1.ModeSync {
			var lost []string
			var winner string
			for _, cmd := range cr.Commands {
				if w, ok := owner[claim{cd.app, cmd}]; ok {
					lost, winner = append(lost, cmd), w
				}
			}
			if len(lost) > 0 {
				st.Accepted = Cond{Reason: v1alpha1.ReasonConflict, Message: fmt.Sprintf(
					"Sync command %s of %s app %s is already answered by the older route %s",
					strings.Join(lost, ", "), cr.Provider, cr.AppID, winner)}
				st.Ready = notRouted("Not routed: " + st.Accepted.Message)
				continue
			}
			for _, cmd := range cr.Commands {
				owner[claim{cd.app, cmd}] = cr.Key()
			}
		}
		st.Ready = Cond{True: true, Reason: v1alpha1.ReasonRouted, Message: cd.app.routed}
		st.Receiver = cd.app.receiver
		t := c.out.Tables[cd.app.receiver]
		t.Routes = append(t.Routes, cr)
		c.out.Apps[cd.app.idx].AttachedRoutes++
	}
}

func olderThan(a, b *CompiledRoute) bool {
	if !a.CreatedAt.Equal(b.CreatedAt) {
		return a.CreatedAt.Before(b.CreatedAt)
	}
	return a.Key() < b.Key()
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

// orderingGuarantees sets the OrderingGuaranteed condition of every route with
// spec.ordering: whether its receiver can keep the promise. JetStream orders each key
// across every receiver pod; an embedded spool orders within one pod, so only a receiver
// of one replica keeps it (the IM platform spreads one conversation's callbacks over
// every pod behind the Service). Standalone mode is one process, so it keeps it.
func (c *compiler) orderingGuarantees() {
	recv := map[types.NamespacedName]*v1alpha1.CallbackReceiver{}
	for i := range c.in.Receivers {
		r := &c.in.Receivers[i]
		recv[types.NamespacedName{Namespace: r.Namespace, Name: r.Name}] = r
	}
	for i := range c.in.Routes {
		if !c.in.Routes[i].Spec.Ordered() {
			continue
		}
		st := &c.out.Routes[i]
		var cond Cond
		switch r := recv[st.Receiver]; {
		case !st.Ready.True:
			cond = Cond{Reason: v1alpha1.ReasonNotRouted, Message: "The route is not in a routing table"}
		case c.in.Standalone:
			cond = Cond{True: true, Reason: v1alpha1.ReasonSingleReplica, Message: "A standalone receiver is one process: copies of one conversation are delivered in order"}
		case r == nil:
			cond = Cond{Reason: v1alpha1.ReasonNotRouted, Message: "The route's receiver is unknown"}
		case r.Spec.Spool != nil && r.Spec.Spool.JetStream != nil:
			cond = Cond{True: true, Reason: v1alpha1.ReasonJetStream, Message: fmt.Sprintf(
				"Receiver %s spools to JetStream, which delivers the copies of one conversation in order across all its pods", c.receiverName(st.Receiver))}
		case r.Spec.EffectiveReplicas() <= 1:
			cond = Cond{True: true, Reason: v1alpha1.ReasonSingleReplica, Message: fmt.Sprintf(
				"Receiver %s runs one pod with an embedded spool: copies of one conversation are delivered in order", c.receiverName(st.Receiver))}
		default:
			cond = Cond{Reason: v1alpha1.ReasonMultipleReplicas, Message: fmt.Sprintf(
				"Receiver %s runs %d pods with embedded spools: each pod orders only the callbacks it received, so one conversation's callbacks may be delivered out of order across pods; use spool.jetStream, or one replica",
				c.receiverName(st.Receiver), r.Spec.EffectiveReplicas())}
		}
		st.Ordering = &cond
	}
}
