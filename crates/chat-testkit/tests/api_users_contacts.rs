//! chat-api: user search and contacts (including the `online` flag fed by the gateways).

use std::time::{Duration, Instant};

use chat_testkit::{
    ApiClient, Stack, StackOptions, TEST_PASSWORD, Value, WAIT, WsClient, assert_error,
    assert_has_keys, assert_status, assert_time, json,
};

fn random_prefix() -> String {
    (0..6)
        .map(|_| char::from(b'a' + rand::random_range(0..26u8)))
        .collect()
}

fn usernames(body: &Value, key: &str) -> Vec<String> {
    body[key]
        .as_array()
        .unwrap_or_else(|| panic!("no `{key}` array in {body}"))
        .iter()
        .map(|u| {
            u["username"]
                .as_str()
                .or_else(|| u["user"]["username"].as_str())
                .unwrap_or_else(|| panic!("entry without username: {u}"))
                .to_string()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_search_by_prefix() {
    let stack = Stack::start(StackOptions::gateways(0)).await;
    let api = stack.api();
    let prefix = random_prefix();
    // Registered out of order, plus one that does not match. `_` sorts before letters both in
    // byte order and in collation order, so "by username" is unambiguous here.
    let names = [
        format!("{prefix}_c"),
        format!("{prefix}_a"),
        format!("{prefix}xa"),
        format!("{prefix}_b"),
        format!("x{prefix}"),
    ];
    let mut ids = Vec::new();
    for name in &names {
        ids.push(api.register(name, TEST_PASSWORD).await.0);
    }
    let me = api.with_token(&api.login(&names[0], TEST_PASSWORD).await.1);

    let resp = me.get(&format!("/v1/users?q={prefix}")).await;
    assert_status(&resp, 200, "search");
    let expected = vec![
        format!("{prefix}_a"),
        format!("{prefix}_b"),
        format!("{prefix}_c"),
        format!("{prefix}xa"),
    ];
    assert_eq!(
        usernames(&resp.1, "users"),
        expected,
        "sorted by username: {}",
        resp.1
    );
    for user in resp.1["users"].as_array().expect("users") {
        assert_has_keys(user, &["id", "username"], "search result");
        assert!(
            user.get("email").is_none(),
            "search must not leak email: {user}"
        );
        assert!(
            user.get("password_hash").is_none(),
            "search leaks the hash: {user}"
        );
    }
    assert_eq!(
        resp.1["users"]
            .as_array()
            .expect("users")
            .iter()
            .find(|u| u["username"] == json!(names[1]))
            .map(|u| u["id"].clone()),
        Some(json!(ids[1])),
        "ids in search results"
    );

    // `_` and `%` in q are literal characters, not LIKE wildcards.
    let literal = me.get(&format!("/v1/users?q={prefix}_")).await;
    assert_status(&literal, 200, "search with _");
    assert_eq!(
        usernames(&literal.1, "users"),
        expected[..3].to_vec(),
        "`_` in q must match only `_` ({prefix}xa must not match)"
    );
    let percent = me.get(&format!("/v1/users?q={prefix}%25")).await;
    assert_status(&percent, 200, "search with %");
    assert_eq!(percent.1["users"], json!([]), "`%` in q is literal");
    let dotted = me.get(&format!("/v1/users?q={prefix}.")).await;
    assert_status(&dotted, 200, "search with a dot");
    assert_eq!(
        dotted.1["users"],
        json!([]),
        "no name has a dot after the prefix"
    );

    let upper = me
        .get(&format!("/v1/users?q={}", prefix.to_uppercase()))
        .await;
    assert_status(&upper, 200, "uppercase search");
    assert_eq!(
        usernames(&upper.1, "users"),
        expected,
        "case-insensitive prefix"
    );

    let one = me.get(&format!("/v1/users?q={prefix}_a")).await;
    assert_status(&one, 200, "narrow search");
    assert_eq!(usernames(&one.1, "users"), vec![names[1].clone()]);

    let none = me.get("/v1/users?q=zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz").await;
    assert_status(&none, 200, "32-char q, no match");
    assert_eq!(none.1["users"], json!([]));

    for (path, what) in [
        ("/v1/users".to_string(), "missing q"),
        ("/v1/users?q=".to_string(), "empty q"),
        (format!("/v1/users?q={}", "a".repeat(33)), "33-char q"),
    ] {
        let resp = me.get(&path).await;
        assert_error(&resp, 400, "invalid_input", what);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_search_returns_at_most_20() {
    let stack = Stack::start(StackOptions::gateways(0)).await;
    let api = stack.api();
    let prefix = random_prefix();
    let names: Vec<String> = (0..21).map(|i| format!("{prefix}{i:02}")).collect();
    let results =
        futures_util::future::join_all(names.iter().map(|n| api.register(n, TEST_PASSWORD))).await;
    let me = api.with_token(&results[0].1);
    let resp = me.get(&format!("/v1/users?q={prefix}")).await;
    assert_status(&resp, 200, "search");
    assert_eq!(
        usernames(&resp.1, "users"),
        names[..20].to_vec(),
        "the first 20 by username"
    );
}

#[tokio::test]
async fn contacts_put_get_delete() {
    let stack = Stack::start(StackOptions::gateways(0)).await;
    let api = stack.api();
    // Names chosen so that the order by username is b < c.
    let prefix = random_prefix();
    let (_, owner_token) = api.register(&format!("{prefix}_a"), TEST_PASSWORD).await;
    let (b, _) = api.register(&format!("{prefix}_b"), TEST_PASSWORD).await;
    let (c, _) = api.register(&format!("{prefix}_c"), TEST_PASSWORD).await;
    let me = api.with_token(&owner_token);

    let resp = me.get("/v1/contacts").await;
    assert_status(&resp, 200, "empty contacts");
    assert_eq!(resp.1, json!({"contacts": []}));

    assert_status(
        &me.put(&format!("/v1/contacts/{c}"), None).await,
        204,
        "put c",
    );
    assert_status(
        &me.put(&format!("/v1/contacts/{b}"), None).await,
        204,
        "put b",
    );
    assert_status(
        &me.put(&format!("/v1/contacts/{b}"), None).await,
        204,
        "put b again",
    );

    let resp = me.get("/v1/contacts").await;
    assert_status(&resp, 200, "contacts");
    let contacts = resp.1["contacts"].as_array().expect("contacts array");
    assert_eq!(contacts.len(), 2, "idempotent put: {}", resp.1);
    assert_eq!(
        usernames(&resp.1, "contacts"),
        vec![format!("{prefix}_b"), format!("{prefix}_c")],
        "ordered by username"
    );
    for contact in contacts {
        assert_has_keys(contact, &["user", "online", "last_seen"], "contact");
        assert_has_keys(&contact["user"], &["id", "username"], "contact.user");
        assert_eq!(
            contact["online"],
            json!(false),
            "nobody is connected: {contact}"
        );
        assert_eq!(
            contact["last_seen"],
            json!(null),
            "never connected: {contact}"
        );
    }
    assert_eq!(contacts[0]["user"]["id"], json!(b));

    let resp = me.put("/v1/contacts/999999999", None).await;
    assert_error(&resp, 404, "not_found", "put unknown user");
    let my_id = api.with_token(&owner_token).get("/v1/users/me").await.1["id"]
        .as_u64()
        .expect("my id");
    let resp = me.put(&format!("/v1/contacts/{my_id}"), None).await;
    assert_error(&resp, 400, "invalid_input", "put yourself");
    let resp = me.put("/v1/contacts/abc", None).await;
    assert!(
        resp.0 == 400 || resp.0 == 404,
        "non-numeric contact id: expected 400 or 404, got {} {}",
        resp.0,
        resp.1
    );

    assert_status(
        &me.delete(&format!("/v1/contacts/{b}")).await,
        204,
        "delete b",
    );
    assert_status(
        &me.delete(&format!("/v1/contacts/{b}")).await,
        204,
        "delete b again (not a contact)",
    );
    let resp = me.get("/v1/contacts").await;
    assert_eq!(usernames(&resp.1, "contacts"), vec![format!("{prefix}_c")]);

    // Contacts are one-way: c does not see a as a contact.
    let resp = ApiClient::new(&stack.api_url())
        .with_token(&api.login(&format!("{prefix}_c"), TEST_PASSWORD).await.1)
        .get("/v1/contacts")
        .await;
    assert_eq!(resp.1, json!({"contacts": []}), "contacts are per owner");
}

/// Polls the caller's contact list until `pred` holds for the contact `id`.
async fn wait_contact(
    api: &ApiClient,
    id: u64,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let resp = api.get("/v1/contacts").await;
        assert_status(&resp, 200, "contacts");
        let contact = resp.1["contacts"]
            .as_array()
            .and_then(|a| a.iter().find(|c| c["user"]["id"] == json!(id)).cloned())
            .unwrap_or_else(|| panic!("contact {id} missing in {}", resp.1));
        if pred(&contact) {
            return contact;
        }
        assert!(Instant::now() < deadline, "{what}: last seen {contact}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contact_online_while_it_has_a_socket() {
    let stack = Stack::start(StackOptions::gateways(1)).await;
    let api = stack.api();
    let a = api.new_user("ona").await;
    let b = api.new_user("onb").await;
    let me = api.as_user(&a);
    assert_status(
        &me.put(&format!("/v1/contacts/{}", b.id), None).await,
        204,
        "put",
    );
    wait_contact(&me, b.id, "offline at start", |c| {
        c["online"] == json!(false)
    })
    .await;

    let b1 = WsClient::authed(&stack.gateway_ws_url(0), &b.token).await;
    let b2 = WsClient::authed(&stack.gateway_ws_url(0), &b.token).await;
    wait_contact(&me, b.id, "online after connecting", |c| {
        c["online"] == json!(true)
    })
    .await;
    b1.close().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let contact = wait_contact(&me, b.id, "", |_| true).await;
    assert_eq!(
        contact["online"],
        json!(true),
        "still one socket open: {contact}"
    );

    b2.close().await;
    let contact = wait_contact(&me, b.id, "offline after the last socket closed", |c| {
        c["online"] == json!(false)
    })
    .await;
    assert_time(&contact["last_seen"], "last_seen after going offline");
}
