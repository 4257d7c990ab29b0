package receiver

import (
	"encoding/json"
	"net/http"

	"github.com/callback-router/callback-router/api/v1alpha1"
)

// Precomputed success envelopes: the hot path writes them without encoding.
var (
	tencentOK   = []byte(`{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":""}`)
	openIMAllow = []byte(`{"actionCode":0,"errCode":0,"errMsg":"","errDlt":"","nextCode":0}`)
)

// OpenIMRejectErrCode is the errCode of an OpenIM reject envelope sent by failurePolicy
// Reject. Error answers use 5000 + the HTTP status (5401, 5404, 5503, ...): OpenIM wants
// custom codes in 5000-9999.
const OpenIMRejectErrCode = 5000

// tencentEnvelope is Tencent IM's answer body.
type tencentEnvelope struct {
	ActionStatus string `json:"ActionStatus"`
	ErrorCode    int    `json:"ErrorCode"`
	ErrorInfo    string `json:"ErrorInfo"`
}

// openIMEnvelope is OpenIM's CommonCallbackResp. actionCode 0 with nextCode 1 stops the
// action (OpenIM v3.7+); OpenIM ignores the HTTP status.
type openIMEnvelope struct {
	ActionCode int    `json:"actionCode"`
	ErrCode    int    `json:"errCode"`
	ErrMsg     string `json:"errMsg"`
	ErrDlt     string `json:"errDlt"`
	NextCode   int    `json:"nextCode"`
}

// OKEnvelope is the provider's "accepted, let the action through" answer.
func OKEnvelope(p v1alpha1.Provider) []byte {
	if p == v1alpha1.ProviderOpenIM {
		return openIMAllow
	}
	return tencentOK
}

// RejectEnvelope is the provider's "refused" answer with a reason. status is the HTTP
// status it goes with (200 for a failurePolicy Reject answer); it picks the OpenIM errCode.
func RejectEnvelope(p v1alpha1.Provider, status int, why string) []byte {
	var b []byte
	if p == v1alpha1.ProviderOpenIM {
		code := OpenIMRejectErrCode
		if status != http.StatusOK {
			code += status
		}
		b, _ = json.Marshal(openIMEnvelope{ErrCode: code, ErrMsg: why, NextCode: 1})
	} else {
		b, _ = json.Marshal(tencentEnvelope{ActionStatus: "FAIL", ErrorCode: 1, ErrorInfo: why})
	}
	return b
}
