package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/callback-router/callback-router/webhook/admin"
	"github.com/callback-router/callback-router/webhook/spool"
)

func init() {
	register("replay", "replay dead letters or retained delivered callbacks of a route on a running receiver (--admin)", runReplay)
}

// adminTimeout bounds one admin API call from the command line.
const adminTimeout = admin.OpTimeout + 5*time.Second

// adminCall sends one admin API request and decodes its JSON answer into out.
func adminCall(base, method, path string, query url.Values, body any, out any) error {
	u, err := url.Parse(strings.TrimSuffix(base, "/") + path)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("--admin %q must be an http(s) URL such as http://127.0.0.1:9091", base)
	}
	u.RawQuery = query.Encode()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("admin API: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("admin API: reading the answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			return fmt.Errorf("admin API: %s", e.Error)
		}
		return fmt.Errorf("admin API: %s: %s", resp.Status, bytes.TrimSpace(b))
	}
	return json.Unmarshal(b, out)
}

// deadLettersAdmin runs a deadletters action against a running receiver's admin API.
func deadLettersAdmin(base, action string, f spool.Filter, output string) error {
	q := url.Values{}
	if f.Route != "" {
		q.Set("route", f.Route)
	}
	if f.ID != "" {
		q.Set("id", f.ID)
	}
	switch action {
	case actionList:
		var dls []spool.DeadLetter
		if err := adminCall(base, http.MethodGet, admin.PathDeadLetters, q, nil, &dls); err != nil {
			return err
		}
		if output == outputJSON {
			enc := json.NewEncoder(deadLettersOut)
			enc.SetIndent("", "  ")
			return enc.Encode(dls)
		}
		return printDeadLetters(deadLettersOut, dls)
	case actionRedrive:
		var r map[string]int
		if err := adminCall(base, http.MethodPost, admin.PathRedrive, q, nil, &r); err != nil {
			return err
		}
		_, err := fmt.Fprintf(deadLettersOut, "Redrove %d dead letters: the receiver delivers them now (X-Callback-Replay: true).\n", r["redriven"])
		return err
	default:
		if f == (spool.Filter{}) {
			q.Set("all", "true")
		}
		var r map[string]int
		if err := adminCall(base, http.MethodPost, admin.PathPurge, q, nil, &r); err != nil {
			return err
		}
		_, err := fmt.Fprintf(deadLettersOut, "Purged %d dead letters.\n", r["purged"])
		return err
	}
}

// idList is a repeatable, comma-separated --id flag.
type idList []string

func (l *idList) String() string { return strings.Join(*l, ",") }
func (l *idList) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

func runReplay(args []string) error {
	fs := newFlagSet("replay", "--admin URL --route ns/name [--source Delivered|DeadLetters] (--id ID[,ID...] | [--from TIME] [--to TIME])")
	base := fs.String("admin", "", "the running receiver's admin API (its --admin-listen), e.g. http://127.0.0.1:9091")
	route := fs.String("route", "", "the route whose deliveries to replay (namespace/name)")
	source := fs.String("source", spool.SourceDelivered, "Delivered (callbacks kept by --retention) or DeadLetters")
	from := fs.String("from", "", "only callbacks received at or after this time (RFC 3339)")
	to := fs.String("to", "", "only callbacks received before this time (RFC 3339)")
	var ids idList
	fs.Var(&ids, "id", "only these callbacks (X-Callback-Id); repeat or separate with commas")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("replay: unexpected argument %q", fs.Arg(0))
	}
	if *base == "" {
		return errors.New("replay: --admin is required (a stopped receiver's dead letters: callback-router deadletters redrive --spool-dir)")
	}
	req := spool.ReplayRequest{Route: *route, Source: *source, IDs: ids}
	for _, t := range []struct {
		flag, v string
		dst     *time.Time
	}{{"--from", *from, &req.From}, {"--to", *to, &req.To}} {
		if t.v == "" {
			continue
		}
		p, err := time.Parse(time.RFC3339, t.v)
		if err != nil {
			return fmt.Errorf("replay: %s: %w", t.flag, err)
		}
		*t.dst = p
	}
	if err := req.Validate(); err != nil {
		return err
	}
	var res spool.ReplayResult
	if err := adminCall(*base, http.MethodPost, admin.PathReplay, nil, req, &res); err != nil {
		return err
	}
	_, err := fmt.Fprintf(deadLettersOut, "Matched %d, replayed %d deliveries of %s from %s.\n", res.Matched, res.Replayed, req.Route, req.Source)
	return err
}

var _ flag.Value = (*idList)(nil)
