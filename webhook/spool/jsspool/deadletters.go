package jsspool

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/callback-router/callback-router/api/v1alpha1"
	"github.com/callback-router/callback-router/webhook/spool"
)

// deadMsg is one stored dead letter.
type deadMsg struct {
	seq uint64
	dl  spool.DeadLetter
	raw *jetstream.RawStreamMsg
}

func match(f spool.Filter, dl *spool.DeadLetter) bool {
	return (f.Route == "" || f.Route == dl.Route) && (f.ID == "" || f.ID == dl.ID)
}

// scan reads the dead-letter stream in order and returns the matching dead letters.
// Their Key is "js-<sequence in the dead-letter stream>".
func (s *Spool) scan(ctx context.Context, f spool.Filter) ([]deadMsg, error) {
	ctx, cancel := context.WithTimeout(ctx, DefaultRequestTimeout)
	defer cancel()
	st, err := s.js.Stream(ctx, s.opts.Stream+DeadSuffix)
	if err != nil {
		return nil, err
	}
	subj := s.deadSubj + ">"
	if f.Route != "" {
		subj = s.deadSubj + routeToken(f.Route)
	}
	var out []deadMsg
	for seq := uint64(1); ; {
		m, err := st.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subj))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		seq = m.Sequence + 1
		dl := decodeDead(m)
		if match(f, &dl) {
			out = append(out, deadMsg{seq: m.Sequence, dl: dl, raw: m})
		}
	}
}

func nanos(v string) time.Time {
	ns, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return time.Time{}
	}
	return time.Unix(0, ns)
}

func decodeDead(m *jetstream.RawStreamMsg) spool.DeadLetter {
	h := m.Header
	attempts, _ := strconv.Atoi(h.Get(hMade))
	return spool.DeadLetter{
		Key:        "js-" + strconv.FormatUint(m.Sequence, 10),
		ID:         h.Get(hID),
		Provider:   v1alpha1.Provider(h.Get(hProvider)),
		AppID:      h.Get(hApp),
		Command:    h.Get(hCommand),
		Route:      h.Get(hRoute),
		URL:        h.Get(hURL),
		Attempts:   attempts,
		LastError:  h.Get(hLastError),
		ReceivedAt: nanos(h.Get(hReceived)),
		DeadAt:     nanos(h.Get(hDeadAt)),
		BodyBytes:  len(m.Data),
	}
}

// DeadLetters lists the dead letters that match f, oldest first.
func (s *Spool) DeadLetters(f spool.Filter) ([]spool.DeadLetter, error) {
	ms, err := s.scan(context.Background(), f)
	if err != nil {
		return nil, fmt.Errorf("listing dead letters: %w", err)
	}
	out := make([]spool.DeadLetter, len(ms))
	for i, m := range ms {
		out[i] = m.dl
	}
	return out, nil
}

// Redrive publishes the matching dead letters to their route again, attempts reset
// (JetStream counts from 1 for the new message), and then deletes them from the
// dead-letter stream. A crash between the two steps is repaired by JetStream's
// duplicate window: the republish carries a message ID derived from the dead letter.
func (s *Spool) Redrive(ctx context.Context, f spool.Filter) (int, error) {
	ms, err := s.scan(ctx, f)
	if err != nil {
		return 0, fmt.Errorf("redriving dead letters: %w", err)
	}
	dead, err := s.js.Stream(ctx, s.opts.Stream+DeadSuffix)
	if err != nil {
		return 0, fmt.Errorf("redriving dead letters: %w", err)
	}
	n := 0
	for _, m := range ms {
		cb, t, err := decodeHeaders(m.raw.Header, m.raw.Data)
		if err != nil {
			return n, fmt.Errorf("redriving dead letter %s: %w", m.dl.Key, err)
		}
		subject, err := s.ensureConsumer(ctx, t, s.partitionOf(cb, t))
		if err != nil {
			return n, fmt.Errorf("redriving dead letters: %w", err)
		}
		h := nats.Header{}
		for k, v := range m.raw.Header {
			switch k {
			case hMade, hLastError, hDeadAt, jetstream.MsgIDHeader:
			default:
				h[k] = v
			}
		}
		msg := nats.NewMsg(subject)
		msg.Header, msg.Data = h, m.raw.Data
		pctx, cancel := context.WithTimeout(ctx, s.opts.PublishTimeout)
		_, err = s.js.PublishMsg(pctx, msg, jetstream.WithMsgID(fmt.Sprintf("redrive %s %d", s.opts.Stream, m.seq)),
			jetstream.WithExpectStream(s.opts.Stream))
		cancel()
		if err != nil {
			return n, fmt.Errorf("redriving dead letter %s: %w", m.dl.Key, err)
		}
		if err := dead.DeleteMsg(ctx, m.seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			return n, fmt.Errorf("redriving dead letter %s: it is pending again but still listed: %w", m.dl.Key, err)
		}
		n++
	}
	return n, nil
}

// PurgeDeadLetters deletes the matching dead letters for good.
func (s *Spool) PurgeDeadLetters(ctx context.Context, f spool.Filter) (int, error) {
	ms, err := s.scan(ctx, f)
	if err != nil {
		return 0, fmt.Errorf("purging dead letters: %w", err)
	}
	dead, err := s.js.Stream(ctx, s.opts.Stream+DeadSuffix)
	if err != nil {
		return 0, fmt.Errorf("purging dead letters: %w", err)
	}
	n := 0
	for _, m := range ms {
		if err := dead.DeleteMsg(ctx, m.seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			return n, fmt.Errorf("purging dead letter %s: %w", m.dl.Key, err)
		}
		n++
	}
	return n, nil
}

// ErrNoRetention is returned by Delivered and Replay: the JetStream spool removes a
// copy once delivered (work-queue retention) and keeps no delivered callbacks to replay.
// Dead letters are redriven with Redrive.
var ErrNoRetention = errors.New("the JetStream spool keeps no delivered callbacks: replay is not supported (dead letters: redrive)")

// Delivered returns ErrNoRetention.
func (s *Spool) Delivered(string) ([]spool.DeadLetter, error) { return nil, ErrNoRetention }

// Replay returns ErrNoRetention (dead letters are redriven with Redrive, or
// `callback-router deadletters redrive --spool-url`).
func (s *Spool) Replay(context.Context, spool.ReplayRequest) (spool.ReplayResult, error) {
	return spool.ReplayResult{}, ErrNoRetention
}
