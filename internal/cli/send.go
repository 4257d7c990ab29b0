package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/callback-router/callback-router/api/v1alpha1"
	"github.com/callback-router/callback-router/webhook/callback"
	"github.com/callback-router/callback-router/webhook/catalog"
	"github.com/callback-router/callback-router/webhook/routing"
	"github.com/callback-router/callback-router/webhook/samples"
)

func init() {
	register("send", "send a sample callback to a receiver and print the answer", runSend)
}

// Defaults of `callback-router send`.
const (
	// DefaultSendURL is the receiver that `make run` starts.
	DefaultSendURL = "http://127.0.0.1:8080"
	// DefaultSendTencentApp is the SDKAppID of the examples.
	DefaultSendTencentApp = "1400000001"
	// DefaultSendOpenIMApp is the OpenIM app name of the examples.
	DefaultSendOpenIMApp = "prod"
	// DefaultSendTimeout bounds the whole exchange.
	DefaultSendTimeout = 10 * time.Second
	// MaxSendAnswerBytes caps how much of the answer is printed.
	MaxSendAnswerBytes = 1 << 20
)

// sendOptions are the settings of one `send`.
type sendOptions struct {
	url, provider, app, command, sample, bodyFile string
	token, requestTime, basicAuth                 string
	// routes and callbackApp: take provider, app ID and credentials from a CallbackApp.
	routes, callbackApp string
	timeout             time.Duration
	list, verbose       bool
}

func runSend(args []string) error {
	fs := newFlagSet("send", "[--url URL] [--provider TencentIM|OpenIM] [--command CMD] [--token TOKEN] ...")
	var o sendOptions
	fs.StringVar(&o.url, "url", DefaultSendURL, "receiver base URL (the /tencent or /openim/<app>/<command> path is added when the URL has no path)")
	fs.StringVar(&o.provider, "provider", string(v1alpha1.ProviderTencentIM), "TencentIM or OpenIM (default TencentIM, or OpenIM for an OpenIM --command)")
	fs.StringVar(&o.app, "app", "", "SDKAppID (TencentIM, default "+DefaultSendTencentApp+") or app name (OpenIM, default "+DefaultSendOpenIMApp+")")
	fs.StringVar(&o.command, "command", "", "callback command (default: the sample's own); each command of --list has a realistic sample body; any other command works too (a typo gets a did-you-mean), with a sample whose command field is rewritten")
	fs.StringVar(&o.sample, "sample", "", "sample name (see --list; default: the sample of --command, else the provider's first)")
	fs.StringVar(&o.bodyFile, "body", "", "send this JSON file instead of a sample ('-' reads stdin)")
	fs.StringVar(&o.token, "token", "", "TencentIM callback token: adds Sign=hex(sha256(token+RequestTime)) and RequestTime")
	fs.StringVar(&o.requestTime, "request-time", "", "RequestTime in Unix seconds (default: now)")
	fs.StringVar(&o.basicAuth, "basic-auth", "", "OpenIM user:password sent as Basic auth")
	fs.DurationVar(&o.timeout, "timeout", DefaultSendTimeout, "bound on the whole exchange")
	fs.StringVar(&o.routes, "routes", "", "a routes file (as the receiver's --routes) to read --callback-app from")
	fs.StringVar(&o.callbackApp, "callback-app", "", "[NAMESPACE/]NAME of a CallbackApp in --routes: send as its IM platform (its provider and appID), "+
		"signed with its token or Basic auth from the file's Secret unless --token or --basic-auth is given")
	fs.BoolVar(&o.list, "list", false, "list every command of the catalogue (of --provider, when given) with its kind, idempotency key, answer fields and sample, and exit")
	fs.BoolVar(&o.verbose, "v", false, "print the request too")
	if err := fs.Parse(args); err != nil {
		return err
	}
	providerSet := false
	fs.Visit(func(f *flag.Flag) { providerSet = providerSet || f.Name == "provider" })
	if o.list {
		only := v1alpha1.Provider("")
		if providerSet {
			only = v1alpha1.Provider(o.provider)
		}
		return listCommands(os.Stdout, only)
	}
	if err := o.fromCallbackApp(); err != nil {
		return err
	}
	if note := resolveCommand(&o, providerSet || o.callbackApp != ""); note != "" {
		fmt.Fprintln(os.Stderr, note)
	}
	// The timeout starts once the request is built: --body - may be typed by hand.
	req, err := buildSendRequest(context.Background(), &o, time.Now())
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(req.Context(), o.timeout)
	defer cancel()
	req = req.WithContext(ctx)
	if o.verbose {
		fmt.Fprintf(os.Stderr, "> %s %s\n", req.Method, req.URL.Redacted())
		for k, v := range req.Header {
			if k != "Authorization" {
				fmt.Fprintf(os.Stderr, "> %s: %s\n", k, strings.Join(v, ", "))
			}
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("sending to %s: %w", req.URL.Redacted(), err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxSendAnswerBytes))
	if err != nil {
		return fmt.Errorf("reading the answer: %w", err)
	}
	fmt.Printf("%s %s\n%s\n", resp.Proto, resp.Status, bytes.TrimSpace(body))
	if resp.StatusCode >= 400 {
		return fmt.Errorf("the receiver answered %s", resp.Status)
	}
	return nil
}

// resolveCommand picks the provider of an OpenIM --command when --provider was not given,
// and returns a note (with a did-you-mean) when the provider is not known to send --command.
func resolveCommand(o *sendOptions, providerSet bool) string {
	if o.command == "" {
		return ""
	}
	if !providerSet {
		if _, ok := catalog.Lookup(v1alpha1.ProviderOpenIM, o.command); ok {
			o.provider = string(v1alpha1.ProviderOpenIM)
		}
	}
	p := v1alpha1.Provider(o.provider)
	if u := catalog.FindUnknown(p, []string{o.command}); len(u) > 0 {
		return fmt.Sprintf("note: %s is not known to send %s; sending it anyway", p, u[0])
	}
	return ""
}

// maxListedAnswerFields is how many answer fields `send --list` names before "and N more".
const maxListedAnswerFields = 4

// listCommands prints the command catalogue of one provider, or of both when p is "".
func listCommands(out io.Writer, p v1alpha1.Provider) error {
	if p != "" && p != v1alpha1.ProviderTencentIM && p != v1alpha1.ProviderOpenIM {
		return fmt.Errorf("--provider must be TencentIM or OpenIM, not %q", p)
	}
	sampleOf := map[v1alpha1.Provider]map[string]string{}
	for _, pr := range catalog.Providers() {
		sampleOf[pr] = map[string]string{}
		for _, c := range catalog.Commands(pr) {
			if s, exact := samples.ForCommand(pr, c.Name); exact {
				sampleOf[pr][c.Name] = s.Name
			}
		}
	}
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "PROVIDER\tKIND\tCOMMAND\tID KEY\tSAMPLE\tANSWER MAY CARRY")
	for _, pr := range catalog.Providers() {
		if p != "" && pr != p {
			continue
		}
		for _, c := range catalog.Commands(pr) {
			answer := "-"
			switch {
			case len(c.AnswerFields) > maxListedAnswerFields:
				answer = fmt.Sprintf("allow/reject, %s and %d more", strings.Join(c.AnswerFields[:maxListedAnswerFields], ","), len(c.AnswerFields)-maxListedAnswerFields)
			case len(c.AnswerFields) > 0:
				answer = "allow/reject, " + strings.Join(c.AnswerFields, ",")
			case c.Answered():
				answer = "allow/reject"
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", pr, c.Kind, c.Name, c.IDKey, sampleOf[pr][c.Name], answer)
		}
	}
	fmt.Fprintf(w, "\nIn a route, %s and %s select every before- or after-callback of the app's provider.\n", catalog.SelectBefore, catalog.SelectAfter)
	return w.Flush()
}

// buildSendRequest builds the signed callback request the IM platform would send.
func buildSendRequest(ctx context.Context, o *sendOptions, now time.Time) (*http.Request, error) {
	p := v1alpha1.Provider(o.provider)
	if p != v1alpha1.ProviderTencentIM && p != v1alpha1.ProviderOpenIM {
		return nil, fmt.Errorf("--provider must be TencentIM or OpenIM, not %q", o.provider)
	}
	var s samples.Sample
	switch {
	case o.sample != "":
		var ok bool
		if s, ok = samples.Get(o.sample); !ok {
			return nil, fmt.Errorf("no sample %q (see --list)", o.sample)
		}
		if s.Provider != p {
			return nil, fmt.Errorf("sample %s is a %s callback, not %s", s.Name, s.Provider, p)
		}
	default:
		s, _ = samples.ForCommand(p, o.command)
	}
	body, command := s.Body, s.Command
	if o.bodyFile != "" {
		var err error
		if o.bodyFile == "-" {
			body, err = io.ReadAll(io.LimitReader(os.Stdin, MaxSendAnswerBytes))
		} else {
			body, err = os.ReadFile(o.bodyFile)
		}
		if err != nil {
			return nil, fmt.Errorf("reading --body: %w", err)
		}
	}
	if o.command != "" && o.command != command {
		command = o.command
		if o.bodyFile == "" {
			var err error
			if body, err = rewriteCommand(p, body, command); err != nil {
				return nil, err
			}
		}
	}
	app := o.app
	if app == "" {
		app = DefaultSendTencentApp
		if p == v1alpha1.ProviderOpenIM {
			app = DefaultSendOpenIMApp
		}
	}
	u, err := url.Parse(o.url)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("--url %q is not an absolute URL", o.url)
	}
	withPath := u.Path == "" || u.Path == "/"
	if p == v1alpha1.ProviderTencentIM {
		if withPath {
			u.Path = "/tencent"
		}
		q := url.Values{}
		q.Set("SdkAppid", app)
		q.Set("CallbackCommand", command)
		q.Set("contenttype", "json")
		q.Set("ClientIP", "127.0.0.1")
		q.Set("OptPlatform", "RESTAPI")
		if o.token != "" {
			rt := o.requestTime
			if rt == "" {
				rt = strconv.FormatInt(now.Unix(), 10)
			}
			q.Set("RequestTime", rt)
			q.Set("Sign", callback.TencentSign(o.token, rt))
		}
		u.RawQuery = q.Encode()
	} else {
		if withPath {
			u.Path = "/openim/" + app
		}
		u.Path = strings.TrimSuffix(u.Path, "/") + "/" + command
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("building the request: %w", err)
	}
	if p == v1alpha1.ProviderOpenIM {
		req.Header.Set("Content-Type", "application/json; charset=utf-8")
		req.Header.Set("operationID", strconv.FormatInt(now.UnixMilli(), 10))
		if o.basicAuth != "" {
			user, pass, _ := strings.Cut(o.basicAuth, ":")
			req.SetBasicAuth(user, pass)
		}
	} else {
		req.Header.Set("Content-Type", "application/json")
	}
	return req, nil
}

// fromCallbackApp fills provider, app and credentials from --callback-app in --routes.
func (o *sendOptions) fromCallbackApp() error {
	if o.callbackApp == "" {
		return nil
	}
	if o.routes == "" {
		return fmt.Errorf("--callback-app needs --routes FILE")
	}
	m, err := routing.LoadFile(o.routes)
	if err != nil {
		return err
	}
	ns, name, ok := strings.Cut(o.callbackApp, "/")
	if !ok {
		ns, name = routing.DefaultNamespace, o.callbackApp
	}
	for i := range m.Apps {
		a := &m.Apps[i]
		if a.Namespace != ns || a.Name != name {
			continue
		}
		o.provider, o.app = string(a.Spec.Provider), a.Spec.AppID
		v := a.Spec.Verify
		if v == nil {
			return nil
		}
		secret := func(ref, key string) string {
			if s := m.Secrets[ns+"/"+ref]; s != nil {
				return string(s.Data[key])
			}
			return ""
		}
		if ref := v.TokenSecretRef; ref != nil && o.token == "" {
			o.token = secret(ref.Name, ref.EffectiveTokenKey())
		}
		if ref := v.BasicAuthSecretRef; ref != nil && o.basicAuth == "" {
			o.basicAuth = secret(ref.Name, "username") + ":" + secret(ref.Name, "password")
		}
		return nil
	}
	return fmt.Errorf("no CallbackApp %s/%s in %s", ns, name, o.routes)
}

// rewriteCommand sets the body's command field (CallbackCommand or callbackCommand, and
// each Push event's) so the body matches the command sent.
func rewriteCommand(p v1alpha1.Provider, body []byte, command string) ([]byte, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, fmt.Errorf("sample is not a JSON object: %w", err)
	}
	c, _ := json.Marshal(command)
	field := "CallbackCommand"
	if p == v1alpha1.ProviderOpenIM {
		field = "callbackCommand"
	}
	if raw, ok := m["Events"]; ok {
		var events []map[string]json.RawMessage
		if err := json.Unmarshal(raw, &events); err == nil {
			for _, e := range events {
				e[field] = c
			}
			m["Events"], _ = json.Marshal(events)
		}
	} else {
		m[field] = c
	}
	return json.Marshal(m)
}
