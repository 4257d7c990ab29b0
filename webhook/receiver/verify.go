package receiver

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/callback-router/callback-router/webhook/callback"
	"github.com/callback-router/callback-router/webhook/routing"
)

// Reasons a callback fails a route's verification, as logged and as the reason label of
// callback_router_verification_failures_total.
const (
	ReasonMissingSign      = "missing_sign"
	ReasonBadSign          = "bad_sign"
	ReasonBadRequestTime   = "bad_request_time"
	ReasonStaleRequestTime = "stale_request_time"
	ReasonMissingBasicAuth = "missing_basic_auth"
	ReasonBadBasicAuth     = "bad_basic_auth"
	ReasonSourceIP         = "source_ip"
)

// MaxXForwardedForHops bounds how many X-Forwarded-For entries are examined; a request
// whose client lies further left fails sourceCIDRs checks.
const MaxXForwardedForHops = 16

// tokenMemoSize is how many distinct tokens per app a request remembers the outcome of.
const tokenMemoSize = 16

// verifier holds what one request presents, parsed once, and the outcomes already
// computed, so that checking many routes of one app hashes each token at most once.
type verifier struct {
	x              *exchange
	now            time.Time
	app            *routing.App
	trustedProxies []netip.Prefix

	signRaw, requestTime string
	sign                 [sha256.Size]byte
	signParsed           bool // sign holds a well-formed Sign
	rt                   int64
	rtParsed             bool

	client    netip.Addr
	clientSet bool

	basicUser, basicPass string
	basicOK, basicSet    bool

	tokenMemo [tokenMemoSize]uint8 // 0 unknown, 1 matches, 2 does not
}

func (v *verifier) init(x *exchange, now time.Time, app *routing.App, trusted []netip.Prefix, sign, requestTime string) {
	v.x, v.now, v.app, v.trustedProxies = x, now, app, trusted
	v.signRaw, v.requestTime = sign, requestTime
	if len(sign) == 2*sha256.Size {
		if _, err := hex.Decode(v.sign[:], []byte(sign)); err == nil {
			v.signParsed = true
		}
	}
	if requestTime != "" {
		if t, err := strconv.ParseInt(requestTime, 10, 64); err == nil {
			v.rt, v.rtParsed = t, true
		}
	}
}

// selection is the outcome of checking a callback against its routes.
type selection struct {
	sync   *routing.Route   // the Sync route that answers, if any
	async  []*routing.Route // the Async routes that get a copy
	passed bool             // some route's checks passed (routed or not)
	// filtered: some selected route has a CEL filter to apply once the body is read.
	filtered bool
	// When none passed: the first reason, one other than source_ip preferred, and
	// whether every failure was source_ip.
	reason    string
	allSource bool
}

// fail notes that a route's checks failed for reason.
func (s *selection) fail(reason string) {
	if reason != ReasonSourceIP {
		s.allSource = false
		if s.reason == "" || s.reason == ReasonSourceIP {
			s.reason = reason
		}
	} else if s.reason == "" {
		s.reason = reason
	}
}

// selectRoutes checks the callback against the routes its command matches. Only the
// winning Sync candidate (exact beats prefix, a longer prefix a shorter one) may answer:
// if it fails its checks, its reason counts toward the 401/403 decision and no other Sync
// route answers in its place, so a verified exact route never falls through to a looser
// prefix route. Every Async route that passes gets a copy. When the command matches no
// route, the callback is acknowledged only if it passes some route of the app.
func (v *verifier) selectRoutes(app *routing.App, command string) selection {
	s := selection{allSource: true}
	match := app.Lookup(command)
	if match == nil {
		for _, rt := range app.Routes {
			if reason := v.check(rt); reason == "" {
				s.passed = true
				break
			} else {
				s.fail(reason)
			}
		}
		return s
	}
	if len(match.Sync) > 0 {
		rt := match.Sync[0]
		if reason := v.check(rt); reason == "" {
			s.sync, s.passed = rt, true
			s.filtered = rt.HasFilter()
		} else {
			s.fail(reason)
		}
	}
	for _, rt := range match.Async {
		if reason := v.check(rt); reason == "" {
			s.async, s.passed = append(s.async, rt), true
			s.filtered = s.filtered || rt.HasFilter()
		} else {
			s.fail(reason)
		}
	}
	return s
}

// check returns "" when the request passes the route's checks, else the reason.
func (v *verifier) check(rt *routing.Route) string {
	if len(rt.Prefixes) > 0 {
		ip := v.clientIP()
		ok := false
		for _, p := range rt.Prefixes {
			if p.Contains(ip) {
				ok = true
				break
			}
		}
		if !ok {
			return ReasonSourceIP
		}
	}
	if len(rt.TokenIdx) > 0 {
		if v.signRaw == "" || v.requestTime == "" {
			return ReasonMissingSign
		}
		if !v.rtParsed {
			return ReasonBadRequestTime
		}
		// Compared in whole seconds, without computing now-RequestTime: that difference,
		// its absolute value or a Duration of it would overflow for a huge RequestTime
		// and could wrap into the window.
		maxAge, n := int64(rt.MaxRequestAge/time.Second), v.now.Unix()
		if v.rt < n-maxAge || v.rt > n+maxAge {
			return ReasonStaleRequestTime
		}
		if !v.signParsed {
			return ReasonBadSign
		}
		ok := false
		for _, i := range rt.TokenIdx {
			if v.tokenMatches(i) {
				ok = true
				break
			}
		}
		if !ok {
			return ReasonBadSign
		}
	}
	if rt.BasicAuth != nil {
		if !v.basicSet {
			v.basicUser, v.basicPass, v.basicOK = v.x.basicAuth()
			v.basicSet = true
		}
		if !v.basicOK {
			return ReasonMissingBasicAuth
		}
		// Both compared in full, constant time, so timing reveals neither.
		u := subtle.ConstantTimeCompare([]byte(v.basicUser), []byte(rt.BasicAuth.Username))
		p := subtle.ConstantTimeCompare([]byte(v.basicPass), []byte(rt.BasicAuth.Password))
		if u&p != 1 {
			return ReasonBadBasicAuth
		}
	}
	return ""
}

// tokenMatches reports whether Sign = hex(sha256(token + RequestTime)) for the app's
// token i, comparing in constant time.
func (v *verifier) tokenMatches(i int) bool {
	if i < tokenMemoSize && v.tokenMemo[i] != 0 {
		return v.tokenMemo[i] == 1
	}
	sum := callback.TencentSignSum(v.app.Tokens[i], v.requestTime)
	ok := subtle.ConstantTimeCompare(sum[:], v.sign[:]) == 1
	if i < tokenMemoSize {
		v.tokenMemo[i] = 2
		if ok {
			v.tokenMemo[i] = 1
		}
	}
	return ok
}

// clientIP is the peer address, or, when the peer is a trusted proxy, the right-most
// X-Forwarded-For entry that is not itself a trusted proxy. X-Forwarded-For is ignored
// unless the peer is trusted, so a client cannot choose its own address. It fails closed:
// a malformed entry (garbage, "ip:port", empty) before an untrusted one is found, or more
// than MaxXForwardedForHops entries to walk, gives the zero Addr, which is in no prefix,
// never the address of a proxy.
func (v *verifier) clientIP() netip.Addr {
	if v.clientSet {
		return v.client
	}
	v.clientSet = true
	v.client = v.x.remoteIP() // the zero Addr, when unknown, is in no prefix
	if len(v.trustedProxies) == 0 || !trusted(v.trustedProxies, v.client) {
		return v.client
	}
	xff := v.x.forwardedFor()
	hops := 0
	for i := len(xff) - 1; i >= 0; i-- {
		list := xff[i]
		for more := true; more; {
			var entry string
			if j := strings.LastIndexByte(list, ','); j >= 0 {
				entry, list = list[j+1:], list[:j]
			} else {
				entry, more = list, false
			}
			if hops++; hops > MaxXForwardedForHops {
				v.client = netip.Addr{}
				return v.client
			}
			a, err := netip.ParseAddr(strings.TrimSpace(entry))
			if err != nil {
				v.client = netip.Addr{}
				return v.client
			}
			v.client = a.Unmap()
			if !trusted(v.trustedProxies, v.client) {
				return v.client
			}
		}
	}
	return v.client
}

func trusted(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
