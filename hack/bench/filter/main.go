// Command filter measures what route filters (CallbackRoute spec.filter, CEL) cost per
// callback: the routing step of the receiver (the app's lookup, then FilterRoutes over the
// matching routes, which parses the body once when a filter needs it), on a table of
// 10,000 routes of which 1,000 have filters, against the same 10,000 routes without
// filters, in one run.
//
// The table: 100 TencentIM apps with 100 Async routes each; in each app 50 routes take
// C2C.CallbackAfterSendMsg (10 of them with a filter, the docs' recipes) and 50 take
// Group.CallbackAfterSendMsg (none with a filter). Cases:
//
//   - C2C callback, no filters: lookup only (the baseline);
//   - C2C callback, filters: lookup + body parse + 10 filters;
//   - Group callback on the filtered table: its routes have no filter, so nothing is
//     parsed or evaluated.
//
// Each case is a testing.Benchmark (its own calibrated b.N); the output is a markdown table:
//
//	go run ./hack/bench/filter [-benchtime 1s] [-rounds 3]
package main

import (
	"flag"
	"fmt"
	"os"
	"sort"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/callback-router/callback-router/api/v1alpha1"
	"github.com/callback-router/callback-router/webhook/routing"
	"github.com/callback-router/callback-router/webhook/samples"
)

// Shape of the table.
const (
	apps             = 100
	routesPerApp     = 100
	filteredPerApp   = 10
	c2cRoutesPerApp  = 50
	commandC2C       = "C2C.CallbackAfterSendMsg"
	commandGroup     = "Group.CallbackAfterSendMsg"
	benchAppIDPrefix = "14000"
)

// recipes are the filters given to the filtered routes, in turn (docs/recipes.md).
var recipes = []string{
	`body.MsgBody.exists(m, m.MsgType == "TIMImageElem")`,
	`body.SendMsgResult != 0`,
	`body.From_Account == "jared" && body.To_Account != "admin"`,
	`body.MsgBody.exists(m, m.MsgType == "TIMTextElem" && m.MsgContent.Text.contains("refund"))`,
	`has(body.CloudCustomData) && body.CloudCustomData.startsWith("vip:")`,
}

// Table builds the 10,000-route table; withFilters gives 1,000 of them a filter.
func Table(withFilters bool) (*routing.Table, error) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var in routing.Input
	in.Standalone = true
	for a := range apps {
		appName := fmt.Sprintf("app-%03d", a)
		in.Apps = append(in.Apps, v1alpha1.CallbackApp{
			ObjectMeta: metav1.ObjectMeta{Namespace: "im", Name: appName, CreationTimestamp: metav1.NewTime(t0)},
			Spec: v1alpha1.CallbackAppSpec{Provider: v1alpha1.ProviderTencentIM, AppID: fmt.Sprintf("%s%05d", benchAppIDPrefix, a),
				AllowedRoutes: []v1alpha1.RouteGrant{{Namespaces: v1alpha1.Namespaces{From: v1alpha1.NamespacesFromAll}}},
				ReceiverRef:   v1alpha1.ObjectReference{Name: "standalone"}},
		})
		for r := range routesPerApp {
			cmd := commandGroup
			if r < c2cRoutesPerApp {
				cmd = commandC2C
			}
			rt := v1alpha1.CallbackRoute{
				ObjectMeta: metav1.ObjectMeta{Namespace: fmt.Sprintf("team-%03d", r), Name: appName,
					CreationTimestamp: metav1.NewTime(t0)},
				Spec: v1alpha1.CallbackRouteSpec{
					AppRef: v1alpha1.ObjectReference{Namespace: "im", Name: appName}, Commands: []string{cmd},
					Mode: v1alpha1.ModeAsync, Backend: v1alpha1.Backend{URL: "http://127.0.0.1:9000", Path: fmt.Sprintf("/r%d", r)},
				},
			}
			if withFilters && r < filteredPerApp {
				rt.Spec.Filter = recipes[(a+r)%len(recipes)]
			}
			in.Routes = append(in.Routes, rt)
		}
	}
	out := routing.Compile(in)
	for _, st := range out.Routes {
		if !st.Routed() {
			return nil, fmt.Errorf("route %s/%s not routed: %s", st.Namespace, st.Name, st.Ready.Message)
		}
	}
	return routing.NewTable(out.Tables[routing.StandaloneReceiver])
}

// Case is one measured case.
type Case struct {
	Name    string
	Table   *routing.Table
	Command string
	Body    []byte
	// Want is the number of routes the callback must reach, checked before measuring.
	Want int
}

// Route runs the receiver's routing step for one callback and returns the routes kept.
func (c *Case) Route(buf []*routing.Route) ([]*routing.Route, error) {
	app := c.Table.App(v1alpha1.ProviderTencentIM, benchAppIDPrefix+"00042")
	m := app.Lookup(c.Command)
	if m == nil {
		return nil, fmt.Errorf("no match for %s", c.Command)
	}
	buf = append(buf[:0], m.Async...)
	in := &routing.FilterInput{App: app.AppID, Command: c.Command, Body: c.Body}
	return routing.FilterRoutes(buf, in, nil), nil
}

// cpuTime is the process's user+system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// Result is a case's benchmark result plus the CPU time it used per callback (GC
// included), which a machine shared with other work inflates far less than wall time.
type Result struct {
	testing.BenchmarkResult
	CPUPerOp time.Duration
}

// Measure runs the case as a benchmark.
func (c *Case) Measure() (Result, error) {
	got, err := c.Route(nil)
	if err != nil {
		return Result{}, err
	}
	if len(got) != c.Want {
		return Result{}, fmt.Errorf("%s: the callback reaches %d routes, want %d", c.Name, len(got), c.Want)
	}
	var failed error
	var cpu time.Duration
	var n int
	r := testing.Benchmark(func(b *testing.B) {
		b.ReportAllocs()
		buf := make([]*routing.Route, 0, routesPerApp)
		start := cpuTime()
		for b.Loop() {
			if _, err := c.Route(buf); err != nil {
				failed = err
				b.FailNow()
			}
		}
		cpu, n = cpuTime()-start, b.N // the last (calibrated) run is the one reported
	})
	if n == 0 {
		n = 1
	}
	return Result{BenchmarkResult: r, CPUPerOp: cpu / time.Duration(n)}, failed
}

// Cases builds the cases on the two tables.
func Cases() ([]*Case, error) {
	plain, err := Table(false)
	if err != nil {
		return nil, err
	}
	filtered, err := Table(true)
	if err != nil {
		return nil, err
	}
	if plain.Len() != apps*routesPerApp || filtered.Len() != apps*routesPerApp {
		return nil, fmt.Errorf("tables have %d and %d routes", plain.Len(), filtered.Len())
	}
	c2c, _ := samples.Get("tencent-c2c-after-send")
	group, _ := samples.Get("tencent-group-after-send")
	// Of the 10 filtered C2C routes of app 42, the sample (a text message "red packet",
	// sent by jared, SendMsgResult 0, no "vip:" data) passes recipes[2] only: 2 of them.
	passing := 0
	for r := range filteredPerApp {
		if (42+r)%len(recipes) == 2 {
			passing++
		}
	}
	return []*Case{
		{Name: "C2C callback, 50 matching routes, table without filters (baseline)", Table: plain, Command: commandC2C, Body: c2c.Body, Want: c2cRoutesPerApp},
		{Name: "C2C callback, 50 matching routes of which 10 with filters", Table: filtered, Command: commandC2C, Body: c2c.Body,
			Want: c2cRoutesPerApp - filteredPerApp + passing},
		{Name: "Group callback, 50 matching routes without filters, filtered table", Table: filtered, Command: commandGroup, Body: group.Body,
			Want: routesPerApp - c2cRoutesPerApp},
	}, nil
}

func main() {
	rounds := flag.Int("rounds", 3, "measure each case this many times; the median is reported")
	testing.Init()
	flag.Parse()
	if err := run(*rounds); err != nil {
		fmt.Fprintln(os.Stderr, "filter bench:", err)
		os.Exit(1)
	}
}

func run(rounds int) error {
	cases, err := Cases()
	if err != nil {
		return err
	}
	fmt.Printf("Route filters: %d routes in %d apps, %d with filters; routing step per callback (lookup + filters), median of %d rounds\n\n",
		apps*routesPerApp, apps, apps*filteredPerApp, rounds)
	fmt.Println("| case | wall ns/callback | CPU ns/callback | allocs/callback | B/callback | CPU vs baseline |")
	fmt.Println("|---|---|---|---|---|---|")
	var base time.Duration
	for i, c := range cases {
		var rs []Result
		for range rounds {
			r, err := c.Measure()
			if err != nil {
				return err
			}
			rs = append(rs, r)
		}
		sort.Slice(rs, func(a, b int) bool { return rs[a].CPUPerOp < rs[b].CPUPerOp })
		r := rs[len(rs)/2]
		ns := float64(r.T.Nanoseconds()) / float64(r.N)
		if i == 0 {
			base = r.CPUPerOp
		}
		fmt.Printf("| %s | %.0f | %d | %d | %d | %+d ns |\n", c.Name, ns, r.CPUPerOp.Nanoseconds(), r.AllocsPerOp(), r.AllocedBytesPerOp(),
			(r.CPUPerOp - base).Nanoseconds())
	}
	return nil
}
