package routing

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/callback-router/callback-router/api/v1alpha1"
)

// DefaultNamespace is the namespace of manifests that name none, as with kubectl apply.
const DefaultNamespace = "default"

// MaxManifestBytes caps a standalone routes file.
const MaxManifestBytes = 64 << 20

// fileEpoch is the creationTimestamp given to apps and routes from a file that carry none:
// the n-th object of the file is n seconds after it, so earlier objects count as older and
// win conflicts, as they would had they been applied in file order.
var fileEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// Manifests are the objects of a standalone routes file.
type Manifests struct {
	Apps    []v1alpha1.CallbackApp
	Routes  []v1alpha1.CallbackRoute
	Secrets map[string]*corev1.Secret // by namespace/name
	// NamespaceLabels are the labels of the file's Namespace objects, by name, for
	// allowedRoutes entries with from: Selector.
	NamespaceLabels map[string]map[string]string
	// Skipped lists "Kind namespace/name" of documents of other kinds (CallbackReceivers
	// among them: standalone mode takes its settings from flags).
	Skipped []string
}

// Input returns the standalone Compile input for the manifests, resolving Service
// backends to their cluster DNS names.
func (m *Manifests) Input() Input {
	return Input{
		Standalone: true,
		Apps:       m.Apps,
		Routes:     m.Routes,
		Secret: func(ns, name string) (*corev1.Secret, bool) {
			s, ok := m.Secrets[ns+"/"+name]
			return s, ok
		},
		Namespace: func(name string) (map[string]string, bool) {
			l, ok := m.NamespaceLabels[name]
			return l, ok
		},
	}
}

// LoadFile reads a multi-document YAML (or JSON) file of CallbackApp, CallbackRoute,
// Secret and Namespace manifests, exactly as a user would kubectl apply them.
func LoadFile(path string) (*Manifests, error) {
	f, err := os.Open(path) //nolint:gosec // G304: reading the file the operator names (--routes) is the point
	if err != nil {
		return nil, fmt.Errorf("opening routes file: %w", err)
	}
	defer f.Close()
	m, err := DecodeManifests(io.LimitReader(f, MaxManifestBytes))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	return m, nil
}

// DecodeManifests decodes a multi-document YAML stream. Unknown fields in a CallbackApp,
// CallbackRoute, Secret or Namespace are errors (a typo would otherwise silently drop a
// check); documents of other kinds are skipped and listed.
func DecodeManifests(r io.Reader) (*Manifests, error) {
	d := &decoder{m: &Manifests{Secrets: map[string]*corev1.Secret{}, NamespaceLabels: map[string]map[string]string{}}, seen: map[string]bool{}}
	rd := utilyaml.NewYAMLReader(bufio.NewReader(r))
	for doc := 1; ; doc++ {
		raw, err := rd.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", doc, err)
		}
		if len(bytes.TrimSpace(raw)) == 0 {
			continue
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(raw, &tm); err != nil {
			return nil, fmt.Errorf("document %d: %w", doc, err)
		}
		if tm.Kind == "" && tm.APIVersion == "" {
			// Only comments, or an empty document.
			var any map[string]any
			if err := yaml.Unmarshal(raw, &any); err == nil && len(any) == 0 {
				continue
			}
		}
		if err := d.add(tm, raw); err != nil {
			return nil, fmt.Errorf("document %d: %w", doc, err)
		}
	}
	return d.m, nil
}

// decoder collects the objects of a file.
type decoder struct {
	m       *Manifests
	seen    map[string]bool
	objects int // apps and routes so far, for their creationTimestamp
}

// meta defaults an app's or route's namespace and creationTimestamp and rejects duplicates.
func (d *decoder) meta(kind string, o *metav1.ObjectMeta) error {
	if o.Namespace == "" {
		o.Namespace = DefaultNamespace
	}
	key := kind + " " + o.Namespace + "/" + o.Name
	if d.seen[key] {
		return fmt.Errorf("%s appears twice", key)
	}
	d.seen[key] = true
	if o.CreationTimestamp.IsZero() {
		o.CreationTimestamp = metav1.NewTime(fileEpoch.Add(time.Duration(d.objects) * time.Second))
	}
	d.objects++
	return nil
}

// add decodes one document by its kind.
func (d *decoder) add(tm metav1.TypeMeta, raw []byte) error {
	m := d.m
	switch {
	case tm.Kind == "CallbackApp" && tm.APIVersion == v1alpha1.GroupVersion.String():
		var a v1alpha1.CallbackApp
		if err := yaml.UnmarshalStrict(raw, &a); err != nil {
			return fmt.Errorf("(CallbackApp): %w", err)
		}
		if err := d.meta(tm.Kind, &a.ObjectMeta); err != nil {
			return err
		}
		m.Apps = append(m.Apps, a)
	case tm.Kind == "CallbackRoute" && tm.APIVersion == v1alpha1.GroupVersion.String():
		var cr v1alpha1.CallbackRoute
		if err := yaml.UnmarshalStrict(raw, &cr); err != nil {
			return fmt.Errorf("(CallbackRoute): %w", err)
		}
		if err := d.meta(tm.Kind, &cr.ObjectMeta); err != nil {
			return err
		}
		m.Routes = append(m.Routes, cr)
	case tm.Kind == "Namespace" && tm.APIVersion == "v1":
		var ns corev1.Namespace
		if err := yaml.UnmarshalStrict(raw, &ns); err != nil {
			return fmt.Errorf("(Namespace): %w", err)
		}
		m.NamespaceLabels[ns.Name] = ns.Labels
	case tm.Kind == "Secret" && tm.APIVersion == "v1":
		var s corev1.Secret
		if err := yaml.UnmarshalStrict(raw, &s); err != nil {
			return fmt.Errorf("(Secret): %w", err)
		}
		if s.Namespace == "" {
			s.Namespace = DefaultNamespace
		}
		// stringData wins over data, as the API server merges it.
		if len(s.StringData) > 0 && s.Data == nil {
			s.Data = map[string][]byte{}
		}
		for k, v := range s.StringData {
			s.Data[k] = []byte(v)
		}
		s.StringData = nil
		m.Secrets[s.Namespace+"/"+s.Name] = &s
	default:
		var om struct {
			Metadata metav1.ObjectMeta `json:"metadata"`
		}
		_ = yaml.Unmarshal(raw, &om)
		m.Skipped = append(m.Skipped, fmt.Sprintf("%s %s/%s", tm.Kind, om.Metadata.Namespace, om.Metadata.Name))
	}
	return nil
}
