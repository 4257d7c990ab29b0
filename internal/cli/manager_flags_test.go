package cli

import (
	"flag"
	"io"
	"strings"
	"testing"
)

// TestManagerReceiverFlags: the manager refuses receiver settings that would put /metrics
// on the callback port or give OpenIM an impossible timeout, before creating anything.
func TestManagerReceiverFlags(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string // in the error; "" for valid settings
	}{
		{[]string{"--receiver-image", "img"}, ""},
		{[]string{"--receiver-image", "img", "--receiver-metrics-port", "9191", "--receiver-openim-timeout", "8s"}, ""},
		{[]string{"--receiver-image", "img", "--receiver-metrics-port", "8080"}, "metrics port 8080 is the callback port"},
		{[]string{"--receiver-image", "img", "--receiver-metrics-port", "0"}, "metrics port 0 is out of range"},
		{[]string{"--receiver-image", "img", "--receiver-openim-timeout", "20s"}, "--receiver-openim-timeout"},
	} {
		fs := flag.NewFlagSet("manager", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		var f managerFlags
		f.bind(fs)
		if err := fs.Parse(c.args); err != nil {
			t.Fatalf("%v: %v", c.args, err)
		}
		_, err := f.options()
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%v: %v", c.args, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%v: error %v, want one saying %q", c.args, err, c.want)
		}
	}
}
