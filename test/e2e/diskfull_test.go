package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/callback-router/callback-router/api/v1alpha1"
	"github.com/callback-router/callback-router/internal/testenv"
	"github.com/callback-router/callback-router/webhook/callback"
)

// Bounds of the full-volume test.
const (
	// diskFullFileLimit is the receiver's RLIMIT_FSIZE: no file it writes may grow past it,
	// as on a full claim. bbolt grows its file in 16 MiB steps past 16 MiB, so the step
	// after that fails.
	diskFullFileLimit = 24 << 20
	// diskFullPadding makes each callback big, so the limit is reached in ~1,000 callbacks.
	diskFullPadding = 16 << 10
	// diskFullPosters send at once; diskFullMaxPosts bounds the run; diskFullRefusalsToStop
	// consecutive 503s end it.
	diskFullPosters        = 8
	diskFullMaxPosts       = 4000
	diskFullRefusalsToStop = 40
)

// TestReceiverDiskFull is "a PVC full" through the real binary: the receiver runs with
// RLIMIT_FSIZE (set by prlimit, SIGXFSZ ignored, so a write past it fails with EFBIG as one
// on a full volume fails with ENOSPC) and no --spool-max-bytes cap, while the backend is
// down. Callbacks are acknowledged until the file system refuses the spool's growth; from
// then on they are answered 503 in Tencent's envelope, never 200. The receiver keeps
// running; once the backend is up, every acknowledged callback is delivered, and the space
// the deliveries free takes new callbacks again.
func TestReceiverDiskFull(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	prlimit, err := exec.LookPath("prlimit")
	if err != nil {
		t.Skip("prlimit (util-linux) not found")
	}
	bin := buildBinary(t)
	sample, err := os.ReadFile(filepath.Join("testdata", "tencent-c2c-after-send.json"))
	if err != nil {
		t.Fatal(err)
	}
	var body map[string]any
	if err := json.Unmarshal(sample, &body); err != nil {
		t.Fatal(err)
	}
	body["CloudCustomData"] = strings.Repeat("x", diskFullPadding)

	work := t.TempDir()
	backendAddr := freeAddr(t) // down until the volume is full
	routes := filepath.Join(work, "routes.yaml")
	if err := os.WriteFile(routes, fmt.Appendf(nil, testenv.FanOutRoutes, crashToken, crashAppID, "http://"+backendAddr), 0o600); err != nil {
		t.Fatal(err)
	}
	// The shell ignores SIGXFSZ; the ignored disposition survives exec into prlimit and the
	// receiver (the Go runtime leaves SIGXFSZ alone unless asked for it).
	prefix := []string{"/bin/sh", "-c", `trap '' XFSZ; exec "$@"`, "sh", prlimit, "--fsize=" + strconv.Itoa(diskFullFileLimit)}
	rcv := startReceiverWith(t, prefix, bin, routes, filepath.Join(work, "spool"), "--spool-max-bytes", "-1")

	var bodyMu sync.Mutex
	makeBody := func(i int64) []byte {
		bodyMu.Lock()
		defer bodyMu.Unlock()
		body["MsgKey"] = fmt.Sprintf("full_%d", i)
		b, err := json.Marshal(body)
		if err != nil {
			panic(err)
		}
		return b
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: diskFullPosters}}
	var (
		mu       sync.Mutex
		acked    = map[string]bool{}
		refused  int
		streak   atomic.Int64
		other    = map[int]int{}
		badFails []string
		next     atomic.Int64
		wg       sync.WaitGroup
	)
	post := func(i int64) (int, []byte, string, error) {
		b := makeBody(i)
		resp, err := client.Post(signedURL(rcv.Addr), "application/json", bytes.NewReader(b))
		if err != nil {
			return 0, nil, "", err
		}
		defer resp.Body.Close()
		answer, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, answer, callback.ComputeID(v1alpha1.ProviderTencentIM, c2cCommand, b), nil
	}
	for range diskFullPosters {
		wg.Go(func() {
			for streak.Load() < diskFullRefusalsToStop {
				i := next.Add(1)
				if i > diskFullMaxPosts {
					return
				}
				status, answer, id, err := post(i)
				mu.Lock()
				switch {
				case err != nil:
					other[0]++
				case status == http.StatusOK && bytes.Contains(answer, []byte(`"ActionStatus":"OK"`)):
					acked[id] = true
					streak.Store(0)
				case status == http.StatusServiceUnavailable:
					refused++
					streak.Add(1)
					if !bytes.Contains(answer, []byte(`"ActionStatus":"FAIL"`)) {
						badFails = append(badFails, string(answer))
					}
				default:
					other[status]++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	t.Logf("with a %d MiB file-size limit: %d acknowledged, %d answered 503, other answers %v", diskFullFileLimit>>20, len(acked), refused, other)
	if refused == 0 {
		t.Fatalf("the spool never refused a callback within %d posts", diskFullMaxPosts)
	}
	if len(acked) == 0 || len(other) > 0 || len(badFails) > 0 {
		t.Fatalf("want 200 OKs, then 503s in the provider's envelope only; got %d OKs, other %v, 503 bodies %q", len(acked), other, badFails)
	}
	if rcv.Cmd.ProcessState != nil {
		t.Fatalf("the receiver exited: %v", rcv.Cmd.ProcessState)
	}
	if !strings.Contains(rcv.Logs.String(), "file too large") {
		t.Errorf("the receiver's log does not show EFBIG (file too large): the refusals had another cause")
	}

	// The backend comes up: everything acknowledged reaches both routes.
	serveDeliveries(t, backendAddr).waitDelivered(t, acked, "")

	// Delivered callbacks freed their pages: new callbacks are stored again.
	var status int
	for i := int64(0); i < 100; i++ {
		if status, _, _, err = post(diskFullMaxPosts + 1 + i); err == nil && status == http.StatusOK {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if status != http.StatusOK {
		t.Errorf("after the backlog was delivered, a new callback got %d (err %v), want 200", status, err)
	}
}
