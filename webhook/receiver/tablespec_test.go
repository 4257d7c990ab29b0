package receiver

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/callback-router/callback-router/api/v1alpha1"
	"github.com/callback-router/callback-router/webhook/routing"
)

// The receiver's tests describe routing tables in a compact per-route YAML: documents of
// kind CallbackRoute whose spec names the provider and appID and may carry verify, plus
// Secrets. This is the shape of routing.CompiledRoute (every compiled route carries its
// checks), not the API: in the API, verification belongs to the CallbackApp and the
// compiler (webhook/routing, tested there) copies it into each attached route. Building
// the snapshot directly keeps these tests about the receiver, and lets them give routes
// of one app different checks, which the compiler never produces but a receiver must
// still handle exactly as the table says.

// testRoute is one per-route table entry.
type testRoute struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Provider      v1alpha1.Provider      `json:"provider"`
		AppID         string                 `json:"appID"`
		Commands      []string               `json:"commands"`
		Mode          v1alpha1.Mode          `json:"mode,omitempty"`
		Backend       v1alpha1.Backend       `json:"backend"`
		Retry         *v1alpha1.RetryPolicy  `json:"retry,omitempty"`
		FailurePolicy v1alpha1.FailurePolicy `json:"failurePolicy,omitempty"`
		Filter        string                 `json:"filter,omitempty"`
		Verify        *struct {
			TokenSecretRef     *v1alpha1.TokenSecretReference `json:"tokenSecretRef,omitempty"`
			MaxRequestAge      *metav1.Duration               `json:"maxRequestAge,omitempty"`
			BasicAuthSecretRef *v1alpha1.LocalObjectReference `json:"basicAuthSecretRef,omitempty"`
			SourceCIDRs        []string                       `json:"sourceCIDRs,omitempty"`
			ForwardSignature   bool                           `json:"forwardSignature,omitempty"`
		} `json:"verify,omitempty"`
	} `json:"spec"`
}

// fileEpoch orders routes without a creationTimestamp by their place in the YAML.
var fileEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// snapshotFromSpec builds the snapshot a per-route YAML describes.
func snapshotFromSpec(manifests string) (*routing.Snapshot, error) {
	routes, secrets, err := parseSpec(manifests)
	if err != nil {
		return nil, err
	}
	snap := &routing.Snapshot{Routes: []routing.CompiledRoute{}}
	for i := range routes {
		cr, err := compileTestRoute(&routes[i], secrets)
		if err != nil {
			return nil, err
		}
		snap.Routes = append(snap.Routes, cr)
	}
	sort.Slice(snap.Routes, func(a, b int) bool { return snap.Routes[a].Key() < snap.Routes[b].Key() })
	return snap, nil
}

// parseSpec reads the routes and Secrets of a per-route YAML.
func parseSpec(manifests string) ([]testRoute, map[string]*corev1.Secret, error) {
	var routes []testRoute
	secrets := map[string]*corev1.Secret{}
	rd := utilyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(manifests)))
	for {
		raw, err := rd.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, nil, err
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(raw, &tm); err != nil {
			return nil, nil, err
		}
		switch tm.Kind {
		case "CallbackRoute":
			var r testRoute
			if err := yaml.UnmarshalStrict(raw, &r); err != nil {
				return nil, nil, err
			}
			if r.Namespace == "" {
				r.Namespace = "default"
			}
			if r.CreationTimestamp.IsZero() {
				r.CreationTimestamp = metav1.NewTime(fileEpoch.Add(time.Duration(len(routes)) * time.Second))
			}
			routes = append(routes, r)
		case "Secret":
			var s corev1.Secret
			if err := yaml.UnmarshalStrict(raw, &s); err != nil {
				return nil, nil, err
			}
			if s.Namespace == "" {
				s.Namespace = "default"
			}
			secrets[s.Namespace+"/"+s.Name] = &s
		case "":
		default:
			return nil, nil, fmt.Errorf("kind %s in a test table", tm.Kind)
		}
	}
	return routes, secrets, nil
}

// compileTestRoute is one table entry, its checks resolved from the Secrets.
func compileTestRoute(r *testRoute, secrets map[string]*corev1.Secret) (routing.CompiledRoute, error) {
	value := func(ns, name, key string) (string, error) {
		s := secrets[ns+"/"+name]
		if s == nil {
			return "", fmt.Errorf("secret %s/%s not in the test table", ns, name)
		}
		if v, ok := s.StringData[key]; ok {
			return v, nil
		}
		if v, ok := s.Data[key]; ok {
			return string(v), nil
		}
		return "", fmt.Errorf("secret %s/%s has no %s", ns, name, key)
	}
	s := &r.Spec
	spec := v1alpha1.CallbackRouteSpec{Commands: s.Commands, Mode: s.Mode, Backend: s.Backend, Retry: s.Retry, FailurePolicy: s.FailurePolicy}
	cr := routing.CompiledRoute{
		Namespace: r.Namespace, Name: r.Name, App: r.Namespace + "/app-" + s.AppID,
		Provider: s.Provider, AppID: s.AppID,
		Commands: append([]string(nil), s.Commands...), Mode: spec.EffectiveMode(),
		URL: strings.TrimSuffix(s.Backend.URL, "/") + s.Backend.Path, Timeout: spec.EffectiveTimeout(),
		FailurePolicy: spec.EffectiveFailurePolicy(), CreatedAt: r.CreationTimestamp.UTC(),
		Filter: s.Filter,
	}
	if s.Backend.Path == "" {
		cr.URL = s.Backend.URL
	}
	sort.Strings(cr.Commands)
	if cr.Mode == v1alpha1.ModeAsync {
		cr.MaxAttempts, cr.InitialBackoff, cr.MaxBackoff = spec.EffectiveRetry()
	}
	if v := s.Verify; v != nil {
		cr.ForwardSignature = v.ForwardSignature
		for _, c := range v.SourceCIDRs {
			p, err := netip.ParsePrefix(c)
			if err != nil {
				return cr, err
			}
			cr.SourceCIDRs = append(cr.SourceCIDRs, p.Masked().String())
		}
		if ref := v.TokenSecretRef; ref != nil {
			tok, err := value(r.Namespace, ref.Name, ref.EffectiveTokenKey())
			if err != nil {
				return cr, err
			}
			cr.Tokens = []string{tok}
			if ref.PreviousKey != "" {
				if prev, err := value(r.Namespace, ref.Name, ref.PreviousKey); err == nil && prev != tok {
					cr.Tokens = append(cr.Tokens, prev)
				}
			}
			cr.MaxRequestAge = v1alpha1.DefaultMaxRequestAge
			if v.MaxRequestAge != nil {
				cr.MaxRequestAge = v.MaxRequestAge.Duration
			}
		}
		if ref := v.BasicAuthSecretRef; ref != nil {
			u, err := value(r.Namespace, ref.Name, "username")
			if err != nil {
				return cr, err
			}
			p, err := value(r.Namespace, ref.Name, "password")
			if err != nil {
				return cr, err
			}
			cr.BasicAuth = &routing.BasicAuth{Username: u, Password: p}
		}
	}
	return cr, nil
}
