package receiver

import (
	"bytes"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/callback-router/callback-router/api/v1alpha1"
)

// providerOf is the provider whose callbacks a path receives: the one place that maps the
// receiver's paths to providers.
func providerOf(path []byte) (v1alpha1.Provider, bool) {
	switch {
	case string(path) == PathTencent || string(path) == PathTencent+"/":
		return v1alpha1.ProviderTencentIM, true
	case bytes.HasPrefix(path, []byte(PathOpenIMPrefix)):
		return v1alpha1.ProviderOpenIM, true
	}
	return "", false
}

// tencentParams are the query parameters Tencent IM sends. The receiver verifies and
// routes by some of them and backends read them all, so each must read the same to every
// query parser: a name may not be percent-encoded, and a repeated name must repeat its
// value.
var tencentParams = [...]string{"SdkAppid", "CallbackCommand", "Sign", "RequestTime", "contenttype", "ClientIP", "OptPlatform"}

// tencentQuery is what the receiver reads from a Tencent IM callback's query.
type tencentQuery struct {
	app, command, sign, requestTime string
}

// errAmbiguousQuery marks a query that query parsers could read differently.
var errAmbiguousQuery = errors.New("ambiguous query")

// parseTencentQuery reads a Tencent IM callback's query without building a url.Values
// map, refusing what another parser (the backend's) could read differently from the
// receiver:
//
//   - a name of tencentParams percent-encoded ("Sdk%41ppid"): net/url decodes names,
//     other parsers and the receiver's own routing might not;
//   - a name of tencentParams repeated with a different value: Go's Get reads the first,
//     many frameworks the last;
//   - a ';' (a separator to some old parsers, an error to net/url) or a malformed escape.
//
// A further '?' separates parameters as '&' does: Tencent appends "?SdkAppid=..." to the
// configured URL even when that already has a query ("/tencent?SdkAppid=X?SdkAppid=X&...").
// Backends get the query with that '?' turned into '&' (callback.BackendQuery), so they
// read what the receiver read.
func parseTencentQuery(raw string) (tencentQuery, error) {
	var q tencentQuery
	if strings.IndexByte(raw, ';') >= 0 {
		return q, fmt.Errorf("%w: ';' in the query", errAmbiguousQuery)
	}
	var seen [len(tencentParams)]bool
	var vals [len(tencentParams)]string
	for raw != "" {
		kv := raw
		if i := strings.IndexAny(raw, "&?"); i >= 0 {
			kv, raw = raw[:i], raw[i+1:]
		} else {
			raw = ""
		}
		k, v, _ := strings.Cut(kv, "=")
		if strings.ContainsAny(k, "%+") {
			dk, err := url.QueryUnescape(k)
			if err != nil {
				return q, fmt.Errorf("malformed query parameter name %q: %w", k, err)
			}
			for _, p := range tencentParams {
				if dk == p {
					return q, fmt.Errorf("%w: parameter name %s is encoded as %q", errAmbiguousQuery, p, k)
				}
			}
			continue
		}
		i := paramIndex(k)
		if i < 0 {
			continue
		}
		if strings.ContainsAny(v, "%+") {
			var err error
			if v, err = url.QueryUnescape(v); err != nil {
				return q, fmt.Errorf("malformed query parameter %s: %w", k, err)
			}
		}
		if seen[i] {
			if vals[i] != v {
				return q, fmt.Errorf("%w: parameter %s given twice with different values", errAmbiguousQuery, k)
			}
			continue
		}
		seen[i], vals[i] = true, v
	}
	q.app, q.command, q.sign, q.requestTime = vals[0], vals[1], vals[2], vals[3]
	return q, nil
}

func paramIndex(k string) int {
	for i, p := range tencentParams {
		if k == p {
			return i
		}
	}
	return -1
}

// parseOpenIMPath splits /openim/<appID>/<command>. A doubled slash (OpenIM configured
// with a trailing "/" in its URL) is tolerated.
func parseOpenIMPath(p string) (app, cmd string, ok bool) {
	rest := strings.TrimPrefix(p, PathOpenIMPrefix)
	app, cmd, found := strings.Cut(rest, "/")
	cmd = strings.TrimLeft(cmd, "/")
	if !found || app == "" || cmd == "" || strings.Contains(cmd, "/") {
		return "", "", false
	}
	return app, cmd, true
}

// controlByte returns the index of the first ASCII control byte (below 0x20, or DEL) in
// s, or -1. Such a byte cannot go into an HTTP header (X-Callback-App, -Command), so a
// callback naming one could be acknowledged and then never delivered.
func controlByte[S ~string | ~[]byte](s S) int {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f {
			return i
		}
	}
	return -1
}
