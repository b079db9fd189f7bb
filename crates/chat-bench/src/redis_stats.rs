//! What Redis did during a benchmark, read from `INFO` on every server given: the PUBLISH and
//! SPUBLISH calls the masters executed (a replica replays its master's SPUBLISHes; counting them
//! would count each publish twice) and the CPU time of every server, masters and replicas alike.

/// Counters of a set of Redis servers at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RedisStats {
    /// PUBLISH + SPUBLISH calls on masters.
    pub publishes: u64,
    /// used_cpu_sys + used_cpu_user, summed over every server.
    pub cpu_seconds: f64,
}

impl RedisStats {
    /// Reads every server (`redis://host:port` URLs).
    pub async fn read(urls: &[String]) -> anyhow::Result<Self> {
        let mut total = Self::default();
        for url in urls {
            let client = redis::Client::open(url.as_str())?;
            let mut conn = client.get_multiplexed_async_connection().await?;
            let info: String = redis::cmd("INFO")
                .arg("everything")
                .query_async(&mut conn)
                .await?;
            let one = Self::parse(&info);
            total.publishes += one.publishes;
            total.cpu_seconds += one.cpu_seconds;
        }
        Ok(total)
    }

    /// The counters of one server's `INFO everything`.
    pub fn parse(info: &str) -> Self {
        let mut master = true;
        let mut stats = Self::default();
        for line in info.lines() {
            let line = line.trim();
            if let Some(role) = line.strip_prefix("role:") {
                master = role == "master";
            } else if let Some(cpu) = line
                .strip_prefix("used_cpu_sys:")
                .or_else(|| line.strip_prefix("used_cpu_user:"))
            {
                stats.cpu_seconds += cpu.parse::<f64>().unwrap_or(0.0);
            } else if let Some(rest) = line
                .strip_prefix("cmdstat_publish:")
                .or_else(|| line.strip_prefix("cmdstat_spublish:"))
            {
                stats.publishes += rest
                    .split(',')
                    .find_map(|field| field.strip_prefix("calls="))
                    .and_then(|calls| calls.parse().ok())
                    .unwrap_or(0);
            }
        }
        if !master {
            stats.publishes = 0;
        }
        stats
    }

    /// What happened between `earlier` and now.
    pub fn since(self, earlier: Self) -> Self {
        Self {
            publishes: self.publishes.saturating_sub(earlier.publishes),
            cpu_seconds: (self.cpu_seconds - earlier.cpu_seconds).max(0.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::RedisStats;

    #[test]
    fn a_master_counts_its_publishes_and_a_replica_its_cpu_only() {
        let master = "# Replication\r\nrole:master\r\n# CPU\r\nused_cpu_sys:1.5\r\n\
                      used_cpu_user:2.25\r\n# Commandstats\r\n\
                      cmdstat_publish:calls=7,usec=10,usec_per_call=1.4\r\n\
                      cmdstat_spublish:calls=3,usec=5,usec_per_call=1.6\r\n";
        assert_eq!(
            RedisStats::parse(master),
            RedisStats {
                publishes: 10,
                cpu_seconds: 3.75
            }
        );
        let replica = master.replace("role:master", "role:slave");
        assert_eq!(RedisStats::parse(&replica).publishes, 0);
        assert_eq!(RedisStats::parse(&replica).cpu_seconds, 3.75);
    }
}
