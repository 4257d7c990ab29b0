package receiver

import (
	"errors"
	"syscall"
)

// connPeek is a non-blocking one-byte peek at a connection, allocated once per
// connection (a closure passed to RawConn.Read on each request would escape to the heap).
type connPeek struct {
	buf [1]byte
	err error
	fn  func(fd uintptr) bool
}

func newConnPeek() *connPeek {
	p := &connPeek{}
	p.fn = func(fd uintptr) bool {
		_, _, p.err = syscall.Recvfrom(int(fd), p.buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return true // never wait for readability
	}
	return p
}

// connAlive peeks at an idle connection without blocking: it is alive when there is
// nothing to read yet (EAGAIN). A zero-byte read (the backend's FIN), a reset, or data
// the backend sent unasked all mean it must not carry another request.
func connAlive(raw syscall.RawConn, p *connPeek) bool {
	p.err = nil
	if rerr := raw.Read(p.fn); rerr != nil {
		return false
	}
	return errors.Is(p.err, syscall.EAGAIN) || errors.Is(p.err, syscall.EWOULDBLOCK)
}
