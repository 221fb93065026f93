//! Start-up, listeners, signals and the graceful drain (proxy.md §7.6).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{error, info, warn};

use crate::accesslog::AccessLog;
use crate::buffers::BUFFERS;
use crate::cluster::Cluster;
use crate::config::{ms, Config};
use crate::cstar::{CStar, Trigger};
use crate::handler::{Proxy, VERSION};
use crate::health::HealthParams;
use crate::http::{self, Admin};
use crate::logging::ErrorLog;
use crate::pool::BackendSettings;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("proxy.listen: bad bind address {0:?}")]
    BadListen(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("proxy.accesslog: cannot open {path:?}: {source}")]
    AccessLog {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("dstore is disabled and no other backend is available")]
    NoBackend,
    #[error(transparent)]
    Cassandra(#[from] crate::cstar::StartError),
}

impl ServeError {
    /// A configuration problem found only at startup (e.g. a config-table row that clashes
    /// with proxy.yaml): exit 2 like the other config errors.
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            ServeError::Cassandra(crate::cstar::StartError::Invalid(_))
        )
    }
}

/// How the proxy stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Drained within the limit.
    Clean,
    /// Draining took longer than `mc.timeout_ms + 2000` ms.
    DrainTimeout,
}

pub fn backend_settings(cfg: &Config) -> BackendSettings {
    let d = &cfg.dstore;
    BackendSettings {
        connect_timeout: ms(d.connect_timeout_ms),
        read_timeout: ms(d.read_timeout_ms),
        write_timeout: ms(d.write_timeout_ms),
        max_idle: d.max_free_conns_per_host.max(0) as usize,
        max_conns: d.max_conns_per_host.max(1) as usize,
        item_size_stats: d.item_size_stats.max(0) as usize,
        health: HealthParams {
            max_errors: d.max_connect_errors.max(1) as usize,
            error_window: Duration::from_secs(d.error_seconds.max(0) as u64),
            dial_silence: ms(d.dial_fail_silence_ms),
            probe_interval: ms(d.probe_interval_ms),
            probe_max: ms(d.probe_max_interval_ms),
            score_ttl: Duration::from_secs(d.response_time_seconds.max(0) as u64),
        },
    }
}

fn bind_addr(listen: &str, port: i64) -> Result<SocketAddr, ServeError> {
    let host = if listen.is_empty() { "0.0.0.0" } else { listen };
    format!("{host}:{port}")
        .parse()
        .or_else(|_| format!("[{host}]:{port}").parse())
        .map_err(|_| ServeError::BadListen(host.to_string()))
}

async fn listen(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Listen { addr, source })
}

/// Logs panics (with a backtrace) through the error log instead of bare stderr.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let bt = std::backtrace::Backtrace::force_capture();
        error!("panic: {info}\n{bt}");
    }));
}

/// Runs the proxy until a shutdown signal, then drains.
pub async fn serve(cfg: Config, log: ErrorLog) -> Result<Stopped, ServeError> {
    install_panic_hook();
    BUFFERS.set_large_threshold(cfg.mc.body_c);
    let prometheus = crate::metrics::install();
    let route = match cfg.route.clone() {
        Some(r) => r,
        // Cassandra only: no beansdb host at all (every status maps to a C* one).
        None if cfg.cassandra.enable => beansdb_route::Route {
            numbucket: 1,
            main: Vec::new(),
            backup: Vec::new(),
        },
        None => return Err(ServeError::NoBackend),
    };
    let settings = Arc::new(backend_settings(&cfg));
    let cluster = Arc::new(Cluster::new(route, cfg.n(), settings, cfg.route_path()));
    let access = if cfg.proxy.accesslog.is_empty() {
        None
    } else {
        Some(
            AccessLog::open(&cfg.proxy.accesslog).map_err(|source| ServeError::AccessLog {
                path: cfg.proxy.accesslog.clone(),
                source,
            })?,
        )
    };
    let cstar = if cfg.cassandra.enable {
        Some(CStar::start(&cfg).await?)
    } else {
        None
    };
    let cfg = Arc::new(cfg);
    let proxy = Arc::new(Proxy::new(cfg.clone(), cluster.clone(), access, cstar));

    let web_addr = bind_addr(&cfg.proxy.listen, cfg.proxy.webport)?;
    let mc_addr = bind_addr(&cfg.proxy.listen, cfg.proxy.port)?;
    let web = listen(web_addr).await?;
    let mc = listen(mc_addr).await?;
    let (sd_tx, sd_rx) = watch::channel(false);

    let admin = Arc::new(Admin {
        proxy: proxy.clone(),
        prometheus: prometheus.clone(),
    });
    let web_task = {
        let app = http::router(admin);
        let mut rx = sd_rx.clone();
        tokio::spawn(async move {
            let _ = axum::serve(web, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.changed().await;
                })
                .await;
        })
    };
    // Housekeeping: idle connection TTL and histogram upkeep.
    {
        let cluster = cluster.clone();
        let mut rx = sd_rx.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        cluster.sweep();
                        if let Some(p) = &prometheus {
                            p.run_upkeep();
                        }
                    }
                    _ = rx.changed() => break,
                }
            }
        });
    }

    let state = cluster.current();
    info!(
        "beansproxy {VERSION} serving on {mc_addr} (http {web_addr}); numbucket {}, {} mains, {} backups, N={} W={} R={}, max_req {}, timeout {} ms",
        state.route.numbucket,
        state.route.main.len(),
        state.route.backup.len(),
        cfg.dstore.n,
        cfg.dstore.w,
        cfg.dstore.r,
        cfg.mc.max_req,
        cfg.mc.timeout_ms
    );
    drop(state);

    if let Some(c) = &proxy.cstar {
        spawn_refresh(c.clone(), proxy.clone(), sd_rx.clone());
    }
    let accept = tokio::spawn(accept_loop(proxy.clone(), mc, sd_rx.clone()));
    wait_for_signal(&log, &proxy).await;
    info!("shutting down: draining connections");
    let _ = sd_tx.send(true);
    // A second signal exits at once.
    tokio::spawn(async {
        wait_for_signal_once().await;
        error!("second signal during drain: exiting now");
        std::process::exit(1);
    });
    let limit = proxy.drain_limit();
    let drained = tokio::time::timeout(limit, async {
        let _ = accept.await;
        proxy.bg.wait_idle().await;
        let _ = web_task.await;
    })
    .await;
    if let Some(a) = &proxy.access {
        a.flush();
    }
    match drained {
        Ok(()) => {
            info!("shutdown complete");
            Ok(Stopped::Clean)
        }
        Err(_) => {
            error!("drain took longer than {} ms", limit.as_millis());
            Ok(Stopped::DrainTimeout)
        }
    }
}

/// `refresh_interval_sec` (cassandra.md §4.4): periodic reloads of the dispatchers.
fn spawn_refresh(c: Arc<CStar>, proxy: Arc<Proxy>, mut shutdown: watch::Receiver<bool>) {
    tokio::spawn(async move {
        loop {
            // Re-read each round: a reload may turn a dispatcher's refresh on or change it.
            let wait = c.refresh_interval().unwrap_or(Duration::from_secs(5));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => break,
            }
            if c.refresh_interval().is_some() {
                // Failures are logged and counted by reload(); the old snapshot stays.
                let _ = c.reload(&proxy.switch, Trigger::Refresh).await;
            }
        }
    });
}

/// Accepts until shutdown, then waits for the connections to finish their current request.
async fn accept_loop(
    proxy: Arc<Proxy>,
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((sock, _)) => {
                    let p = proxy.clone();
                    let sd = shutdown.clone();
                    conns.spawn(async move { p.connection(sock, sd).await });
                }
                Err(e) => {
                    // e.g. EMFILE: back off instead of spinning.
                    warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    while conns.join_next().await.is_some() {}
}

async fn wait_for_signal_once() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut hup), Ok(mut quit)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
        signal(SignalKind::quit()),
    ) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
        _ = hup.recv() => {}
        _ = quit.recv() => {}
    }
}

async fn wait_for_signal(log: &ErrorLog, proxy: &Proxy) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut usr1) = signal(SignalKind::user_defined1()) else {
        warn!("cannot install the SIGUSR1 handler; logs will not be reopened");
        wait_for_signal_once().await;
        return;
    };
    let stop = wait_for_signal_once();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = usr1.recv() => {
                if let Some(a) = &proxy.access {
                    if let Err(e) = a.reopen() {
                        warn!("reopening the access log failed: {e}");
                    }
                }
                if let Some(c) = &proxy.cstar {
                    c.reopen_logs();
                }
                match log.reopen() {
                    Ok(()) => info!("logs reopened"),
                    Err(e) => warn!("reopening the error log failed: {e}"),
                }
            }
        }
    }
}
