package receiver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/callback-router/callback-router/api/v1alpha1"
	"github.com/callback-router/callback-router/webhook/callback"
	"github.com/callback-router/callback-router/webhook/routing"
)

// errBackendStatus marks a backend answer that counts as a failure.
var errBackendStatus = errors.New("backend failed")

// proxy forwards a callback to its Sync route and passes the answer back. A transport
// error, a timeout, a 5xx status, or a body that is not JSON (or is over the size limit)
// is a failure: the IM platform then hears the route's failurePolicy answer, which always
// leaves before the budget runs out.
func (h *Handler) proxy(w http.ResponseWriter, r *http.Request, q *request, cb *callback.Callback, rt *routing.Route) {
	deadline := time.Now().Add(rt.Timeout)
	if q.provider == v1alpha1.ProviderTencentIM {
		// The budget counts from arrival, so time spent reading the body and storing
		// Async copies is included.
		if b := q.arrived.Add(h.opts.SyncBudget); b.Before(deadline) {
			deadline = b
		}
	}
	ctx, cancel := context.WithDeadline(r.Context(), deadline)
	defer cancel()

	start := time.Now()
	status, ctype, body, release, err := h.roundTrip(ctx, r, cb, rt)
	defer release()
	elapsed := time.Since(start).Seconds()
	if err == nil {
		h.metrics.backendObserve(string(q.provider), q.appLabel, "ok", elapsed)
		h.metrics.request(string(q.provider), q.appLabel, q.cmdLabel, OutcomeSyncAnswered)
		hdr := w.Header()
		if ctype != "" {
			hdr["Content-Type"] = []string{ctype}
		} else {
			hdr["Content-Type"] = jsonType
		}
		w.WriteHeader(status)
		_, _ = w.Write(body)
		return
	}
	h.metrics.backendObserve(string(q.provider), q.appLabel, "error", elapsed)
	if r.Context().Err() != nil {
		// The IM platform hung up: nobody is left to answer.
		return
	}
	why := fmt.Sprintf("backend of route %s failed: %v", rt.RouteKey, err)
	if rt.FailurePolicy == v1alpha1.FailurePolicyReject {
		h.log.Info("Sync backend failed, rejecting", "route", rt.RouteKey, "provider", q.provider, "appID", q.appID,
			"command", q.command, "callbackID", cb.ID, "error", err.Error())
		h.metrics.request(string(q.provider), q.appLabel, q.cmdLabel, OutcomeSyncFailedReject)
		writeJSON(w, http.StatusOK, RejectEnvelope(q.provider, http.StatusOK, why))
		return
	}
	h.log.Info("Sync backend failed, allowing", "route", rt.RouteKey, "provider", q.provider, "appID", q.appID,
		"command", q.command, "callbackID", cb.ID, "error", err.Error())
	h.metrics.request(string(q.provider), q.appLabel, q.cmdLabel, OutcomeSyncFailedAllow)
	writeJSON(w, http.StatusOK, OKEnvelope(q.provider))
}

// roundTrip sends one attempt and reads the answer into a pooled buffer, which the caller
// returns with release once the body has been written.
func (h *Handler) roundTrip(ctx context.Context, r *http.Request, cb *callback.Callback, rt *routing.Route) (status int, ctype string, body []byte, release func(), err error) {
	release = func() {}
	u := *rt.BackendURL
	if u.RawQuery != "" && r.URL.RawQuery != "" {
		u.RawQuery += "&" + r.URL.RawQuery
	} else if r.URL.RawQuery != "" {
		u.RawQuery = r.URL.RawQuery
	}
	payload := cb.Body
	req := (&http.Request{
		Method:        http.MethodPost,
		URL:           &u,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        make(http.Header, 8),
		Body:          io.NopCloser(bytes.NewReader(payload)),
		ContentLength: int64(len(payload)),
		GetBody:       func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(payload)), nil },
		Host:          u.Host,
	}).WithContext(ctx)
	cb.SetHeaders(req.Header, rt.RouteKey, 1)
	resp, err := h.opts.Transport.RoundTrip(req)
	if err != nil {
		return 0, "", nil, release, fmt.Errorf("sending: %w", err)
	}
	defer resp.Body.Close()
	buf := bodyPool.Get().(*bytes.Buffer)
	buf.Reset()
	release = func() {
		if buf.Cap() <= 64<<10 {
			bodyPool.Put(buf)
		}
	}
	n, err := buf.ReadFrom(io.LimitReader(resp.Body, h.opts.MaxBodyBytes+1))
	if err != nil {
		return 0, "", nil, release, fmt.Errorf("reading the answer: %w", err)
	}
	if n > h.opts.MaxBodyBytes {
		return 0, "", nil, release, fmt.Errorf("%w: answer over %d bytes", errBackendStatus, h.opts.MaxBodyBytes)
	}
	if resp.StatusCode >= 500 {
		return 0, "", nil, release, fmt.Errorf("%w: status %d", errBackendStatus, resp.StatusCode)
	}
	if !json.Valid(buf.Bytes()) {
		return 0, "", nil, release, fmt.Errorf("%w: status %d with a body that is not JSON", errBackendStatus, resp.StatusCode)
	}
	return resp.StatusCode, resp.Header.Get("Content-Type"), buf.Bytes(), release, nil
}
