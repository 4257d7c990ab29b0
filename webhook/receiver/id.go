package receiver

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"

	"github.com/tidwall/gjson"

	"github.com/callback-router/callback-router/api/v1alpha1"
	"github.com/callback-router/callback-router/webhook/callback"
)

// callbackID returns callback.ComputeID(provider, command, body) for a body that is
// already known to be valid JSON. The common case is read in one zero-allocation pass
// with gjson instead of encoding/json's reflection (ComputeID was a quarter of the
// handler's CPU); anything where the two decoders could differ (a key that matches an ID
// field only case-insensitively, a duplicate ID field, an ID value of another type, escapes
// or non-ASCII in an ID value, a body that is not an object) falls back to ComputeID
// itself. FuzzCallbackID checks the two agree.
func callbackID(provider v1alpha1.Provider, command string, body []byte) string {
	if id, ok := fastID(provider, command, body); ok {
		return id
	}
	return callback.ComputeID(provider, command, body)
}

// idFieldNames are the top-level fields ComputeID reads.
var idFieldNames = [...]string{"MsgKey", "GroupId", "MsgSeq", "serverMsgID", "Events"}

// plainString reports whether a gjson string value decodes the same everywhere: no
// escapes, ASCII only.
func plainString(v gjson.Result) bool {
	if v.Type != gjson.String {
		return false
	}
	for i := 0; i < len(v.Raw); i++ {
		if c := v.Raw[i]; c == '\\' || c >= 0x80 {
			return false
		}
	}
	return true
}

func fastID(provider v1alpha1.Provider, command string, body []byte) (string, bool) {
	root := gjson.ParseBytes(body)
	if !root.IsObject() {
		return "", false
	}
	f, ok := readIDValues(root)
	if !ok {
		return "", false
	}
	pushIDs, ok := readPushIDs(f.events)
	if !ok {
		return "", false
	}
	if natural := naturalID(provider, &f, pushIDs); natural != "" {
		return command + ":" + natural, true
	}
	sum := sha256.Sum256(body)
	return command + ":sha256:" + hex.EncodeToString(sum[:16]), true
}

// idValues are the top-level ID fields of a body, as ComputeID decodes them.
type idValues struct {
	msgKey, groupID, serverMsgID string
	msgSeq                       string // the raw JSON value
	events                       gjson.Result
}

// readIDValues reads the ID fields of an object; false when encoding/json could read them
// differently.
func readIDValues(root gjson.Result) (idValues, bool) {
	var f idValues
	var seen [len(idFieldNames)]bool
	ok := true
	root.ForEach(func(k, v gjson.Result) bool {
		key := k.Str
		if strings.Contains(k.Raw, `\`) {
			ok = false
			return false
		}
		for i, name := range idFieldNames {
			if !strings.EqualFold(key, name) {
				continue
			}
			if key != name || seen[i] {
				ok = false // case-folded match or duplicate: let encoding/json decide
				return false
			}
			seen[i] = true
			switch name {
			case "MsgSeq":
				f.msgSeq = v.Raw
			case "Events":
				f.events = v
			default:
				if v.Type == gjson.Null {
					break
				}
				if !plainString(v) {
					ok = false
					return false
				}
				switch name {
				case "MsgKey":
					f.msgKey = v.Str
				case "GroupId":
					f.groupID = v.Str
				case "serverMsgID":
					f.serverMsgID = v.Str
				}
			}
		}
		return true
	})
	return f, ok
}

// readPushIDs reads the PushID of each event. Events must be absent, null or an array of
// objects (or nulls) whose PushID is a plain string; false otherwise.
func readPushIDs(events gjson.Result) ([]string, bool) {
	switch {
	case !events.Exists() || events.Type == gjson.Null:
		return nil, true
	case !events.IsArray():
		return nil, false
	}
	var pushIDs []string
	ok := true
	events.ForEach(func(_, e gjson.Result) bool {
		if e.Type == gjson.Null {
			pushIDs = append(pushIDs, "")
			return true
		}
		if !e.IsObject() {
			ok = false
			return false
		}
		id, n := "", 0
		e.ForEach(func(k, v gjson.Result) bool {
			if strings.Contains(k.Raw, `\`) {
				ok = false
				return false
			}
			if !strings.EqualFold(k.Str, "PushID") {
				return true
			}
			n++
			if k.Str != "PushID" || n > 1 || (v.Type != gjson.Null && !plainString(v)) {
				ok = false
				return false
			}
			id = v.Str
			return true
		})
		pushIDs = append(pushIDs, id)
		return ok
	})
	return pushIDs, ok
}

// naturalID is ComputeID's natural key of a callback, "" when it has none.
func naturalID(provider v1alpha1.Provider, f *idValues, pushIDs []string) string {
	switch {
	case provider == v1alpha1.ProviderOpenIM && f.serverMsgID != "":
		return f.serverMsgID
	case provider == v1alpha1.ProviderTencentIM && f.msgKey != "":
		return f.msgKey
	case provider == v1alpha1.ProviderTencentIM && f.groupID != "" && len(f.msgSeq) > 0:
		return f.groupID + "_" + strings.Trim(f.msgSeq, `"`)
	case provider == v1alpha1.ProviderTencentIM && len(pushIDs) > 0 && pushIDs[0] != "":
		if len(pushIDs) == 1 {
			return pushIDs[0]
		}
		h := sha256.New()
		for _, p := range pushIDs {
			h.Write([]byte(p))
			h.Write([]byte{0})
		}
		return "push:" + hex.EncodeToString(h.Sum(nil)[:16])
	}
	return ""
}
