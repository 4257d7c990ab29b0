package receiver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/valyala/fasthttp"
)

// Bounds on the memory callers can make the receiver hold.
const (
	// DefaultMaxInflightBodyBytes bounds the callback bodies held in memory at once, all
	// connections together (--max-inflight-body-bytes). A request reserves its declared
	// Content-Length (the body limit for a chunked one) before its body is read, and
	// only once it has passed verification.
	DefaultMaxInflightBodyBytes = 64 << 20
	// BodyBudgetWait is how long a verified request waits for room in the in-flight body
	// budget before it is answered 503.
	BodyBudgetWait = 500 * time.Millisecond
	// bodyPrefetchBytes is what fasthttp reads of a body with the head before the handler
	// runs (StreamRequestBody): a body up to this size is already off the connection.
	bodyPrefetchBytes = 8 << 10
)

// Errors of reading a callback body.
var (
	errTooLarge = errors.New("body too large")
	errBusy     = errors.New("in-flight body budget exhausted")
)

// bodyError is a failure to read the body from the client.
type bodyError struct{ err error }

func (e bodyError) Error() string { return "reading the body: " + e.err.Error() }
func (e bodyError) Unwrap() error { return e.err }

// readBody reads the body of a verified callback within MaxBodyBytes, holding a
// reservation of the in-flight body budget until release is called (once the answer no
// longer needs the body). The server streams bodies (StreamRequestBody), so nothing past
// bodyPrefetchBytes has been read before this point.
func (h *Handler) readBody(x *exchange, q *request) (body []byte, release func(), err error) {
	release = func() {}
	limit := h.opts.MaxBodyBytes
	n := int64(x.ctx.Request.Header.ContentLength())
	switch {
	case n > limit:
		return nil, release, errTooLarge
	case n == 0, n == -2: // no body (-2: neither Content-Length nor chunked)
		q.bodyRead = true
		return []byte{}, release, nil
	}
	reserve := n
	if n < 0 { // chunked: its length is known only at the end
		reserve = limit
	}
	// The budget is almost always free: take it without a context and its timer, and
	// wait (up to BodyBudgetWait) only when it is not.
	if !h.bodyBudget.TryAcquire(reserve) {
		ctx, cancel := context.WithTimeout(context.Background(), BodyBudgetWait)
		err = h.bodyBudget.Acquire(ctx, reserve)
		cancel()
		if err != nil {
			return nil, release, errBusy
		}
	}
	release = func() { h.bodyBudget.Release(reserve) }

	stream := x.ctx.RequestBodyStream()
	if stream == nil { // a body already in memory (a request built without a connection)
		b := x.ctx.Request.Body()
		if int64(len(b)) > limit {
			return nil, release, errTooLarge
		}
		q.bodyRead = true
		return b, release, nil
	}
	if n >= 0 {
		// The length is known: one exact-size slice, never reused, so the spool may keep it.
		body = make([]byte, n)
		if _, err := io.ReadFull(stream, body); err != nil {
			return nil, release, bodyError{err}
		}
		q.bodyRead = true
		return body, release, nil
	}
	body, err = io.ReadAll(io.LimitReader(stream, limit+1))
	if err != nil {
		return nil, release, bodyError{err}
	}
	if int64(len(body)) > limit {
		return nil, release, errTooLarge
	}
	q.bodyRead = true
	return body, release, nil
}

// bodyPrefetched reports whether the request's whole body came off the connection with
// its head (none, or a Content-Length within what fasthttp prefetches): then the
// connection can carry the next request although the handler did not read the body.
func bodyPrefetched(ctx *fasthttp.RequestCtx, maxBody int64) bool {
	n := int64(ctx.Request.Header.ContentLength())
	return n == 0 || n == -2 || n > 0 && n <= min(bodyPrefetchBytes, maxBody)
}

// rejectBody answers a failure of readBody.
func (h *Handler) rejectBody(x *exchange, q *request, err error) {
	switch {
	case errors.Is(err, errTooLarge):
		// Read and discard some of what the client is still sending, so that closing the
		// connection does not reset it before the client reads the 413.
		discardBody(x.ctx)
		h.reject(x, q, http.StatusRequestEntityTooLarge, OutcomeTooLarge, "too_large",
			fmt.Sprintf("body over %d bytes", h.opts.MaxBodyBytes))
	case errors.Is(err, errBusy):
		h.metrics.bodyBudgetWaits.Inc()
		h.reject(x, q, http.StatusServiceUnavailable, OutcomeUnavailable, "busy",
			"receiver busy: too many callback bodies in flight")
	default:
		h.rejectDetail(x, q, http.StatusBadRequest, OutcomeBadRequest, "read_body", "the body could not be read", err.Error())
	}
}

// discardBody reads what the client is still sending of a refused body, within
// OversizeDrainBytes and OversizeDrainMax, stopping once it pauses for OversizeDrainIdle
// (it then waits for the answer), into a small buffer: nothing is kept.
func discardBody(ctx *fasthttp.RequestCtx) {
	stream := ctx.RequestBodyStream()
	if stream == nil {
		return
	}
	conn := ctx.Conn()
	var buf [4 << 10]byte
	deadline := time.Now().Add(OversizeDrainMax)
	for n := 0; n < OversizeDrainBytes && time.Now().Before(deadline); {
		next := time.Now().Add(OversizeDrainIdle)
		if next.After(deadline) {
			next = deadline
		}
		_ = conn.SetReadDeadline(next)
		m, err := stream.Read(buf[:])
		n += m
		if err != nil {
			break
		}
	}
	// fasthttp sets its own deadlines for writing the answer.
	_ = conn.SetReadDeadline(time.Time{})
}
