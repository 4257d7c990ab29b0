package receiver

import (
	"errors"
	"syscall"
)

// connAlive peeks at an idle connection without blocking: it is alive when there is
// nothing to read yet (EAGAIN). A zero-byte read (the backend's FIN), a reset, or data
// the backend sent unasked all mean it must not carry another request.
func connAlive(raw syscall.RawConn) bool {
	var buf [1]byte
	var err error
	if rerr := raw.Read(func(fd uintptr) bool {
		_, _, err = syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return true // never wait for readability
	}); rerr != nil {
		return false
	}
	return errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EWOULDBLOCK)
}
