// Package apicases is the one list of invalid specs that both enforcers of the API's rules
// are tested against: the API server (the CRDs' OpenAPI schema and CEL rules, in
// api/v1alpha1's envtest test) and the compiler (webhook/routing, which must repeat the
// rules for objects that never went through an API server: standalone files). A rule
// only one of them can enforce says so, and why, in its case.
package apicases

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/callback-router/callback-router/api/v1alpha1"
)

// Namespace is where the cases' objects live.
const Namespace = "validation"

// Case is one valid object with one rule broken.
type Case struct {
	// Name describes the broken rule.
	Name string
	// Object is a *CallbackApp, *CallbackRoute or *CallbackReceiver (unnamed: callers name it).
	Object client.Object
	// Message must appear in the API server's error (when Server) and, unless
	// CompilerMessage is set, in the compiler's Invalid message (when Compiler).
	Message string
	// CompilerMessage is the compiler's wording where the API server's schema words it
	// its own way (pattern, enum and item-count errors).
	CompilerMessage string
	// Server is true when the API server rejects the object.
	Server bool
	// Compiler is true when the compiler reports it Invalid.
	Compiler bool
}

// WantCompilerMessage is the substring expected in the compiler's message.
func (c *Case) WantCompilerMessage() string {
	if c.CompilerMessage != "" {
		return c.CompilerMessage
	}
	return c.Message
}

// ValidApp is a TencentIM app on the receiver "default" of Namespace, with a token.
func ValidApp() *v1alpha1.CallbackApp {
	return &v1alpha1.CallbackApp{
		ObjectMeta: metav1.ObjectMeta{Name: "chat-prod", Namespace: Namespace},
		Spec: v1alpha1.CallbackAppSpec{
			Provider:    v1alpha1.ProviderTencentIM,
			AppID:       "1400000001",
			ReceiverRef: v1alpha1.ObjectReference{Name: "default"},
			Verify: &v1alpha1.AppVerification{
				TokenSecretRef: &v1alpha1.TokenSecretReference{Name: "tencent-im"},
			},
		},
	}
}

// ValidRoute is an Async route of ValidApp to a Service of its own namespace.
func ValidRoute() *v1alpha1.CallbackRoute {
	return &v1alpha1.CallbackRoute{
		ObjectMeta: metav1.ObjectMeta{Name: "archive", Namespace: Namespace},
		Spec: v1alpha1.CallbackRouteSpec{
			AppRef:   v1alpha1.ObjectReference{Name: "chat-prod"},
			Commands: []string{"C2C.CallbackAfterSendMsg"},
			Backend:  v1alpha1.Backend{Service: &v1alpha1.ServiceReference{Name: "archiver", Port: 8080}},
		},
	}
}

// ValidReceiver is a receiver with every default.
func ValidReceiver() *v1alpha1.CallbackReceiver {
	return &v1alpha1.CallbackReceiver{ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: Namespace}}
}

func dur(d time.Duration) *metav1.Duration { return &metav1.Duration{Duration: d} }

func i32(v int32) *int32 { return &v }

func app(f func(a *v1alpha1.CallbackApp)) *v1alpha1.CallbackApp {
	a := ValidApp()
	f(a)
	return a
}

func route(f func(r *v1alpha1.CallbackRoute)) *v1alpha1.CallbackRoute {
	r := ValidRoute()
	f(r)
	return r
}

func receiver(f func(r *v1alpha1.CallbackReceiver)) *v1alpha1.CallbackReceiver {
	r := ValidReceiver()
	f(r)
	return r
}

// Invalid returns the invalid specs, freshly built on each call.
func Invalid() []Case {
	both := func(name string, obj client.Object, msg string) Case {
		return Case{Name: name, Object: obj, Message: msg, Server: true, Compiler: true}
	}
	worded := func(name string, obj client.Object, serverMsg, compilerMsg string) Case {
		return Case{Name: name, Object: obj, Message: serverMsg, CompilerMessage: compilerMsg, Server: true, Compiler: true}
	}
	return []Case{
		// CallbackApp
		both("app: tencent appID not digits", app(func(a *v1alpha1.CallbackApp) { a.Spec.AppID = "my-app" }),
			"appID of a TencentIM app is the SDKAppID and must be all digits"),
		worded("app: unknown provider", app(func(a *v1alpha1.CallbackApp) { a.Spec.Provider = "Slack" }),
			`supported values: "TencentIM", "OpenIM"`, "spec.provider must be TencentIM or OpenIM"),
		worded("app: appID with a space", app(func(a *v1alpha1.CallbackApp) {
			a.Spec.Provider, a.Spec.AppID, a.Spec.Verify = v1alpha1.ProviderOpenIM, "my app", nil
		}), "spec.appID in body should match", "spec.appID \"my app\" must be 1-64 characters"),
		worded("app: no receiverRef name", app(func(a *v1alpha1.CallbackApp) { a.Spec.ReceiverRef.Name = "" }),
			"spec.receiverRef.name in body should be at least 1 chars long", "spec.receiverRef.name is required"),
		both("app: token verification on openim", app(func(a *v1alpha1.CallbackApp) {
			a.Spec.Provider, a.Spec.AppID = v1alpha1.ProviderOpenIM, "prod"
		}), "verify.tokenSecretRef applies only to TencentIM apps"),
		both("app: basic auth on tencent", app(func(a *v1alpha1.CallbackApp) {
			a.Spec.Verify.BasicAuthSecretRef = &v1alpha1.LocalObjectReference{Name: "auth"}
		}), "verify.basicAuthSecretRef applies only to OpenIM apps"),
		both("app: forwardSignature on openim", app(func(a *v1alpha1.CallbackApp) {
			a.Spec.Provider, a.Spec.AppID = v1alpha1.ProviderOpenIM, "prod"
			a.Spec.Verify = &v1alpha1.AppVerification{ForwardSignature: true}
		}), "verify.forwardSignature applies only to TencentIM apps"),
		both("app: bad source cidr", app(func(a *v1alpha1.CallbackApp) {
			a.Spec.Verify.SourceCIDRs = []string{"203.0.113.7"}
		}), "each of verify.sourceCIDRs must be a CIDR"),
		both("app: replay window too long", app(func(a *v1alpha1.CallbackApp) {
			a.Spec.Verify.MaxRequestAge = dur(48 * time.Hour)
		}), "verify.maxRequestAge must be between 1s and 24h"),
		both("app: selector missing for from Selector", app(func(a *v1alpha1.CallbackApp) {
			a.Spec.AllowedRoutes = []v1alpha1.RouteGrant{{Namespaces: v1alpha1.Namespaces{From: v1alpha1.NamespacesFromSelector}}}
		}), "namespaces.selector must be set when, and only when, namespaces.from is Selector"),
		both("app: selector set for from All", app(func(a *v1alpha1.CallbackApp) {
			a.Spec.AllowedRoutes = []v1alpha1.RouteGrant{{Namespaces: v1alpha1.Namespaces{
				From: v1alpha1.NamespacesFromAll, Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"a": "b"}}}}}
		}), "namespaces.selector must be set when, and only when, namespaces.from is Selector"),
		worded("app: unknown mode in a grant", app(func(a *v1alpha1.CallbackApp) {
			a.Spec.AllowedRoutes = []v1alpha1.RouteGrant{{Modes: []v1alpha1.Mode{"Later"}}}
		}), `supported values: "Async", "Sync"`, "allowedRoutes[0].modes: \"Later\" is not Async or Sync"),
		worded("app: star inside a granted command", app(func(a *v1alpha1.CallbackApp) {
			a.Spec.AllowedRoutes = []v1alpha1.RouteGrant{{Commands: []string{"Group.*.Send"}}}
		}), "spec.allowedRoutes[0].commands[0] in body should match", "allowedRoutes[0].commands: \"Group.*.Send\" must be a command name, a prefix ending in '*', @before or @after"),
		both("app: duplicate granted commands", app(func(a *v1alpha1.CallbackApp) {
			a.Spec.AllowedRoutes = []v1alpha1.RouteGrant{{Commands: []string{"Push.*", "Push.*"}}}
		}), "Duplicate value"),
		{
			// The CRD schema of metav1.LabelSelector does not constrain operators (Gateway API's
			// neither); the compiler parses the selector and reports the app Invalid.
			Name: "app: selector with an unknown operator",
			Object: app(func(a *v1alpha1.CallbackApp) {
				a.Spec.AllowedRoutes = []v1alpha1.RouteGrant{{Namespaces: v1alpha1.Namespaces{
					From: v1alpha1.NamespacesFromSelector,
					Selector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
						{Key: "team", Operator: "Maybe", Values: []string{"a"}}}},
				}}}
			}),
			Message:  "allowedRoutes[0].namespaces.selector",
			Compiler: true,
		},
		both("app: ftp backend URL", app(func(a *v1alpha1.CallbackApp) {
			a.Spec.BackendURLs = []string{"ftp://files.example.com/"}
		}), "each of backendURLs must be an absolute http or https URL without query or fragment"),
		both("app: backend URL with a query", app(func(a *v1alpha1.CallbackApp) {
			a.Spec.BackendURLs = []string{"https://hooks.example.com/?team=a"}
		}), "each of backendURLs must be an absolute http or https URL without query or fragment"),

		// CallbackRoute
		both("route: both service and url", route(func(r *v1alpha1.CallbackRoute) {
			r.Spec.Backend.URL = "https://hooks.example.com/im"
		}), "exactly one of backend.service or backend.url must be set"),
		both("route: neither service nor url", route(func(r *v1alpha1.CallbackRoute) { r.Spec.Backend.Service = nil }),
			"exactly one of backend.service or backend.url must be set"),
		worded("route: no appRef name", route(func(r *v1alpha1.CallbackRoute) { r.Spec.AppRef.Name = "" }),
			"spec.appRef.name in body should be at least 1 chars long", "spec.appRef.name is required"),
		worded("route: appRef namespace not a name", route(func(r *v1alpha1.CallbackRoute) { r.Spec.AppRef.Namespace = "Im_Platform" }),
			"spec.appRef.namespace in body should match", "spec.appRef.namespace \"Im_Platform\" is not a namespace name"),
		worded("route: no commands", route(func(r *v1alpha1.CallbackRoute) { r.Spec.Commands = []string{} }),
			"spec.commands in body should have at least 1 items", "spec.commands must list 1 to 256 commands"),
		worded("route: star inside a command", route(func(r *v1alpha1.CallbackRoute) { r.Spec.Commands = []string{"Group.*.Send"} }),
			`spec.commands[0] in body should match '^(@before|@after|[A-Za-z0-9_.-]*\*?)$'`, "spec.commands: \"Group.*.Send\" must be a command name, a prefix ending in '*', @before or @after"),
		worded("route: unknown selector", route(func(r *v1alpha1.CallbackRoute) { r.Spec.Commands = []string{"@aftr"} }),
			`spec.commands[0] in body should match '^(@before|@after|[A-Za-z0-9_.-]*\*?)$'`, "spec.commands: \"@aftr\" must be a command name, a prefix ending in '*', @before or @after"),
		both("route: duplicate commands", route(func(r *v1alpha1.CallbackRoute) { r.Spec.Commands = []string{"Group.*", "Group.*"} }),
			"Duplicate value"),
		worded("route: unknown mode", route(func(r *v1alpha1.CallbackRoute) { r.Spec.Mode = "Later" }),
			`supported values: "Async", "Sync"`, "spec.mode must be Async or Sync"),
		both("route: retry on a sync route", route(func(r *v1alpha1.CallbackRoute) {
			r.Spec.Mode, r.Spec.Retry = v1alpha1.ModeSync, &v1alpha1.RetryPolicy{MaxAttempts: 3}
		}), "retry applies only to Async routes"),
		both("route: reject policy on an async route", route(func(r *v1alpha1.CallbackRoute) {
			r.Spec.FailurePolicy = v1alpha1.FailurePolicyReject
		}), "failurePolicy Reject applies only to Sync routes"),
		both("route: sync timeout above 15s", route(func(r *v1alpha1.CallbackRoute) {
			r.Spec.Mode, r.Spec.Backend.Timeout = v1alpha1.ModeSync, dur(20*time.Second)
		}), "OpenIM waits only its webhooks.yml timeout (default 5s)"),
		{
			// The provider is the app's, which a route's CEL rules cannot see: the compiler
			// checks the Tencent budget when the route attaches.
			Name: "route: tencent sync timeout above the 2s budget",
			Object: route(func(r *v1alpha1.CallbackRoute) {
				r.Spec.Mode, r.Spec.Backend.Timeout = v1alpha1.ModeSync, dur(2500*time.Millisecond)
			}),
			Message:  "Tencent IM waits 2s for the answer",
			Compiler: true,
		},
		both("route: zero timeout", route(func(r *v1alpha1.CallbackRoute) { r.Spec.Backend.Timeout = dur(0) }),
			"backend.timeout must be positive and at most 60s"),
		both("route: non-http url", route(func(r *v1alpha1.CallbackRoute) {
			r.Spec.Backend = v1alpha1.Backend{URL: "ftp://files.example.com"}
		}), "backend.url must be an absolute http or https URL"),
		worded("route: relative path", route(func(r *v1alpha1.CallbackRoute) { r.Spec.Backend.Path = "im/callbacks" }),
			"spec.backend.path in body should match", "backend.path \"im/callbacks\" must start with '/'"),
		both("route: initial backoff above max", route(func(r *v1alpha1.CallbackRoute) {
			r.Spec.Retry = &v1alpha1.RetryPolicy{InitialBackoff: dur(10 * time.Minute), MaxBackoff: dur(time.Minute)}
		}), "retry.initialBackoff must not exceed retry.maxBackoff"),
		worded("route: too many attempts", route(func(r *v1alpha1.CallbackRoute) {
			r.Spec.Retry = &v1alpha1.RetryPolicy{MaxAttempts: 1000}
		}), "spec.retry.maxAttempts in body should be less than or equal to 100", "retry.maxAttempts must be between 1 and 100"),

		both("route: ordering on a sync route", route(func(r *v1alpha1.CallbackRoute) {
			r.Spec.Mode, r.Spec.Ordering = v1alpha1.ModeSync, &v1alpha1.Ordering{Key: v1alpha1.OrderingKeyConversation}
		}), "ordering applies only to Async routes"),
		worded("route: unknown ordering key", route(func(r *v1alpha1.CallbackRoute) {
			r.Spec.Ordering = &v1alpha1.Ordering{Key: "Sender"}
		}), `supported values: "Conversation"`, "ordering.key must be Conversation"),
		both("route: delivery limits on a sync route", route(func(r *v1alpha1.CallbackRoute) {
			r.Spec.Mode, r.Spec.Delivery = v1alpha1.ModeSync, &v1alpha1.DeliveryLimits{MaxConcurrency: i32(4)}
		}), "delivery applies only to Async routes"),
		both("route: empty delivery limits", route(func(r *v1alpha1.CallbackRoute) {
			r.Spec.Delivery = &v1alpha1.DeliveryLimits{}
		}), "delivery needs maxConcurrency, maxPerSecond or both"),
		worded("route: zero maxConcurrency", route(func(r *v1alpha1.CallbackRoute) {
			r.Spec.Delivery = &v1alpha1.DeliveryLimits{MaxConcurrency: i32(0)}
		}), "spec.delivery.maxConcurrency in body should be greater than or equal to 1", "delivery.maxConcurrency must be between 1 and 1024"),
		worded("route: maxPerSecond too high", route(func(r *v1alpha1.CallbackRoute) {
			r.Spec.Delivery = &v1alpha1.DeliveryLimits{MaxPerSecond: i32(1000000)}
		}), "spec.delivery.maxPerSecond in body should be less than or equal to 100000", "delivery.maxPerSecond must be between 1 and 100000"),

		// CallbackReceiver: only in a cluster (standalone mode ignores receivers; the
		// receiver's settings are its flags there), so only the API server enforces these.
		{Name: "receiver: both spools", Server: true, Object: receiver(func(r *v1alpha1.CallbackReceiver) {
			r.Spec.Spool = &v1alpha1.Spool{Embedded: &v1alpha1.EmbeddedSpool{}, JetStream: &v1alpha1.JetStreamSpool{URL: "nats://127.0.0.1:4222"}}
		}), Message: "exactly one of spool.embedded or spool.jetStream must be set"},
		{Name: "receiver: an empty spool", Server: true, Object: receiver(func(r *v1alpha1.CallbackReceiver) {
			r.Spec.Spool = &v1alpha1.Spool{}
		}), Message: "exactly one of spool.embedded or spool.jetStream must be set"},
		{Name: "receiver: jetStream URL not nats", Server: true, Object: receiver(func(r *v1alpha1.CallbackReceiver) {
			r.Spec.Spool = &v1alpha1.Spool{JetStream: &v1alpha1.JetStreamSpool{URL: "http://127.0.0.1:4222"}}
		}), Message: "spec.spool.jetStream.url in body should match"},
		{Name: "receiver: bad trusted proxy", Server: true, Object: receiver(func(r *v1alpha1.CallbackReceiver) {
			r.Spec.TrustedProxies = []string{"10.0.0.1"}
		}), Message: "each of trustedProxies must be a CIDR"},
		{Name: "receiver: selector missing for from Selector", Server: true, Object: receiver(func(r *v1alpha1.CallbackReceiver) {
			r.Spec.AllowedApps = &v1alpha1.AllowedApps{Namespaces: v1alpha1.Namespaces{From: v1alpha1.NamespacesFromSelector}}
		}), Message: "namespaces.selector must be set when, and only when, namespaces.from is Selector"},
		{Name: "receiver: negative replicas", Server: true, Object: receiver(func(r *v1alpha1.CallbackReceiver) {
			r.Spec.Replicas = new(int32)
			*r.Spec.Replicas = -1
		}), Message: "spec.replicas in body should be greater than or equal to 0"},
		{Name: "receiver: ExternalName service", Server: true, Object: receiver(func(r *v1alpha1.CallbackReceiver) {
			r.Spec.Service = &v1alpha1.ReceiverService{Type: "ExternalName"}
		}), Message: `supported values: "ClusterIP", "NodePort", "LoadBalancer"`},
	}
}
