//! `beansctl dev-cluster`: a production-shaped local cluster on embedded defaults (tools.md §6).
//!
//! Flow: validate the shape, check that every port is free, find the `beansdb` and
//! `beansproxy` binaries, write the conf dirs, start the nodes and backups, wait until each
//! answers `get @` and `GET /`, start the proxy, smoke-test a key through it, print the
//! addresses, then supervise until SIGINT/SIGTERM and stop the proxy first, then the nodes
//! (SIGTERM, SIGKILL after [`STOP_GRACE`]).

mod config;
mod layout;
mod process;

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, ValueEnum};
use serde_json::json;
use tokio::signal::unix::{signal, Signal, SignalKind};

pub use self::layout::{Layout, Member, Role};
use self::process::Proc;
use crate::cli::GlobalOpts;
use crate::error::{exit, CliError, CliResult};
use crate::units::parse_duration;

/// Time each process gets to stop after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Lines of log shown when a process fails.
const LOG_TAIL: usize = 20;
const POLL: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Args)]
pub struct DevClusterArgs {
    /// Data dir: one conf/, data/ and logs/ per process
    #[arg(long, default_value = "./beansdb-dev", value_name = "DIR")]
    pub dir: PathBuf,
    /// Storage nodes (mains); must be greater than --replicas
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(2..=256))]
    pub nodes: u16,
    /// Mains per bucket; also the proxy's N (W is a majority, R is 1)
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=255))]
    pub replicas: u16,
    /// Buckets: 16 or 256
    #[arg(long, default_value_t = 16)]
    pub buckets: u32,
    /// Backup nodes (each holds every bucket)
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(0..=16))]
    pub backups: u16,
    /// Proxy at +5 (web +8), node i at +10(i+1), backup j at +10(nodes+1+j); web ports +3
    #[arg(long, default_value_t = 7900, value_name = "PORT")]
    pub base_port: u16,
    /// Address every process binds
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Look for beansdb and beansproxy here first (then next to beansctl, then $PATH)
    #[arg(long, value_name = "DIR")]
    pub bin_dir: Option<PathBuf>,
    /// Delete the data dir first (only if it has the .beansdb-dev marker)
    #[arg(long)]
    pub clean: bool,
    /// Use the existing config files instead of regenerating them
    #[arg(long)]
    pub keep_config: bool,
    /// The nodes' hstore.data.fsync
    #[arg(long, value_enum, default_value_t = Fsync::Interval)]
    pub fsync: Fsync,
    /// Cassandra for the proxy: creates the dev keyspace and enables the prefix switcher
    #[arg(long, value_name = "HOST:PORT")]
    pub with_cassandra: Option<String>,
    /// Cassandra login for --with-cassandra (password authentication)
    #[arg(long, value_name = "NAME", requires = "cassandra_password_file")]
    pub cassandra_username: Option<String>,
    /// File holding the password of --cassandra-username
    #[arg(long, value_name = "FILE", requires = "cassandra_username")]
    pub cassandra_password_file: Option<PathBuf>,
    /// Longest wait for each process to become ready
    #[arg(long, default_value = "60s", value_parser = parse_duration, value_name = "DUR")]
    pub start_timeout: Duration,
    /// Write the configs, print their paths and exit
    #[arg(long)]
    pub print_config: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Fsync {
    Never,
    Interval,
    Always,
}

impl Fsync {
    fn name(self) -> &'static str {
        match self {
            Fsync::Never => "never",
            Fsync::Interval => "interval",
            Fsync::Always => "always",
        }
    }
}

pub fn run(args: DevClusterArgs, g: &GlobalOpts) -> CliResult<u8> {
    let layout = Layout::new(
        usize::from(args.nodes),
        usize::from(args.replicas),
        args.buckets,
        usize::from(args.backups),
        args.base_port,
        &args.host,
    )
    .map_err(CliError::usage)?;
    let cstar = dev_cassandra(&args)?;
    let dir = std::path::absolute(&args.dir)
        .with_context(|| format!("cannot resolve --dir {}", args.dir.display()))
        .map_err(CliError::usage)?;
    // Also with --clean: a directory without the marker is neither used nor deleted.
    config::check_dir(&dir).map_err(|e| CliError::usage(e).with_hint("pass another --dir"))?;

    if args.print_config {
        let files = write_configs(&dir, &layout, &args)?;
        if g.json {
            let files: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
            println!(
                "{}",
                json!({"dir": dir.display().to_string(), "files": files})
            );
        } else {
            for f in files {
                println!("{}", f.display());
            }
        }
        return Ok(exit::OK);
    }

    check_ports(&layout)?;
    let node_bin = binary("beansdb", args.bin_dir.as_deref())?;
    let proxy_bin = binary("beansproxy", args.bin_dir.as_deref())?;
    if args.clean {
        config::clean(&dir).map_err(CliError::usage)?;
    }
    write_configs(&dir, &layout, &args)?;

    // One thread: children get PR_SET_PDEATHSIG from the thread that spawns them, and the
    // main thread lives as long as beansctl.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .map_err(CliError::runtime)?;
    rt.block_on(async {
        if let Some(c) = &cstar {
            create_dev_schema(c, args.start_timeout).await?;
        }
        let mut sv = Supervisor {
            layout,
            dir,
            procs: Vec::new(),
            signals: Signals::install()?,
            quiet: g.quiet || g.json,
            start_timeout: args.start_timeout,
        };
        sv.run(&node_bin, &proxy_bin, g.json).await
    })
}

fn dev_cassandra(args: &DevClusterArgs) -> CliResult<Option<config::DevCassandra>> {
    let Some(host) = &args.with_cassandra else {
        return Ok(None);
    };
    let password_file = match &args.cassandra_password_file {
        Some(f) => std::path::absolute(f)
            .with_context(|| format!("cannot resolve --cassandra-password-file {}", f.display()))
            .map_err(CliError::usage)?
            .display()
            .to_string(),
        None => String::new(),
    };
    Ok(Some(config::DevCassandra {
        host: host.clone(),
        username: args.cassandra_username.clone().unwrap_or_default(),
        password_file,
    }))
}

/// Step 4: the dev keyspace, UDT, data table and config tables (SimpleStrategy RF 1).
async fn create_dev_schema(c: &config::DevCassandra, connect_timeout: Duration) -> CliResult<()> {
    use beansdb_cassandra::{CassandraConfig, Replication, SchemaSpec, Secret};
    let mut cfg = CassandraConfig {
        enable: true,
        hosts: vec![c.host.clone()],
        default_key_space: config::DEV_KEYSPACE.into(),
        default_table: config::DEV_TABLE.into(),
        default_storage: "br1w1cr0w0".into(),
        username: c.username.clone(),
        password_file: c.password_file.clone(),
        connect_timeout_ms: connect_timeout.as_millis().max(1) as u64,
        timeout_ms: 10_000,
        num_conns: 1,
        ..CassandraConfig::default()
    };
    if c.username.is_empty() {
        cfg.password = Secret::default();
    }
    cfg.contact_points()
        .map_err(|e| CliError::usage(format!("--with-cassandra: {e}")))?;
    let session = beansdb_cassandra::connect(&cfg)
        .await
        .map_err(|e| CliError::runtime(anyhow::anyhow!("--with-cassandra: {e}")))?;
    SchemaSpec::new(config::DEV_KEYSPACE, &[config::DEV_TABLE])
        .with_replication(Replication::Simple(1))
        .create(&session)
        .await
        .map_err(|e| {
            CliError::runtime(anyhow::anyhow!(
                "--with-cassandra: creating the schema: {e}"
            ))
        })
}

fn write_configs(dir: &Path, layout: &Layout, args: &DevClusterArgs) -> CliResult<Vec<PathBuf>> {
    let cstar = dev_cassandra(args)?;
    config::write_all(
        dir,
        layout,
        args.fsync.name(),
        args.keep_config,
        cstar.as_ref(),
    )
    .with_context(|| format!("cannot write the configs under {}", dir.display()))
    .map_err(CliError::runtime)
}

/// Step 1: every port must be bindable now; nothing is started otherwise.
fn check_ports(layout: &Layout) -> CliResult<()> {
    for (port, name) in layout.ports() {
        if TcpListener::bind((layout.host.as_str(), port)).is_err() {
            return Err(CliError::runtime(anyhow::anyhow!(
                "port {port} ({name}) is in use; pass --base-port"
            )));
        }
    }
    Ok(())
}

fn binary(name: &str, bin_dir: Option<&Path>) -> CliResult<PathBuf> {
    process::find_binary(name, bin_dir).ok_or_else(|| {
        let place = match bin_dir {
            Some(d) => format!("in {}, next to beansctl or on PATH", d.display()),
            None => "next to beansctl or on PATH".to_string(),
        };
        CliError::usage(format!(
            "{name} binary not found {place}; build all binaries with: cargo build --release"
        ))
    })
}

/// SIGINT and SIGTERM, both meaning "stop the cluster".
struct Signals {
    int: Signal,
    term: Signal,
}

impl Signals {
    fn install() -> CliResult<Signals> {
        let mk = |k| {
            signal(k)
                .context("cannot install signal handlers")
                .map_err(CliError::runtime)
        };
        Ok(Signals {
            int: mk(SignalKind::interrupt())?,
            term: mk(SignalKind::terminate())?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
    }
}

/// Why the start sequence ended early.
enum StartAbort {
    /// A signal arrived: stop as on a normal shutdown.
    Signal,
    /// A process failed to start or become ready (message and log tail already printed).
    Failed,
}

struct Supervisor {
    layout: Layout,
    dir: PathBuf,
    procs: Vec<Proc>,
    signals: Signals,
    quiet: bool,
    start_timeout: Duration,
}

impl Supervisor {
    fn say(&self, msg: impl AsRef<str>) {
        if !self.quiet {
            eprintln!("{}", msg.as_ref());
        }
    }

    async fn run(&mut self, node_bin: &Path, proxy_bin: &Path, json: bool) -> CliResult<u8> {
        match self.start(node_bin, proxy_bin).await {
            Ok(()) => {}
            Err(StartAbort::Signal) => {
                self.say("interrupted during startup: stopping");
                return Ok(self.shutdown().await);
            }
            Err(StartAbort::Failed) => {
                self.shutdown().await;
                return Err(CliError::runtime(anyhow::anyhow!(
                    "dev cluster failed to start; logs are under {}",
                    self.dir.display()
                )));
            }
        }
        self.print_ready(json).await;

        loop {
            tokio::select! {
                _ = self.signals.recv() => break,
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
            self.report_exits();
            if self.procs.iter().all(|p| !p.running()) {
                return Err(CliError::runtime(anyhow::anyhow!(
                    "every process of the dev cluster has exited"
                )));
            }
        }
        self.say("stopping: proxy first, then the nodes");
        Ok(self.shutdown().await)
    }

    /// Warns once about each child that exited on its own; the others keep running, so a
    /// node can be killed by hand to try failover.
    fn report_exits(&mut self) {
        for p in &mut self.procs {
            if let Some(st) = p.poll_exit() {
                eprintln!(
                    "warning: {} (pid {}) exited unexpectedly: {st}\n{}",
                    p.name,
                    p.pid(),
                    p.log_tail(LOG_TAIL)
                );
            }
        }
    }

    fn spawn(&mut self, m: &Member, bin: &Path) -> Result<(), StartAbort> {
        let paths = config::Paths::of(&self.dir, m);
        let log = paths.stdout_log();
        match process::spawn(bin, &paths.conf, &paths.root, &log) {
            Ok(child) => {
                self.say(format!(
                    "started {:<8} pid {:<7} {}",
                    m.name,
                    child.id(),
                    self.layout.addr(m.port)
                ));
                self.procs.push(Proc {
                    name: m.name.clone(),
                    role: m.role,
                    addr: self.layout.addr(m.port),
                    web: self.layout.addr(m.webport),
                    child,
                    exited: None,
                    logs: vec![log, paths.error_log(m.role)],
                });
                Ok(())
            }
            Err(e) => {
                eprintln!("error: cannot start {} ({}): {e}", m.name, bin.display());
                Err(StartAbort::Failed)
            }
        }
    }

    async fn start(&mut self, node_bin: &Path, proxy_bin: &Path) -> Result<(), StartAbort> {
        self.say(format!(
            "dev-cluster: {} nodes, {} buckets x {} replicas, {} backup(s) in {}",
            self.layout.nodes.len(),
            self.layout.numbucket,
            self.layout.replicas,
            self.layout.backups.len(),
            self.dir.display()
        ));
        let storage: Vec<Member> = self.layout.storage().cloned().collect();
        for m in &storage {
            self.spawn(m, node_bin)?;
        }
        // The nodes start in parallel; waiting for them one after another costs nothing more.
        for i in 0..self.procs.len() {
            self.wait_ready(i).await?;
        }
        let proxy = self.layout.proxy.clone();
        self.spawn(&proxy, proxy_bin)?;
        let i = self.procs.len() - 1;
        self.wait_ready(i).await?;
        let addr = self.procs[i].addr.clone();
        if let Err(e) = process::smoke(&addr).await {
            eprintln!(
                "error: smoke test through the proxy failed: {e}\n{}",
                self.procs[i].log_tail(LOG_TAIL)
            );
            return Err(StartAbort::Failed);
        }
        Ok(())
    }

    /// Polls process `i` until it answers `get @` (and, for a node, `GET /` on its web port),
    /// it exits, a signal arrives, or the start timeout passes.
    async fn wait_ready(&mut self, i: usize) -> Result<(), StartAbort> {
        let deadline = Instant::now() + self.start_timeout;
        let (addr, web, role) = {
            let p = &self.procs[i];
            (p.addr.clone(), p.web.clone(), p.role)
        };
        loop {
            if let Some(st) = self.procs[i].poll_exit() {
                let p = &self.procs[i];
                eprintln!(
                    "error: {} exited during startup: {st}\n{}",
                    p.name,
                    p.log_tail(LOG_TAIL)
                );
                return Err(StartAbort::Failed);
            }
            let ready = process::listing_ready(&addr).await
                && (role == Role::Proxy || process::http_status(&web, "/").await.is_some());
            if ready {
                self.say(format!("{:<8} ready", self.procs[i].name));
                return Ok(());
            }
            if Instant::now() >= deadline {
                let p = &self.procs[i];
                eprintln!(
                    "error: {} not ready after {:?}\n{}",
                    p.name,
                    self.start_timeout,
                    p.log_tail(LOG_TAIL)
                );
                return Err(StartAbort::Failed);
            }
            tokio::select! {
                _ = self.signals.recv() => return Err(StartAbort::Signal),
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    }

    async fn print_ready(&self, json: bool) {
        let l = &self.layout;
        let pid_of = |name: &str| {
            self.procs
                .iter()
                .find(|p| p.name == name)
                .map(Proc::pid)
                .unwrap_or(0)
        };
        let url = |port: u16| format!("http://{}/", l.addr(port));
        // The dashboard lives at /ui/ once the proxy serves it; otherwise link the admin root.
        let proxy_web = match process::http_status(&l.addr(l.proxy.webport), "/ui/").await {
            Some(200) => format!("{}ui/", url(l.proxy.webport)),
            _ => url(l.proxy.webport),
        };
        let mut out = std::io::stdout().lock();
        if json {
            let member = |m: &Member, buckets: bool| {
                let mut v = json!({
                    "name": m.name,
                    "addr": l.addr(m.port),
                    "web": url(m.webport),
                    "pid": pid_of(&m.name),
                });
                if buckets {
                    v["buckets"] = json!(m.buckets);
                }
                v
            };
            let doc = json!({
                "proxy": {
                    "addr": l.addr(l.proxy.port),
                    "web": proxy_web,
                    "pid": pid_of("proxy"),
                    "n": l.replicas, "w": l.w, "r": l.r,
                },
                "nodes": l.nodes.iter().map(|m| member(m, true)).collect::<Vec<_>>(),
                "backups": l.backups.iter().map(|m| member(m, false)).collect::<Vec<_>>(),
                "dir": self.dir.display().to_string(),
            });
            let _ = writeln!(out, "{doc}");
        } else {
            let mut rows = vec![(
                "proxy".to_string(),
                l.addr(l.proxy.port),
                proxy_web,
                format!("routes all; N={} W={} R={}", l.replicas, l.w, l.r),
            )];
            for m in &l.nodes {
                let ids: Vec<String> = m.buckets.iter().map(|&b| l.bucket_id(b)).collect();
                let buckets = if ids.len() <= 16 {
                    ids.join(" ")
                } else {
                    format!("{} buckets", ids.len())
                };
                rows.push((m.name.clone(), l.addr(m.port), url(m.webport), buckets));
            }
            for m in &l.backups {
                rows.push((
                    m.name.clone(),
                    l.addr(m.port),
                    url(m.webport),
                    "backup (all)".into(),
                ));
            }
            let w1 = rows.iter().map(|r| r.1.len()).max().unwrap_or(0).max(9);
            let w2 = rows.iter().map(|r| r.2.len()).max().unwrap_or(0).max(3);
            let _ = writeln!(
                out,
                "{:<8}  {:<w1$}  {:<w2$}  buckets",
                "process", "memcached", "web"
            );
            for (name, addr, web, buckets) in rows {
                let _ = writeln!(out, "{name:<8}  {addr:<w1$}  {web:<w2$}  {buckets}");
            }
            let _ = writeln!(out);
            let _ = writeln!(out, "data dir  {}", self.dir.display());
            let _ = writeln!(
                out,
                "try it    printf 'set hello 0 0 5\\r\\nworld\\r\\nget hello\\r\\n' | nc {} {}",
                l.host, l.proxy.port
            );
            let _ = writeln!(out, "Ctrl-C to stop");
        }
        let _ = out.flush();
    }

    /// SIGTERM to the proxy, then to the nodes; each group gets [`STOP_GRACE`] before
    /// SIGKILL. A second signal kills everything at once. Returns the exit code: 0 when every
    /// process stopped cleanly, 1 when one had to be killed or exited with an error.
    async fn shutdown(&mut self) -> u8 {
        let mut clean = true;
        let groups: [Vec<usize>; 2] = [
            (0..self.procs.len())
                .filter(|&i| self.procs[i].role == Role::Proxy)
                .collect(),
            (0..self.procs.len())
                .filter(|&i| self.procs[i].role != Role::Proxy)
                .collect(),
        ];
        // Children that died on their own before the stop were reported already.
        self.report_exits();
        for group in groups {
            for &i in &group {
                self.procs[i].signal(libc::SIGTERM);
            }
            let deadline = Instant::now() + STOP_GRACE;
            loop {
                for &i in &group {
                    if let Some(st) = self.procs[i].poll_exit() {
                        if !st.success() {
                            clean = false;
                            eprintln!("warning: {} stopped with {st}", self.procs[i].name);
                        }
                    }
                }
                if group.iter().all(|&i| !self.procs[i].running()) {
                    break;
                }
                if Instant::now() >= deadline {
                    for &i in &group {
                        if self.procs[i].running() {
                            eprintln!(
                                "warning: {} did not stop within {}s: killing it",
                                self.procs[i].name,
                                STOP_GRACE.as_secs()
                            );
                            self.procs[i].kill_now();
                            clean = false;
                        }
                    }
                    break;
                }
                tokio::select! {
                    _ = self.signals.recv() => {
                        eprintln!("second interrupt: killing every process now");
                        for p in &mut self.procs {
                            p.kill_now();
                        }
                        return exit::FOUND;
                    }
                    _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                }
            }
        }
        if clean {
            self.say("all processes stopped");
            exit::OK
        } else {
            exit::FOUND
        }
    }
}
