//go:build !linux

package receiver

import "syscall"

// connAlive cannot peek without blocking here: every idle connection is taken as alive,
// so a request on one the backend closed gets the route's failurePolicy answer.
func connAlive(syscall.RawConn, *connPeek) bool { return true }

type connPeek struct{}

func newConnPeek() *connPeek { return nil }
