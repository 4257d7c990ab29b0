package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
)

// post sends a callback the way callback-router forwards it: the body byte for byte and
// the X-Callback-* headers.
func post(t *testing.T, url, provider string, body []byte) map[string]any {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Callback-Provider", provider)
	req.Header.Set("X-Callback-Attempt", "1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("answer is not JSON: %v", err)
	}
	return out
}

func TestModeration(t *testing.T) {
	srv := httptest.NewServer(&Moderator{Blocked: []string{"red packet"}})
	defer srv.Close()
	tencent, err := os.ReadFile("testdata/tencent-c2c-after-send.json") // text "red packet"
	if err != nil {
		t.Fatal(err)
	}
	openim, err := os.ReadFile("testdata/openim-after-send-single.json") // "Hello, how are you?"
	if err != nil {
		t.Fatal(err)
	}
	openimJSONContent := bytes.Replace(openim, []byte(`"content":"Hello, how are you?"`),
		[]byte(`"content":"{\"content\":\"claim your red packet\"}"`), 1)

	tests := map[string]struct {
		provider string
		body     []byte
		// want are the answer fields that must match.
		want map[string]any
	}{
		"Tencent blocked text is rejected with ErrorCode 1": {"TencentIM", tencent,
			map[string]any{"ActionStatus": "OK", "ErrorCode": float64(1)}},
		"Tencent clean text is allowed": {"TencentIM", []byte(strings.Replace(string(tencent), "red packet", "hello", 1)),
			map[string]any{"ActionStatus": "OK", "ErrorCode": float64(0)}},
		"Tencent unreadable body is allowed": {"TencentIM", []byte(`not json`),
			map[string]any{"ErrorCode": float64(0)}},
		"OpenIM clean text is allowed": {"OpenIM", openim,
			map[string]any{"actionCode": float64(0), "nextCode": float64(0)}},
		"OpenIM blocked JSON content is rejected with nextCode 1": {"OpenIM", openimJSONContent,
			map[string]any{"actionCode": float64(0), "nextCode": float64(1), "errCode": float64(5001)}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got := post(t, srv.URL, tc.provider, tc.body)
			for k, v := range tc.want {
				if got[k] != v {
					t.Errorf("%s = %v, want %v (answer %v)", k, got[k], v, got)
				}
			}
		})
	}
}
