//! Tests of `registry`.

use super::*;
use crate::api_client::tests::{client, serve};

fn change(user_id: UserId, status: PresenceStatus) -> PresenceChange {
    PresenceChange { user_id, status }
}

/// A chat-api older than the batch endpoint (404 there) still gets every notice, in order,
/// one request each.
#[tokio::test]
async fn a_lane_falls_back_to_single_notices_when_batches_are_unknown() {
    let (base, mut requests) = serve(|request: &str| {
        let status = if request.starts_with("POST /internal/v1/presence/batch ") {
            "404 Not Found"
        } else {
            "204 No Content"
        };
        (status.to_string(), String::new())
    })
    .await;
    let (lane, task) = spawn_notice_lane(client(&base).expect("client"));
    for notice in [
        change(1, PresenceStatus::Online),
        change(2, PresenceStatus::Online),
        change(1, PresenceStatus::Offline),
    ] {
        lane.send(notice).expect("lane open");
    }
    drop(lane);
    task.await.expect("the lane ends once its queue is empty");

    let mut seen = Vec::new();
    while let Ok(request) = requests.try_recv() {
        let line = request.lines().next().unwrap_or_default().to_string();
        let body = request
            .split("\r\n\r\n")
            .nth(1)
            .unwrap_or_default()
            .to_string();
        seen.push((line, body));
    }
    let single = |body: &str| {
        (
            "POST /internal/v1/presence HTTP/1.1".to_string(),
            body.to_string(),
        )
    };
    assert_eq!(
        seen,
        vec![
            (
                "POST /internal/v1/presence/batch HTTP/1.1".to_string(),
                r#"{"changes":[{"user_id":1,"status":"online"},{"user_id":2,"status":"online"},{"user_id":1,"status":"offline"}]}"#.to_string(),
            ),
            single(r#"{"user_id":1,"status":"online"}"#),
            single(r#"{"user_id":2,"status":"online"}"#),
            single(r#"{"user_id":1,"status":"offline"}"#),
        ]
    );
}
