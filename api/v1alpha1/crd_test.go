package v1alpha1_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/callback-router/callback-router/api/v1alpha1"
	"github.com/callback-router/callback-router/internal/testenv"
)

// k8sClient talks to the real kube-apiserver started in TestMain.
var k8sClient client.Client

func TestMain(m *testing.M) {
	env, cfg, err := testenv.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	_ = v1alpha1.AddToScheme(scheme)
	_ = apiextensionsv1.AddToScheme(scheme)
	k8sClient, err = client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		_ = env.Stop()
		os.Exit(1)
	}
	fmt.Printf("envtest: CRD installed into a real kube-apiserver at %s\n", cfg.Host)
	code := m.Run()
	if err := env.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "stopping envtest:", err)
	}
	os.Exit(code)
}

func ensureNamespace(t *testing.T, name string) {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := k8sClient.Create(context.Background(), ns); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("creating namespace %s: %v", name, err)
	}
}

// TestSamplesAccepted creates every manifest in config/samples.
func TestSamplesAccepted(t *testing.T) {
	g := NewWithT(t)
	files, err := filepath.Glob(filepath.Join(testenv.RepoRoot(), "config", "samples", "callbacks_*.yaml"))
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(files).NotTo(BeEmpty())
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			g := NewWithT(t)
			data, err := os.ReadFile(f)
			g.Expect(err).NotTo(HaveOccurred())
			var route v1alpha1.CallbackRoute
			g.Expect(yaml.UnmarshalStrict(data, &route)).To(Succeed())
			ensureNamespace(t, route.Namespace)
			g.Expect(k8sClient.Create(context.Background(), &route)).To(Succeed())
			var got v1alpha1.CallbackRoute
			g.Expect(k8sClient.Get(context.Background(), client.ObjectKeyFromObject(&route), &got)).To(Succeed())
			g.Expect(got.Spec.Commands).To(Equal(route.Spec.Commands))
		})
	}
}

// validRoute is a minimal valid Async TencentIM route; each invalid case breaks one thing.
func validRoute(name string) *v1alpha1.CallbackRoute {
	return &v1alpha1.CallbackRoute{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "validation"},
		Spec: v1alpha1.CallbackRouteSpec{
			Provider: v1alpha1.ProviderTencentIM,
			AppID:    "1400000001",
			Commands: []string{"C2C.CallbackAfterSendMsg"},
			Backend:  v1alpha1.Backend{URL: "http://127.0.0.1:9000"},
		},
	}
}

func dur(s string) *metav1.Duration {
	d, err := time.ParseDuration(s)
	if err != nil {
		panic(err)
	}
	return &metav1.Duration{Duration: d}
}

func TestInvalidSpecsRejected(t *testing.T) {
	ensureNamespace(t, "validation")
	tests := map[string]struct {
		// mutate breaks one rule of an otherwise valid route.
		mutate func(r *v1alpha1.CallbackRoute)
		// wantMessage must appear in the API server's error.
		wantMessage string
	}{
		"both service and url": {
			mutate: func(r *v1alpha1.CallbackRoute) {
				r.Spec.Backend.Service = &v1alpha1.ServiceReference{Name: "archiver", Port: 8080}
			},
			wantMessage: "exactly one of backend.service or backend.url must be set",
		},
		"neither service nor url": {
			mutate:      func(r *v1alpha1.CallbackRoute) { r.Spec.Backend.URL = "" },
			wantMessage: "exactly one of backend.service or backend.url must be set",
		},
		"no commands": {
			mutate:      func(r *v1alpha1.CallbackRoute) { r.Spec.Commands = []string{} },
			wantMessage: "spec.commands in body should have at least 1 items",
		},
		"star inside a command": {
			mutate:      func(r *v1alpha1.CallbackRoute) { r.Spec.Commands = []string{"Group.*.Send"} },
			wantMessage: `spec.commands[0] in body should match '^[A-Za-z0-9_.-]*\*?$'`,
		},
		"duplicate commands": {
			mutate:      func(r *v1alpha1.CallbackRoute) { r.Spec.Commands = []string{"Group.*", "Group.*"} },
			wantMessage: "Duplicate value",
		},
		"tencent appID not digits": {
			mutate:      func(r *v1alpha1.CallbackRoute) { r.Spec.AppID = "my-app" },
			wantMessage: "appID of a TencentIM route is the SDKAppID and must be all digits",
		},
		"unknown provider": {
			mutate:      func(r *v1alpha1.CallbackRoute) { r.Spec.Provider = "Slack" },
			wantMessage: `supported values: "TencentIM", "OpenIM"`,
		},
		"retry on a sync route": {
			mutate: func(r *v1alpha1.CallbackRoute) {
				r.Spec.Mode = v1alpha1.ModeSync
				r.Spec.Retry = &v1alpha1.RetryPolicy{MaxAttempts: 3}
			},
			wantMessage: "retry applies only to Async routes",
		},
		"reject policy on an async route": {
			mutate:      func(r *v1alpha1.CallbackRoute) { r.Spec.FailurePolicy = v1alpha1.FailurePolicyReject },
			wantMessage: "failurePolicy Reject applies only to Sync routes",
		},
		"token verification on openim": {
			mutate: func(r *v1alpha1.CallbackRoute) {
				r.Spec.Provider, r.Spec.AppID = v1alpha1.ProviderOpenIM, "prod"
				r.Spec.Verify = &v1alpha1.Verification{TokenSecretRef: &v1alpha1.TokenSecretReference{Name: "tok"}}
			},
			wantMessage: "verify.tokenSecretRef applies only to TencentIM routes",
		},
		"basic auth on tencent": {
			mutate: func(r *v1alpha1.CallbackRoute) {
				r.Spec.Verify = &v1alpha1.Verification{BasicAuthSecretRef: &v1alpha1.LocalObjectReference{Name: "auth"}}
			},
			wantMessage: "verify.basicAuthSecretRef applies only to OpenIM routes",
		},
		"tencent sync timeout above the 2s budget": {
			mutate: func(r *v1alpha1.CallbackRoute) {
				r.Spec.Mode = v1alpha1.ModeSync
				r.Spec.Backend.Timeout = dur("2500ms")
			},
			wantMessage: "Tencent IM waits 2s for the answer",
		},
		"openim sync timeout above 15s": {
			mutate: func(r *v1alpha1.CallbackRoute) {
				r.Spec.Provider, r.Spec.AppID, r.Spec.Mode = v1alpha1.ProviderOpenIM, "prod", v1alpha1.ModeSync
				r.Spec.Backend.Timeout = dur("20s")
			},
			wantMessage: "OpenIM waits only its webhooks.yml timeout (default 5s)",
		},
		"zero timeout": {
			mutate:      func(r *v1alpha1.CallbackRoute) { r.Spec.Backend.Timeout = dur("0s") },
			wantMessage: "backend.timeout must be positive and at most 60s",
		},
		"non-http url": {
			mutate:      func(r *v1alpha1.CallbackRoute) { r.Spec.Backend.URL = "ftp://files.example.com" },
			wantMessage: "backend.url must be an absolute http or https URL",
		},
		"relative path": {
			mutate:      func(r *v1alpha1.CallbackRoute) { r.Spec.Backend.Path = "im/callbacks" },
			wantMessage: "spec.backend.path in body should match",
		},
		"bad source cidr": {
			mutate: func(r *v1alpha1.CallbackRoute) {
				r.Spec.Verify = &v1alpha1.Verification{SourceCIDRs: []string{"203.0.113.7"}}
			},
			wantMessage: "each of verify.sourceCIDRs must be a CIDR",
		},
		"replay window too long": {
			mutate: func(r *v1alpha1.CallbackRoute) {
				r.Spec.Verify = &v1alpha1.Verification{MaxRequestAge: dur("48h")}
			},
			wantMessage: "verify.maxRequestAge must be between 1s and 24h",
		},
		"initial backoff above max": {
			mutate: func(r *v1alpha1.CallbackRoute) {
				r.Spec.Retry = &v1alpha1.RetryPolicy{InitialBackoff: dur("10m"), MaxBackoff: dur("1m")}
			},
			wantMessage: "retry.initialBackoff must not exceed retry.maxBackoff",
		},
		"too many attempts": {
			mutate:      func(r *v1alpha1.CallbackRoute) { r.Spec.Retry = &v1alpha1.RetryPolicy{MaxAttempts: 1000} },
			wantMessage: "spec.retry.maxAttempts: Invalid value: 1000: spec.retry.maxAttempts in body should be less than or equal to 100",
		},
		"unknown mode": {
			mutate:      func(r *v1alpha1.CallbackRoute) { r.Spec.Mode = "Later" },
			wantMessage: `supported values: "Async", "Sync"`,
		},
	}
	i := 0
	for name, tc := range tests {
		i++
		t.Run(name, func(t *testing.T) {
			g := NewWithT(t)
			r := validRoute(fmt.Sprintf("invalid-%d", i))
			tc.mutate(r)
			err := k8sClient.Create(context.Background(), r)
			g.Expect(err).To(HaveOccurred(), "the API server accepted an invalid route")
			g.Expect(apierrors.IsInvalid(err)).To(BeTrue(), "want 422 Invalid, got %v", err)
			g.Expect(err.Error()).To(ContainSubstring(tc.wantMessage))
		})
	}
}

// TestBoundaryValuesAccepted guards against rules that are stricter than intended.
func TestBoundaryValuesAccepted(t *testing.T) {
	ensureNamespace(t, "validation")
	tests := map[string]func(r *v1alpha1.CallbackRoute){
		"tencent sync timeout just under 2s": func(r *v1alpha1.CallbackRoute) {
			r.Spec.Mode, r.Spec.Backend.Timeout = v1alpha1.ModeSync, dur("1999ms")
		},
		"openim sync timeout of 15s": func(r *v1alpha1.CallbackRoute) {
			r.Spec.Provider, r.Spec.AppID, r.Spec.Mode = v1alpha1.ProviderOpenIM, "prod", v1alpha1.ModeSync
			r.Spec.Backend.Timeout = dur("15s")
		},
		"catch-all prefix": func(r *v1alpha1.CallbackRoute) { r.Spec.Commands = []string{"*"} },
		"sync with reject policy": func(r *v1alpha1.CallbackRoute) {
			r.Spec.Mode, r.Spec.FailurePolicy = v1alpha1.ModeSync, v1alpha1.FailurePolicyReject
		},
		"service backend with path": func(r *v1alpha1.CallbackRoute) {
			r.Spec.Backend = v1alpha1.Backend{Service: &v1alpha1.ServiceReference{Name: "archiver", Port: 8080}, Path: "/im"}
		},
		"ipv6 source cidr": func(r *v1alpha1.CallbackRoute) {
			r.Spec.Verify = &v1alpha1.Verification{SourceCIDRs: []string{"2001:db8::/32", "10.0.0.0/8"}}
		},
	}
	i := 0
	for name, mutate := range tests {
		i++
		t.Run(name, func(t *testing.T) {
			r := validRoute(fmt.Sprintf("boundary-%d", i))
			mutate(r)
			NewWithT(t).Expect(k8sClient.Create(context.Background(), r)).To(Succeed())
		})
	}
}

// TestServerSideDefaults checks the defaults the API server fills in from the schema agree
// with the Effective* helpers used for objects that never went through an API server.
func TestServerSideDefaults(t *testing.T) {
	ensureNamespace(t, "validation")
	g := NewWithT(t)
	r := validRoute("defaults")
	r.Spec.Verify = &v1alpha1.Verification{TokenSecretRef: &v1alpha1.TokenSecretReference{Name: "tencent-im"}}
	r.Spec.Retry = &v1alpha1.RetryPolicy{}
	g.Expect(k8sClient.Create(context.Background(), r)).To(Succeed())

	var got v1alpha1.CallbackRoute
	g.Expect(k8sClient.Get(context.Background(), client.ObjectKeyFromObject(r), &got)).To(Succeed())
	g.Expect(got.Spec.Mode).To(Equal(v1alpha1.ModeAsync))
	g.Expect(got.Spec.FailurePolicy).To(Equal(v1alpha1.FailurePolicyAllow))
	g.Expect(got.Spec.Verify.MaxRequestAge.Duration).To(Equal(v1alpha1.DefaultMaxRequestAge))
	g.Expect(got.Spec.Verify.TokenSecretRef.Key).To(Equal(v1alpha1.DefaultTokenKey))
	g.Expect(got.Spec.Retry.MaxAttempts).To(BeEquivalentTo(v1alpha1.DefaultMaxAttempts))
	g.Expect(got.Spec.Retry.InitialBackoff.Duration).To(Equal(v1alpha1.DefaultInitialBackoff))
	g.Expect(got.Spec.Retry.MaxBackoff.Duration).To(Equal(v1alpha1.DefaultMaxBackoff))

	// The server's defaults and the Go helpers must give the same effective values.
	bare := validRoute("bare").Spec
	bare.Verify = &v1alpha1.Verification{}
	g.Expect(got.Spec.EffectiveMode()).To(Equal(bare.EffectiveMode()))
	g.Expect(got.Spec.EffectiveFailurePolicy()).To(Equal(bare.EffectiveFailurePolicy()))
	g.Expect(got.Spec.EffectiveMaxRequestAge()).To(Equal(bare.EffectiveMaxRequestAge()))
	ga, gi, gm := got.Spec.EffectiveRetry()
	ba, bi, bm := bare.EffectiveRetry()
	g.Expect([]any{ga, gi, gm}).To(Equal([]any{ba, bi, bm}))
}

// TestPrinterColumns checks the installed CRD shows the columns users rely on, with the
// status subresource enabled.
func TestPrinterColumns(t *testing.T) {
	g := NewWithT(t)
	var crd apiextensionsv1.CustomResourceDefinition
	g.Expect(k8sClient.Get(context.Background(),
		client.ObjectKey{Name: "callbackroutes.callbacks.callback-router.dev"}, &crd)).To(Succeed())
	g.Expect(crd.Spec.Versions).To(HaveLen(1))
	v := crd.Spec.Versions[0]
	g.Expect(v.Subresources).NotTo(BeNil())
	g.Expect(v.Subresources.Status).NotTo(BeNil())
	got := map[string]string{}
	for _, c := range v.AdditionalPrinterColumns {
		got[c.Name] = c.JSONPath
	}
	g.Expect(got).To(Equal(map[string]string{
		"Provider": ".spec.provider",
		"App":      ".spec.appID",
		"Mode":     ".spec.mode",
		"Commands": ".spec.commands",
		"Ready":    `.status.conditions[?(@.type=="Ready")].status`,
		"Age":      ".metadata.creationTimestamp",
	}))
}
