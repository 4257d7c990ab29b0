package callback

import (
	"strconv"

	"github.com/tidwall/gjson"

	"github.com/callback-router/callback-router/api/v1alpha1"
)

// ConversationKey is the conversation a callback belongs to, the key of a route's
// ordering: {key: Conversation}. Copies with the same key are delivered one at a time, in
// arrival order. It is computed once, at the door, and stored with the ordered copies, so
// a restart keeps the order.
//
//   - Tencent IM, a body with GroupId (group messages, recalls, member changes): "group:" +
//     GroupId.
//   - Tencent IM, a body with From_Account and To_Account (C2C messages, modifications,
//     recalls, bot messages): "c2c:" + the two accounts in sorted order, so both
//     directions of a conversation share one key.
//   - Tencent IM, a body with Official_Account: "oa:" + Official_Account.
//   - OpenIM: the session, as OpenIM names conversations: "si_<a>_<b>" for a single chat
//     (sessionType 1, the sorted pair sendID/recvID), "sg_<groupID>" for a group
//     (sessionType 2 or 3, or any body with a groupID), "sn_<sendID>_<recvID>" for a
//     notification (sessionType 4).
//
// Anything else (Tencent push batches, whose events span many conversations; online
// state; profile and friend changes; OpenIM user and friend events) has no conversation
// and returns "": such copies are delivered unordered, in parallel, and never wait for
// or hold up an ordered key.
//
// Each part is length-prefixed where two IDs are joined, so no choice of account names
// can make two conversations collide.
func ConversationKey(provider v1alpha1.Provider, body []byte) string {
	root := gjson.ParseBytes(body)
	if !root.IsObject() {
		return ""
	}
	switch provider {
	case v1alpha1.ProviderTencentIM:
		var group, from, to, oa string
		root.ForEach(func(k, v gjson.Result) bool {
			switch k.String() {
			case "GroupId":
				group = stringValue(v)
			case "From_Account":
				from = stringValue(v)
			case "To_Account":
				to = stringValue(v)
			case "Official_Account":
				oa = stringValue(v)
			}
			return true
		})
		switch {
		case group != "":
			return "group:" + group
		case from != "" && to != "":
			return "c2c:" + pair(from, to)
		case oa != "":
			return "oa:" + oa
		}
	case v1alpha1.ProviderOpenIM:
		var send, recv, group string
		var session int64
		root.ForEach(func(k, v gjson.Result) bool {
			switch k.String() {
			case "sendID":
				send = stringValue(v)
			case "recvID":
				recv = stringValue(v)
			case "groupID":
				group = stringValue(v)
			case "sessionType":
				session = 0
				if v.Type == gjson.Number {
					session = v.Int()
				}
			}
			return true
		})
		switch {
		case session == openIMNotification && send != "" && recv != "":
			return "sn_" + strconv.Itoa(len(send)) + ":" + send + "_" + recv
		case group != "" && session != openIMSingle:
			return "sg_" + group
		case send != "" && recv != "" && (session == openIMSingle || session == 0):
			return "si_" + pair(send, recv)
		}
	}
	return ""
}

// OpenIM session types (openimsdk/protocol constant: SingleChatType, WriteGroupChatType,
// ReadGroupChatType, NotificationChatType).
const (
	openIMSingle       = 1
	openIMNotification = 4
)

// pair joins two IDs in sorted order, the first length-prefixed: "<len>:<a>_<b>".
func pair(a, b string) string {
	if b < a {
		a, b = b, a
	}
	return strconv.Itoa(len(a)) + ":" + a + "_" + b
}
