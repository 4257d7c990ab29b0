package callback

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"unsafe"

	"github.com/tidwall/gjson"

	"github.com/callback-router/callback-router/api/v1alpha1"
)

// ComputeID derives the idempotency key of a callback (X-Callback-Id) from its body, as
// the design says: Tencent C2C and official-account messages by MsgKey, group messages by
// GroupId+MsgSeq, push batches by their PushIDs (hashed when there are several), OpenIM
// messages by serverMsgID, anything else by a hash of the body. The command is part of
// the key, so a message's before- and after-callbacks (which share a MsgKey) get
// different keys.
//
// The body is read in one pass over its top-level fields (gjson, no reflection: this runs
// on every routed callback). Field names match exactly; when a name repeats, the last
// one wins (as in encoding/json, Python and JavaScript); a field that is null or of
// another type than the one expected counts as absent. A body that is not a JSON object
// is identified by its hash.
func ComputeID(provider v1alpha1.Provider, command string, body []byte) string {
	if natural := naturalID(provider, body); natural != "" {
		return command + ":" + natural
	}
	sum := sha256.Sum256(body)
	return command + ":sha256:" + hex.EncodeToString(sum[:16])
}

// naturalID is the callback's natural key, "" when it has none. The result may share
// body's memory (gjson returns unescaped strings as slices of its input): ComputeID,
// its only caller, copies it into the key before returning.
func naturalID(provider v1alpha1.Provider, body []byte) string {
	// Parsed in place, without gjson.ParseBytes's copy of the body: body is not modified
	// while this runs, and nothing parsed from it outlives ComputeID.
	root := gjson.Parse(unsafe.String(unsafe.SliceData(body), len(body))) //nolint:gosec // G103: read-only view of body for this call; ComputeID copies every result (see above)
	if !root.IsObject() {
		return ""
	}
	var msgKey, groupID, serverMsgID, msgSeq string
	var events gjson.Result
	root.ForEach(func(k, v gjson.Result) bool {
		switch k.String() {
		case "MsgKey":
			msgKey = stringValue(v)
		case "GroupId":
			groupID = stringValue(v)
		case "serverMsgID":
			serverMsgID = stringValue(v)
		case "MsgSeq":
			// A number or a string: Tencent documents a number, some SDKs send a string.
			msgSeq = ""
			if v.Type == gjson.Number || v.Type == gjson.String {
				msgSeq = v.String()
			}
		case "Events":
			events = v
		}
		return true
	})
	switch provider {
	case v1alpha1.ProviderOpenIM:
		return serverMsgID
	case v1alpha1.ProviderTencentIM:
		switch {
		case msgKey != "":
			return msgKey
		case groupID != "" && msgSeq != "":
			return groupID + "_" + msgSeq
		}
		return pushID(events)
	}
	return ""
}

// pushID is the PushID of a single-event push callback, or a hash of every event's PushID
// for a batch (up to 100 events: the header stays short); "" when the first event has
// none.
func pushID(events gjson.Result) string {
	if !events.IsArray() {
		return ""
	}
	var ids []string
	events.ForEach(func(_, e gjson.Result) bool {
		id := ""
		if e.IsObject() {
			e.ForEach(func(k, v gjson.Result) bool {
				if k.String() == "PushID" {
					id = stringValue(v)
				}
				return true
			})
		}
		ids = append(ids, id)
		return true
	})
	switch {
	case len(ids) == 0 || ids[0] == "":
		return ""
	case len(ids) == 1:
		return ids[0]
	}
	h := sha256.New()
	for _, p := range ids {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return "push:" + hex.EncodeToString(h.Sum(nil)[:16])
}

// stringValue is a JSON string's decoded value, "" for any other type.
func stringValue(v gjson.Result) string {
	if v.Type != gjson.String {
		return ""
	}
	return v.String()
}

// Tencent IM query parameters that carry the platform's credentials: a backend does not
// need them (the receiver verified them) and, by default, does not get them.
const (
	QuerySign        = "Sign"
	QueryRequestTime = "RequestTime"
)

// BackendQuery is the query a backend receives for a callback's raw query: a further '?'
// becomes '&', so that every query parser reads the parameters the receiver verified and
// routed by, and Tencent IM's Sign and RequestTime are left out unless forwardSignature.
func BackendQuery(raw string, forwardSignature bool) string {
	if forwardSignature {
		return strings.ReplaceAll(raw, "?", "&")
	}
	var b strings.Builder
	b.Grow(len(raw))
	for raw != "" {
		kv := raw
		if i := strings.IndexAny(raw, "&?"); i >= 0 {
			kv, raw = raw[:i], raw[i+1:]
		} else {
			raw = ""
		}
		if kv == "" {
			continue
		}
		if k, _, _ := strings.Cut(kv, "="); k == QuerySign || k == QueryRequestTime {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('&')
		}
		b.WriteString(kv)
	}
	return b.String()
}

// BackendURL is the URL a backend request goes to: base (the route's backend URL and
// path, which may have a query of its own; an empty path is "/") followed by
// BackendQuery of the callback's query.
func BackendURL(base, rawQuery string, forwardSignature bool) string {
	if i := strings.Index(base, "://"); i >= 0 {
		host := base[i+3:]
		if j := strings.IndexAny(host, "/?#"); j < 0 {
			base += "/"
		} else if host[j] != '/' {
			base = base[:i+3+j] + "/" + base[i+3+j:]
		}
	}
	q := BackendQuery(rawQuery, forwardSignature)
	if q == "" {
		return base
	}
	sep := "?"
	if strings.Contains(base, "?") {
		sep = "&"
	}
	return base + sep + q
}
