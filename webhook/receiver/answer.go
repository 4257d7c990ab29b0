package receiver

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/tidwall/gjson"

	"github.com/callback-router/callback-router/api/v1alpha1"
)

// errBadAnswer marks a Sync answer the IM platform could not use: it counts as a backend
// failure, so the route's failurePolicy answers instead.
var errBadAnswer = errors.New("backend answer does not have the provider's answer shape")

// checkSyncAnswer decides whether a Sync backend's answer (status and body) is passed
// back to the IM platform (nil) or is a backend failure (an error wrapping
// errBackendStatus or errBadAnswer). It is the one place that knows what each platform
// accepts as an answer:
//
//   - Tencent IM treats any status other than 200 as a failure, and needs
//     {"ActionStatus": string, "ErrorCode": integer}; a 5xx is a failure, a 2xx-4xx with
//     that shape is passed back (the backend chose it).
//   - OpenIM ignores the HTTP status and decodes the body into its CommonCallbackResp
//     (actionCode, errCode, nextCode int32; errMsg, errDlt string); a body it cannot
//     decode makes it refuse the action (DataError). Any status with a body of that shape
//     is passed back, except that a 5xx counts as an answer only when the body carries at
//     least one of actionCode, errCode or nextCode: a framework's error page such as
//     {"detail":"Internal Server Error"} decodes as "allow" in OpenIM, which would let
//     every message through a crashed moderation backend, so it gets failurePolicy.
func checkSyncAnswer(p v1alpha1.Provider, status int, body []byte) error {
	if p == v1alpha1.ProviderOpenIM {
		decisive, err := checkOpenIMAnswer(body)
		switch {
		case err != nil:
			return fmt.Errorf("%w: status %d: %w", errBadAnswer, status, err)
		case status >= http.StatusInternalServerError && !decisive:
			return fmt.Errorf("%w: status %d without actionCode, errCode or nextCode", errBackendStatus, status)
		}
		return nil
	}
	if status >= http.StatusInternalServerError {
		return fmt.Errorf("%w: status %d", errBackendStatus, status)
	}
	if err := checkTencentAnswer(body); err != nil {
		return fmt.Errorf("%w: status %d: %w", errBadAnswer, status, err)
	}
	return nil
}

// OpenIM's CommonCallbackResp fields. Go's encoding/json, which OpenIM decodes with,
// matches object keys to them case-insensitively, and so does the check.
var (
	openIMIntFields    = [...]string{"actionCode", "errCode", "nextCode"}
	openIMStringFields = [...]string{"errMsg", "errDlt"}
)

// checkOpenIMAnswer reports whether body decodes into OpenIM's CommonCallbackResp as
// OpenIM's own encoding/json would: a JSON object whose actionCode, errCode and nextCode,
// when present and not null, are integers that fit int32, and whose errMsg and errDlt
// are strings. decisive says whether one of the three codes is present.
func checkOpenIMAnswer(body []byte) (decisive bool, err error) {
	root, err := jsonObject(body)
	if err != nil {
		return false, err
	}
	root.ForEach(func(k, v gjson.Result) bool {
		key := k.String()
		for _, name := range openIMIntFields {
			if !strings.EqualFold(key, name) || v.Type == gjson.Null {
				continue
			}
			decisive = true
			if !isInt32(v) {
				err = fmt.Errorf("%s is %s, not an int32 number", name, v.Raw)
				return false
			}
		}
		for _, name := range openIMStringFields {
			if strings.EqualFold(key, name) && v.Type != gjson.Null && v.Type != gjson.String {
				err = fmt.Errorf("%s is %s, not a string", name, v.Raw)
				return false
			}
		}
		return true
	})
	return decisive, err
}

// checkTencentAnswer checks Tencent IM's answer envelope: a JSON object with ActionStatus
// a string and ErrorCode an integer. Keys are matched exactly, as documented.
func checkTencentAnswer(body []byte) error {
	root, err := jsonObject(body)
	if err != nil {
		return err
	}
	status, code := root.Get("ActionStatus"), root.Get("ErrorCode")
	switch {
	case status.Type != gjson.String:
		return fmt.Errorf("ActionStatus is %s, not a string", rawOrMissing(status))
	case !isInteger(code, 64):
		return fmt.Errorf("ErrorCode is %s, not an integer", rawOrMissing(code))
	}
	return nil
}

// jsonObject parses a body known to be valid JSON, failing unless it is an object.
func jsonObject(body []byte) (gjson.Result, error) {
	root := gjson.ParseBytes(body)
	if !root.IsObject() {
		return root, fmt.Errorf("body is %s, not a JSON object", abbreviate(root.Raw))
	}
	return root, nil
}

func isInt32(v gjson.Result) bool { return isInteger(v, 32) }

// isInteger reports whether v is a JSON number written as an integer (no fraction or
// exponent, as Go's encoding/json requires for an integer field) that fits bits.
func isInteger(v gjson.Result, bits int) bool {
	if v.Type != gjson.Number {
		return false
	}
	_, err := strconv.ParseInt(v.Raw, 10, bits)
	return err == nil
}

func rawOrMissing(v gjson.Result) string {
	if !v.Exists() {
		return "missing"
	}
	return abbreviate(v.Raw)
}

// abbreviate keeps log lines short: an answer can be up to --max-body-bytes.
func abbreviate(s string) string {
	const limit = 64
	if len(s) > limit {
		return s[:limit] + "..."
	}
	return s
}
