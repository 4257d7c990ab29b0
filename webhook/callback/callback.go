// Package callback holds what the receiver knows about one IM callback once it has been
// parsed: the provider, app, command, the raw body and query, and its idempotency key.
// The sync proxy and the async spool both forward a Callback with the same headers.
package callback

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
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
	// RawQuery is the original query string, forwarded unchanged.
	RawQuery string
	// Body is the request body, forwarded byte for byte.
	Body       []byte
	ReceivedAt time.Time
	// OperationID is OpenIM's operationID header (its trace ID), forwarded to backends
	// as HeaderOperationID; empty when the callback had none.
	OperationID string
}

// SetHeaders sets the X-Callback-* headers, the JSON content type and, when the callback
// has one, OpenIM's operationID on a backend request.
func (c *Callback) SetHeaders(h http.Header, route string, attempt int) {
	h["Content-Type"] = []string{"application/json"}
	h[HeaderProvider] = []string{string(c.Provider)}
	h[HeaderApp] = []string{c.AppID}
	h[HeaderCommand] = []string{c.Command}
	h[HeaderRoute] = []string{route}
	h[HeaderAttempt] = []string{strconv.Itoa(attempt)}
	h[HeaderID] = []string{c.ID}
	if c.OperationID != "" {
		// Set as is, not canonicalized: the name OpenIM itself sends.
		h[HeaderOperationID] = []string{c.OperationID}
	}
}

// idFields are the body fields that identify a callback. Only these are decoded.
type idFields struct {
	MsgKey      string          `json:"MsgKey"`
	GroupID     string          `json:"GroupId"`
	MsgSeq      json.RawMessage `json:"MsgSeq"`
	ServerMsgID string          `json:"serverMsgID"`
	Events      []struct {
		PushID string `json:"PushID"`
	} `json:"Events"`
}

// ComputeID derives the idempotency key of a callback from its body, as the design says:
// Tencent C2C and official-account messages by MsgKey, group messages by GroupId+MsgSeq,
// push batches by their PushIDs (hashed when there are several), OpenIM messages by serverMsgID, anything else by a hash
// of the body. The command is part of the key, so a message's before- and after-callbacks
// (which share a MsgKey) get different keys.
func ComputeID(provider v1alpha1.Provider, command string, body []byte) string {
	var f idFields
	if json.Unmarshal(body, &f) == nil {
		var natural string
		switch {
		case provider == v1alpha1.ProviderOpenIM && f.ServerMsgID != "":
			natural = f.ServerMsgID
		case provider == v1alpha1.ProviderTencentIM && f.MsgKey != "":
			natural = f.MsgKey
		case provider == v1alpha1.ProviderTencentIM && f.GroupID != "" && len(f.MsgSeq) > 0:
			natural = f.GroupID + "_" + strings.Trim(string(f.MsgSeq), `"`)
		case provider == v1alpha1.ProviderTencentIM && len(f.Events) > 0 && f.Events[0].PushID != "":
			natural = f.Events[0].PushID
			if len(f.Events) > 1 {
				// A batch holds up to 100 events: keep the header short.
				h := sha256.New()
				for _, e := range f.Events {
					h.Write([]byte(e.PushID))
					h.Write([]byte{0})
				}
				natural = "push:" + hex.EncodeToString(h.Sum(nil)[:16])
			}
		}
		if natural != "" {
			return command + ":" + natural
		}
	}
	sum := sha256.Sum256(body)
	return command + ":sha256:" + hex.EncodeToString(sum[:16])
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
	// URL is the full backend URL (base + path); the callback's RawQuery is appended.
	URL            string
	Timeout        time.Duration
	MaxAttempts    int
	InitialBackoff time.Duration
	MaxBackoff     time.Duration
}
