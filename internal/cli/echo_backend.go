package cli

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/callback-router/callback-router/api/v1alpha1"
	"github.com/callback-router/callback-router/webhook/receiver"
)

func init() {
	register("echo-backend", "run a loopback backend that prints every callback it receives (quickstart)", runEchoBackend)
}

// Defaults of `callback-router echo-backend`.
const (
	// DefaultEchoListen is the backend address the examples route to.
	DefaultEchoListen = "127.0.0.1:9000"
	// MaxEchoBodyBytes caps the body printed per request.
	MaxEchoBodyBytes = 1 << 20
)

func runEchoBackend(args []string) error {
	fs := newFlagSet("echo-backend", "[--listen 127.0.0.1:9000] [--status 200] [--answer JSON] [--delay 0s]")
	listen := fs.String("listen", DefaultEchoListen, "address to listen on")
	status := fs.Int("status", http.StatusOK, "HTTP status of every answer")
	answer := fs.String("answer", "", "JSON body of every answer (default: the provider's allow envelope)")
	delay := fs.Duration("delay", 0, "wait this long before answering (to try timeouts and failurePolicy)")
	quiet := fs.Bool("quiet", false, "print nothing per request (the load benchmark's backend)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var mu sync.Mutex // one request printed at a time
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, MaxEchoBodyBytes))
		if !*quiet {
			printRequest(&mu, r, body)
		}
		if *delay > 0 {
			select {
			case <-time.After(*delay):
			case <-r.Context().Done():
				return
			}
		}
		out := []byte(*answer)
		if *answer == "" {
			out = receiver.OKEnvelope(v1alpha1.Provider(r.Header.Get("X-Callback-Provider")))
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(*status)
		_, _ = w.Write(out) //nolint:gosec // G705 false positive: a fixed JSON envelope or --answer, not request data
	})
	fmt.Fprintf(os.Stderr, "echo-backend listening on %s\n", *listen)
	srv := receiver.NewHTTPServer(h, receiver.ServerConfig{})
	srv.Addr = *listen
	err := srv.ListenAndServe()
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// printRequest prints one callback: time, request line, X-Callback-* headers and body.
func printRequest(mu *sync.Mutex, r *http.Request, body []byte) {
	mu.Lock()
	defer mu.Unlock()
	fmt.Printf("%s %s %s\n", time.Now().Format(time.RFC3339Nano), r.Method, r.URL.RequestURI())
	var keys []string
	for k := range r.Header {
		if strings.HasPrefix(k, "X-Callback-") {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Printf("  %s: %s\n", k, r.Header.Get(k))
	}
	fmt.Printf("  body: %s\n\n", body)
}
