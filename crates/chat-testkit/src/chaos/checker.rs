//! The checker: per user and per fault, what was acked as sent in the user's chats against what
//! the user received ([`check`]), and the acked messages against the database ([`verify_history`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

use super::client::{AckedMessage, ClientReport, message_fields};

/// One fault's numbers.
#[derive(Debug, Clone, Default)]
pub struct FaultResult {
    pub name: String,
    /// Distinct acked messages created in this phase.
    pub messages: u64,
    /// Per-user expected deliveries: every acked message of the user's chats sent by another
    /// member.
    pub sent: u64,
    pub received: u64,
    pub lost: u64,
    /// The same id twice on one live stream (a failure).
    pub duplicated: u64,
    /// Repeats after a resume, dropped by id (allowed).
    pub dropped_dups: u64,
    pub out_of_order: u64,
    /// Deliveries that came only with the final resume (missed live, no resync): reported,
    /// not a failure, since resuming is how the protocol recovers.
    pub only_in_final: u64,
    pub deliveries: u64,
    pub refilled: u64,
    pub reconnects: u64,
    pub resyncs: u64,
    pub resumes: u64,
    pub send_retries: u64,
    /// Per member, the edited or deleted messages (by the phase of their last change) whose final
    /// state the member should end with, did, or did not (a lost `message_updated`).
    pub updates_sent: u64,
    pub updates_received: u64,
    pub updates_lost: u64,
}

impl FaultResult {
    /// The line the suite prints.
    pub fn line(&self) -> String {
        format!(
            "fault={} sent={} received={} lost={} duplicated={} out_of_order={} \
             updates_sent={} updates_received={} updates_lost={} \
             | messages={} deliveries={} dup_dropped={} only_in_final_resume={} refilled={} \
             reconnects={} resyncs={} resumes={} send_retries={}",
            self.name,
            self.sent,
            self.received,
            self.lost,
            self.duplicated,
            self.out_of_order,
            self.updates_sent,
            self.updates_received,
            self.updates_lost,
            self.messages,
            self.deliveries,
            self.dropped_dups,
            self.only_in_final,
            self.refilled,
            self.reconnects,
            self.resyncs,
            self.resumes,
            self.send_retries
        )
    }
}

/// The verdict of a run.
#[derive(Debug, Clone, Default)]
pub struct Verdict {
    pub faults: Vec<FaultResult>,
    /// Everything the run fails on, one line each (capped per kind).
    pub failures: Vec<String>,
    pub total_messages: u64,
    /// Edits and deletions acked.
    pub total_changes: u64,
    pub closes: BTreeMap<String, u64>,
    pub send_errors: BTreeMap<String, u64>,
    /// Not failures: messages that reached a user only through the final resume.
    pub warnings: Vec<String>,
}

/// Compares, per user and phase, what was acked in the user's chats with what the user
/// received. `members` maps chat id → member user ids; `phases` names phase 0, 1, ...
pub fn check(
    reports: &[ClientReport],
    members: &HashMap<u64, Vec<u64>>,
    phases: &[String],
) -> Verdict {
    let mut verdict = Verdict {
        faults: phases
            .iter()
            .map(|name| FaultResult {
                name: name.clone(),
                ..FaultResult::default()
            })
            .collect(),
        ..Verdict::default()
    };
    let last = phases.len().saturating_sub(1);
    let by_user: HashMap<u64, &ClientReport> = reports.iter().map(|r| (r.user_id, r)).collect();
    let mut lost_lines = Vec::new();
    let mut seen_ids = HashSet::new();
    for report in reports {
        for (code, n) in &report.closes {
            *verdict.closes.entry(code.clone()).or_default() += n;
        }
        for (code, n) in &report.send_errors {
            *verdict.send_errors.entry(code.clone()).or_default() += n;
        }
        for (phase, c) in report.phases.iter().enumerate() {
            let f = &mut verdict.faults[phase.min(last)];
            f.duplicated += c.duplicated;
            f.dropped_dups += c.dropped_dups;
            f.out_of_order += c.out_of_order;
            f.deliveries += c.deliveries;
            f.refilled += c.refilled;
            f.reconnects += c.reconnects;
            f.resyncs += c.resyncs;
            f.resumes += c.resumes;
            f.send_retries += c.send_retries;
        }
        for message in &report.acked {
            if !seen_ids.insert(message.id) {
                verdict.failures.push(format!(
                    "message {} acked twice (client_msg_id {})",
                    message.id, message.client_msg_id
                ));
                continue;
            }
            let phase = message.phase.min(last);
            verdict.faults[phase].messages += 1;
            verdict.total_messages += 1;
            let Some(chat_members) = members.get(&message.chat_id) else {
                verdict.failures.push(format!(
                    "message {} in unknown chat {}",
                    message.id, message.chat_id
                ));
                continue;
            };
            for member in chat_members {
                if *member == message.sender {
                    continue;
                }
                let f = &mut verdict.faults[phase];
                f.sent += 1;
                let got = by_user
                    .get(member)
                    .is_some_and(|r| r.received.contains_key(&message.id));
                if got {
                    f.received += 1;
                } else {
                    f.lost += 1;
                    lost_lines.push(format!(
                        "lost: user {member} never got message {} (chat {} seq {} from user {}, \
                         client_msg_id {}, created in phase {})",
                        message.id,
                        message.chat_id,
                        message.seq,
                        message.sender,
                        message.client_msg_id,
                        phases.get(phase).map(String::as_str).unwrap_or("?")
                    ));
                }
            }
        }
    }
    let acked_by_id: HashMap<u64, &AckedMessage> = reports
        .iter()
        .flat_map(|r| r.acked.iter())
        .map(|m| (m.id, m))
        .collect();
    for report in reports {
        for id in &report.only_in_final {
            let Some(m) = acked_by_id.get(id) else {
                continue;
            };
            verdict.faults[m.phase.min(last)].only_in_final += 1;
            verdict.warnings.push(format!(
                "user {} got message {id} (chat {} seq {} from user {}, created in phase {}) \
                 only with the final resume",
                report.user_id,
                m.chat_id,
                m.seq,
                m.sender,
                phases
                    .get(m.phase.min(last))
                    .map(String::as_str)
                    .unwrap_or("?")
            ));
        }
    }
    let mut by_kind: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for report in reports {
        for a in &report.anomalies {
            let phase = phases
                .get(a.phase.min(last))
                .map(String::as_str)
                .unwrap_or("?");
            by_kind
                .entry(a.kind)
                .or_default()
                .push(format!("{} [{phase}]: {}", a.kind, a.detail));
        }
        if !report.final_synced {
            by_kind.entry("no_final_resume").or_default().push(format!(
                "user {} did not finish its final resume",
                report.user_id
            ));
        }
    }
    super::updates::check_updates(reports, members, phases, &mut verdict);
    const SHOW: usize = 25;
    let lost_total = lost_lines.len();
    verdict.failures.extend(lost_lines.into_iter().take(SHOW));
    if lost_total > SHOW {
        verdict.failures.push(format!(
            "... and {} more lost deliveries",
            lost_total - SHOW
        ));
    }
    for (kind, lines) in by_kind {
        let total = lines.len();
        verdict.failures.extend(lines.into_iter().take(SHOW));
        if total > SHOW {
            verdict
                .failures
                .push(format!("... and {} more {kind}", total - SHOW));
        }
    }
    verdict
}

/// Compares the database (read through the API as a member of each chat) with the acked
/// messages: every acked message is stored, every stored message was acked (nothing
/// half-written, no message stored twice), each chat's seqs are 1..n (tombstones included), and
/// each changed message is as its last acked change left it. Returns the
/// problems, one line each.
pub async fn verify_history(
    api_base: &str,
    chats: &[(u64, String)],
    reports: &[ClientReport],
) -> anyhow::Result<Vec<String>> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .context("building an HTTP client")?;
    let mut acked: HashMap<u64, HashMap<u64, &AckedMessage>> = HashMap::new();
    for report in reports {
        for m in &report.acked {
            acked.entry(m.chat_id).or_default().insert(m.id, m);
        }
    }
    let mut problems = Vec::new();
    for (chat_id, token) in chats {
        let mut stored: Vec<Value> = Vec::new();
        let mut after = 0u64;
        loop {
            let url = format!(
                "{}/v1/chats/{chat_id}/messages?after_seq={after}&limit=100",
                api_base.trim_end_matches('/')
            );
            let resp = http
                .get(&url)
                .bearer_auth(token)
                .send()
                .await
                .with_context(|| format!("GET {url}"))?;
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.with_context(|| format!("GET {url}"))?;
            if status != 200 {
                bail!("GET {url}: {status} {body}");
            }
            let page = body
                .get("messages")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if let Some(seq) = page
                .last()
                .and_then(|m| m.get("seq"))
                .and_then(Value::as_u64)
            {
                after = seq;
            }
            let more = body.get("has_more").and_then(Value::as_bool) == Some(true);
            let empty = page.is_empty();
            stored.extend(page);
            if !more || empty {
                break;
            }
        }
        problems.extend(super::updates::verify_changes(*chat_id, &stored, reports));
        let expected = acked.remove(chat_id).unwrap_or_default();
        let mut stored_ids = HashSet::new();
        for (i, m) in stored.iter().enumerate() {
            let Some((id, _, seq)) = message_fields(m) else {
                problems.push(format!("chat {chat_id}: unreadable message {m}"));
                continue;
            };
            let want = u64::try_from(i).unwrap_or(u64::MAX).saturating_add(1);
            if seq != want {
                problems.push(format!("chat {chat_id}: seq {seq} at position {want}"));
            }
            stored_ids.insert(id);
            if !expected.contains_key(&id) {
                problems.push(format!(
                    "chat {chat_id}: stored message {id} (seq {seq}, client_msg_id {}) was \
                     never acked",
                    m.get("client_msg_id").unwrap_or(&Value::Null)
                ));
            }
        }
        for (id, m) in &expected {
            if !stored_ids.contains(id) {
                problems.push(format!(
                    "chat {chat_id}: acked message {id} ({}) is not stored",
                    m.client_msg_id
                ));
            }
        }
    }
    for (chat_id, rest) in acked {
        problems.push(format!(
            "{} acked messages in chat {chat_id}, which was not checked",
            rest.len()
        ));
    }
    Ok(problems)
}
