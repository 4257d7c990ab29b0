package receiver

import (
	"context"
	"io"
	"net/http"
	"net/netip"
	"strconv"
)

// exchange is one callback request and its answer, whichever HTTP server carries it:
// net/http (Handler.ServeHTTP, for embedding and tests) or fasthttp (ServeFast, the
// receiver's own listener). The callback logic is written once against it.
type exchange interface {
	method() string
	path() string
	rawQuery() string
	// remoteAddr is "ip:port" of the peer, for logs; remoteIP is the peer address.
	remoteAddr() string
	remoteIP() netip.Addr
	basicAuth() (user, pass string, ok bool)
	// forwardedFor returns the X-Forwarded-For header values, in order.
	forwardedFor() []string
	// header returns the first value of a request header, "" when absent.
	header(name string) string
	// body reads at most limit bytes (errTooLarge past it). The slice is valid until the
	// answer has been written; copy it to keep it longer.
	body(limit int64) ([]byte, error)
	// bodyStable reports whether the body slice stays valid after the answer.
	bodyStable() bool
	// context is the request's context. On fasthttp its Done closes when the server
	// starts shutting down, not when this request ends: do not pass it on as it is.
	context() context.Context
	answer(status int, contentType string, body []byte)
}

// stdExchange carries a net/http request.
type stdExchange struct {
	w http.ResponseWriter
	r *http.Request
}

func (x *stdExchange) method() string         { return x.r.Method }
func (x *stdExchange) path() string           { return x.r.URL.Path }
func (x *stdExchange) rawQuery() string       { return x.r.URL.RawQuery }
func (x *stdExchange) remoteAddr() string     { return x.r.RemoteAddr }
func (x *stdExchange) forwardedFor() []string { return x.r.Header.Values("X-Forwarded-For") }
func (x *stdExchange) bodyStable() bool       { return true }
func (x *stdExchange) header(name string) string {
	return x.r.Header.Get(name)
}
func (x *stdExchange) context() context.Context {
	return x.r.Context()
}
func (x *stdExchange) basicAuth() (string, string, bool) { return x.r.BasicAuth() }

func (x *stdExchange) remoteIP() netip.Addr {
	ap, err := netip.ParseAddrPort(x.r.RemoteAddr)
	if err != nil {
		return netip.Addr{} // in no prefix
	}
	return ap.Addr().Unmap()
}

func (x *stdExchange) body(limit int64) ([]byte, error) {
	return readBody(x.r.Body, x.r.ContentLength, limit)
}

func (x *stdExchange) answer(status int, contentType string, body []byte) {
	h := x.w.Header()
	if contentType == contentTypeJSON {
		h["Content-Type"] = jsonType
	} else {
		h["Content-Type"] = []string{contentType}
	}
	h["Content-Length"] = []string{strconv.Itoa(len(body))}
	x.w.WriteHeader(status)
	_, _ = x.w.Write(body)
}

// readBody reads at most limit bytes. A body with a known length is read into one
// exact-size slice that is never reused, so the sink may keep it.
func readBody(body io.Reader, contentLength, limit int64) ([]byte, error) {
	if contentLength > limit {
		return nil, errTooLarge
	}
	if contentLength >= 0 {
		b := make([]byte, contentLength)
		if _, err := io.ReadFull(body, b); err != nil {
			return nil, err
		}
		return b, nil
	}
	b, err := io.ReadAll(io.LimitReader(body, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, errTooLarge
	}
	return b, nil
}
