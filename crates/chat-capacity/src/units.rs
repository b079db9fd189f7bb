//! The unit costs the model multiplies: one named, typed table read from
//! `docs/capacity-units.toml` (built in; `--units FILE` reads another copy). Every entry carries
//! the command that measured it, the date and the machine's floor of the same run, so a figure
//! in a plan can be traced to a command; `scripts/capacity-calibrate.sh` writes a fresh table.
//!
//! CPU costs are microseconds of one core of the measuring machine; the plan scales them by
//! `--core-speed` for other cores.

use serde::{Deserialize, Serialize};

/// The table shipped with the binary.
pub const BUILT_IN: &str = include_str!("../../../docs/capacity-units.toml");

#[derive(Debug, thiserror::Error)]
pub enum UnitsError {
    #[error("cannot read the unit table: {0}")]
    Parse(#[from] toml::de::Error),
    #[error("unit {name}: {problem}")]
    Invalid { name: String, problem: String },
}

/// One measured figure and where it came from.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Unit {
    pub value: f64,
    /// What is counted, e.g. "µs CPU per session".
    pub unit: String,
    pub what: String,
    /// The command that measured it (or, for a design fact, where in the code it is fixed).
    pub command: String,
    pub date: String,
    /// The machine's floor in the same run (`chat-write-floor`), or why none applies.
    pub floor: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Machine {
    pub description: String,
    /// µs per 256-byte loopback write in the calibration runs (`chat-write-floor --sockets 999`).
    pub floor_write_us: f64,
    pub floor_command: String,
}

/// chat-gateway: per socket, per session, per frame.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Gateway {
    /// CPU per session: upgrade, authentication, subscription, presence, close.
    pub session_us: Unit,
    /// CPU per second of one process while sessions arrive, whatever their rate: the batches
    /// (presence, subscriptions) that amortize over more sessions as the rate grows.
    pub arrivals_us_per_s: Unit,
    /// CPU per second of one process while messages flow, whatever their rate: the send batches
    /// and wake-ups that amortize over more messages as the rate grows.
    pub sending_us_per_s: Unit,
    /// CPU per open socket per second with nothing sent (pings, presence refresh), at
    /// `socket_density_ref` sockets a gateway.
    pub socket_us_per_s: Unit,
    /// The sockets a gateway held when `socket_us_per_s` was measured.
    pub socket_density_ref: Unit,
    /// How the idle cost of a socket falls as a gateway holds more of them (their pings and
    /// pongs share the runtime's wake-ups): at n sockets a gateway it is `socket_us_per_s` ×
    /// (n / `socket_density_ref`)^−exponent. Fitted from the calibration's two connect runs.
    pub socket_density_exponent: Unit,
    /// CPU per `send` frame: read, forward to chat-api, write the ack.
    pub send_us: Unit,
    /// CPU per event written to a socket, its Redis message included (one per delivery when
    /// every member has a channel of its own).
    pub delivery_us: Unit,
    /// The part of `delivery_us` spent per Redis message (read, decode, dispatch) rather than per
    /// socket write: what per-chat channels divide among a gateway's members.
    pub redis_share: Unit,
    /// RSS with no socket open (the intercept of RSS against sockets).
    pub base_rss_mib: Unit,
    /// RSS per idle authenticated socket (the slope of RSS against sockets).
    pub socket_idle_bytes: Unit,
    /// RSS per message a second sent through the gateway (requests and frames in flight).
    pub msg_rate_bytes: Unit,
}

/// Below this many sockets a gateway (or a Redis process), the idle cost per socket is taken at
/// this many: both forms are fitted between a few thousand and tens of thousands, and grow without
/// bound towards 0.
const MIN_DENSITY: f64 = 100.0;

impl Gateway {
    /// CPU per socket-second of an idle socket on a gateway holding `sockets` of them.
    pub fn socket_us_per_s_at(&self, sockets: f64) -> f64 {
        let n = sockets.max(MIN_DENSITY);
        self.socket_us_per_s.value
            * (n / self.socket_density_ref.value).powf(-self.socket_density_exponent.value)
    }
}

/// chat-api.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Api {
    /// CPU per session: presence notices (online and offline), token checks.
    pub session_us: Unit,
    /// CPU per second of one process while sessions arrive, whatever their rate: the batches
    /// (presence, subscriptions) that amortize over more sessions as the rate grows.
    pub arrivals_us_per_s: Unit,
    /// CPU per second of one process while messages flow, whatever their rate: the send batches
    /// and wake-ups that amortize over more messages as the rate grows.
    pub sending_us_per_s: Unit,
    /// CPU per persisted message: HTTP, validation, the batch transaction, the ack.
    pub message_us: Unit,
    /// CPU per publish of a message: one per member channel (a private chat), or one per chat
    /// channel (a group), each a script that also appends to the channel's recent-event log.
    pub publish_us: Unit,
    /// CPU per resumed socket: the replay from its cursor (`?since=`, a `resume` frame).
    pub resume_us: Unit,
    /// RSS of a process with sockets connected and no messages.
    pub base_rss_mib: Unit,
    /// RSS added per message a second through the process: requests in flight and the pool's
    /// busy connections, which grow with the rate (in flight = rate × time in the process). Fitted
    /// through the calibration's three chat runs with no intercept; a constant while messages
    /// flow fitted the 2,000-socket runs but was 29% under a 15,000-socket check at 1,500
    /// messages a second.
    pub msg_rate_bytes: Unit,
}

/// MySQL (MariaDB in the measurements).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Mysql {
    /// Server CPU per persisted message (in batches, as chat-api's writer stores them).
    pub message_us: Unit,
    /// Server CPU per session (the presence `last_seen` batch).
    pub session_us: Unit,
    /// CPU per second of one process while sessions arrive, whatever their rate: the batches
    /// (presence, subscriptions) that amortize over more sessions as the rate grows.
    pub arrivals_us_per_s: Unit,
    /// CPU per second of one process while messages flow, whatever their rate: the send batches
    /// and wake-ups that amortize over more messages as the rate grows.
    pub sending_us_per_s: Unit,
    /// Server CPU per resumed socket (the sync queries of its replay).
    pub resume_us: Unit,
    /// Rows written per persisted message (a design fact of the send batch).
    pub rows_per_message: Unit,
}

/// Redis (one shard; single-threaded).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Redis {
    /// CPU per message besides its publishes (rate limit, revocation check).
    pub message_us: Unit,
    /// CPU per publish: the script that appends the event to the channel's recent-event log
    /// and publishes it, whoever is subscribed.
    pub publish_us: Unit,
    /// CPU per Redis delivery: a published event written to one subscribed gateway's
    /// connection (a member channel has the gateways of the member's sockets, a group's channel
    /// every gateway holding a member).
    pub delivery_us: Unit,
    /// CPU per session (subscribe, unsubscribe, presence scripts).
    pub session_us: Unit,
    /// CPU per second of one process while sessions arrive, whatever their rate: the batches
    /// (presence, subscriptions) that amortize over more sessions as the rate grows.
    pub arrivals_us_per_s: Unit,
    /// CPU per second of one process while messages flow, whatever their rate: the send batches
    /// and wake-ups that amortize over more messages as the rate grows.
    pub sending_us_per_s: Unit,
    /// CPU per open socket per second (presence refresh): the marginal cost, what one more
    /// socket adds.
    pub socket_us_per_s: Unit,
    /// CPU per second of one process whatever it holds (its event loop and timers), which its
    /// sockets share: the idle cost of a socket falls as a process holds more of them, towards
    /// `socket_us_per_s`. Fitted with it from the calibration's two connect runs.
    pub idle_us_per_s: Unit,
}

impl Redis {
    /// CPU per socket-second of an idle socket on a Redis process holding `sockets` of them,
    /// its share of the process's idle rate included.
    pub fn socket_us_per_s_at(&self, sockets: f64) -> f64 {
        self.socket_us_per_s.value + self.idle_us_per_s.value / sockets.max(MIN_DENSITY)
    }
}

/// Bytes on the wire.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Wire {
    /// A `new_message` JSON frame's bytes beyond its text.
    pub frame_overhead_bytes: Unit,
    /// TCP/IP (and TLS record) bytes per frame written.
    pub packet_overhead_bytes: Unit,
    /// Seconds between the server's pings on an idle socket.
    pub ping_interval_s: Unit,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Units {
    pub machine: Machine,
    pub gateway: Gateway,
    pub api: Api,
    pub mysql: Mysql,
    pub redis: Redis,
    pub wire: Wire,
}

impl Units {
    pub fn built_in() -> Result<Self, UnitsError> {
        Self::parse(BUILT_IN)
    }

    pub fn parse(text: &str) -> Result<Self, UnitsError> {
        let units: Units = toml::from_str(text)?;
        units.check()?;
        Ok(units)
    }

    /// Every unit with its dotted name, in table order.
    pub fn all(&self) -> Vec<(&'static str, &Unit)> {
        let (g, a, m, r, w) = (
            &self.gateway,
            &self.api,
            &self.mysql,
            &self.redis,
            &self.wire,
        );
        vec![
            ("gateway.session_us", &g.session_us),
            ("gateway.arrivals_us_per_s", &g.arrivals_us_per_s),
            ("gateway.sending_us_per_s", &g.sending_us_per_s),
            ("gateway.socket_us_per_s", &g.socket_us_per_s),
            ("gateway.socket_density_ref", &g.socket_density_ref),
            (
                "gateway.socket_density_exponent",
                &g.socket_density_exponent,
            ),
            ("gateway.send_us", &g.send_us),
            ("gateway.delivery_us", &g.delivery_us),
            ("gateway.redis_share", &g.redis_share),
            ("gateway.base_rss_mib", &g.base_rss_mib),
            ("gateway.socket_idle_bytes", &g.socket_idle_bytes),
            ("gateway.msg_rate_bytes", &g.msg_rate_bytes),
            ("api.session_us", &a.session_us),
            ("api.arrivals_us_per_s", &a.arrivals_us_per_s),
            ("api.sending_us_per_s", &a.sending_us_per_s),
            ("api.message_us", &a.message_us),
            ("api.publish_us", &a.publish_us),
            ("api.resume_us", &a.resume_us),
            ("api.base_rss_mib", &a.base_rss_mib),
            ("api.msg_rate_bytes", &a.msg_rate_bytes),
            ("mysql.message_us", &m.message_us),
            ("mysql.session_us", &m.session_us),
            ("mysql.arrivals_us_per_s", &m.arrivals_us_per_s),
            ("mysql.sending_us_per_s", &m.sending_us_per_s),
            ("mysql.resume_us", &m.resume_us),
            ("mysql.rows_per_message", &m.rows_per_message),
            ("redis.message_us", &r.message_us),
            ("redis.publish_us", &r.publish_us),
            ("redis.delivery_us", &r.delivery_us),
            ("redis.session_us", &r.session_us),
            ("redis.arrivals_us_per_s", &r.arrivals_us_per_s),
            ("redis.sending_us_per_s", &r.sending_us_per_s),
            ("redis.socket_us_per_s", &r.socket_us_per_s),
            ("redis.idle_us_per_s", &r.idle_us_per_s),
            ("wire.frame_overhead_bytes", &w.frame_overhead_bytes),
            ("wire.packet_overhead_bytes", &w.packet_overhead_bytes),
            ("wire.ping_interval_s", &w.ping_interval_s),
        ]
    }

    fn check(&self) -> Result<(), UnitsError> {
        let bad = |name: &str, problem: &str| UnitsError::Invalid {
            name: name.to_string(),
            problem: problem.to_string(),
        };
        for (name, u) in self.all() {
            if !u.value.is_finite() || u.value < 0.0 {
                return Err(bad(name, "value must be a finite number >= 0"));
            }
            if u.command.trim().is_empty() {
                return Err(bad(
                    name,
                    "names no command: every unit says what measured it",
                ));
            }
        }
        if self.gateway.socket_density_ref.value <= 0.0 {
            return Err(bad("gateway.socket_density_ref", "must be positive"));
        }
        if self.gateway.socket_density_exponent.value >= 1.0 {
            return Err(bad(
                "gateway.socket_density_exponent",
                "must be below 1 (a gateway's idle CPU grows with its sockets)",
            ));
        }
        if self.gateway.redis_share.value > 1.0 {
            return Err(bad("gateway.redis_share", "is a share: at most 1"));
        }
        if self.wire.ping_interval_s.value <= 0.0 {
            return Err(bad("wire.ping_interval_s", "must be positive"));
        }
        if !self.machine.floor_write_us.is_finite() || self.machine.floor_write_us <= 0.0 {
            return Err(bad("machine.floor_write_us", "must be positive"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
