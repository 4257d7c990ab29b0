package dataplane

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// Limits of reading a receiver pod's spool figures.
const (
	// DefaultPendingReadTimeout bounds one read of a pod's /metrics.
	DefaultPendingReadTimeout = 2 * time.Second
	// MaxMetricsBytes is the most of a pod's /metrics answer that is read.
	MaxMetricsBytes = 4 << 20
	// pendingReadConcurrency is how many pods are read at once.
	pendingReadConcurrency = 8
	// metricSpoolDepth and metricSpoolBytes are the receiver's spool gauges (package spool).
	metricSpoolDepth = "callback_router_spool_depth"
	metricSpoolBytes = "callback_router_spool_bytes"
)

// SpoolReading is one pod's spool as read from its /metrics.
type SpoolReading struct {
	// Pending is the sum of callback_router_spool_depth over the pod's routes.
	Pending int64
	// Bytes is callback_router_spool_bytes: payloads, pending deliveries, dead letters.
	Bytes int64
}

// PendingReader reads receiver pods' spool figures.
type PendingReader interface {
	// Read returns the pod's figures, or why they could not be read.
	Read(ctx context.Context, pod *corev1.Pod) (SpoolReading, error)
}

// MetricsPendingReader reads a pod's figures from the receiver's /metrics on the pod's IP
// and the container port named "metrics" (--metrics-listen, MetricsPort in the pods the
// manager creates), the address a Prometheus scrape uses.
type MetricsPendingReader struct {
	// Client sends the requests; nil uses a client without keep-alives.
	Client *http.Client
	// Timeout bounds one read; DefaultPendingReadTimeout when zero.
	Timeout time.Duration
}

var defaultMetricsClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil}}

// PodMetricsAddress is host:port of a pod's metrics endpoint: its IP and its receiver
// container's port named "metrics".
func PodMetricsAddress(pod *corev1.Pod) (string, error) {
	if pod.Status.PodIP == "" {
		return "", errors.New("the pod has no IP yet")
	}
	for _, c := range pod.Spec.Containers {
		if c.Name != receiverContainer {
			continue
		}
		for _, p := range c.Ports {
			if p.Name == receiverMetricsPortName {
				return net.JoinHostPort(pod.Status.PodIP, strconv.Itoa(int(p.ContainerPort))), nil
			}
		}
	}
	return "", fmt.Errorf("the pod has no %q port in a container named %q", receiverMetricsPortName, receiverContainer)
}

// Read implements PendingReader.
func (m *MetricsPendingReader) Read(ctx context.Context, pod *corev1.Pod) (SpoolReading, error) {
	addr, err := PodMetricsAddress(pod)
	if err != nil {
		return SpoolReading{}, err
	}
	timeout := m.Timeout
	if timeout <= 0 {
		timeout = DefaultPendingReadTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return SpoolReading{}, err
	}
	cl := m.Client
	if cl == nil {
		cl = defaultMetricsClient
	}
	resp, err := cl.Do(req)
	if err != nil {
		return SpoolReading{}, fmt.Errorf("reading %s/metrics: %w", addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return SpoolReading{}, fmt.Errorf("reading %s/metrics: status %d", addr, resp.StatusCode)
	}
	return ParseSpoolMetrics(io.LimitReader(resp.Body, MaxMetricsBytes))
}

// ParseSpoolMetrics sums the spool gauges of a Prometheus text exposition. It fails when
// callback_router_spool_bytes is missing: the endpoint is not a receiver's.
func ParseSpoolMetrics(r io.Reader) (SpoolReading, error) {
	var out SpoolReading
	sawBytes := false
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		var name string
		switch {
		case strings.HasPrefix(line, metricSpoolDepth+"{"), strings.HasPrefix(line, metricSpoolDepth+" "):
			name = metricSpoolDepth
		case strings.HasPrefix(line, metricSpoolBytes+" "), strings.HasPrefix(line, metricSpoolBytes+"{"):
			name = metricSpoolBytes
		default:
			continue
		}
		// The value follows the labels: the first field after the closing brace, or after
		// the name when there are no labels. Label values may hold spaces, so cut there.
		rest := line[len(name):]
		if strings.HasPrefix(rest, "{") {
			i := strings.LastIndex(rest, "}")
			if i < 0 {
				return SpoolReading{}, fmt.Errorf("malformed metric line %q", line)
			}
			rest = rest[i+1:]
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			return SpoolReading{}, fmt.Errorf("malformed metric line %q", line)
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			return SpoolReading{}, fmt.Errorf("malformed metric line %q: %w", line, err)
		}
		if name == metricSpoolDepth {
			out.Pending += int64(v)
		} else {
			out.Bytes += int64(v)
			sawBytes = true
		}
	}
	if err := sc.Err(); err != nil {
		return SpoolReading{}, err
	}
	if !sawBytes {
		return SpoolReading{}, fmt.Errorf("no %s in the answer: not a receiver's metrics", metricSpoolBytes)
	}
	return out, nil
}

// podReading is a pod's reading or the error that prevented it.
type podReading struct {
	SpoolReading
	err error
}

// readPods reads every pod's figures, a few at a time.
func readPods(ctx context.Context, reader PendingReader, pods []*corev1.Pod) map[string]podReading {
	out := make(map[string]podReading, len(pods))
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, pendingReadConcurrency)
	for _, p := range pods {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			r, err := reader.Read(ctx, p)
			mu.Lock()
			out[p.Name] = podReading{SpoolReading: r, err: err}
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}
