// Package callback holds what the receiver knows about one IM callback once it has been
// parsed: the provider, app, command, the raw body and query, and its idempotency key.
// The sync proxy and the async spool both forward a Callback with the same headers.
package callback

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"time"

	"github.com/callback-router/callback-router/api/v1alpha1"
)

// Headers set on every request to a backend.
const (
	HeaderProvider = "X-Callback-Provider"
	HeaderApp      = "X-Callback-App"
	HeaderCommand  = "X-Callback-Command"
	HeaderRoute    = "X-Callback-Route"
	HeaderAttempt  = "X-Callback-Attempt"
	HeaderID       = "X-Callback-Id"
	// HeaderReplay is "true" on a delivery replayed from the dead letters or the
	// retained delivered callbacks (admin API, CallbackReplay); absent otherwise.
	HeaderReplay = "X-Callback-Replay"
	// HeaderTraceParent is the W3C trace context of the delivery.
	HeaderTraceParent = "traceparent"
	// HeaderOperationID is OpenIM's trace ID header, forwarded as received (OpenIM
	// callbacks only; Callback.OperationID).
	HeaderOperationID = "operationID"
)

// Callback is one request from an IM platform.
type Callback struct {
	// ID is the idempotency key, identical on every retry and every replica.
	ID       string
	Provider v1alpha1.Provider
	AppID    string
	Command  string
	// RawQuery is the original query string; backends get BackendQuery of it.
	RawQuery string
	// Body is the request body, forwarded byte for byte.
	Body       []byte
	ReceivedAt time.Time
	// OrderKey is the callback's conversation (ConversationKey), set at the door when an
	// ordered Async route matched it, and stored with its ordered copies.
	OrderKey string
	// OperationID is OpenIM's operationID header (its trace ID), forwarded to backends
	// as HeaderOperationID; empty when the callback had none.
	OperationID string
	// TraceParent is the W3C traceparent of the callback's receive span (the caller's
	// trace continued, or a new one); stored with Async copies, so every attempt and
	// replay carries the same trace ID.
	TraceParent string
	// Replay marks a delivery replayed by an operator (X-Callback-Replay: true).
	Replay bool
}

// ContentTypeJSON is the Content-Type of every backend request.
const ContentTypeJSON = "application/json"

// VisitHeaders calls set with each header of a backend request for this callback: the
// JSON content type, the X-Callback-* headers and, when the callback has one, OpenIM's
// operationID. Sync (fasthttp) and Async (net/http)
// requests both get their headers here, so they cannot drift apart.
func (c *Callback) VisitHeaders(route string, attempt int, set func(key, value string)) {
	set("Content-Type", ContentTypeJSON)
	set(HeaderProvider, string(c.Provider))
	set(HeaderApp, c.AppID)
	set(HeaderCommand, c.Command)
	set(HeaderRoute, route)
	set(HeaderAttempt, strconv.Itoa(attempt))
	set(HeaderID, c.ID)
	if c.TraceParent != "" {
		set(HeaderTraceParent, c.TraceParent)
	}
	if c.OperationID != "" {
		set(HeaderOperationID, c.OperationID)
	}
	if c.Replay {
		set(HeaderReplay, "true")
	}
}

// TencentSign returns the Sign that Tencent Cloud IM puts on a callback URL:
// hex(sha256(token + requestTime)), lower case, where token is the app's callback token
// (set in the IM console) and requestTime is the RequestTime parameter, Unix seconds in
// decimal.
func TencentSign(token, requestTime string) string {
	sum := TencentSignSum(token, requestTime)
	return hex.EncodeToString(sum[:])
}

// TencentSignSum is TencentSign before the hex encoding. It does not allocate when token
// and requestTime are 256 bytes or less together, so a receiver can check every token of
// an app on each callback cheaply; compare the result in constant time.
func TencentSignSum(token, requestTime string) [sha256.Size]byte {
	var buf [256]byte
	return sha256.Sum256(append(append(buf[:0], token...), requestTime...))
}

// Target is one Async route's delivery settings, captured when the callback is
// acknowledged, so that a later change or deletion of the route never drops a callback
// that was already promised.
type Target struct {
	// Route is the route's namespace/name, sent as X-Callback-Route.
	Route string
	// URL is the full backend URL (base + path); BackendQuery of the callback's RawQuery is appended.
	URL            string
	Timeout        time.Duration
	MaxAttempts    int
	InitialBackoff time.Duration
	MaxBackoff     time.Duration
	// ForwardSignature keeps Tencent IM's Sign and RequestTime in the query sent to the
	// backend; by default they are left out (see BackendQuery).
	ForwardSignature bool
	// Replay marks a delivery an operator replayed or redrove: it is sent with
	// X-Callback-Replay: true.
	Replay bool
	// Ordered: copies with the same Callback.OrderKey are delivered one at a time, in
	// arrival order (the route's ordering: {key: Conversation}).
	Ordered bool
	// MaxConcurrency and MaxPerSecond are the route's delivery limits (0: the spool's
	// default concurrency; no rate limit). The spool applies the limits of the route's
	// most recently stored copy to all of its queue.
	MaxConcurrency int
	MaxPerSecond   int
}
