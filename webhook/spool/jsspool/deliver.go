package jsspool

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/callback-router/callback-router/api/v1alpha1"
	"github.com/callback-router/callback-router/webhook/callback"
	"github.com/callback-router/callback-router/webhook/delivery"
	"github.com/callback-router/callback-router/webhook/spool"
)

// Message headers. The body of a message is the callback body, byte for byte.
const (
	hID         = "Cr-Id"
	hProvider   = "Cr-Provider"
	hApp        = "Cr-App"
	hCommand    = "Cr-Command"
	hQuery      = "Cr-Query"
	hReceived   = "Cr-Received"
	hRoute      = "Cr-Route"
	hURL        = "Cr-Url"
	hTimeout    = "Cr-Timeout"
	hAttempts   = "Cr-Max-Attempts"
	hInitial    = "Cr-Initial-Backoff"
	hMaxBackoff = "Cr-Max-Backoff"
	hForwardSig = "Cr-Forward-Signature"
	hOrdered    = "Cr-Ordered"
	hOrderKey   = "Cr-Order-Key"
	hMaxConc    = "Cr-Max-Concurrency"
	hMaxRate    = "Cr-Max-Per-Second"
	// Dead letters only.
	hMade      = "Cr-Attempts"
	hLastError = "Cr-Last-Error"
	hDeadAt    = "Cr-Dead-At"
)

func encodeHeaders(cb *callback.Callback, t *callback.Target) nats.Header {
	h := nats.Header{}
	h.Set(hID, cb.ID)
	h.Set(hProvider, string(cb.Provider))
	h.Set(hApp, cb.AppID)
	h.Set(hCommand, cb.Command)
	if cb.RawQuery != "" {
		h.Set(hQuery, cb.RawQuery)
	}
	h.Set(hReceived, strconv.FormatInt(cb.ReceivedAt.UnixNano(), 10))
	h.Set(hRoute, t.Route)
	h.Set(hURL, t.URL)
	h.Set(hTimeout, t.Timeout.String())
	h.Set(hAttempts, strconv.Itoa(t.MaxAttempts))
	h.Set(hInitial, t.InitialBackoff.String())
	h.Set(hMaxBackoff, t.MaxBackoff.String())
	if t.ForwardSignature {
		h.Set(hForwardSig, "true")
	}
	if t.Ordered {
		h.Set(hOrdered, "true")
		if cb.OrderKey != "" {
			h.Set(hOrderKey, cb.OrderKey)
		}
	}
	if t.MaxConcurrency > 0 {
		h.Set(hMaxConc, strconv.Itoa(t.MaxConcurrency))
	}
	if t.MaxPerSecond > 0 {
		h.Set(hMaxRate, strconv.Itoa(t.MaxPerSecond))
	}
	return h
}

func decodeHeaders(h nats.Header, body []byte) (*callback.Callback, *callback.Target, error) {
	cb := &callback.Callback{
		ID:       h.Get(hID),
		Provider: v1alpha1.Provider(h.Get(hProvider)),
		AppID:    h.Get(hApp),
		Command:  h.Get(hCommand),
		RawQuery: h.Get(hQuery),
		Body:     body,
	}
	t := &callback.Target{Route: h.Get(hRoute), URL: h.Get(hURL), ForwardSignature: h.Get(hForwardSig) == "true",
		Ordered: h.Get(hOrdered) == "true"}
	cb.OrderKey = h.Get(hOrderKey)
	t.MaxConcurrency, _ = strconv.Atoi(h.Get(hMaxConc))
	t.MaxPerSecond, _ = strconv.Atoi(h.Get(hMaxRate))
	var err error
	ns, perr := strconv.ParseInt(h.Get(hReceived), 10, 64)
	if perr == nil {
		cb.ReceivedAt = time.Unix(0, ns)
	}
	dur := func(k string, d *time.Duration) {
		if err == nil {
			if *d, err = time.ParseDuration(h.Get(k)); err != nil {
				err = fmt.Errorf("header %s: %w", k, err)
			}
		}
	}
	dur(hTimeout, &t.Timeout)
	dur(hInitial, &t.InitialBackoff)
	dur(hMaxBackoff, &t.MaxBackoff)
	if err == nil {
		if t.MaxAttempts, err = strconv.Atoi(h.Get(hAttempts)); err != nil {
			err = fmt.Errorf("header %s: %w", hAttempts, err)
		}
	}
	if err == nil && (cb.ID == "" || t.Route == "" || t.URL == "") {
		err = fmt.Errorf("missing %s, %s or %s header", hID, hRoute, hURL)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("not a callback-router message: %w", err)
	}
	nt := spool.NormalizeTarget(*t)
	return cb, &nt, nil
}

// deliver makes one attempt of msg and settles it with JetStream: Ack when delivered,
// NakWithDelay(backoff) to retry, a dead letter when attempts run out.
func (s *Spool) deliver(ctx context.Context, msg jetstream.Msg) {
	md, err := msg.Metadata()
	if err != nil {
		s.log.Error(err, "Ignored a JetStream message without metadata", "subject", msg.Subject())
		return
	}
	n := int(md.NumDelivered)
	cb, t, err := decodeHeaders(msg.Headers(), msg.Data())
	if err != nil {
		s.deadLetter(ctx, msg, md, nil, &callback.Target{Route: "unknown"}, n, err.Error(), false)
		return
	}
	// An attempt longer than a third of AckWait tells JetStream it is still going, so
	// that no other receiver starts the same delivery meanwhile.
	var stopProgress func() bool
	if t.Timeout > s.opts.AckWait/3 {
		tick := time.NewTicker(s.opts.AckWait / 3)
		done := make(chan struct{})
		go func() {
			for {
				select {
				case <-tick.C:
					_ = msg.InProgress()
				case <-done:
					return
				}
			}
		}()
		stopProgress = func() bool { tick.Stop(); close(done); return true }
	}
	if t.MaxPerSecond > 0 {
		l, _ := s.limiters.LoadOrStore(t.Route, delivery.NewLimiter(1, t.MaxPerSecond))
		lim := l.(*delivery.Limiter)
		lim.SetLimits(1, t.MaxPerSecond) // only the rate is used; concurrency is MaxAckPending's
		if err := lim.WaitRate(ctx); err != nil {
			if stopProgress != nil {
				stopProgress()
			}
			_ = msg.Nak() // shutting down
			return
		}
	}
	// The backend's circuit breaker: while it is open the copy is held (and kept ours
	// with InProgress), so that waiting burns none of its attempts (JetStream would count
	// a Nak as one).
	br := s.breakers.For(t.URL)
	var probe bool
	for {
		ok, p, wait := br.Allow(time.Now())
		if ok {
			probe = p
			break
		}
		s.breakerMu.Lock()
		closed := s.closedCh
		s.breakerMu.Unlock()
		timer := time.NewTimer(min(wait, s.opts.AckWait/3))
		select {
		case <-ctx.Done():
			timer.Stop()
			if stopProgress != nil {
				stopProgress()
			}
			_ = msg.Nak() // shutting down
			return
		case <-closed:
		case <-timer.C:
		}
		timer.Stop()
		_ = msg.InProgress()
	}
	res := spool.Attempt(ctx, s.client, cb, t, n)
	if stopProgress != nil {
		stopProgress()
	}
	if res.Aborted {
		br.Abort(probe)
	} else {
		// As the embedded spool: only a useless answer (connection error, timeout, 408,
		// 429, 5xx) counts as a failure; a 400 shows the backend is up.
		br.Done(probe, !res.OK && res.Retryable, time.Now())
	}
	switch {
	case res.Aborted:
		// Shutting down: hand it to another receiver now. JetStream counts the delivery,
		// so a shutdown mid-attempt uses one of the route's attempts.
		_ = msg.Nak()
	case res.OK:
		s.metrics.deliveries.WithLabelValues(t.Route, spool.OutcomeDelivered).Inc()
		// If this ack is lost (connection or server gone right now), JetStream delivers
		// the callback again after AckWait: a duplicate with the same X-Callback-Id.
		if err := msg.Ack(); err != nil {
			s.log.Error(err, "Failed to acknowledge a delivery to JetStream; it will be delivered again", "route", t.Route, "callbackId", cb.ID)
		}
		if s.log.V(1).Enabled() {
			s.log.V(1).Info("Delivered callback", "route", t.Route, "callbackId", cb.ID, "attempt", n)
		}
	case res.Retryable && n < t.MaxAttempts:
		s.metrics.deliveries.WithLabelValues(t.Route, spool.OutcomeRetry).Inc()
		s.metrics.retries.WithLabelValues(t.Route).Inc()
		wait := spool.Backoff(t, n, res.RetryAfter, s.opts.MaxRetryAfter)
		if err := msg.NakWithDelay(wait); err != nil {
			s.log.Error(err, "Failed to schedule a retry with JetStream; it is retried after the ack wait", "route", t.Route, "callbackId", cb.ID)
		}
		if s.log.V(1).Enabled() {
			s.log.V(1).Info("Delivery failed, will retry", "route", t.Route, "callbackId", cb.ID, "attempt", n, "reason", res.Reason, "retryIn", wait.String())
		}
	default:
		s.metrics.deliveries.WithLabelValues(t.Route, spool.OutcomeDeadLetter).Inc()
		s.deadLetter(ctx, msg, md, cb, t, n, res.Reason, res.Retryable)
	}
}

// deadLetter stores msg in the dead-letter stream and only then acknowledges it. Its
// message ID (the stream sequence) makes a repeat after a crash between the two steps
// a duplicate JetStream drops.
func (s *Spool) deadLetter(ctx context.Context, msg jetstream.Msg, md *jetstream.MsgMetadata, cb *callback.Callback, t *callback.Target, n int, reason string, retryable bool) {
	h := nats.Header{}
	for k, v := range msg.Headers() {
		if k != jetstream.MsgIDHeader {
			h[k] = v
		}
	}
	now := time.Now()
	h.Set(hMade, strconv.Itoa(n))
	h.Set(hLastError, reason)
	h.Set(hDeadAt, strconv.FormatInt(now.UnixNano(), 10))
	tok := routeToken(t.Route)
	dm := nats.NewMsg(s.deadSubj + tok)
	dm.Header, dm.Data = h, msg.Data()
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.opts.PublishTimeout)
	defer cancel()
	id := fmt.Sprintf("dead %s %d", s.opts.Stream, md.Sequence.Stream)
	if _, err := s.js.PublishMsg(pctx, dm, jetstream.WithMsgID(id), jetstream.WithExpectStream(s.opts.Stream+DeadSuffix)); err != nil {
		// Not stored: keep it pending and try again later rather than lose it.
		s.log.Error(err, "Failed to dead-letter a delivery; retrying later", "route", t.Route)
		_ = msg.NakWithDelay(t.MaxBackoff)
		return
	}
	if err := msg.Ack(); err != nil {
		s.log.Error(err, "Failed to acknowledge a dead-lettered delivery to JetStream", "route", t.Route)
	}
	s.metrics.deadLetters.WithLabelValues(t.Route).Inc()
	id = ""
	if cb != nil {
		id = cb.ID
	}
	s.deadLog.Info("Dead-lettered callback", "route", t.Route, "callbackId", id, "streamSeq", md.Sequence.Stream,
		"attempt", n, "reason", reason, "retryable", retryable)
}
