// Package monitoring tests the chart's Grafana dashboard and Prometheus alerts: the rules
// pass `promtool check rules` and the unit tests of testdata/alerts_test.yaml (`promtool
// test rules`), the dashboard is well-formed JSON whose every query is valid PromQL, and
// every metric either of them uses exists in the code (gathered from a real receiver and
// manager after traffic).
package monitoring

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/callback-router/callback-router/internal/testenv"
)

const (
	// commandTimeout bounds one run of helm or promtool.
	commandTimeout = 2 * time.Minute
	// kubeVersion is the Kubernetes version `helm template` renders for (the envtest one).
	kubeVersion = "v1.36.3"
)

var chartDir = filepath.Join(testenv.RepoRoot(), "charts", "callback-router")

func TestMain(m *testing.M) {
	code := m.Run()
	testenv.RemoveBinary()
	os.Exit(code)
}

// tool returns the binary named by an environment variable (set by `make test`).
func tool(t *testing.T, env string) string {
	t.Helper()
	p := os.Getenv(env)
	if p == "" {
		t.Fatalf("%s is not set: run 'make test', or export %s=\"$(hack/tool.sh %s)\"", env, env, strings.ToLower(env))
	}
	return p
}

func run(t *testing.T, env []string, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String() + stderr.String(), fmt.Errorf("%s %s: %w\n%s%s", filepath.Base(name), strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String(), nil
}

// helmTemplate renders the chart with the given --set values and returns its objects.
func helmTemplate(t *testing.T, set ...string) []*unstructured.Unstructured {
	t.Helper()
	dir := t.TempDir()
	env := []string{"HELM_CACHE_HOME=" + filepath.Join(dir, "c"), "HELM_CONFIG_HOME=" + filepath.Join(dir, "f"), "HELM_DATA_HOME=" + filepath.Join(dir, "d")}
	args := []string{"template", "cr", chartDir, "--namespace", "callback-router-system", "--kube-version", kubeVersion}
	for _, s := range set {
		args = append(args, "--set", s)
	}
	out, err := run(t, env, tool(t, "HELM"), args...)
	if err != nil {
		t.Fatal(err)
	}
	var objs []*unstructured.Unstructured
	dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(out), 4096)
	for {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return objs
			}
			t.Fatal(err)
		}
		if m != nil {
			objs = append(objs, &unstructured.Unstructured{Object: m})
		}
	}
}

func only(t *testing.T, objs []*unstructured.Unstructured, kind string) *unstructured.Unstructured {
	t.Helper()
	var found []*unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() == kind {
			found = append(found, o)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d %s objects rendered, want 1", len(found), kind)
	}
	return found[0]
}

// ruleGroups are a PrometheusRule's spec.groups, as a Prometheus rule file holds them.
type ruleGroups struct {
	Groups []struct {
		Name  string `json:"name"`
		Rules []rule `json:"rules"`
	} `json:"groups"`
}

type rule struct {
	Alert       string            `json:"alert,omitempty"`
	Record      string            `json:"record,omitempty"`
	Expr        string            `json:"expr"`
	For         string            `json:"for,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

func chartRules(t *testing.T, set ...string) ruleGroups {
	t.Helper()
	pr := only(t, helmTemplate(t, append([]string{"prometheusRule.enabled=true"}, set...)...), "PrometheusRule")
	raw, err := json.Marshal(pr.Object["spec"])
	if err != nil {
		t.Fatal(err)
	}
	var g ruleGroups
	if err := json.Unmarshal(raw, &g); err != nil {
		t.Fatal(err)
	}
	return g
}

func writeYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := yaml.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestAlertRules checks the chart's PrometheusRule with promtool and runs the alerts'
// unit tests (testdata/alerts_test.yaml).
func TestAlertRules(t *testing.T) {
	promtool := tool(t, "PROMTOOL")
	g := chartRules(t)
	want := []string{"CallbackReceiverNotReady", "CallbackRouterBacklogAge", "CallbackRouterDeadLettersGrowing",
		"CallbackRouterDrainStuck", "CallbackRouterReceiverPodNotReady", "CallbackRouterSyncFallbacks",
		"CallbackRouterVerificationFailures"}
	var got []string
	for _, gr := range g.Groups {
		for _, r := range gr.Rules {
			got = append(got, r.Alert)
			if r.Labels["severity"] == "" || r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("%s: needs a severity, a summary and a description", r.Alert)
			}
		}
	}
	sort.Strings(got)
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("alerts %v, want %v", got, want)
	}

	dir := t.TempDir()
	writeYAML(t, filepath.Join(dir, "full.yaml"), g)
	if out, err := run(t, nil, promtool, "check", "rules", "--lint=all", "--lint-fatal", filepath.Join(dir, "full.yaml")); err != nil {
		t.Fatal(err)
	} else {
		t.Logf("promtool check rules: %s", strings.TrimSpace(out))
	}
	tests, err := os.ReadFile(filepath.Join("testdata", "alerts_test.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	out, err := unitTestRules(t, promtool, g, tests)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("promtool test rules: %s", strings.TrimSpace(out))
	// The unit tests hold the thresholds: moved ones fail them.
	for _, set := range []string{"prometheusRule.backlogAge.seconds=3600", "prometheusRule.verificationFailures.ratio=0.6",
		"prometheusRule.verificationFailures.minCount=1000", "prometheusRule.syncFallbacks.ratio=0.1", "prometheusRule.receiverNotReady.for=1h", "prometheusRule.drainStuck.for=2h",
		"prometheusRule.deadLetters.window=1m"} {
		if out, err := unitTestRules(t, promtool, chartRules(t, set), tests); err == nil {
			t.Errorf("with %s the alerts' unit tests still pass: they do not test that threshold\n%s", set, out)
		}
	}
	// Every alert has a unit test that makes it fire.
	for _, a := range want {
		if !bytes.Contains(tests, []byte("alertname: "+a+"\n")) {
			t.Errorf("testdata/alerts_test.yaml does not test %s", a)
		}
	}
}

// unitTestRules runs `promtool test rules` with tests against the groups (without
// annotations: the unit tests compare labels; annotations are checked by check rules).
func unitTestRules(t *testing.T, promtool string, g ruleGroups, tests []byte) (string, error) {
	t.Helper()
	dir := t.TempDir()
	for i := range g.Groups {
		for j := range g.Groups[i].Rules {
			g.Groups[i].Rules[j].Annotations = nil
		}
	}
	writeYAML(t, filepath.Join(dir, "rules.yaml"), g)
	if err := os.WriteFile(filepath.Join(dir, "alerts_test.yaml"), tests, 0o600); err != nil {
		t.Fatal(err)
	}
	return run(t, nil, promtool, "test", "rules", filepath.Join(dir, "alerts_test.yaml"))
}

// TestAlertRulesValues: the thresholds and labels come from values.
func TestAlertRulesValues(t *testing.T) {
	g := chartRules(t, "prometheusRule.backlogAge.seconds=60", "prometheusRule.alertLabels.team=im",
		"prometheusRule.drainStuck.for=2h", "prometheusRule.labels.release=kps")
	for _, gr := range g.Groups {
		for _, r := range gr.Rules {
			if r.Labels["team"] != "im" {
				t.Errorf("%s: alertLabels not applied: %v", r.Alert, r.Labels)
			}
			if r.Alert == "CallbackRouterBacklogAge" && !strings.Contains(r.Expr, "> 60") {
				t.Errorf("backlog threshold not applied: %s", r.Expr)
			}
			if r.Alert == "CallbackRouterDrainStuck" && r.For != "2h" {
				t.Errorf("drainStuck.for not applied: %s", r.For)
			}
		}
	}
	objs := helmTemplate(t)
	for _, o := range objs {
		if o.GetKind() == "PrometheusRule" || o.GetKind() == "ConfigMap" && strings.HasSuffix(o.GetName(), "-dashboard") {
			t.Errorf("%s %s rendered with the default values (both are off by default)", o.GetKind(), o.GetName())
		}
	}
}
