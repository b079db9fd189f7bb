use parking_lot::Mutex;

use super::*;

fn pending(user: u64, chat: u64, seq: u64, answers: &Arc<Mutex<Vec<(u64, bool)>>>) -> Pending {
    let answers = answers.clone();
    Pending {
        one: DeliveredMove {
            user_id: user,
            chat_id: chat,
            up_to_seq: seq,
        },
        answer: Box::new(move |outcome| {
            answers.lock().push((seq, outcome.is_ok()));
        }),
    }
}

#[test]
fn frames_coalesce_to_the_highest_move_per_user_and_chat() {
    let answers = Arc::new(Mutex::new(Vec::new()));
    let mut batch = Coalesced::default();
    for (user, chat, seq) in [(1, 7, 3), (1, 7, 9), (2, 7, 4), (1, 7, 5), (1, 8, 1)] {
        assert!(batch.add(pending(user, chat, seq, &answers)).is_ok());
    }
    let moves: Vec<(u64, u64, u64)> = batch
        .moves
        .iter()
        .map(|m| (m.user_id, m.chat_id, m.up_to_seq))
        .collect();
    assert_eq!(moves, vec![(1, 7, 9), (2, 7, 4), (1, 8, 1)]);
    let waiting: Vec<usize> = batch.waiting.iter().map(Vec::len).collect();
    assert_eq!(waiting, vec![3, 1, 1]);
}

#[test]
fn a_batch_holds_at_most_the_maximum_of_distinct_moves() {
    let answers = Arc::new(Mutex::new(Vec::new()));
    let mut batch = Coalesced::default();
    for chat in 0..DeliveredBatch::MAX_MOVES as u64 {
        assert!(batch.add(pending(1, chat, 1, &answers)).is_ok());
    }
    // A repeat still fits; a new move does not.
    assert!(batch.add(pending(1, 0, 2, &answers)).is_ok());
    assert!(batch.add(pending(2, 0, 1, &answers)).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lane_sends_what_queued_meanwhile_in_one_request_and_answers_every_frame() {
    use crate::api_client::tests::{client, serve};
    use std::sync::atomic::{AtomicUsize, Ordering};
    // A chat-api that takes its time with the first request (so the other frames queue behind
    // it) and does not know chat 9.
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let (base, mut requests) = serve(move |request: &str| {
        if seen.fetch_add(1, Ordering::SeqCst) == 0 {
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
        let body = request.split("\r\n\r\n").nth(1).unwrap_or_default();
        let batch: DeliveredBatch = serde_json::from_str(body).expect("a delivered batch");
        let results: Vec<String> = batch
            .moves
            .iter()
            .map(|m| match m.chat_id {
                9 => r#"{"error":{"code":"not_found","message":"chat not found"}}"#.to_string(),
                _ => r#"{"error":null}"#.to_string(),
            })
            .collect();
        (
            "200 OK".to_string(),
            format!(r#"{{"results":[{}]}}"#, results.join(",")),
        )
    })
    .await;
    let lanes = DeliveredLanes::start(client(&base).expect("client"));
    let answers = Arc::new(Mutex::new(Vec::new()));
    // All for user 2, so all in one lane.
    lanes.submit(pending(2, 7, 1, &answers));
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    for seq in 2..=10 {
        lanes.submit(pending(2, 7, seq, &answers));
    }
    lanes.submit(pending(2, 9, 1, &answers));
    let first = requests.recv().await.expect("the first request");
    assert!(
        first.contains(r#""moves":[{"user_id":2,"chat_id":7,"up_to_seq":1}]"#),
        "{first}"
    );
    let second = requests.recv().await.expect("the second request");
    assert!(
        second.contains(
            r#""moves":[{"user_id":2,"chat_id":7,"up_to_seq":10},{"user_id":2,"chat_id":9,"up_to_seq":1}]"#
        ),
        "{second}"
    );
    for _ in 0..100 {
        if answers.lock().len() == 11 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let answers = answers.lock().clone();
    assert_eq!(answers.len(), 11, "every frame is answered: {answers:?}");
    assert_eq!(answers.iter().filter(|a| !a.1).count(), 1, "{answers:?}");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "eleven frames, two requests"
    );
}
