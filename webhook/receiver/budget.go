package receiver

import (
	"fmt"
	"time"

	"github.com/callback-router/callback-router/api/v1alpha1"
)

// syncBudget is how long after arrival a Sync answer to provider may leave: Tencent IM
// waits 2 s (SyncBudget, default 1.8 s); OpenIM waits its webhooks.yml timeout
// (OpenIMTimeout, default 5 s) and the answer leaves OpenIMTimeoutMargin before it.
func (h *Handler) syncBudget(p v1alpha1.Provider) time.Duration {
	if p == v1alpha1.ProviderOpenIM {
		return h.opts.OpenIMTimeout - OpenIMTimeoutMargin
	}
	return h.opts.SyncBudget
}

// ValidateOpenIMTimeout checks an OpenIM timeout setting (the receiver's --openim-timeout):
// longer than OpenIMTimeoutMargin, at most MaxOpenIMTimeout.
func ValidateOpenIMTimeout(d time.Duration) error {
	if d <= OpenIMTimeoutMargin || d > MaxOpenIMTimeout {
		return fmt.Errorf("the OpenIM timeout must be over %s (the margin the receiver keeps) and at most %s (OpenIM's own cap), not %s",
			OpenIMTimeoutMargin, MaxOpenIMTimeout, d)
	}
	return nil
}
