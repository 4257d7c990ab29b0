package receiver

import (
	"errors"
	"net"
	"syscall"
)

// errStaleConn is returned, before a byte is written, when a kept-alive backend
// connection about to carry a new request turns out to be closed by the backend (or to
// hold bytes nobody asked for). Nothing reached the backend, so the request may be sent
// again on another connection: the one error a Sync request is retried on.
var errStaleConn = errors.New("kept-alive backend connection was closed by the backend")

// checkedConn is a backend connection that checks, as a request starts on it after an
// earlier answer was read, that the backend has not closed it while it was idle.
//
// Backends close idle keep-alive connections on their own schedule (Node.js and uvicorn
// after 5 s, gunicorn after 2 s). Go's net/http transport notices that with a reader
// goroutine per idle connection and retries a request on a reused connection only when
// nothing was written; fasthttp's client has neither, and the receiver must never send a
// before-callback twice. So the check happens here, at the first write of each request
// on a reused connection: a non-blocking peek at the socket (see connAlive). The
// backend closing it in the instant between this check and its reading the request is
// still possible; that request gets the route's failurePolicy answer, as with net/http.
type checkedConn struct {
	net.Conn
	raw          syscall.RawConn // nil when the connection cannot be checked
	peek         *connPeek       // the peek's buffer and callback, made once
	readSinceUse bool            // an answer was read: the next write starts a new request
}

func newCheckedConn(c net.Conn) net.Conn {
	cc := &checkedConn{Conn: c}
	if sc, ok := c.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			cc.raw, cc.peek = raw, newConnPeek()
		}
	}
	return cc
}

func (c *checkedConn) Read(p []byte) (int, error) {
	c.readSinceUse = true
	return c.Conn.Read(p)
}

func (c *checkedConn) Write(p []byte) (int, error) {
	if c.readSinceUse {
		c.readSinceUse = false
		if c.raw != nil && !connAlive(c.raw, c.peek) {
			return 0, errStaleConn
		}
	}
	return c.Conn.Write(p)
}
