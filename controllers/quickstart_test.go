package controllers

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/callback-router/callback-router/controllers/dataplane"
	"github.com/callback-router/callback-router/internal/testenv"
)

// consoleBlock matches a "$ kubectl ... get callback..." command of docs/quickstart-cluster.md
// and the rows printed under it, up to the next command or the end of the block.
var consoleBlock = regexp.MustCompile("(?m)^\\$ kubectl (.*get callback[a-z]+.*)\\n((?:[^$`\\n].*\\n)+)")

// TestQuickstartClusterDoc applies examples/quickstart-cluster (the manifests of
// docs/quickstart-cluster.md) to a real API server with the manager running, and checks that
// every `kubectl get` table the page shows is what kubectl prints (AGE aside).
func TestQuickstartClusterDoc(t *testing.T) {
	g := NewWithT(t)
	kc, kubeconfig := kubectl(t), adminKubeconfig(t)
	run := func(args ...string) string {
		out, err := exec.Command(kc, append([]string{"--kubeconfig", kubeconfig}, args...)...).CombinedOutput()
		g.Expect(err).NotTo(HaveOccurred(), "kubectl %v: %s", args, out)
		return string(out)
	}
	// The default receiver's pods report ready (no kubelet here: the test plays its part).
	key := types.NamespacedName{Namespace: opts.Namespace, Name: dataplane.ObjectName(opts.Name)}
	g.Eventually(func() error {
		d := &appsv1.StatefulSet{}
		if err := k8s.Get(context.Background(), key, d); err != nil {
			return err
		}
		n := *d.Spec.Replicas
		d.Status = appsv1.StatefulSetStatus{ObservedGeneration: d.Generation, Replicas: n, UpdatedReplicas: n, ReadyReplicas: n, AvailableReplicas: n}
		return k8s.Status().Update(context.Background(), d)
	}, waitTimeout, pollInterval).Should(Succeed())
	dir := filepath.Join(testenv.RepoRoot(), "examples", "quickstart-cluster")
	t.Cleanup(func() {
		for _, f := range []string{"troubleshooting.yaml", "openim.yaml", "tencent.yaml"} {
			_, _ = exec.Command(kc, "--kubeconfig", kubeconfig, "delete", "--ignore-not-found", "--wait=false", "-f", filepath.Join(dir, f)).CombinedOutput()
		}
	})

	doc, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "docs", "quickstart-cluster.md"))
	g.Expect(err).NotTo(HaveOccurred())
	// The page applies its manifests section by section; so does the test, checking each
	// section's tables after applying what precedes them.
	sections := []struct{ heading, manifest string }{
		{"## 1. Install", ""},
		{"## 2. Tencent IM", "tencent.yaml"},
		{"## 3. OpenIM", "openim.yaml"},
		{"## Troubleshooting", "troubleshooting.yaml"},
	}
	tables := 0
	for i, sec := range sections {
		start := strings.Index(string(doc), sec.heading)
		g.Expect(start).To(BeNumerically(">=", 0), "section %q", sec.heading)
		end := len(doc)
		if i+1 < len(sections) {
			end = strings.Index(string(doc), sections[i+1].heading)
		}
		if sec.manifest != "" {
			run("apply", "-f", filepath.Join(dir, sec.manifest))
		}
		for _, b := range consoleBlock.FindAllStringSubmatch(string(doc[start:end]), -1) {
			tables++
			args := shellWords(b[1])
			want := strings.Split(strings.TrimRight(b[2], "\n"), "\n")
			NewWithT(t).Eventually(func(g Gomega) {
				out, err := exec.Command(kc, append([]string{"--kubeconfig", kubeconfig}, args...)...).CombinedOutput()
				g.Expect(err).NotTo(HaveOccurred(), "%s", out)
				got := map[string]bool{}
				for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
					got[withoutAge(l)] = true
				}
				for _, w := range want {
					g.Expect(got).To(HaveKey(withoutAge(w)), "kubectl %s: the page shows\n%s\nkubectl prints\n%s", b[1], w, out)
				}
			}, waitTimeout, pollInterval).Should(Succeed())
		}
	}
	g.Expect(tables).To(BeNumerically(">=", 6), "kubectl get tables in the page")
	t.Logf("%d kubectl get tables of docs/quickstart-cluster.md match", tables)
}

// withoutAge drops the last column (AGE) and normalizes the spacing of a kubectl table row.
func withoutAge(row string) string {
	f := strings.Fields(row)
	if len(f) > 1 {
		f = f[:len(f)-1]
	}
	return strings.Join(f, " ")
}

// shellWords splits a command line as a shell would for the page's commands: on spaces,
// except inside single quotes, which are removed.
func shellWords(line string) []string {
	var out []string
	var cur strings.Builder
	quoted, inWord := false, false
	for _, r := range line {
		switch {
		case r == '\'':
			quoted, inWord = !quoted, true
		case r == ' ' && !quoted:
			if inWord {
				out = append(out, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if inWord {
		out = append(out, cur.String())
	}
	return out
}
