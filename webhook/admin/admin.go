// Package admin is a running receiver's admin API (--admin-listen): list, redrive and
// purge dead letters, and replay dead letters or retained delivered callbacks by route
// and time range or callback IDs. It is served on its own listener, loopback or
// pod-internal, never on the callback port: whoever reaches it can resend callbacks.
//
//	GET  /admin/v1/deadletters?route=ns/name&id=ID      -> [DeadLetter]
//	POST /admin/v1/deadletters/redrive?route=&id=        -> {"redriven": n}
//	POST /admin/v1/deadletters/purge?route=&id=&all=true -> {"purged": n}
//	GET  /admin/v1/delivered?route=ns/name              -> [DeadLetter] (deadAt: when delivered)
//	POST /admin/v1/replay  {"route","source","ids"|"from","to"} -> {"matched": n, "replayed": n}
//
// Errors are JSON {"error": "..."} with 400 (bad request) or 500.
package admin

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/callback-router/callback-router/webhook/spool"
)

// Paths of the admin API.
const (
	PathDeadLetters = "/admin/v1/deadletters"
	PathRedrive     = "/admin/v1/deadletters/redrive"
	PathPurge       = "/admin/v1/deadletters/purge"
	PathDelivered   = "/admin/v1/delivered"
	PathReplay      = "/admin/v1/replay"
)

// Limits of the admin API.
const (
	// MaxRequestBytes bounds a replay request body.
	MaxRequestBytes = 1 << 20
	// OpTimeout bounds one redrive, purge or replay (one spool transaction).
	OpTimeout = 30 * time.Second
)

// Store is what the admin API works on: the receiver's spool.
type Store interface {
	DeadLetters(spool.Filter) ([]spool.DeadLetter, error)
	Redrive(context.Context, spool.Filter) (int, error)
	PurgeDeadLetters(context.Context, spool.Filter) (int, error)
	Delivered(route string) ([]spool.DeadLetter, error)
	Replay(context.Context, spool.ReplayRequest) (spool.ReplayResult, error)
}

var _ Store = (*spool.Spool)(nil)

// Handler returns the admin API over st.
func Handler(st Store) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+PathDeadLetters, func(w http.ResponseWriter, r *http.Request) {
		dls, err := st.DeadLetters(filter(r))
		if dls == nil {
			dls = []spool.DeadLetter{}
		}
		reply(w, dls, err)
	})
	mux.HandleFunc("POST "+PathRedrive, func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), OpTimeout)
		defer cancel()
		n, err := st.Redrive(ctx, filter(r))
		reply(w, map[string]int{"redriven": n}, err)
	})
	mux.HandleFunc("POST "+PathPurge, func(w http.ResponseWriter, r *http.Request) {
		f := filter(r)
		if f == (spool.Filter{}) && r.URL.Query().Get("all") != "true" {
			fail(w, http.StatusBadRequest, errors.New("purge: give route, id or all=true"))
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), OpTimeout)
		defer cancel()
		n, err := st.PurgeDeadLetters(ctx, f)
		reply(w, map[string]int{"purged": n}, err)
	})
	mux.HandleFunc("GET "+PathDelivered, func(w http.ResponseWriter, r *http.Request) {
		ds, err := st.Delivered(r.URL.Query().Get("route"))
		if ds == nil {
			ds = []spool.DeadLetter{}
		}
		reply(w, ds, err)
	})
	mux.HandleFunc("POST "+PathReplay, func(w http.ResponseWriter, r *http.Request) {
		var req spool.ReplayRequest
		dec := json.NewDecoder(io.LimitReader(r.Body, MaxRequestBytes))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			fail(w, http.StatusBadRequest, err)
			return
		}
		if err := req.Validate(); err != nil {
			fail(w, http.StatusBadRequest, err)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), OpTimeout)
		defer cancel()
		res, err := st.Replay(ctx, req)
		reply(w, res, err)
	})
	return mux
}

func filter(r *http.Request) spool.Filter {
	q := r.URL.Query()
	return spool.Filter{Route: q.Get("route"), ID: q.Get("id")}
}

func reply(w http.ResponseWriter, v any, err error) {
	if err != nil {
		fail(w, http.StatusInternalServerError, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func fail(w http.ResponseWriter, status int, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
}
