//! The routing table's bookkeeping.

use super::GroupRoutes;

fn members(routes: &GroupRoutes, chat: u64) -> Vec<(u64, u64)> {
    let mut found = Vec::new();
    routes.for_each_member(chat, |user, seq| found.push((user, seq)));
    found.sort_unstable();
    found
}

#[test]
fn routes_follow_installs_notices_and_leaves() {
    let routes = GroupRoutes::default();
    assert!(!routes.add(7, 1, 3), "an unknown user is not routed");
    routes.install(1, &[7, 8]);
    routes.install(2, &[7]);
    assert_eq!(members(&routes, 7), vec![(1, 0), (2, 0)]);
    assert!(!routes.add(7, 1, 5), "an existing route keeps its seq");
    assert_eq!(members(&routes, 7), vec![(1, 0), (2, 0)]);
    assert!(routes.add(9, 2, 4));
    assert_eq!(members(&routes, 9), vec![(2, 4)]);

    routes.remove(7, 1);
    assert_eq!(members(&routes, 7), vec![(2, 0)]);
    // A fresh list drops what it no longer names and keeps the seq of what stays.
    routes.install(2, &[9]);
    assert!(members(&routes, 7).is_empty());
    assert_eq!(members(&routes, 9), vec![(2, 4)]);

    routes.remove_user(2);
    assert!(!routes.knows(2));
    let mut chats: Vec<u64> = routes.chats().into_iter().collect();
    chats.sort_unstable();
    assert_eq!(chats, vec![8], "only chats with a local member are wanted");
}

#[test]
fn a_pending_route_gets_nothing_until_activated_once() {
    let routes = GroupRoutes::default();
    routes.install(1, &[]);
    assert!(routes.add_pending(5, 1));
    assert!(routes.is_pending(5, 1));
    assert!(members(&routes, 5).is_empty());
    assert_eq!(
        routes.chats().len(),
        1,
        "a pending route still wants the channel"
    );
    assert!(routes.activate(5, 1, 12));
    assert!(!routes.activate(5, 1, 13), "only a pending route activates");
    assert_eq!(members(&routes, 5), vec![(1, 12)]);
}
