// Command moderation is an example Sync backend for callback-router: it answers Tencent IM
// and OpenIM "before send" callbacks, rejecting messages whose text contains a blocked
// word. callback-router returns its answer to the IM server unchanged, so it answers in
// each platform's own protocol; X-Callback-Provider says which one. See docs/backends.md.
package main

import (
	"encoding/json"
	"flag"
	"io"
	"log"
	"net/http"
	"strings"
	"time"
)

// Limits of the example server.
const (
	// maxBody bounds a callback body; callback-router already caps them at 1 MiB.
	maxBody = 1 << 20
	// readTimeout bounds reading one request. A Sync answer must reach Tencent within 2s
	// in total, so nothing here may be slow.
	readTimeout = time.Second
)

// Moderator decides whether a message's text may be sent.
type Moderator struct {
	// Blocked are the words (lower case) that get a message rejected.
	Blocked []string
}

// allowed reports whether text contains none of the blocked words.
func (m *Moderator) allowed(text string) bool {
	t := strings.ToLower(text)
	for _, w := range m.Blocked {
		if strings.Contains(t, w) {
			return false
		}
	}
	return true
}

// tencentBody is the part of a Tencent IM C2C/Group before-send callback that matters here.
type tencentBody struct {
	MsgBody []struct {
		MsgType    string `json:"MsgType"`
		MsgContent struct {
			Text string `json:"Text"`
		} `json:"MsgContent"`
	} `json:"MsgBody"`
}

// openIMBody is the part of an OpenIM before-send callback that matters here.
type openIMBody struct {
	ContentType int    `json:"contentType"`
	Content     string `json:"content"`
}

// ServeHTTP answers one callback in the provider's protocol.
func (m *Moderator) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody))
	if err != nil {
		http.Error(w, "reading body", http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	switch r.Header.Get("X-Callback-Provider") {
	case "TencentIM":
		var b tencentBody
		ok := true // an unreadable body is let through, as Tencent's own timeout default does
		if json.Unmarshal(body, &b) == nil {
			for _, e := range b.MsgBody {
				if e.MsgType == "TIMTextElem" && !m.allowed(e.MsgContent.Text) {
					ok = false
				}
			}
		}
		// ErrorCode 0 allows; 1 rejects (the sender gets error 20006 / 10016); 2 drops silently.
		resp := map[string]any{"ActionStatus": "OK", "ErrorCode": 0, "ErrorInfo": ""}
		if !ok {
			resp["ErrorCode"], resp["ErrorInfo"] = 1, "message blocked by moderation"
		}
		_ = json.NewEncoder(w).Encode(resp)
	case "OpenIM":
		var b openIMBody
		text := ""
		if json.Unmarshal(body, &b) == nil {
			// Text messages carry {"content":"..."} as a JSON string; older samples plain text.
			var inner struct {
				Content string `json:"content"`
			}
			if json.Unmarshal([]byte(b.Content), &inner) == nil {
				text = inner.Content
			} else {
				text = b.Content
			}
		}
		// OpenIM v3.7+ rejects only on actionCode 0 with nextCode 1; errCode 5000-9999 is ours.
		resp := map[string]any{"actionCode": 0, "errCode": 0, "errMsg": "", "errDlt": "", "nextCode": 0}
		if !m.allowed(text) {
			resp["errCode"], resp["errMsg"], resp["nextCode"] = 5001, "message blocked by moderation", 1
		}
		_ = json.NewEncoder(w).Encode(resp)
	default:
		http.Error(w, "unknown X-Callback-Provider", http.StatusBadRequest)
	}
}

func main() {
	listen := flag.String("listen", "127.0.0.1:8080", "address to serve on")
	blocked := flag.String("blocked", "spam,scam", "comma-separated blocked words")
	flag.Parse()
	m := &Moderator{Blocked: strings.Split(strings.ToLower(*blocked), ",")}
	srv := &http.Server{Addr: *listen, Handler: m, ReadHeaderTimeout: readTimeout, ReadTimeout: readTimeout}
	log.Printf("moderation backend on %s", *listen)
	log.Fatal(srv.ListenAndServe())
}
