package receiver

import (
	"bytes"
	"net"
	"net/http"
	"net/netip"

	"github.com/valyala/fasthttp"
)

// exchange is one callback request on the receiver's fasthttp server and its answer.
type exchange struct {
	ctx   *fasthttp.RequestCtx
	query string
	qSet  bool
}

func (x *exchange) method() string { return string(x.ctx.Method()) }
func (x *exchange) path() string   { return string(x.ctx.Path()) }

// rawQuery is the query string as the client sent it (not decoded).
func (x *exchange) rawQuery() string {
	if !x.qSet {
		x.query, x.qSet = string(x.ctx.URI().QueryString()), true
	}
	return x.query
}

// remoteAddr is "ip:port" of the peer, for logs.
func (x *exchange) remoteAddr() string { return x.ctx.RemoteAddr().String() }

// remoteIP is the peer address; the zero Addr (in no prefix) when it is not TCP.
func (x *exchange) remoteIP() netip.Addr {
	if a, ok := x.ctx.RemoteAddr().(*net.TCPAddr); ok {
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			return ip.Unmap()
		}
	}
	return netip.Addr{}
}

func (x *exchange) basicAuth() (string, string, bool) {
	// Parsed as net/http does: the same credentials are accepted as by any Go server.
	r := http.Request{Header: http.Header{"Authorization": {string(x.ctx.Request.Header.Peek("Authorization"))}}}
	return r.BasicAuth()
}

// header returns the first value of a request header, "" when absent.
func (x *exchange) header(name string) string {
	return string(x.ctx.Request.Header.Peek(name))
}

// forwardedFor returns the X-Forwarded-For header values, in order.
func (x *exchange) forwardedFor() []string {
	var out []string
	x.ctx.Request.Header.VisitAll(func(k, v []byte) {
		if bytes.EqualFold(k, []byte("X-Forwarded-For")) {
			out = append(out, string(v))
		}
	})
	return out
}

func (x *exchange) answer(status int, contentType string, body []byte) {
	x.ctx.SetStatusCode(status)
	x.ctx.SetContentType(contentType)
	x.ctx.SetBody(body)
}
