package receiver

import (
	"github.com/callback-router/callback-router/api/v1alpha1"
	"github.com/callback-router/callback-router/webhook/callback"
)

// MaxOperationIDBytes is the longest OpenIM operationID header forwarded to backends.
// OpenIM's own are tens of bytes (a timestamp and a random number).
const MaxOperationIDBytes = 128

// operationID returns the OpenIM operationID header of a callback (OpenIM's trace ID,
// which many callback bodies lack) to be forwarded to its backends, Sync and Async, or ""
// when there is none. A value that is longer than MaxOperationIDBytes or holds anything
// but visible ASCII is not forwarded: Go's HTTP client refuses to send some such values,
// and a header the spool could never send would make every Async attempt fail.
func operationID(x *exchange, p v1alpha1.Provider) string {
	if p != v1alpha1.ProviderOpenIM {
		return ""
	}
	v := x.header(callback.HeaderOperationID)
	if len(v) > MaxOperationIDBytes {
		return ""
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; c <= ' ' || c > '~' {
			return ""
		}
	}
	return v
}
