package catalog

import (
	"strings"

	"github.com/callback-router/callback-router/api/v1alpha1"
)

// The Tencent Cloud IM commands of protocols.md 1.5 (the official command list unless the
// note says the name is only in the community SDK's constant list).
var tencent = func() []Command {
	const sdk = "name from the community SDK constant list, not the official list"
	t := func(name string, k Kind, id IDKey, note string, answer ...string) Command {
		group, _, _ := strings.Cut(name, ".")
		return Command{Provider: v1alpha1.ProviderTencentIM, Name: name, Kind: k, IDKey: id,
			Group: group, Note: note, AnswerFields: answer}
	}
	return []Command{
		// Online status
		t("State.StateChange", After, IDBodyHash, "sends IOS (all caps) where other callbacks send iOS"),
		// Profile and relationship chain
		t("Profile.CallbackPortraitSet", After, IDBodyHash, ""),
		t("Sns.CallbackPrevFriendAdd", Before, IDBodyHash, "ResultCode 0 allows each add, [38000, 39000] refuses it", "ResultItem"),
		t("Sns.CallbackPrevFriendResponse", Before, IDBodyHash, "answer semantics not documented: 0 allows, non-zero rejects"),
		t("Sns.CallbackFriendAdd", After, IDBodyHash, ""),
		t("Sns.CallbackFriendDelete", After, IDBodyHash, ""),
		t("Sns.CallbackBlackListAdd", After, IDBodyHash, ""),
		t("Sns.CallbackBlackListDelete", After, IDBodyHash, ""),
		t("Follow.CallbackAfterFollowAdd", After, IDBodyHash, ""),
		// One-to-one messages
		t("C2C.CallbackBeforeSendMsg", Before, IDMsgKey, "ErrorCode 0 allows (a returned MsgBody replaces the message), 1 rejects, 2 drops silently, 120001-130000 rejects with your code", "MsgBody", "CloudCustomData"),
		t("C2C.CallbackAfterSendMsg", After, IDMsgKey, "fires for failed deliveries too: check SendMsgResult"),
		t("C2C.CallbackAfterMsgReport", After, IDBodyHash, "read report"),
		t("C2C.CallbackAfterMsgWithDraw", After, IDMsgKey, "recall"),
		t("C2C.CallbackAfterModifyMsg", After, IDMsgKey, ""),
		t("Bot.OnC2CMessage", After, IDMsgKey, "a one-to-one message to a bot account"),
		// Groups
		t("Group.CallbackBeforeCreateGroup", Before, IDBodyHash, "answer semantics not documented: 0 allows, non-zero rejects"),
		t("Group.CallbackAfterCreateGroup", After, IDBodyHash, ""),
		t("Group.CallbackBeforeApplyJoinGroup", Before, IDBodyHash, "answer semantics not documented: 0 allows, non-zero rejects"),
		t("Group.CallbackBeforeInviteJoinGroup", Before, IDBodyHash, "members listed in RefusedMembers_Account are not added, the others are", "RefusedMembers_Account"),
		t("Group.CallbackAfterNewMemberJoin", After, IDBodyHash, ""),
		t("Group.CallbackAfterMemberExit", After, IDBodyHash, ""),
		t("Group.CallbackBeforeSendMsg", Before, IDBodyHash, "no MsgSeq yet; ErrorCode 0 allows (a returned MsgBody replaces the message), 1 rejects, 2 drops silently, 10100-10200 rejects with your code", "MsgBody"),
		t("Group.CallbackAfterSendMsg", After, IDGroupMsgSeq, "EventTime may be a JSON string"),
		t("Group.CallbackAfterGroupFull", After, IDBodyHash, ""),
		t("Group.CallbackAfterGroupDestroyed", After, IDBodyHash, ""),
		t("Group.CallbackAfterGroupInfoChanged", After, IDBodyHash, ""),
		t("Group.CallbackOnMemberStateChange", After, IDBodyHash, "members of live rooms (AVChatRoom) going on or off line"),
		t("Group.CallbackSendMsgException", After, IDGroupMsgSeq, "a group message that failed to send"),
		t("Group.CallbackAfterRecallMsg", After, IDBodyHash, ""),
		t("Group.CallbackAfterMemberFieldChanged", After, IDBodyHash, sdk),
		t("Group.CallbackAfterGroupAttrChanged", After, IDBodyHash, sdk),
		t("Group.CallbackAfterReadReceipt", After, IDBodyHash, sdk),
		t("Group.CallbackAfterChangeGroupOwner", After, IDBodyHash, sdk),
		t("Group.CallbackOnDailyGroupQuotaAlarm", After, IDBodyHash, sdk),
		t("Bot.OnGroupMessage", After, IDGroupMsgSeq, "a bot @-mentioned in a group; "+sdk),
		t("Chatbot.OnC2CSignalMessage", After, IDBodyHash, "answer semantics not documented; "+sdk),
		// Communities and topics
		t("Group.CallbackBeforeCreateTopic", Before, IDBodyHash, "answer semantics not documented: 0 allows, non-zero rejects"),
		t("Group.CallbackAfterCreateTopic", After, IDBodyHash, ""),
		t("Group.CallbackAfterTopicDestroyed", After, IDBodyHash, ""),
		t("Group.CallbackAfterTopicInfoChanged", After, IDBodyHash, ""),
		// Official accounts (channels)
		t("OfficialAccount.CallbackBeforeCreateOfficialAccount", Before, IDBodyHash, "answer semantics not documented; "+sdk),
		t("OfficialAccount.CallbackAfterCreateOfficialAccount", After, IDBodyHash, sdk),
		t("OfficialAccount.CallbackAfterOfficialAccountDestroyed", After, IDBodyHash, sdk),
		t("OfficialAccount.CallbackAfterOfficialAccountFull", After, IDBodyHash, sdk),
		t("OfficialAccount.CallbackAfterDeleteSubscriber", After, IDBodyHash, sdk),
		t("OfficialAccount.CallbackAfterAddSubscriber", After, IDBodyHash, sdk),
		t("OfficialAccount.CallbackAfterOfficialAccountInfoChanged", After, IDBodyHash, ""),
		t("OfficialAccount.CallbackBeforeAddSubscriber", Before, IDBodyHash, "subscribers listed in RefusedSubscribers_Account are refused", "RefusedSubscribers_Account"),
		t("OfficialAccount.CallbackBeforeSendMsg", Before, IDBodyHash, "answer semantics not documented; "+sdk),
		t("OfficialAccount.CallbackAfterSendMsg", After, IDMsgKey, ""),
		t("OfficialAccount.CallbackAfterMsgWithDraw", After, IDMsgKey, sdk),
		// Moderation and operations
		t("ContentCallback.ResultNotify", After, IDBodyHash, "moderation result; answer semantics not documented; "+sdk),
		t("Alert.RequestOverLimit", After, IDBodyHash, "REST API over its rate; answer semantics not documented; "+sdk),
		// Push results, batched (Events[], 1 to 100)
		t("Push.OfflinePush", After, IDPushID, "batched: Events[] of 1-100; EventTime in seconds; GroupID with a capital D"),
		t("Push.AllMemberPush", After, IDBodyHash, "batched: Events[] of 1-100 carrying TaskId, no PushID"),
	}
}()

// The OpenIM (open-im-server v3.x) commands of protocols.md 2.6. Before callbacks are
// synchronous and fail closed; after callbacks go through a lossy in-memory queue.
var openIM = func() []Command {
	o := func(name, key, group string, k Kind, id IDKey, note string, answer ...string) Command {
		return Command{Provider: v1alpha1.ProviderOpenIM, Name: name, Kind: k, IDKey: id,
			Group: group, ConfigKey: key, Note: note, AnswerFields: answer}
	}
	revoke := o("callbackBeforeAfterMsgCommand", "afterRevokeMsg", "msg", After, IDBodyHash, "the revoke AFTER-callback, despite its name (the constant CallbackAfterRevokeMsgCommand has this value)")
	revoke.AlsoKnownAs = []string{"callbackAfterRevokeMsgCommand", "callbackAfterGroupMsgRevokeCommand"}
	const conv = "recvMsgOpt, isPinned, isPrivateChat, burnDuration, groupAtType, attachedInfo, ex"
	return []Command{
		// rpc-msg
		o("callbackBeforeSendSingleMsgCommand", "beforeSendSingleMsg", "msg", Before, IDServerMsgID, "skipped for admin senders and notifications; block with actionCode 0 and nextCode 1"),
		o("callbackAfterSendSingleMsgCommand", "afterSendSingleMsg", "msg", After, IDServerMsgID, "seq is always 0 here: use callbackAfterMsgSaveDBCommand for it"),
		o("callbackBeforeSendGroupMsgCommand", "beforeSendGroupMsg", "msg", Before, IDServerMsgID, "block with actionCode 0 and nextCode 1"),
		o("callbackAfterSendGroupMsgCommand", "afterSendGroupMsg", "msg", After, IDServerMsgID, "seq is always 0 here"),
		o("callbackBeforeMsgModifyCommand", "beforeMsgModify", "msg", Before, IDServerMsgID, "v3.7 and later; content must itself be a JSON string",
			"content", "recvID", "groupID", "clientMsgID", "serverMsgID", "senderPlatformID", "senderNickname", "senderFaceURL",
			"sessionType", "msgFrom", "contentType", "status", "options", "offlinePushInfo", "atUserIDList", "attachedInfo", "ex"),
		o("callbackMsgModifyCommand", "beforeMsgModify", "msg", Before, IDServerMsgID, "v3.6 and earlier name of callbackBeforeMsgModifyCommand",
			"content", "recvID", "groupID", "clientMsgID", "serverMsgID", "senderPlatformID", "senderNickname", "senderFaceURL",
			"sessionType", "msgFrom", "contentType", "status", "options", "offlinePushInfo", "atUserIDList", "attachedInfo", "ex"),
		o("callbackAfterMsgSaveDBCommand", "afterMsgSaveDB", "msgtransfer", After, IDServerMsgID, "open-im-server main only (2025-11); carries the real seq"),
		o("callbackAfterSingleMsgReadCommand", "afterSingleMsgRead", "msg", After, IDBodyHash, ""),
		o("callbackAfterGroupMsgReadCommand", "afterGroupMsgRead", "msg", After, IDBodyHash, ""),
		revoke,
		// msggateway
		o("callbackAfterUserOnlineCommand", "afterUserOnline", "msggateway", After, IDBodyHash, "seq is a millisecond timestamp"),
		o("callbackAfterUserOfflineCommand", "afterUserOffline", "msggateway", After, IDBodyHash, "seq is a millisecond timestamp"),
		o("callbackAfterUserKickOffCommand", "afterUserKickOff", "msggateway", After, IDBodyHash, ""),
		// push
		o("callbackBeforeOfflinePushCommand", "beforeOfflinePush", "push", Before, IDBodyHash, "", "userIDList", "offlinePushInfo"),
		o("callbackBeforeOnlinePushCommand", "beforeOnlinePush", "push", Before, IDBodyHash, ""),
		o("callbackBeforeGroupOnlinePushCommand", "beforeGroupOnlinePush", "push", Before, IDBodyHash, ""),
		// rpc-friend (relation)
		o("callbackBeforeAddFriendCommand", "beforeAddFriend", "friend", Before, IDBodyHash, ""),
		o("callbackAfterAddFriendCommand", "afterAddFriend", "friend", After, IDBodyHash, ""),
		o("callbackBeforeAddFriendAgreeCommand", "beforeAddFriendAgree", "friend", Before, IDBodyHash, ""),
		o("callbackAfterAddFriendAgreeCommand", "afterAddFriendAgree", "friend", After, IDBodyHash, ""),
		o("callbackAfterDeleteFriendCommand", "afterDeleteFriend", "friend", After, IDBodyHash, ""),
		o("callbackBeforeImportFriendsCommand", "beforeImportFriends", "friend", Before, IDBodyHash, ""),
		o("callbackAfterImportFriendsCommand", "afterImportFriends", "friend", After, IDBodyHash, ""),
		o("callbackBeforeAddBlackCommand", "beforeAddBlack", "friend", Before, IDBodyHash, ""),
		o("callbackAfterRemoveBlackCommand", "afterRemoveBlack", "friend", After, IDBodyHash, ""),
		o("callbackBeforeSetFriendRemarkCommand", "beforeSetFriendRemark", "friend", Before, IDBodyHash, "", "remark"),
		o("callbackAfterSetFriendRemarkCommand", "afterSetFriendRemark", "friend", After, IDBodyHash, ""),
		// rpc-user
		o("callbackBeforeUpdateUserInfoCommand", "beforeUpdateUserInfo", "user", Before, IDBodyHash, "", "nickName", "faceURL", "ex"),
		o("callbackAfterUpdateUserInfoCommand", "afterUpdateUserInfo", "user", After, IDBodyHash, ""),
		o("callbackBeforeUpdateUserInfoExCommand", "beforeUpdateUserInfoEx", "user", Before, IDBodyHash, "", "nickName", "faceURL", "ex"),
		o("callbackAfterUpdateUserInfoExCommand", "afterUpdateUserInfoEx", "user", After, IDBodyHash, ""),
		o("callbackBeforeUserRegisterCommand", "beforeUserRegister", "user", Before, IDBodyHash, "", "users"),
		o("callbackAfterUserRegisterCommand", "afterUserRegister", "user", After, IDBodyHash, ""),
		// rpc-group
		o("callbackBeforeCreateGroupCommand", "beforeCreateGroup", "group", Before, IDBodyHash, "",
			"groupID", "groupName", "notification", "introduction", "faceURL", "ownerUserID", "ex", "status",
			"creatorUserID", "groupType", "needVerification", "lookMemberInfo", "applyMemberFriend"),
		o("callbackAfterCreateGroupCommand", "afterCreateGroup", "group", After, IDBodyHash, ""),
		o("callbackBeforeMembersJoinGroupCommand", "beforeMemberJoinGroup", "group", Before, IDBodyHash, "", "memberCallbackList"),
		o("callbackBeforeSetGroupMemberInfoCommand", "beforeSetGroupMemberInfo", "group", Before, IDBodyHash, ""),
		o("callbackAfterSetGroupMemberInfoCommand", "afterSetGroupMemberInfo", "group", After, IDBodyHash, ""),
		o("callbackAfterQuitGroupCommand", "afterQuitGroup", "group", After, IDBodyHash, ""),
		o("callbackAfterKickGroupCommand", "afterKickGroupMember", "group", After, IDBodyHash, "KickGroup, not KickGroupMember"),
		o("callbackAfterDisMissGroupCommand", "afterDismissGroup", "group", After, IDBodyHash, "spelled DisMiss"),
		o("callbackBeforeJoinGroupCommand", "beforeApplyJoinGroup", "group", Before, IDBodyHash, ""),
		o("callbackAfterTransferGroupOwnerCommand", "afterTransferGroupOwner", "group", After, IDBodyHash, ""),
		o("callbackBeforeInviteJoinGroupCommand", "beforeInviteUserToGroup", "group", Before, IDBodyHash, "", "refusedMembersAccount"),
		o("callbackAfterJoinGroupCommand", "afterJoinGroup", "group", After, IDBodyHash, ""),
		o("callbackBeforeSetGroupInfoCommand", "beforeSetGroupInfo", "group", Before, IDBodyHash, ""),
		o("callbackAfterSetGroupInfoCommand", "afterSetGroupInfo", "group", After, IDBodyHash, ""),
		o("callbackBeforeSetGroupInfoExCommand", "beforeSetGroupInfoEx", "group", Before, IDBodyHash, ""),
		o("callbackAfterSetGroupInfoExCommand", "afterSetGroupInfoEx", "group", After, IDBodyHash, ""),
		// rpc-conversation
		o("callbackBeforeCreateSingleChatConversationsCommand", "beforeCreateSingleChatConversations", "conversation", Before, IDBodyHash, "", strings.Split(conv, ", ")...),
		o("callbackAfterCreateSingleChatConversationsCommand", "afterCreateSingleChatConversations", "conversation", After, IDBodyHash, ""),
		o("callbackBeforeCreateGroupChatConversationsCommand", "beforeCreateGroupChatConversations", "conversation", Before, IDBodyHash, "", strings.Split(conv, ", ")...),
		o("callbackAfterCreateGroupChatConversationsCommand", "afterCreateGroupChatConversations", "conversation", After, IDBodyHash, ""),
	}
}()
