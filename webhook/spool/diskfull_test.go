package spool

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/callback-router/callback-router/webhook/callback"
)

// Environment and bounds of the disk-full helper process.
const (
	diskFullHelperEnv = "CALLBACK_ROUTER_SPOOL_DISKFULL_HELPER"
	diskFullDirEnv    = "CALLBACK_ROUTER_SPOOL_DISKFULL_DIR"
	diskFullURLEnv    = "CALLBACK_ROUTER_SPOOL_DISKFULL_URL"
	// diskFullFileLimit is the helper's RLIMIT_FSIZE: no file it writes may grow past it,
	// as on a full disk. bbolt grows its file in 16 MiB steps, so the second step fails.
	diskFullFileLimit = 24 << 20
	// diskFullPadding makes each callback big, so the limit is reached in ~1,000 enqueues.
	diskFullPadding = 16 << 10
	// diskFullMaxEnqueues bounds the helper's loop.
	diskFullMaxEnqueues = 5000
	// diskFullErrorsToStop is how many consecutive failed enqueues end the helper.
	diskFullErrorsToStop = 20
)

// TestHelperDiskFull is not a test: TestDiskFull runs the test binary again with
// diskFullHelperEnv set. Under RLIMIT_FSIZE, writes past the limit fail with EFBIG, the
// same way they fail with ENOSPC on a full disk; the helper enqueues until the spool
// refuses and prints "ACK <id>" or "ERR <error>" for every attempt.
func TestHelperDiskFull(t *testing.T) {
	if os.Getenv(diskFullHelperEnv) != "1" {
		t.Skip("helper process of TestDiskFull")
	}
	signal.Ignore(syscall.SIGXFSZ) // get EFBIG from write(2) instead of being killed
	lim := &syscall.Rlimit{Cur: diskFullFileLimit, Max: diskFullFileLimit}
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, lim); err != nil {
		fmt.Println("SETUP", err)
		os.Exit(2)
	}
	s, err := Open(os.Getenv(diskFullDirEnv), Options{})
	if err != nil {
		fmt.Println("SETUP", err)
		os.Exit(2)
	}
	tgt := []callback.Target{target("ns/r", os.Getenv(diskFullURLEnv), 3)}
	failures := 0
	for i := range diskFullMaxEnqueues {
		cb := paddedCallback(t, i)
		if err := s.Enqueue(context.Background(), cb, tgt); err != nil {
			fmt.Println("ERR", strings.ReplaceAll(err.Error(), "\n", " "))
			if failures++; failures >= diskFullErrorsToStop {
				break
			}
			continue
		}
		failures = 0
		fmt.Println("ACK", cb.ID)
	}
	if err := s.Close(); err != nil {
		fmt.Println("CLOSE", err)
	}
	os.Exit(0)
}

func paddedCallback(t testing.TB, i int) *callback.Callback {
	cb := sampleCallback(t, i)
	// Keep the JSON valid: pad inside the object.
	cb.Body = append(cb.Body[:len(cb.Body)-1], []byte(`,"Padding":"`+strings.Repeat("x", diskFullPadding)+`"}`)...)
	return cb
}

// TestDiskFull fills the spool's filesystem (an RLIMIT_FSIZE in a child process; no loop
// mounts here) and checks that the spool then refuses instead of acknowledging, and that
// every callback it did acknowledge is intact and delivered after a reopen, with nothing
// from the failed commits left behind.
func TestDiskFull(t *testing.T) {
	dir, addr := t.TempDir(), downAddr(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperDiskFull$", "-test.count=1")
	cmd.Env = append(os.Environ(), diskFullHelperEnv+"=1", diskFullDirEnv+"="+dir, diskFullURLEnv+"=http://"+addr)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	acked := map[string]bool{}
	var errs []string
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		kind, rest, _ := strings.Cut(sc.Text(), " ")
		switch kind {
		case "ACK":
			acked[rest] = true
		case "ERR":
			errs = append(errs, rest)
		case "PASS", "":
		default:
			t.Fatalf("helper: %s", sc.Text())
		}
	}
	if len(acked) == 0 || len(errs) < diskFullErrorsToStop {
		t.Fatalf("helper acknowledged %d and refused %d; want some of each", len(acked), len(errs))
	}
	if !strings.Contains(errs[0], "file too large") {
		t.Errorf("first refusal %q, want the filesystem's error (EFBIG)", errs[0])
	}
	t.Logf("spool acknowledged %d callbacks of %d KiB, then refused with: %s", len(acked), diskFullPadding>>10, errs[0])

	b := newBackendAt(t, addr, nil)
	s, reg := openSpool(t, dir, Options{})
	if n := metricValue(t, reg, "callback_router_spool_depth", map[string]string{"route": "ns/r"}); int(n) != len(acked) {
		t.Errorf("%v pending deliveries after reopening, want exactly the %d acknowledged", n, len(acked))
	}
	run(t, s)
	eventually(t, 30*time.Second, "every acknowledged callback", func() bool { return b.count() >= len(acked) })
	got := map[string]int{}
	for _, r := range b.requests() {
		got[r.id]++
	}
	for id := range acked {
		if got[id] == 0 {
			t.Errorf("acknowledged callback %s lost", id)
		}
	}
	for id := range got {
		if !acked[id] {
			t.Errorf("callback %s was refused yet delivered", id)
		}
	}
}
