package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/go-logr/logr/funcr"

	"github.com/callback-router/callback-router/webhook/spool"
	"github.com/callback-router/callback-router/webhook/spool/jsspool"
)

func init() {
	register("deadletters", "list, redrive or purge the dead letters of a spool directory (receiver stopped) or of a JetStream spool", runDeadLetters)
}

// silent drops the spool's logs: the command prints its own results.
var silent = funcr.New(func(prefix, args string) {}, funcr.Options{})

// deadLettersOut is where the deadletters subcommand prints; tests replace it.
var deadLettersOut io.Writer = os.Stdout

// deadLettersLastErrorWidth is how much of a dead letter's last error the table shows
// (JSON output shows all of it).
const deadLettersLastErrorWidth = 80

// deadletters actions and list formats.
const (
	actionList    = "list"
	actionRedrive = "redrive"
	actionPurge   = "purge"
	outputJSON    = "json"
)

const deadLettersSynopsis = "list|redrive|purge (--spool-dir DIR | --admin URL | --spool-url nats://HOST:PORT[,...] [--spool-creds FILE] [--spool-stream NAME]) [--route ns/name] [--id ID] [--output table|json] [--all]"

func runDeadLetters(args []string) error {
	fs := newFlagSet("deadletters", deadLettersSynopsis)
	dir := fs.String("spool-dir", spool.DefaultDir(), "the receiver's spool directory")
	route := fs.String("route", "", "only dead letters of this route (namespace/name)")
	id := fs.String("id", "", "only dead letters of this callback (its X-Callback-Id)")
	output := fs.String("output", "table", "list format: table or json")
	all := fs.Bool("all", false, "purge: allow purging every dead letter when no --route or --id is given")
	lockTimeout := fs.Duration("lock-timeout", spool.DefaultLockTimeout, "how long to wait for a spool held by another process")
	natsURL := fs.String("spool-url", "", "the receivers' JetStream spool (NATS servers) instead of --spool-dir; works while receivers run")
	js := jsspool.Options{NoCreate: true, Logger: silent}
	fs.StringVar(&js.CredsFile, "spool-creds", "", "JetStream spool: NATS credentials file")
	fs.StringVar(&js.Stream, "spool-stream", jsspool.DefaultStream, "JetStream spool: the receivers' stream name")
	adminURL := fs.String("admin", "", "a running receiver's admin API (its --admin-listen), e.g. http://127.0.0.1:9091, instead of --spool-dir")
	// The action may come before or after the flags.
	if err := fs.Parse(args); err != nil {
		return err
	}
	action := fs.Arg(0)
	if fs.NArg() > 0 {
		if err := fs.Parse(fs.Args()[1:]); err != nil {
			return err
		}
		if fs.NArg() > 0 {
			return fmt.Errorf("deadletters: unexpected argument %q", fs.Arg(0))
		}
	}
	if *output != "table" && *output != outputJSON {
		return fmt.Errorf("deadletters: --output must be table or json, not %q", *output)
	}
	filter := spool.Filter{Route: *route, ID: *id}
	switch action {
	case actionList, actionRedrive, actionPurge:
	case "":
		fs.Usage()
		return errors.New("deadletters: no action given (list, redrive or purge)")
	default:
		return fmt.Errorf("deadletters: unknown action %q (list, redrive or purge)", action)
	}
	if action == "purge" && filter == (spool.Filter{}) && !*all {
		return errors.New("deadletters purge: give --route, --id or --all")
	}
	if *adminURL != "" {
		return deadLettersAdmin(*adminURL, action, filter, *output)
	}
	ctx := context.Background()
	var s spool.Queue
	where := *dir
	if *natsURL != "" {
		// Never create streams (a mistyped --spool-stream): NoCreate.
		js.URL = *natsURL
		q, err := jsspool.Open(ctx, js)
		if err != nil {
			return fmt.Errorf("deadletters: %w", err)
		}
		s, where = q, "the JetStream stream "+js.Stream
	} else {
		// Never create a spool where there was none (a mistyped --spool-dir).
		if _, err := os.Stat(filepath.Join(*dir, spool.FileName)); err != nil {
			return fmt.Errorf("deadletters: no spool in %s: %w", *dir, err)
		}
		// bbolt holds an exclusive lock while a receiver runs, so this fails fast with
		// spool.ErrInUse instead of waiting for the receiver to stop.
		q, err := spool.Open(*dir, spool.Options{LockTimeout: *lockTimeout, Logger: silent})
		if err != nil {
			return fmt.Errorf("deadletters: %w", err)
		}
		s = q
	}
	defer s.Close()

	switch action {
	case "list":
		dls, err := s.DeadLetters(filter)
		if err != nil {
			return err
		}
		if *output == "json" {
			enc := json.NewEncoder(deadLettersOut)
			enc.SetIndent("", "  ")
			if dls == nil {
				dls = []spool.DeadLetter{}
			}
			return enc.Encode(dls)
		}
		return printDeadLetters(deadLettersOut, dls)
	case "redrive":
		n, err := s.Redrive(ctx, filter)
		if err != nil {
			return err
		}
		if *natsURL != "" {
			_, err = fmt.Fprintf(deadLettersOut, "Redrove %d dead letters: running receivers deliver them now.\n", n)
			return err
		}
		_, err = fmt.Fprintf(deadLettersOut, "Redrove %d dead letters: they are delivered when a receiver next runs on %s.\n", n, where)
		return err
	default:
		n, err := s.PurgeDeadLetters(ctx, filter)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(deadLettersOut, "Purged %d dead letters.\n", n)
		return err
	}
}

func printDeadLetters(w io.Writer, dls []spool.DeadLetter) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tROUTE\tID\tCOMMAND\tATTEMPTS\tDEAD AT\tLAST ERROR")
	for _, dl := range dls {
		last := strings.ReplaceAll(dl.LastError, "\n", " ")
		if len(last) > deadLettersLastErrorWidth {
			last = last[:deadLettersLastErrorWidth] + "..."
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", dl.Key, dl.Route, dl.ID, dl.Command, dl.Attempts,
			dl.DeadAt.UTC().Format(time.RFC3339), last)
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("printing dead letters: %w", err)
	}
	return nil
}
