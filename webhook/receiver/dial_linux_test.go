package receiver

import (
	"bytes"
	"fmt"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"
)

// hangingAddr returns a loopback address where a TCP connect hangs: a listening socket
// with a backlog of 0 that never accepts, its one queue slot taken, so the kernel drops
// further SYNs.
func hangingAddr(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
	for i := 0; i < 4; i++ {
		c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err != nil {
			return addr // the queue is full: this connect hung
		}
		t.Cleanup(func() { _ = c.Close() })
	}
	t.Skip("could not make a TCP connect hang on this system")
	return ""
}

// TestDialWithinDeadline: a backend whose connect hangs gets the failurePolicy answer at
// the route's deadline, not after the fixed DefaultDialTimeout.
func TestDialWithinDeadline(t *testing.T) {
	{
		f := newFixture(t, strings.ReplaceAll(syncRouteYAML, "BACKEND", "http://"+hangingAddr(t)), func(o *Options) {
			o.SyncBudget = 300 * time.Millisecond
			o.Now = time.Now
		})
		start := time.Now()
		status, body, _ := post(t, tencentURL(f.url, "1", "C2C.CallbackBeforeSendMsg", testToken, time.Now()), []byte(`{}`), nil)
		elapsed := time.Since(start)
		if status != 200 || !bytes.Equal(body, tencentOK) {
			t.Errorf("got %d %s, want the Allow envelope", status, body)
		}
		if elapsed > 700*time.Millisecond {
			t.Errorf("answered after %s; the budget is 300ms, DefaultDialTimeout %s", elapsed, DefaultDialTimeout)
		}
	}
}
