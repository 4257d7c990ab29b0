// Command receiver is the receiver's load benchmark (`make bench`). In one run on this
// machine it measures:
//
//  1. closed-loop throughput and p50/p99 latency of the same signed Tencent IM callback
//     (a) sent straight to a loopback backend, (n) sent through nginx (Debian's package,
//     hack/bench/nginx.conf: one worker, upstream keep-alive, no verification) to that
//     backend, and (b) sent through the receiver, with Sign verification on, to a Sync
//     route on that backend; and the ratios b/a and b/n. The load generator is wrk
//     (Debian's package), one thread, in rounds that alternate the three paths;
//  2. p99 latency at a fixed 1,000 req/s (open loop, measured from each request's
//     scheduled start, so a stall is not hidden), direct and through the receiver: the
//     difference is the latency the receiver adds;
//  3. the receiver's RSS with 10,000 routes loaded.
//
// The backend and the receiver are separate processes of the callback-router binary
// (echo-backend --quiet and receiver), as in production. Everything listens on
// loopback; every load is bounded by duration and by request count.
package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/callback-router/callback-router/webhook/callback"
	"github.com/callback-router/callback-router/webhook/samples"
)

// Limits of one run. Every loop is bounded by count and time.
const (
	// maxRequestsPerRun caps the requests of one measurement whatever its duration.
	maxRequestsPerRun = 5_000_000
	// startupTimeout bounds waiting for a child process to answer.
	startupTimeout = 30 * time.Second
	// benchToken signs the callbacks.
	benchToken = "bench-token"
	// appID is the benchmark app.
	appID = "1400000001"
	// routeCount is the table size of the RSS measurement.
	routeCount = 10_000
)

var (
	bin         = flag.String("bin", "bin/callback-router", "callback-router binary (built with `make build`; built here when missing)")
	duration    = flag.Duration("duration", 5*time.Second, "duration of each closed-loop round")
	warmup      = flag.Duration("warmup", 2*time.Second, "warm-up before each measurement, not recorded")
	conns       = flag.Int("connections", 32, "concurrent keep-alive connections of the closed loop (wrk -c)")
	rounds      = flag.Int("rounds", 3, "closed-loop rounds, each running (a), (n) and (b) in turn; the ratios reported are the medians of the rounds' ratios, which tolerates load from other processes on a shared machine")
	nginxConf   = flag.String("nginx-conf", "hack/bench/nginx.conf", "nginx configuration template (the reference proxy)")
	nginxAddr   = flag.String("nginx-listen", "127.0.0.1:19904", "loopback address of nginx")
	recvProcs   = flag.Int("receiver-gomaxprocs", 0, "GOMAXPROCS of the receiver process (0: Go's default, the CPUs available); 1 compares it with nginx's single worker on equal terms")
	rate        = flag.Int("rate", 1000, "requests per second of the fixed-rate measurement")
	rateFor     = flag.Duration("rate-duration", 5*time.Second, "duration of each fixed-rate measurement")
	sampleName  = flag.String("sample", "tencent-c2c-after-send", "sample body sent")
	backendAddr = flag.String("backend-listen", "127.0.0.1:19901", "loopback address of the backend")
	recvAddr    = flag.String("receiver-listen", "127.0.0.1:19902", "loopback address of the receiver")
	rssAddr     = flag.String("rss-listen", "127.0.0.1:19903", "loopback address of the receiver with 10,000 routes")
)

func main() {
	flag.Parse()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// result is one measurement.
type result struct {
	name          string
	requests      int
	errors        int
	elapsed       time.Duration
	p50, p99, max time.Duration
}

func (r result) rps() float64 { return float64(r.requests) / r.elapsed.Seconds() }

func run() error {
	tmp, err := os.MkdirTemp("", "callback-router-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if _, err := os.Stat(*bin); err != nil {
		*bin = filepath.Join(tmp, "callback-router")
		fmt.Fprintln(os.Stderr, "building", *bin)
		if out, err := exec.Command("go", "build", "-o", *bin, ".").CombinedOutput(); err != nil {
			return fmt.Errorf("building: %w: %s", err, out)
		}
	}
	s, ok := samples.Get(*sampleName)
	if !ok {
		return fmt.Errorf("no sample %q", *sampleName)
	}

	backend, err := start(tmp, "backend", *bin, "echo-backend", "--quiet", "--listen", *backendAddr)
	if err != nil {
		return err
	}
	defer backend.stop()
	routes := filepath.Join(tmp, "routes.yaml")
	if err := os.WriteFile(routes, []byte(benchRoutes("http://"+*backendAddr)), 0o600); err != nil {
		return err
	}
	var recvEnv []string
	if *recvProcs > 0 {
		recvEnv = []string{"GOMAXPROCS=" + strconv.Itoa(*recvProcs)}
	}
	recv, err := startEnv(tmp, "receiver", recvEnv, *bin, "receiver", "--routes", routes, "--listen", *recvAddr,
		"--spool-dir", filepath.Join(tmp, "spool"), "--drain-delay", "0s")
	if err != nil {
		return err
	}
	defer recv.stop()
	for _, c := range []*child{backend, recv} {
		if err := c.waitReady(); err != nil {
			return err
		}
	}

	rt := strconv.FormatInt(time.Now().Unix(), 10)
	query := "SdkAppid=" + appID + "&CallbackCommand=C2C.CallbackBeforeSendMsg&contenttype=json&ClientIP=203.0.113.7&OptPlatform=iOS" +
		"&RequestTime=" + rt + "&Sign=" + callback.TencentSign(benchToken, rt)
	direct := "http://" + *backendAddr + "/moderate?" + query
	through := "http://" + *recvAddr + "/tencent?" + query

	ngx, err := startNginx(tmp, *nginxConf, *nginxAddr, *backendAddr)
	if err != nil {
		return err
	}
	defer ngx.stop()
	viaNginx := "http://" + *nginxAddr + "/tencent?" + query

	// Check every path answers 200 with a JSON body before measuring.
	for _, u := range []string{direct, viaNginx, through} {
		if err := probe(u, s.Body); err != nil {
			return err
		}
	}
	script := filepath.Join(tmp, "post.lua")
	if err := os.WriteFile(script, []byte(wrkScript(s.Body)), 0o600); err != nil {
		return err
	}

	fmt.Fprintf(os.Stderr, "closed loop (wrk, 1 thread): %d connections, %d rounds of %s per path (each after %s warm-up)\n", *conns, *rounds, *duration, *warmup)
	cpu := func(c *child) time.Duration { d, _ := cpuOfTree(c.cmd.Process.Pid); return d }
	paths := []struct {
		name, url string
		proxy     *child // the proxy's process, nil for direct
	}{
		{"(a) direct to backend", direct, nil},
		{"(n) through nginx, no verification", viaNginx, ngx},
		{"(b) through receiver, Sign verified", through, recv},
	}
	results := make([][]result, len(paths))
	var cpuGen, cpuBackend, cpuProxy [3]time.Duration
	var sentAll [3]int // requests of the warm-ups and measurements, per path
	var ratiosA, ratiosN []float64
	for range *rounds {
		var round [3]result
		for i, p := range paths {
			b0 := cpu(backend)
			var p0 time.Duration
			if p.proxy != nil {
				p0 = cpu(p.proxy)
			}
			r, genCPU, sent, err := wrkLoop(p.name, p.url, script)
			if err != nil {
				return err
			}
			sentAll[i] += sent
			cpuGen[i] += genCPU
			cpuBackend[i] += cpu(backend) - b0
			if p.proxy != nil {
				cpuProxy[i] += cpu(p.proxy) - p0
			}
			round[i] = r
			results[i] = append(results[i], r)
		}
		ra, rn := round[2].rps()/round[0].rps(), round[2].rps()/round[1].rps()
		ratiosA, ratiosN = append(ratiosA, ra), append(ratiosN, rn)
		fmt.Fprintf(os.Stderr, "round: direct %.0f, nginx %.0f, receiver %.0f req/s; receiver/direct %.2f, receiver/nginx %.2f, nginx/direct %.2f\n",
			round[0].rps(), round[1].rps(), round[2].rps(), ra, rn, round[1].rps()/round[0].rps())
	}
	ratio, ratioN := median(ratiosA), median(ratiosN)
	a, n, b := merge(results[0]), merge(results[1]), merge(results[2])
	perReq := func(d time.Duration, n int) string {
		return fmt.Sprintf("%.1f µs", float64(d.Microseconds())/float64(n))
	}
	var cpuLines []string
	for i := range paths {
		proxy := "-"
		if i > 0 {
			proxy = perReq(cpuProxy[i], sentAll[i])
		}
		cpuLines = append(cpuLines, fmt.Sprintf("| %s | %s | %s | %s |", paths[i].name, perReq(cpuGen[i], sentAll[i]), perReq(cpuBackend[i], sentAll[i]), proxy))
	}
	fmt.Fprintf(os.Stderr, "fixed rate: %d req/s for %s each\n", *rate, *rateFor)
	ra := fixedRate("(a) direct, 1,000 req/s", direct, s.Body)
	rb := fixedRate("(b) receiver, 1,000 req/s", through, s.Body)
	recvRSS, _ := rssOf(recv.cmd.Process.Pid)
	recv.stop()

	rss, err := measureRSS(tmp)
	if err != nil {
		return err
	}

	fmt.Printf("\nMachine: %d CPUs (GOMAXPROCS %d), %s/%s, %s\n", runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.GOOS, runtime.GOARCH, runtime.Version())
	fmt.Printf("Sample: %s (%d bytes), Sync route, Sign verified; receiver GOMAXPROCS %s; load average at the end %s\n\n",
		s.Name, len(s.Body), procsLabel(*recvProcs), loadAverage())
	fmt.Println("| measurement | requests | errors | req/s | p50 | p99 | max |")
	fmt.Println("|---|---|---|---|---|---|---|")
	for _, r := range []result{a, n, b, ra, rb} {
		fmt.Printf("| %s | %d | %d | %.0f | %s | %s | %s |\n", r.name, r.requests, r.errors, r.rps(), ms(r.p50), ms(r.p99), ms(r.max))
	}
	fmt.Println("\nCPU time per request (closed loop, warm-ups included; /proc ticks of 10 ms):")
	fmt.Println("\n| path | load generator (wrk) | backend | proxy (nginx or receiver) |")
	fmt.Println("|---|---|---|---|")
	for _, l := range cpuLines {
		fmt.Println(l)
	}
	fmt.Printf("\nratio receiver/direct (closed loop req/s, median of %d rounds %.2f): %.2f (target >= 0.60)\n", len(ratiosA), sorted(ratiosA), ratio)
	fmt.Printf("ratio receiver/nginx (closed loop req/s, median of %d rounds %.2f): %.2f (target >= 1.00)\n", len(ratiosN), sorted(ratiosN), ratioN)
	fmt.Printf("p99 added at %d req/s: %s (target <= 2 ms)\n", *rate, ms(rb.p99-ra.p99))
	fmt.Printf("receiver RSS after the load runs (1 route): %.1f MiB\n", float64(recvRSS)/(1<<20))
	fmt.Printf("receiver RSS with %d routes loaded: %.1f MiB (target <= 64 MiB)\n", routeCount, float64(rss)/(1<<20))
	return nil
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond)) }

func benchRoutes(backend string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Secret
metadata: {name: tok, namespace: bench}
stringData: {token: %s}
---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackApp
metadata: {name: chat, namespace: bench}
spec:
  provider: TencentIM
  appID: "%s"
  receiverRef: {name: default}
  verify: {tokenSecretRef: {name: tok}}
---
apiVersion: callbacks.callback-router.dev/v1alpha1
kind: CallbackRoute
metadata: {name: moderation, namespace: bench}
spec:
  appRef: {name: chat}
  commands: [C2C.CallbackBeforeSendMsg]
  mode: Sync
  backend: {url: "%s", path: /moderate, timeout: 1500ms}
`, benchToken, appID, backend)
}

// child is a callback-router process.
type child struct {
	name, addr string
	cmd        *exec.Cmd
	log        *os.File
	done       chan struct{}
}

func start(dir, name, bin string, args ...string) (*child, error) {
	return startEnv(dir, name, nil, bin, args...)
}

// startEnv starts a child with env added to this process's environment.
func startEnv(dir, name string, env []string, bin string, args ...string) (*child, error) {
	log, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	if len(env) > 0 {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	addr := ""
	for i, a := range args {
		if a == "--listen" && i+1 < len(args) {
			addr = args[i+1]
		}
	}
	c := &child{name: name, addr: addr, cmd: cmd, log: log, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(c.done) }()
	return c, nil
}

// waitReady polls the child until it answers HTTP (readyz for the receiver).
func (c *child) waitReady() error {
	deadline := time.Now().Add(startupTimeout)
	for time.Now().Before(deadline) {
		select {
		case <-c.done:
			b, _ := os.ReadFile(c.log.Name())
			return fmt.Errorf("%s exited: %s", c.name, b)
		default:
		}
		resp, err := http.Get("http://" + c.addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if c.name != "receiver" && c.name != "rss" || resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s not ready after %s", c.name, startupTimeout)
}

// stop ends the child with SIGTERM, then SIGKILL after 10s; idempotent.
func (c *child) stop() {
	select {
	case <-c.done:
		return
	default:
	}
	_ = c.cmd.Process.Signal(os.Interrupt)
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
	c.log.Close()
}

func newClient(n int) *http.Client {
	return &http.Client{Transport: &http.Transport{
		MaxIdleConns: n, MaxIdleConnsPerHost: n, MaxConnsPerHost: n,
		DisableCompression: true, IdleConnTimeout: time.Minute,
	}, Timeout: 10 * time.Second}
}

func probe(u string, body []byte) error {
	resp, err := newClient(1).Post(u, "application/json", bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("probing %s: %w", u, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.HasPrefix(b, []byte("{")) {
		return fmt.Errorf("probing %s: %d %s", u, resp.StatusCode, b)
	}
	return nil
}

func send(c *http.Client, u string, body []byte) bool {
	resp, err := c.Post(u, "application/json", bytes.NewReader(body))
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode == 200
}

// wrkScript is wrk's Lua script: POST the sample body as JSON.
func wrkScript(body []byte) string {
	return fmt.Sprintf("wrk.method = \"POST\"\nwrk.body = %s\nwrk.headers[\"Content-Type\"] = \"application/json\"\n", luaString(body))
}

// luaString quotes b as a Lua string literal (decimal escapes for anything unusual).
func luaString(b []byte) string {
	var sb strings.Builder
	sb.WriteByte('"')
	for _, c := range b {
		if c >= 0x20 && c < 0x7f && c != '"' && c != '\\' {
			sb.WriteByte(c)
		} else {
			fmt.Fprintf(&sb, "\\%03d", c)
		}
	}
	sb.WriteByte('"')
	return sb.String()
}

// wrkLoop runs wrk (1 thread, *conns connections) against u: a warm-up run, not
// recorded, then a measured one. It returns the measured run, wrk's own CPU time, and
// the requests of both runs (the denominator of the processes' CPU per request, since
// their CPU is read around both).
func wrkLoop(name, u, script string) (result, time.Duration, int, error) {
	run := func(d time.Duration) (string, time.Duration, error) {
		cmd := exec.Command("wrk", "-t1", "-c"+strconv.Itoa(*conns), "-d"+strconv.Itoa(int(d.Round(time.Second)/time.Second))+"s",
			"--timeout", "5s", "--latency", "-s", script, u)
		out, err := cmd.CombinedOutput()
		if err != nil {
			return "", 0, fmt.Errorf("wrk %s: %w: %s", u, err, out)
		}
		return string(out), cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime(), nil
	}
	wout, wcpu, err := run(max(*warmup, time.Second))
	if err != nil {
		return result{}, 0, 0, err
	}
	warm, err := parseWrk(name, wout)
	if err != nil {
		return result{}, 0, 0, err
	}
	out, cpu, err := run(max(*duration, time.Second))
	if err != nil {
		return result{}, 0, 0, err
	}
	r, err := parseWrk(name, out)
	return r, cpu + wcpu, warm.requests + r.requests, err
}

var (
	wrkRequests = regexp.MustCompile(`(\d+) requests in ([0-9.]+)(us|ms|s|m)`)
	wrkLatency  = regexp.MustCompile(`(?m)^\s+(50|99)%\s+([0-9.]+)(us|ms|s)`)
	wrkMax      = regexp.MustCompile(`(?m)^\s+Latency\s+\S+\s+\S+\s+([0-9.]+)(us|ms|s)`)
	wrkNon2xx   = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
	wrkSocket   = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
)

func wrkDuration(v, unit string) time.Duration {
	f, _ := strconv.ParseFloat(v, 64)
	switch unit {
	case "us":
		return time.Duration(f * float64(time.Microsecond))
	case "ms":
		return time.Duration(f * float64(time.Millisecond))
	case "m":
		return time.Duration(f * float64(time.Minute))
	}
	return time.Duration(f * float64(time.Second))
}

// parseWrk reads wrk's summary (with --latency).
func parseWrk(name, out string) (result, error) {
	r := result{name: name}
	m := wrkRequests.FindStringSubmatch(out)
	if m == nil {
		return r, fmt.Errorf("no request count in wrk's output: %s", out)
	}
	r.requests, _ = strconv.Atoi(m[1])
	r.elapsed = wrkDuration(m[2], m[3])
	for _, l := range wrkLatency.FindAllStringSubmatch(out, -1) {
		if l[1] == "50" {
			r.p50 = wrkDuration(l[2], l[3])
		} else {
			r.p99 = wrkDuration(l[2], l[3])
		}
	}
	if m := wrkMax.FindStringSubmatch(out); m != nil {
		r.max = wrkDuration(m[1], m[2])
	}
	if m := wrkNon2xx.FindStringSubmatch(out); m != nil {
		r.errors, _ = strconv.Atoi(m[1])
	}
	if m := wrkSocket.FindStringSubmatch(out); m != nil {
		for _, v := range m[1:] {
			n, _ := strconv.Atoi(v)
			r.errors += n
		}
	}
	return r, nil
}

// startNginx renders the nginx configuration template into dir and starts Debian's nginx
// on it (master and one worker, in the foreground), waiting until it answers.
func startNginx(dir, template, listen, backend string) (*child, error) {
	nginx, err := exec.LookPath("nginx")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/nginx"); serr != nil {
			return nil, fmt.Errorf("nginx is needed as the reference proxy (apt-get install nginx): %w", err)
		}
		nginx = "/usr/sbin/nginx"
	}
	if _, err := exec.LookPath("wrk"); err != nil {
		return nil, fmt.Errorf("wrk is the load generator (apt-get install wrk): %w", err)
	}
	tpl, err := os.ReadFile(template)
	if err != nil {
		return nil, err
	}
	prefix := filepath.Join(dir, "nginx")
	if err := os.MkdirAll(prefix, 0o755); err != nil {
		return nil, err
	}
	conf := strings.NewReplacer("{{PREFIX}}", prefix, "{{LISTEN}}", listen, "{{BACKEND}}", backend).Replace(string(tpl))
	confPath := filepath.Join(prefix, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	c, err := start(dir, "nginx", nginx, "-p", prefix, "-c", confPath, "-e", filepath.Join(prefix, "error.log"))
	if err != nil {
		return nil, err
	}
	c.addr = listen
	deadline := time.Now().Add(startupTimeout)
	for {
		conn, err := net.DialTimeout("tcp", listen, time.Second)
		if err == nil {
			conn.Close()
			return c, nil
		}
		select {
		case <-c.done:
			b, _ := os.ReadFile(c.log.Name())
			return nil, fmt.Errorf("nginx exited: %s", b)
		default:
		}
		if time.Now().After(deadline) {
			c.stop()
			return nil, fmt.Errorf("nginx not listening on %s after %s", listen, startupTimeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func procsLabel(n int) string {
	if n <= 0 {
		return "default (" + strconv.Itoa(runtime.NumCPU()) + ")"
	}
	return strconv.Itoa(n)
}

// loadAverage is /proc/loadavg's first three fields: how busy the shared machine was.
func loadAverage() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func median(v []float64) float64 { s := sorted(v); return s[len(s)/2] }

func sorted(v []float64) []float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s
}

// cpuOfTree is cpuOf of a process and its direct children (nginx's master and worker).
func cpuOfTree(pid int) (time.Duration, error) {
	total, err := cpuOf(pid)
	if err != nil {
		return 0, err
	}
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	for _, f := range strings.Fields(string(b)) {
		if c, err := strconv.Atoi(f); err == nil {
			if d, err := cpuOf(c); err == nil {
				total += d
			}
		}
	}
	return total, nil
}

// fixedRate sends at *rate per second for *rateFor after a one-second warm-up at the same
// rate. A pool of workers takes the scheduled send times; each request is timed from its
// scheduled time (open loop: a slow answer or a busy pool shows up as latency instead of
// silently lowering the rate).
func fixedRate(name, u string, body []byte) result {
	const workers = 64
	c := newClient(workers)
	interval := time.Second / time.Duration(*rate)
	warm := *rate
	n := int(rateFor.Seconds() * float64(*rate))
	if n > maxRequestsPerRun {
		n = maxRequestsPerRun
	}
	type slot struct {
		at     time.Time
		record int // index into lat, -1 during warm-up
	}
	lat := make([]time.Duration, n)
	failed := make([]bool, n)
	slots := make(chan slot, warm+n)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for s := range slots {
				ok := send(c, u, body)
				if s.record >= 0 {
					lat[s.record] = time.Since(s.at)
					failed[s.record] = !ok
				}
			}
		}()
	}
	start := time.Now()
	for i := range warm + n {
		at := start.Add(time.Duration(i) * interval)
		time.Sleep(time.Until(at))
		rec := i - warm
		if rec < 0 {
			rec = -1
		}
		slots <- slot{at, rec}
	}
	close(slots)
	wg.Wait()
	errs := 0
	for _, f := range failed {
		if f {
			errs++
		}
	}
	r := summarize(name, [][]time.Duration{lat}, []int{errs}, time.Since(start.Add(time.Duration(warm)*interval)))
	return r
}

// merge pools the rounds of one path: requests and time add up, percentiles are the
// rounds' medians.
func merge(rs []result) result {
	m := result{name: rs[0].name}
	p50, p99 := make([]time.Duration, 0, len(rs)), make([]time.Duration, 0, len(rs))
	for _, r := range rs {
		m.requests += r.requests
		m.errors += r.errors
		m.elapsed += r.elapsed
		p50, p99 = append(p50, r.p50), append(p99, r.p99)
		m.max = max(m.max, r.max)
	}
	sort.Slice(p50, func(i, j int) bool { return p50[i] < p50[j] })
	sort.Slice(p99, func(i, j int) bool { return p99[i] < p99[j] })
	m.p50, m.p99 = p50[len(p50)/2], p99[len(p99)/2]
	return m
}

func summarize(name string, lat [][]time.Duration, errs []int, elapsed time.Duration) result {
	var all []time.Duration
	r := result{name: name, elapsed: elapsed}
	for i := range lat {
		all = append(all, lat[i]...)
		r.errors += errs[i]
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	r.requests = len(all)
	if len(all) > 0 {
		r.p50 = all[len(all)*50/100]
		r.p99 = all[len(all)*99/100]
		r.max = all[len(all)-1]
	}
	return r
}

// measureRSS starts a receiver on 10,000 routes (1,000 apps, mixed Sync/Async, exact and
// prefix commands, 100 token Secrets), sends it a few callbacks, and reads its RSS.
func measureRSS(dir string) (int64, error) {
	manifests := rssManifests()
	routes := filepath.Join(dir, "routes-10k.yaml")
	if err := os.WriteFile(routes, []byte(manifests), 0o600); err != nil {
		return 0, err
	}
	c, err := start(dir, "rss", *bin, "receiver", "--routes", routes, "--listen", *rssAddr,
		"--spool-dir", filepath.Join(dir, "spool-rss"), "--drain-delay", "0s", "--zap-log-level", "error")
	if err != nil {
		return 0, err
	}
	defer c.stop()
	if err := c.waitReady(); err != nil {
		return 0, err
	}
	resp, err := http.Get("http://" + *rssAddr + "/metrics")
	if err != nil {
		return 0, err
	}
	m, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Contains(m, []byte(fmt.Sprintf("callback_router_table_routes %d", routeCount))) {
		return 0, errors.New("the 10,000-route receiver did not load every route")
	}
	// Exercise lookups of many apps (answers are 401: unsigned), then let the GC settle.
	cl := newClient(4)
	for i := 0; i < 2000; i++ {
		u := "http://" + *rssAddr + "/tencent?" + url.Values{"SdkAppid": {strconv.Itoa(1400000000 + i%1000)}, "CallbackCommand": {"Cmd7.X"}}.Encode()
		resp, err := cl.Post(u, "application/json", strings.NewReader(`{}`))
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	time.Sleep(time.Second)
	return rssOf(c.cmd.Process.Pid)
}

// cpuOf reads the user+system CPU time of a process from /proc (clock ticks of 10ms).
func cpuOf(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name, which is in parentheses and may hold spaces.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	if len(f) < 13 {
		return 0, errors.New("short /proc stat")
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond, nil
}

// rssOf reads VmRSS of a process from /proc.
func rssOf(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmRSS")
}

// rssManifests is the routes file of measureRSS: routeCount routes attached to
// routeCount/10 apps.
func rssManifests() string {
	var b strings.Builder
	for i := range 100 {
		fmt.Fprintf(&b, "---\napiVersion: v1\nkind: Secret\nmetadata: {name: tok%d, namespace: ns%d}\nstringData: {token: token-%d, previous: old-%d}\n", i, i%10, i, i)
	}
	// App j lives in ns<j%10>, whose Secret tok<j%100> it uses, and admits every namespace.
	for j := range routeCount / 10 {
		fmt.Fprintf(&b, "---\napiVersion: callbacks.callback-router.dev/v1alpha1\nkind: CallbackApp\nmetadata: {name: app%d, namespace: ns%d}\n"+
			"spec:\n  provider: TencentIM\n  appID: \"%d\"\n  receiverRef: {name: default}\n  allowedRoutes: [{namespaces: {from: All}}]\n"+
			"  verify: {tokenSecretRef: {name: tok%d, previousKey: previous}, sourceCIDRs: [\"10.%d.0.0/16\", \"127.0.0.0/8\"]}\n",
			j, j%10, 1400000000+j, j%100, j%250)
	}
	for i := range routeCount {
		j := i / 10
		mode, cmds := "Async", fmt.Sprintf(`[C2C.CallbackAfterSendMsg, "Group.*", "Cmd%d.*"]`, i)
		if i%10 == 0 {
			mode, cmds = "Sync", `[C2C.CallbackBeforeSendMsg]`
		}
		fmt.Fprintf(&b, "---\napiVersion: callbacks.callback-router.dev/v1alpha1\nkind: CallbackRoute\nmetadata: {name: route-%05d, namespace: ns%d}\n"+
			"spec:\n  appRef: {name: app%d, namespace: ns%d}\n  commands: %s\n  mode: %s\n  backend: {url: \"http://127.0.0.1:1\", path: /r%d}\n",
			i, (i%100)%10, j, j%10, cmds, mode, i)
	}
	return b.String()
}
