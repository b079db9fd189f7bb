//! The backlog asked for is the one the kernel holds (read back with `ss`, which shows a
//! listening socket's accept-queue limit as its Send-Q).

use super::*;

#[tokio::test]
async fn the_listener_has_the_backlog_asked_for() {
    let listener = bind("127.0.0.1:0".parse().expect("addr"), 777).expect("bind");
    let port = listener.local_addr().expect("local addr").port();
    let out = std::process::Command::new("ss")
        .args(["-ltnH", &format!("sport = :{port}")])
        .output()
        .expect("ss (iproute2) is installed: it reads the listen backlog back");
    let text = String::from_utf8_lossy(&out.stdout);
    let send_q: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    assert_eq!(send_q, vec!["777"], "ss -ltn: {text}");
}
