//! chat-api: private and group chats, the chat list, PATCH, members.

use chat_testkit::{
    Stack, StackOptions, Value, assert_error, assert_has_keys, assert_status, assert_time, id_of,
    json, unique_client_msg_id,
};

async fn stack() -> Stack {
    Stack::start(StackOptions::gateways(0)).await
}

const CHAT_KEYS: &[&str] = &[
    "id",
    "type",
    "title",
    "members",
    "last_message",
    "unread_count",
    "pinned",
    "archived",
    "created_at",
    "last_seq",
];
const MEMBER_KEYS: &[&str] = &[
    "id",
    "user_id",
    "username",
    "role",
    "last_read_seq",
    "joined_at",
];

fn check_chat_shape(chat: &Value, what: &str) {
    assert_has_keys(chat, CHAT_KEYS, what);
    assert_time(&chat["created_at"], &format!("{what}: created_at"));
    for member in chat["members"].as_array().expect("members array") {
        check_member_shape(member, what);
    }
}

fn check_member_shape(member: &Value, what: &str) {
    assert_has_keys(member, MEMBER_KEYS, &format!("{what}: member"));
    assert_eq!(
        member["id"], member["user_id"],
        "{what}: member id is the user id: {member}"
    );
    assert_time(&member["joined_at"], &format!("{what}: joined_at"));
}

fn member_ids(chat: &Value) -> Vec<u64> {
    chat["members"]
        .as_array()
        .unwrap_or_else(|| panic!("no members in {chat}"))
        .iter()
        .map(|m| id_of(m, "user_id"))
        .collect()
}

fn member(chat: &Value, user_id: u64) -> &Value {
    chat["members"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["user_id"] == json!(user_id)))
        .unwrap_or_else(|| panic!("user {user_id} is not in {chat}"))
}

#[tokio::test]
async fn private_chat_get_or_create() {
    let stack = stack().await;
    let api = stack.api();
    let a = api.new_user("pa").await;
    let b = api.new_user("pb").await;
    let as_a = api.as_user(&a);
    let as_b = api.as_user(&b);

    let created = as_a
        .post("/v1/chats", &json!({"type": "private", "peer_id": b.id}))
        .await;
    assert_status(&created, 201, "create private chat");
    let chat = &created.1;
    check_chat_shape(chat, "private chat");
    assert_eq!(chat["type"], json!("private"));
    assert_eq!(chat["title"], json!(null));
    assert_eq!(chat["last_message"], json!(null));
    assert_eq!(chat["unread_count"], json!(0));
    assert_eq!(chat["pinned"], json!(false));
    assert_eq!(chat["archived"], json!(false));
    assert_eq!(chat["last_seq"], json!(0));
    let mut ids = member_ids(chat);
    ids.sort();
    let mut want = vec![a.id, b.id];
    want.sort();
    assert_eq!(ids, want, "members of the private chat");
    assert_eq!(member(chat, b.id)["username"], json!(b.username));
    assert_eq!(member(chat, a.id)["last_read_seq"], json!(0));
    let chat_id = id_of(chat, "id");

    let again = as_a
        .post("/v1/chats", &json!({"type": "private", "peer_id": b.id}))
        .await;
    assert_status(&again, 200, "get-or-create again");
    assert_eq!(id_of(&again.1, "id"), chat_id, "same chat");
    let reverse = as_b
        .post("/v1/chats", &json!({"type": "private", "peer_id": a.id}))
        .await;
    assert_status(&reverse, 200, "get-or-create from the peer's side");
    assert_eq!(
        id_of(&reverse.1, "id"),
        chat_id,
        "one private chat per pair"
    );

    let resp = as_a
        .post("/v1/chats", &json!({"type": "private", "peer_id": a.id}))
        .await;
    assert_error(&resp, 400, "invalid_input", "private chat with yourself");
    let resp = as_a
        .post(
            "/v1/chats",
            &json!({"type": "private", "peer_id": 999_999_999}),
        )
        .await;
    assert_error(&resp, 404, "not_found", "private chat with an unknown user");
    let resp = as_a.post("/v1/chats", &json!({"type": "private"})).await;
    assert_error(&resp, 400, "invalid_input", "private chat without peer_id");
    let resp = as_a
        .post("/v1/chats", &json!({"type": "channel", "peer_id": b.id}))
        .await;
    assert_error(&resp, 400, "invalid_input", "unknown chat type");
    let resp = as_a.post("/v1/chats", &json!({"peer_id": b.id})).await;
    assert_error(&resp, 400, "invalid_input", "missing chat type");
    let resp = as_a.post_raw("/v1/chats", "{\"type\":").await;
    assert_error(&resp, 400, "invalid_input", "malformed JSON");
    let resp = api
        .post("/v1/chats", &json!({"type": "private", "peer_id": b.id}))
        .await;
    assert_error(&resp, 401, "unauthorized", "create chat without a token");
}

#[tokio::test]
async fn group_create_and_validation() {
    let stack = stack().await;
    let api = stack.api();
    let owner = api.new_user("go").await;
    let m1 = api.new_user("gm").await;
    let m2 = api.new_user("gm").await;
    let as_owner = api.as_user(&owner);

    // Duplicates and the creator's own id are ignored.
    let resp = as_owner
        .post(
            "/v1/chats",
            &json!({"type": "group", "title": "Team", "member_ids": [m2.id, m1.id, m1.id, owner.id]}),
        )
        .await;
    assert_status(&resp, 201, "create group");
    let chat = &resp.1;
    check_chat_shape(chat, "group");
    assert_eq!(chat["type"], json!("group"));
    assert_eq!(chat["title"], json!("Team"));
    assert_eq!(chat["last_seq"], json!(0));
    assert_eq!(chat["unread_count"], json!(0));
    let mut ids = member_ids(chat);
    ids.sort();
    let mut want = vec![owner.id, m1.id, m2.id];
    want.sort();
    assert_eq!(ids, want, "members without duplicates");
    assert_eq!(member(chat, owner.id)["role"], json!("owner"));
    assert_eq!(member(chat, m1.id)["role"], json!("member"));
    assert_eq!(member(chat, m2.id)["role"], json!("member"));
    let chat_id = id_of(chat, "id");

    // Members see it too.
    let resp = api.as_user(&m1).get(&format!("/v1/chats/{chat_id}")).await;
    assert_status(&resp, 200, "member gets the group");
    assert_eq!(resp.1["title"], json!("Team"));

    // A group with only the creator is fine.
    let resp = as_owner
        .post(
            "/v1/chats",
            &json!({"type": "group", "title": "Solo", "member_ids": []}),
        )
        .await;
    assert_status(&resp, 201, "group with no other member");
    assert_eq!(member_ids(&resp.1), vec![owner.id]);

    let long_ok = "t".repeat(128);
    let resp = as_owner
        .post(
            "/v1/chats",
            &json!({"type": "group", "title": long_ok, "member_ids": []}),
        )
        .await;
    assert_status(&resp, 201, "128-char title");
    let resp = as_owner
        .post(
            "/v1/chats",
            &json!({"type": "group", "title": "é".repeat(128), "member_ids": []}),
        )
        .await;
    assert_status(
        &resp,
        201,
        "128 two-byte characters (characters, not bytes)",
    );

    let bad = [
        (
            json!({"type": "group", "title": "", "member_ids": []}),
            "empty title",
        ),
        (
            json!({"type": "group", "title": "   ", "member_ids": []}),
            "blank title",
        ),
        (
            json!({"type": "group", "title": "t".repeat(129), "member_ids": []}),
            "129-char title",
        ),
        (
            json!({"type": "group", "member_ids": [m1.id]}),
            "missing title",
        ),
        (
            json!({"type": "group", "title": "x", "member_ids": "nope"}),
            "member_ids not an array",
        ),
        (
            json!({"type": "group", "title": "x", "member_ids": (1..=1001).collect::<Vec<u64>>()}),
            "1001 members",
        ),
    ];
    for (body, what) in bad {
        let resp = as_owner.post("/v1/chats", &body).await;
        assert_error(&resp, 400, "invalid_input", what);
    }
    let resp = as_owner
        .post(
            "/v1/chats",
            &json!({"type": "group", "title": "x", "member_ids": [m1.id, 999_999_999]}),
        )
        .await;
    assert_error(&resp, 404, "not_found", "group with an unknown member");
}

#[tokio::test]
async fn get_chat_and_chat_list_order() {
    let stack = stack().await;
    let api = stack.api();
    let a = api.new_user("la").await;
    let b = api.new_user("lb").await;
    let outsider = api.new_user("lo").await;
    let as_a = api.as_user(&a);

    // Small pauses so that creation times (milliseconds) differ.
    let pause = || tokio::time::sleep(std::time::Duration::from_millis(20));
    let c1 = id_of(&as_a.group_chat("one", &[b.id]).await, "id");
    pause().await;
    let c2 = id_of(&as_a.group_chat("two", &[b.id]).await, "id");
    pause().await;
    let c3 = id_of(&as_a.private_chat(b.id).await, "id");
    pause().await;

    let resp = as_a.get(&format!("/v1/chats/{c1}")).await;
    assert_status(&resp, 200, "get chat");
    check_chat_shape(&resp.1, "get chat");
    assert_eq!(id_of(&resp.1, "id"), c1);

    let resp = api.as_user(&outsider).get(&format!("/v1/chats/{c1}")).await;
    assert_error(&resp, 404, "not_found", "non-member gets a chat");
    let resp = as_a.get("/v1/chats/999999999").await;
    assert_error(&resp, 404, "not_found", "unknown chat");

    // Activity: newest first. c1 gets a message, so it moves to the top.
    api.as_user(&b)
        .send_text(c1, &unique_client_msg_id("list"), "bump")
        .await;
    let order = list_ids(&as_a).await;
    assert_eq!(order, vec![c1, c3, c2], "newest activity first");
    let resp = as_a.get("/v1/chats").await;
    let first = &resp.1["chats"][0];
    check_chat_shape(first, "chat list entry");
    assert_eq!(first["last_message"]["text"], json!("bump"));
    assert_eq!(first["unread_count"], json!(1));
    assert_eq!(first["last_seq"], json!(1));

    // Pinned first.
    let resp = as_a
        .patch(&format!("/v1/chats/{c2}"), &json!({"pinned": true}))
        .await;
    assert_status(&resp, 200, "pin c2");
    assert_eq!(list_ids(&as_a).await, vec![c2, c1, c3], "pinned first");
    // Pins are per member: b's order is unchanged.
    assert_eq!(
        list_ids(&api.as_user(&b)).await,
        vec![c1, c3, c2],
        "b's order"
    );
    assert_eq!(
        list_ids(&api.as_user(&outsider)).await,
        Vec::<u64>::new(),
        "outsider has none"
    );
}

async fn list_ids(api: &chat_testkit::ApiClient) -> Vec<u64> {
    let resp = api.get("/v1/chats").await;
    assert_status(&resp, 200, "list chats");
    resp.1["chats"]
        .as_array()
        .unwrap_or_else(|| panic!("no chats array in {}", resp.1))
        .iter()
        .map(|c| id_of(c, "id"))
        .collect()
}

#[tokio::test]
async fn patch_title_pinned_archived() {
    let stack = stack().await;
    let api = stack.api();
    let owner = api.new_user("po").await;
    let member_user = api.new_user("pm").await;
    let outsider = api.new_user("px").await;
    let as_owner = api.as_user(&owner);
    let as_member = api.as_user(&member_user);
    let group = id_of(&as_owner.group_chat("Old", &[member_user.id]).await, "id");
    let private = id_of(&as_owner.private_chat(member_user.id).await, "id");

    let resp = as_member
        .patch(&format!("/v1/chats/{group}"), &json!({"title": "New"}))
        .await;
    assert_status(&resp, 200, "a plain member renames the group");
    check_chat_shape(&resp.1, "patched chat");
    assert_eq!(resp.1["title"], json!("New"));
    let resp = as_owner.get(&format!("/v1/chats/{group}")).await;
    assert_eq!(resp.1["title"], json!("New"), "title is shared");

    let resp = as_owner
        .patch(
            &format!("/v1/chats/{group}"),
            &json!({"pinned": true, "archived": true}),
        )
        .await;
    assert_status(&resp, 200, "pin and archive");
    assert_eq!(resp.1["pinned"], json!(true));
    assert_eq!(resp.1["archived"], json!(true));
    assert_eq!(
        resp.1["title"],
        json!("New"),
        "title untouched by a flags-only patch"
    );
    let resp = as_member.get(&format!("/v1/chats/{group}")).await;
    assert_eq!(resp.1["pinned"], json!(false), "pinned is per member");
    assert_eq!(resp.1["archived"], json!(false), "archived is per member");
    let resp = as_owner
        .patch(&format!("/v1/chats/{group}"), &json!({"archived": false}))
        .await;
    assert_status(&resp, 200, "unarchive");
    assert_eq!(resp.1["archived"], json!(false));
    assert_eq!(resp.1["pinned"], json!(true), "pinned untouched");

    let resp = as_owner
        .patch(&format!("/v1/chats/{private}"), &json!({"pinned": true}))
        .await;
    assert_status(&resp, 200, "pin a private chat");
    assert_eq!(resp.1["pinned"], json!(true));
    let resp = as_owner
        .patch(&format!("/v1/chats/{private}"), &json!({"title": "nope"}))
        .await;
    assert_error(&resp, 400, "invalid_input", "title on a private chat");
    let resp = as_owner
        .patch(&format!("/v1/chats/{group}"), &json!({"title": "  "}))
        .await;
    assert_error(&resp, 400, "invalid_input", "blank title");
    let resp = as_owner
        .patch(
            &format!("/v1/chats/{group}"),
            &json!({"title": "t".repeat(129)}),
        )
        .await;
    assert_error(&resp, 400, "invalid_input", "129-char title");
    let resp = as_owner
        .patch(&format!("/v1/chats/{group}"), &json!({"pinned": "yes"}))
        .await;
    assert_error(&resp, 400, "invalid_input", "pinned not a boolean");
    let resp = as_owner.post_raw(&format!("/v1/chats/{group}"), "{").await;
    assert!(
        resp.0 == 405 || resp.0 == 400,
        "POST on a chat is not a route: {} {}",
        resp.0,
        resp.1
    );
    let resp = api
        .as_user(&outsider)
        .patch(&format!("/v1/chats/{group}"), &json!({"title": "hack"}))
        .await;
    assert_error(&resp, 404, "not_found", "non-member patches");
    let resp = as_owner
        .patch("/v1/chats/999999999", &json!({"pinned": true}))
        .await;
    assert_error(&resp, 404, "not_found", "patch unknown chat");
}

#[tokio::test]
async fn members_list_add_remove_leave() {
    let stack = stack().await;
    let api = stack.api();
    let owner = api.new_user("mo").await;
    let m1 = api.new_user("m1").await;
    let m2 = api.new_user("m2").await;
    let m3 = api.new_user("m3").await;
    let outsider = api.new_user("mx").await;
    let as_owner = api.as_user(&owner);
    let as_m1 = api.as_user(&m1);
    let group = id_of(&as_owner.group_chat("g", &[m1.id]).await, "id");
    let private = id_of(&as_owner.private_chat(m1.id).await, "id");
    let members_path = format!("/v1/chats/{group}/members");

    let resp = as_m1.get(&members_path).await;
    assert_status(&resp, 200, "list members");
    let members = resp.1["members"].as_array().expect("members array").clone();
    for m in &members {
        check_member_shape(m, "members list");
    }
    let ids: Vec<u64> = members.iter().map(|m| id_of(m, "user_id")).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "ordered by user id");
    assert_eq!(sorted, {
        let mut v = vec![owner.id, m1.id];
        v.sort();
        v
    });

    let resp = api.as_user(&outsider).get(&members_path).await;
    assert_error(&resp, 404, "not_found", "non-member lists members");

    // Any member may add; adding twice is fine.
    let resp = as_m1.post(&members_path, &json!({"user_id": m2.id})).await;
    assert_status(&resp, 204, "member adds m2");
    let resp = as_m1.post(&members_path, &json!({"user_id": m2.id})).await;
    assert_status(&resp, 204, "add m2 again");
    let resp = as_owner
        .post(&members_path, &json!({"user_id": m3.id}))
        .await;
    assert_status(&resp, 204, "owner adds m3");
    let resp = as_owner.get(&members_path).await;
    let roles: Vec<(u64, String)> = resp.1["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| {
            (
                id_of(m, "user_id"),
                m["role"].as_str().unwrap_or("?").to_string(),
            )
        })
        .collect();
    assert_eq!(roles.len(), 4, "four members: {}", resp.1);
    for (id, role) in roles {
        let want = if id == owner.id { "owner" } else { "member" };
        assert_eq!(role, want, "role of {id}");
    }
    let resp = api.as_user(&m2).get(&format!("/v1/chats/{group}")).await;
    assert_status(&resp, 200, "added member sees the chat");

    let resp = as_owner
        .post(&members_path, &json!({"user_id": 999_999_999}))
        .await;
    assert_error(&resp, 404, "not_found", "add unknown user");
    let resp = as_owner.post(&members_path, &json!({})).await;
    assert_error(&resp, 400, "invalid_input", "add without user_id");
    let resp = as_owner
        .post(
            &format!("/v1/chats/{private}/members"),
            &json!({"user_id": m2.id}),
        )
        .await;
    assert_error(&resp, 400, "invalid_input", "add to a private chat");
    let resp = api
        .as_user(&outsider)
        .post(&members_path, &json!({"user_id": outsider.id}))
        .await;
    assert_error(&resp, 404, "not_found", "non-member adds someone");

    // Removing someone else needs the owner role.
    let resp = as_m1.delete(&format!("{members_path}/{}", m2.id)).await;
    assert_error(&resp, 403, "forbidden", "plain member removes another");
    let resp = as_owner.delete(&format!("{members_path}/{}", m2.id)).await;
    assert_status(&resp, 204, "owner removes m2");
    let resp = api.as_user(&m2).get(&format!("/v1/chats/{group}")).await;
    assert_error(&resp, 404, "not_found", "removed member gets the chat");
    let resp = as_owner.delete(&format!("{members_path}/{}", m2.id)).await;
    assert_error(&resp, 404, "not_found", "remove a non-member");
    let resp = api
        .as_user(&outsider)
        .delete(&format!("{members_path}/{}", m1.id))
        .await;
    assert_error(&resp, 404, "not_found", "outsider removes a member");

    // Leaving.
    let resp = as_m1.delete(&format!("{members_path}/{}", m1.id)).await;
    assert_status(&resp, 204, "m1 leaves");
    let resp = as_m1.get(&format!("/v1/chats/{group}")).await;
    assert_error(&resp, 404, "not_found", "left member gets the chat");
    let resp = as_m1.get(&members_path).await;
    assert_error(&resp, 404, "not_found", "left member lists members");
    let resp = as_owner.get(&members_path).await;
    let ids: Vec<u64> = resp.1["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| id_of(m, "user_id"))
        .collect();
    assert_eq!(
        ids,
        {
            let mut v = vec![owner.id, m3.id];
            v.sort();
            v
        },
        "after remove and leave"
    );

    let resp = as_owner
        .delete(&format!("/v1/chats/{private}/members/{}", m1.id))
        .await;
    assert_error(&resp, 400, "invalid_input", "remove from a private chat");
}
