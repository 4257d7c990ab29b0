package monitoring

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// dashboard is the part of Grafana's dashboard model the test checks.
type dashboard struct {
	UID           string  `json:"uid"`
	Title         string  `json:"title"`
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []struct {
			Name  string `json:"name"`
			Type  string `json:"type"`
			Query any    `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID          int    `json:"id"`
	Type        string `json:"type"`
	Title       string `json:"title"`
	Description string `json:"description"`
	Datasource  *struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	} `json:"datasource"`
	GridPos struct{ H, W, X, Y int } `json:"gridPos"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
}

// chartDashboard renders the dashboard ConfigMap and returns its JSON.
func chartDashboard(t *testing.T) []byte {
	t.Helper()
	var cm *unstructured.Unstructured
	for _, o := range helmTemplate(t, "grafanaDashboard.enabled=true", "grafanaDashboard.annotations.grafana_folder=IM") {
		if o.GetKind() == "ConfigMap" && strings.HasSuffix(o.GetName(), "-dashboard") {
			cm = o
		}
	}
	if cm == nil {
		t.Fatal("no dashboard ConfigMap rendered")
	}
	if cm.GetLabels()["grafana_dashboard"] != "1" || cm.GetAnnotations()["grafana_folder"] != "IM" {
		t.Errorf("dashboard ConfigMap labels %v annotations %v: the Grafana sidecar looks for grafana_dashboard: \"1\"", cm.GetLabels(), cm.GetAnnotations())
	}
	data, _ := cm.Object["data"].(map[string]any)
	js, _ := data["callback-router.json"].(string)
	file, err := os.ReadFile(filepath.Join(chartDir, "files", "dashboards", "callback-router.json"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(js) != strings.TrimSpace(string(file)) {
		t.Error("the ConfigMap does not carry files/dashboards/callback-router.json as is")
	}
	return []byte(js)
}

// exprVars are values for the dashboard's variables, to check its queries as PromQL.
var exprVars = strings.NewReplacer("$__rate_interval", "5m", "$namespace", ".*", "$app", ".*", "$route", ".*")

// TestDashboard validates the dashboard: JSON, unique panel ids, a layout inside Grafana's
// 24 columns without overlaps, every query on the datasource variable, every variable it uses
// defined, and every query valid PromQL (promtool check rules on them as recording rules).
func TestDashboard(t *testing.T) {
	promtool := tool(t, "PROMTOOL")
	raw := chartDashboard(t)
	var d dashboard
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	if d.UID == "" || d.Title == "" || d.SchemaVersion < 30 || len(d.Panels) == 0 {
		t.Fatalf("dashboard uid %q title %q schemaVersion %d, %d panels", d.UID, d.Title, d.SchemaVersion, len(d.Panels))
	}
	vars := map[string]bool{}
	for _, v := range d.Templating.List {
		vars[v.Name] = true
	}
	for _, v := range []string{"datasource", "namespace", "app", "route"} {
		if !vars[v] {
			t.Errorf("variable %s not defined", v)
		}
	}
	ids := map[int]bool{}
	type cell struct{ x, y int }
	used := map[cell]int{}
	var rules []rule
	titles := map[string]bool{}
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		if p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X < 0 || p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("panel %q: gridPos %+v outside Grafana's 24 columns", p.Title, p.GridPos)
		}
		for x := p.GridPos.X; x < p.GridPos.X+p.GridPos.W; x++ {
			for y := p.GridPos.Y; y < p.GridPos.Y+p.GridPos.H; y++ {
				if other, ok := used[cell{x, y}]; ok {
					t.Fatalf("panel %q overlaps panel %d", p.Title, other)
				}
				used[cell{x, y}] = p.ID
			}
		}
		if p.Type == "row" {
			continue
		}
		titles[p.Title] = true
		if p.Description == "" || p.Datasource == nil || p.Datasource.UID != "${datasource}" || len(p.Targets) == 0 {
			t.Errorf("panel %q: needs a description, the ${datasource} variable and a query", p.Title)
		}
		for _, tg := range p.Targets {
			for _, m := range regexp.MustCompile(`\$\{?([a-z_]+)`).FindAllStringSubmatch(tg.Expr, -1) {
				if !vars[m[1]] && !strings.HasPrefix(m[1], "__") {
					t.Errorf("panel %q uses undefined variable $%s", p.Title, m[1])
				}
			}
			rules = append(rules, rule{Record: fmt.Sprintf("dashboard:panel_%d:%s", p.ID, strings.ToLower(tg.RefID)), Expr: exprVars.Replace(tg.Expr)})
		}
	}
	// What the issue asks the dashboard to show.
	for _, want := range []string{"Callbacks by app and outcome", "Callbacks by command", "Sync backend latency", "Sync fallbacks",
		"Backlog per route", "Oldest pending age per route", "Dead letters per route", "Verification failures by reason", "Receiver pods ready"} {
		if !titles[want] {
			t.Errorf("no panel %q", want)
		}
	}
	dir := t.TempDir()
	writeYAML(t, filepath.Join(dir, "dashboard.yaml"), map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": rules}}})
	if _, err := run(t, nil, promtool, "check", "rules", filepath.Join(dir, "dashboard.yaml")); err != nil {
		t.Fatalf("a dashboard query is not valid PromQL: %v", err)
	}
	t.Logf("%d panels, %d queries valid PromQL", len(d.Panels), len(rules))
}
