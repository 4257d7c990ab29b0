package controllers

import (
	"strings"
	"testing"
)

// TestParseReplayMetrics reads the replay gauges of a receiver's exposition and ignores
// everything else.
func TestParseReplayMetrics(t *testing.T) {
	in := `# HELP callback_router_replay_matched Deliveries a CallbackReplay (by UID) selected.
# TYPE callback_router_replay_matched gauge
callback_router_replay_matched{replay="a"} 3
callback_router_replay_matched{replay="b"} 0
callback_router_replay_replayed{replay="a"} 3
callback_router_replay_replayed{replay="b"} 0
callback_router_replay_errors{replay="a"} 0
callback_router_replay_errors{replay="b"} 0
callback_router_replay_errors{replay="c"} 1
callback_router_spool_depth{route="ns/r"} 7
`
	got, err := ParseReplayMetrics(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]PodReplayResult{
		"a": {Matched: 3, Replayed: 3, Ran: true},
		"b": {Ran: true},
		"c": {Failing: true},
	}
	if len(got) != len(want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s: got %+v, want %+v", k, got[k], w)
		}
	}
	if _, err := ParseReplayMetrics(strings.NewReader(`callback_router_replay_matched{replay="a"} x` + "\n")); err == nil {
		t.Error("a malformed value parsed")
	}
}
