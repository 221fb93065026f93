//! Node start-up and shutdown: the sequence of node.md §6.3 around the engine.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use beansdb_store::buffers::BUFFERS;
use beansdb_store::compress::NotCompress;
use beansdb_store::{FsyncPolicy as StoreFsync, Store, StoreConfig};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::{FsyncPolicy, NodeConfig};
use crate::http::{self, Admin};
use crate::logging::LogSink;
use crate::server::{McSettings, Node};
use crate::stats::Counters;

/// Engine settings from the node config.
pub fn store_config(cfg: &NodeConfig) -> StoreConfig {
    let d = &cfg.hstore.data;
    let mut sc = StoreConfig::new(&cfg.hstore.local.home, cfg.route.numbucket);
    sc.served = cfg.served_buckets();
    sc.tree_height = cfg.hstore.htree.tree_height;
    sc.datafile_max = d.datafile_max;
    sc.check_vhash = d.check_vhash;
    sc.fsync = match d.fsync {
        FsyncPolicy::Never => StoreFsync::Never,
        FsyncPolicy::Interval => StoreFsync::Interval,
        FsyncPolicy::Always => StoreFsync::Always,
    };
    sc.fsync_interval_ms = d.fsync_interval_ms;
    sc.bufio_cap = d.bufio_cap as usize;
    sc.hint_split_cap = cfg.hstore.hint.hint_split_cap as usize;
    sc.hint_index_interval = cfg.hstore.hint.hint_index_interval;
    sc.hint_no_merged = cfg.hstore.hint.hint_no_merged;
    sc.not_compress = NotCompress::with_extra(d.not_compress.iter().cloned());
    sc.no_gc_days = d.no_gc_days;
    sc.body_max = cfg.mc.body_max;
    sc.gc_max_mb_per_sec = cfg.hstore.gc.max_mb_per_sec as u32;
    sc
}

fn bind_addr(listen: &str, port: u16) -> anyhow::Result<SocketAddr> {
    let host = if listen.is_empty() { "0.0.0.0" } else { listen };
    format!("{host}:{port}")
        .parse()
        .or_else(|_| format!("[{host}]:{port}").parse())
        .with_context(|| format!("server.listen: bad bind address {host:?}"))
}

/// Runs the node until a shutdown signal; returns after a clean shutdown.
pub async fn serve(cfg: NodeConfig, log: LogSink) -> anyhow::Result<()> {
    let started = Instant::now();
    BUFFERS.set_large_threshold(cfg.mc.body_c);
    let prometheus = crate::metrics::install();
    let admin = Arc::new(Admin::new(
        cfg.config_json(),
        cfg.route.to_yaml(),
        cfg.route.numbucket,
        log.clone(),
        prometheus,
    ));
    let web_addr = bind_addr(&cfg.server.listen, cfg.server.webport)?;
    let web = TcpListener::bind(web_addr)
        .await
        .with_context(|| format!("cannot listen on web port {web_addr}"))?;
    let (sd_tx, sd_rx) = watch::channel(false);
    {
        let app = http::router(admin.clone());
        let mut rx = sd_rx.clone();
        tokio::spawn(async move {
            let _ = axum::serve(web, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.changed().await;
                })
                .await;
        });
    }
    info!(addr = %web_addr, "http admin listening");

    let served = cfg.served_buckets();
    if !served.iter().any(|s| *s) {
        warn!(addr = %cfg.addr(), "this node is not in route.yaml: it serves no bucket");
    }
    if !cfg.server.zkservers.is_empty() {
        warn!("zkservers is not supported; using the local route.yaml");
    }
    let sc = store_config(&cfg);
    let store = tokio::task::spawn_blocking(move || Store::open(sc))
        .await
        .context("store open task failed")?
        .context("cannot open the store")?;
    let store = Arc::new(store);
    let settings = McSettings {
        max_key_len: cfg.mc.max_key_len,
        body_max: cfg.mc.body_max as usize,
        body_big: cfg.mc.body_big as usize,
        flush_max: cfg.mc.flush_max,
        max_req: cfg.mc.max_req,
        timeout: std::time::Duration::from_millis(cfg.mc.timeout_ms),
    };
    let mut node = Node::new(
        store.clone(),
        settings,
        Arc::new(Counters::default()),
        started,
    );
    if !cfg.server.accesslog.is_empty() {
        let log = crate::accesslog::AccessLog::open(&cfg.server.accesslog)
            .with_context(|| format!("server.accesslog: cannot open {:?}", cfg.server.accesslog))?;
        node.access_log = Some(Arc::new(log));
    }
    if !cfg.server.analysislog.is_empty() {
        let log =
            crate::accesslog::AccessLog::open(&cfg.server.analysislog).with_context(|| {
                format!(
                    "server.analysislog: cannot open {:?}",
                    cfg.server.analysislog
                )
            })?;
        node.analysis_log = Some(Arc::new(log));
    }
    let node = Arc::new(node);
    admin.set_node(node.clone());

    let mc_addr = bind_addr(&cfg.server.listen, cfg.server.port)?;
    let mc = TcpListener::bind(mc_addr)
        .await
        .with_context(|| format!("cannot listen on port {mc_addr}"))?;
    info!(addr = %mc_addr, version = crate::server::VERSION, "beansdb serving");

    let serve_task = tokio::spawn(node.clone().serve(mc, sd_rx.clone()));
    let reopen: Vec<_> = [node.access_log.clone(), node.analysis_log.clone()]
        .into_iter()
        .flatten()
        .collect();
    wait_for_signal(&log, reopen).await;
    info!("shutting down");
    let _ = sd_tx.send(true);
    let _ = serve_task.await;
    tokio::task::spawn_blocking(move || store.close())
        .await
        .ok();
    info!("shutdown complete");
    Ok(())
}

async fn wait_for_signal(log: &LogSink, files: Vec<Arc<crate::accesslog::AccessLog>>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut hup), Ok(mut quit), Ok(mut usr1)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
        signal(SignalKind::quit()),
        signal(SignalKind::user_defined1()),
    ) else {
        warn!("cannot install signal handlers; waiting for ctrl-c");
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => return,
            _ = int.recv() => return,
            _ = hup.recv() => return,
            _ = quit.recv() => return,
            _ = usr1.recv() => {
                for f in &files {
                    if let Err(e) = f.reopen() {
                        warn!(error = %e, "reopening a log file failed");
                    }
                }
                if let Err(e) = log.reopen() {
                    warn!(error = %e, "reopening the log failed");
                } else {
                    info!("log reopened");
                }
            }
        }
    }
}
