//! What every binary needs to be operable: JSON (or text) logs, a Prometheus recorder, the
//! SIGTERM/SIGINT shutdown signal, the runtime's thread count, secret masking for the config
//! printed at start, and the backoff every retry loop uses ([`Backoff`], in `backoff/`).

mod backoff;

pub use backoff::{Backoff, Delays};

use std::num::NonZeroUsize;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

/// Logs go to stdout; the level comes from `RUST_LOG` (default `info`).
pub fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true);
    let result = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
    if let Err(e) = result {
        eprintln!("logging was already set up: {e}");
    }
}

/// The tokio runtime a service binary runs on.
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct RuntimeArgs {
    /// Threads that run the service's tasks (default: one per CPU the process may use, cgroup
    /// quotas included). On a host whose cores are shared with other busy processes, one thread
    /// spends less CPU waking its siblings across cores (docs/performance.md).
    #[arg(long, env = "CHAT_WORKER_THREADS")]
    pub worker_threads: Option<NonZeroUsize>,
}

impl RuntimeArgs {
    /// A multi-threaded runtime with every driver enabled, sized as configured.
    pub fn build(&self) -> std::io::Result<tokio::runtime::Runtime> {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.enable_all();
        if let Some(threads) = self.worker_threads {
            builder.worker_threads(threads.get());
        }
        builder.build()
    }

    /// A service binary's `main`: runs `service` to its end on the configured runtime.
    pub fn run<T, E: From<std::io::Error>>(
        self,
        service: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        self.build()?.block_on(service)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("could not install the metrics recorder: {0}")]
pub struct MetricsError(String);

/// Installs the global metrics recorder and returns the handle that renders `/metrics`.
/// Latency histograms get buckets fit for a chat system (0.5 ms to 10 s).
pub fn install_metrics() -> Result<PrometheusHandle, MetricsError> {
    let buckets = [
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ];
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &buckets)
        .map_err(|e| MetricsError(e.to_string()))?
        .install_recorder()
        .map_err(|e| MetricsError(e.to_string()))?;
    // Histograms need periodic upkeep to drain their buffers.
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received");
}

/// A token cancelled on the first SIGTERM or Ctrl-C: what a binary hands to the services it runs.
pub fn cancel_on_shutdown_signal() -> tokio_util::sync::CancellationToken {
    let token = tokio_util::sync::CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        cancel.cancel();
    });
    token
}

/// Hides the password of a URL such as `mysql://user:secret@host/db` for logging.
pub fn mask_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            if userinfo.contains(':') {
                format!("{scheme}://{user}:***@{host}")
            } else {
                format!("{scheme}://{user}@{host}")
            }
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::{RuntimeArgs, mask_url};
    use std::num::NonZeroUsize;

    #[test]
    fn the_runtime_has_the_configured_thread_count() {
        let one = RuntimeArgs {
            worker_threads: NonZeroUsize::new(1),
        };
        let runtime = one.build().expect("runtime");
        assert_eq!(runtime.metrics().num_workers(), 1);
        // Timers and I/O are enabled: a sleep completes.
        runtime.block_on(async { tokio::time::sleep(std::time::Duration::from_millis(1)).await });
        let three = RuntimeArgs {
            worker_threads: NonZeroUsize::new(3),
        };
        assert_eq!(three.build().expect("runtime").metrics().num_workers(), 3);
    }

    #[test]
    fn passwords_are_masked() {
        assert_eq!(
            mask_url("mysql://root:pw@h:3306/db"),
            "mysql://root:***@h:3306/db"
        );
        assert_eq!(mask_url("mysql://root@h/db"), "mysql://root@h/db");
        assert_eq!(mask_url("redis://h:6379"), "redis://h:6379");
    }
}
