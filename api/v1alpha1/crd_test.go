package v1alpha1_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/callback-router/callback-router/api/v1alpha1"
	"github.com/callback-router/callback-router/internal/apicases"
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

// TestSamplesAccepted creates every manifest in config/samples (each file may hold several
// documents of the three kinds), decoding each strictly into its Go type first so that a
// field the API does not have fails here rather than being pruned silently.
func TestSamplesAccepted(t *testing.T) {
	g := NewWithT(t)
	files, err := filepath.Glob(filepath.Join(testenv.RepoRoot(), "config", "samples", "*.yaml"))
	g.Expect(err).NotTo(HaveOccurred())
	var n int
	for _, f := range files {
		if filepath.Base(f) == "kustomization.yaml" {
			continue
		}
		data, err := os.ReadFile(f)
		g.Expect(err).NotTo(HaveOccurred())
		for i, doc := range strings.Split(string(data), "\n---") {
			if strings.TrimSpace(doc) == "" {
				continue
			}
			n++
			t.Run(fmt.Sprintf("%s#%d", filepath.Base(f), i), func(t *testing.T) {
				g := NewWithT(t)
				obj := decodeStrict(g, []byte(doc))
				if obj.GetNamespace() != "" {
					ensureNamespace(t, obj.GetNamespace())
				}
				g.Expect(k8sClient.Create(context.Background(), obj)).To(Succeed())
			})
		}
	}
	g.Expect(n).To(BeNumerically(">=", 3), "config/samples should show each kind")
}

// decodeStrict decodes one manifest into its typed object, rejecting unknown fields.
func decodeStrict(g Gomega, doc []byte) client.Object {
	var u unstructured.Unstructured
	g.Expect(utilyaml.Unmarshal(doc, &u.Object)).To(Succeed())
	var obj client.Object
	switch u.GetKind() {
	case "CallbackReceiver":
		obj = &v1alpha1.CallbackReceiver{}
	case "CallbackApp":
		obj = &v1alpha1.CallbackApp{}
	case "CallbackRoute":
		obj = &v1alpha1.CallbackRoute{}
	case "Secret":
		obj = &corev1.Secret{}
	case "Namespace":
		obj = &corev1.Namespace{}
	default:
		g.Expect(u.GetKind()).To(BeEmpty(), "unexpected kind in a sample")
	}
	g.Expect(yaml.UnmarshalStrict(doc, obj)).To(Succeed())
	return obj
}

// TestInvalidSpecsRejected runs the shared table of invalid specs (internal/apicases,
// which the compiler's tests run too) through the API server's schema and CEL rules.
func TestInvalidSpecsRejected(t *testing.T) {
	ensureNamespace(t, apicases.Namespace)
	for i, tc := range apicases.Invalid() {
		t.Run(tc.Name, func(t *testing.T) {
			g := NewWithT(t)
			obj := tc.Object
			obj.SetName(fmt.Sprintf("invalid-%d", i))
			err := k8sClient.Create(context.Background(), obj)
			if !tc.Server {
				// A rule only the compiler enforces: the API server stores the object.
				g.Expect(err).NotTo(HaveOccurred(), "the case says only the compiler rejects this; the API server did too")
				return
			}
			g.Expect(err).To(HaveOccurred(), "the API server accepted an invalid object")
			g.Expect(apierrors.IsInvalid(err)).To(BeTrue(), "want 422 Invalid, got %v", err)
			g.Expect(err.Error()).To(ContainSubstring(tc.Message))
		})
	}
}

// TestBoundaryValuesAccepted guards against rules that are stricter than intended.
func TestBoundaryValuesAccepted(t *testing.T) {
	ensureNamespace(t, apicases.Namespace)
	tests := map[string]client.Object{
		"openim sync timeout of 15s": func() client.Object {
			r := apicases.ValidRoute()
			r.Spec.Mode, r.Spec.Backend.Timeout = v1alpha1.ModeSync, dur("15s")
			return r
		}(),
		"catch-all prefix": func() client.Object {
			r := apicases.ValidRoute()
			r.Spec.Commands = []string{"*"}
			return r
		}(),
		"sync with reject policy": func() client.Object {
			r := apicases.ValidRoute()
			r.Spec.Mode, r.Spec.FailurePolicy = v1alpha1.ModeSync, v1alpha1.FailurePolicyReject
			return r
		}(),
		"url backend with path, app in another namespace": func() client.Object {
			r := apicases.ValidRoute()
			r.Spec.AppRef.Namespace = "im-platform"
			r.Spec.Backend = v1alpha1.Backend{URL: "https://hooks.example.com/im", Path: "/callbacks"}
			return r
		}(),
		"app granting selector namespaces, async only, some commands": func() client.Object {
			a := apicases.ValidApp()
			a.Spec.AllowedRoutes = []v1alpha1.RouteGrant{
				{Namespaces: v1alpha1.Namespaces{From: v1alpha1.NamespacesFromSame}},
				{
					Namespaces: v1alpha1.Namespaces{From: v1alpha1.NamespacesFromSelector,
						Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"im-callbacks": "analytics"}}},
					Modes:    []v1alpha1.Mode{v1alpha1.ModeAsync},
					Commands: []string{"Push.*", "C2C.CallbackAfterSendMsg"},
				},
			}
			a.Spec.BackendURLs = []string{"https://hooks.example.com/", "http://127.0.0.1:9000"}
			a.Spec.Verify.SourceCIDRs = []string{"2001:db8::/32", "10.0.0.0/8"}
			a.Spec.Verify.ForwardSignature = true
			return a
		}(),
		"openim app with basic auth": func() client.Object {
			a := apicases.ValidApp()
			a.Spec.Provider, a.Spec.AppID = v1alpha1.ProviderOpenIM, "prod"
			a.Spec.Verify = &v1alpha1.AppVerification{BasicAuthSecretRef: &v1alpha1.LocalObjectReference{Name: "openim-hook"}}
			return a
		}(),
		"receiver with jetStream, selector and zero replicas": func() client.Object {
			r := apicases.ValidReceiver()
			zero := int32(0)
			r.Spec.Replicas = &zero
			r.Spec.AllowedApps = &v1alpha1.AllowedApps{Namespaces: v1alpha1.Namespaces{From: v1alpha1.NamespacesFromSelector,
				Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"im-apps": "yes"}}}}
			r.Spec.Spool = &v1alpha1.Spool{JetStream: &v1alpha1.JetStreamSpool{URL: "nats://127.0.0.1:4222,127.0.0.1:4223"}}
			r.Spec.TrustedProxies = []string{"10.0.0.0/8", "fd00::/8"}
			return r
		}(),
	}
	i := 0
	for name, obj := range tests {
		i++
		t.Run(name, func(t *testing.T) {
			obj.SetName(fmt.Sprintf("boundary-%d", i))
			NewWithT(t).Expect(k8sClient.Create(context.Background(), obj)).To(Succeed())
		})
	}
}

// TestServerSideDefaults checks the defaults the API server fills in from the schema agree
// with the Effective* helpers used for objects that never went through an API server.
func TestServerSideDefaults(t *testing.T) {
	ensureNamespace(t, apicases.Namespace)
	g := NewWithT(t)
	ctx := context.Background()

	r := apicases.ValidRoute()
	r.Name = "defaults"
	r.Spec.Retry = &v1alpha1.RetryPolicy{}
	g.Expect(k8sClient.Create(ctx, r)).To(Succeed())
	var got v1alpha1.CallbackRoute
	g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(r), &got)).To(Succeed())
	g.Expect(got.Spec.Mode).To(Equal(v1alpha1.ModeAsync))
	g.Expect(got.Spec.FailurePolicy).To(Equal(v1alpha1.FailurePolicyAllow))
	g.Expect(got.Spec.Retry.MaxAttempts).To(BeEquivalentTo(v1alpha1.DefaultMaxAttempts))
	bare := apicases.ValidRoute().Spec
	g.Expect(got.Spec.EffectiveMode()).To(Equal(bare.EffectiveMode()))
	g.Expect(got.Spec.EffectiveFailurePolicy()).To(Equal(bare.EffectiveFailurePolicy()))
	ga, gi, gm := got.Spec.EffectiveRetry()
	ba, bi, bm := bare.EffectiveRetry()
	g.Expect([]any{ga, gi, gm}).To(Equal([]any{ba, bi, bm}))

	a := apicases.ValidApp()
	a.Name = "defaults"
	a.Spec.AllowedRoutes = []v1alpha1.RouteGrant{{}}
	g.Expect(k8sClient.Create(ctx, a)).To(Succeed())
	var gotApp v1alpha1.CallbackApp
	g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(a), &gotApp)).To(Succeed())
	g.Expect(gotApp.Spec.Verify.MaxRequestAge.Duration).To(Equal(v1alpha1.DefaultMaxRequestAge))
	g.Expect(gotApp.Spec.Verify.TokenSecretRef.Key).To(Equal(v1alpha1.DefaultTokenKey))
	g.Expect(gotApp.Spec.AllowedRoutes[0].Namespaces.From).To(Equal(v1alpha1.NamespacesFromSame))
	bareApp := apicases.ValidApp().Spec
	g.Expect(gotApp.Spec.EffectiveMaxRequestAge()).To(Equal(bareApp.EffectiveMaxRequestAge()))

	recv := apicases.ValidReceiver()
	recv.Name = "defaults"
	recv.Spec.Service = &v1alpha1.ReceiverService{}
	recv.Spec.Spool = &v1alpha1.Spool{Embedded: &v1alpha1.EmbeddedSpool{}}
	recv.Spec.AllowedApps = &v1alpha1.AllowedApps{}
	g.Expect(k8sClient.Create(ctx, recv)).To(Succeed())
	var gotRecv v1alpha1.CallbackReceiver
	g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(recv), &gotRecv)).To(Succeed())
	g.Expect(*gotRecv.Spec.Replicas).To(BeEquivalentTo(v1alpha1.DefaultReceiverReplicas))
	g.Expect(gotRecv.Spec.Service.Port).To(BeEquivalentTo(v1alpha1.DefaultReceiverPort))
	g.Expect(gotRecv.Spec.Service.Type).To(BeEquivalentTo(corev1.ServiceTypeClusterIP))
	g.Expect(gotRecv.Spec.Spool.Embedded.Size.String()).To(Equal(v1alpha1.DefaultSpoolSize))
	g.Expect(gotRecv.Spec.AllowedApps.Namespaces.From).To(Equal(v1alpha1.NamespacesFromSame))
	bareRecv := apicases.ValidReceiver().Spec
	g.Expect(gotRecv.Spec.EffectiveReplicas()).To(Equal(bareRecv.EffectiveReplicas()))
	g.Expect(gotRecv.Spec.EffectivePort()).To(Equal(bareRecv.EffectivePort()))
}

// TestPrinterColumns checks the installed CRDs show the columns that answer each kind's
// first question, with the status (and, for receivers, scale) subresource enabled.
func TestPrinterColumns(t *testing.T) {
	ready := `.status.conditions[?(@.type=="Ready")].status`
	tests := map[string]map[string]string{
		"callbackapps": {
			"Provider": ".spec.provider", "AppID": ".spec.appID", "Receiver": ".spec.receiverRef.name",
			"Routes": ".status.attachedRoutes", "Ready": ready, "URL": ".status.url", "Age": ".metadata.creationTimestamp",
		},
		"callbackroutes": {
			"App": ".spec.appRef.name", "Mode": ".spec.mode", "Commands": ".spec.commands", "Ready": ready,
			"Reason": `.status.conditions[?(@.type=="Accepted")].reason`, "Age": ".metadata.creationTimestamp",
		},
		"callbackreceivers": {
			"Replicas": ".status.replicas", "Ready Replicas": ".status.readyReplicas", "Ready": ready, "Pending": ".status.pending",
			"Address": ".status.address",
			"Apps":    ".status.apps", "Age": ".metadata.creationTimestamp",
		},
	}
	for plural, want := range tests {
		t.Run(plural, func(t *testing.T) {
			g := NewWithT(t)
			var crd apiextensionsv1.CustomResourceDefinition
			g.Expect(k8sClient.Get(context.Background(),
				client.ObjectKey{Name: plural + ".callbacks.callback-router.dev"}, &crd)).To(Succeed())
			g.Expect(crd.Spec.Versions).To(HaveLen(1))
			v := crd.Spec.Versions[0]
			g.Expect(v.Subresources).NotTo(BeNil())
			g.Expect(v.Subresources.Status).NotTo(BeNil())
			got := map[string]string{}
			for _, c := range v.AdditionalPrinterColumns {
				got[c.Name] = c.JSONPath
			}
			g.Expect(got).To(Equal(want))
			if plural == "callbackreceivers" {
				g.Expect(v.Subresources.Scale).To(Equal(&apiextensionsv1.CustomResourceSubresourceScale{
					SpecReplicasPath: ".spec.replicas", StatusReplicasPath: ".status.replicas",
					LabelSelectorPath: ptr(".status.selector"),
				}))
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func dur(s string) *metav1.Duration {
	d, err := time.ParseDuration(s)
	if err != nil {
		panic(err)
	}
	return &metav1.Duration{Duration: d}
}
