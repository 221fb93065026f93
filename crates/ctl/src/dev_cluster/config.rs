//! Files of `dev-cluster` (tools.md §6): the data dir with its `.beansdb-dev` marker and one
//! `conf/`, `data/`, `logs/` per process, and the generated YAML.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::layout::{Layout, Member, Role};

/// Written into the data dir; `--clean` deletes only a dir that has it.
pub const MARKER: &str = ".beansdb-dev";

/// Paths of one process.
pub struct Paths {
    pub root: PathBuf,
    pub conf: PathBuf,
    pub data: PathBuf,
    pub logs: PathBuf,
}

impl Paths {
    pub fn of(dir: &Path, m: &Member) -> Paths {
        let root = dir.join(&m.name);
        Paths {
            conf: root.join("conf"),
            data: root.join("data"),
            logs: root.join("logs"),
            root,
        }
    }

    /// The proxy's dual-write error log directory (`--with-cassandra`).
    pub fn dual_write_errors(&self) -> PathBuf {
        self.root.join("dual-write-errors")
    }

    /// Where the child's stdout and stderr go.
    pub fn stdout_log(&self) -> PathBuf {
        self.logs.join("stdout.log")
    }

    /// The process's own error log (`server.errorlog` / `proxy.errorlog`).
    pub fn error_log(&self, role: Role) -> PathBuf {
        match role {
            Role::Proxy => self.logs.join("error.log"),
            _ => self.logs.join("beansdb.log"),
        }
    }

    pub fn access_log(&self) -> PathBuf {
        self.logs.join("access.log")
    }
}

/// Whether `dir` may be used: absent, empty, or made by dev-cluster (has the marker). Anything
/// else is refused so that a typo in `--dir` never turns an unrelated directory into a cluster
/// that a later `--clean` would delete.
pub fn check_dir(dir: &Path) -> Result<(), String> {
    match fs::read_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("cannot read {}: {e}", dir.display())),
        Ok(mut entries) => {
            if dir.join(MARKER).is_file() || entries.next().is_none() {
                Ok(())
            } else {
                Err(format!(
                    "{} is not empty and was not created by dev-cluster (no {MARKER} file)",
                    dir.display()
                ))
            }
        }
    }
}

/// `--clean`: deletes `dir` only if it carries the marker.
pub fn clean(dir: &Path) -> Result<(), String> {
    if !dir.exists() {
        return Ok(());
    }
    if !dir.join(MARKER).is_file() {
        return Err(format!(
            "refusing to delete {}: it has no {MARKER} marker",
            dir.display()
        ));
    }
    fs::remove_dir_all(dir).map_err(|e| format!("cannot delete {}: {e}", dir.display()))
}

/// A YAML double-quoted scalar (JSON string syntax is valid YAML), so any path is safe.
fn q(p: &Path) -> String {
    serde_json::to_string(&p.to_string_lossy()).unwrap_or_else(|_| "\"\"".into())
}

pub fn node_global_yaml(l: &Layout, m: &Member, p: &Paths, fsync: &str) -> String {
    let role = if m.role == Role::Backup {
        "backup: serves every bucket"
    } else {
        "main: serves the buckets listed for its address in route.yaml"
    };
    format!(
        "# Written by beansctl dev-cluster for {name} ({role}).\n\
         # Regenerated on each start unless --keep-config is given.\n\
         server:\n  hostname: {host}\n  listen: {host}\n  port: {port}\n  webport: {web}\n  \
         threads: 2\n  errorlog: {errlog}\n  accesslog: \"\"\n\
         hstore:\n  local:\n    home: {home}\n  data:\n    fsync: {fsync}\n",
        name = m.name,
        host = serde_json::to_string(&l.host).unwrap_or_default(),
        port = m.port,
        web = m.webport,
        errlog = q(&p.error_log(m.role)),
        home = q(&p.data),
    )
}

/// `--with-cassandra`: where the proxy's Cassandra is and how to log in.
#[derive(Debug, Clone, Default)]
pub struct DevCassandra {
    pub host: String,
    pub username: String,
    pub password_file: String,
}

/// Keyspace and default table of the dev cluster's Cassandra section.
pub const DEV_KEYSPACE: &str = "doubandb";
pub const DEV_TABLE: &str = "kvstore";

/// The proxy's `cassandra:` section: disabled, or (tools.md §6 step 4) enabled with
/// `default_storage: br1w1cr0w0`, the rw dispatcher on its config table with no static
/// prefixes, and the dual-write error log under the proxy's dir.
fn cassandra_section(c: Option<&DevCassandra>, p: &Paths) -> String {
    let Some(c) = c else {
        return "cassandra:\n  enable: false\n".into();
    };
    let mut out = format!(
        "cassandra:\n  enable: true\n  hosts: [{host}]\n  default_key_space: {DEV_KEYSPACE}\n  \
         default_table: {DEV_TABLE}\n  consistency: one\n  default_storage: br1w1cr0w0\n  \
         prefix_rw_dispatcher_cfg:\n    enable: true\n    cfg_keyspace: {DEV_KEYSPACE}\n    \
         cfg_table: bdb_prefix_rw_switcher\n  \
         dual_write_err_cfg:\n    dump_to_dir: {dump}\n",
        host = serde_json::to_string(&c.host).unwrap_or_default(),
        dump = q(&p.dual_write_errors()),
    );
    if !c.username.is_empty() {
        out.push_str(&format!(
            "  username: {}\n  password_file: {}\n",
            serde_json::to_string(&c.username).unwrap_or_default(),
            serde_json::to_string(&c.password_file).unwrap_or_default()
        ));
    }
    out
}

/// Worker threads of the dev proxy: it shares the machine with every node of the cluster, and
/// more workers than twice the cores only add wake-ups between them (bench/README.md).
fn proxy_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(4, |n| n.get())
        .saturating_mul(2)
        .clamp(2, 8)
}

pub fn proxy_yaml(l: &Layout, p: &Paths, cstar: Option<&DevCassandra>) -> String {
    format!(
        "# Written by beansctl dev-cluster. Regenerated on each start unless --keep-config is given.\n\
         # The access log is on so that it can feed `beansctl replay`. threads: twice this\n\
         # machine's cores, at most the embedded default 8 (the nodes share these cores).\n\
         proxy:\n  hostname: {host}\n  listen: {host}\n  port: {port}\n  webport: {web}\n  \
         threads: {threads}\n  errorlog: {errlog}\n  accesslog: {acclog}\n\
         mc:\n  timeout_ms: 3000\n\
         dstore:\n  enable: true\n  n: {n}\n  w: {w}\n  r: {r}\n  \
         # Short probe timings, so a node stopped by hand is seen back within a second or two.\n  \
         dial_fail_silence_ms: 500\n  probe_interval_ms: 500\n  probe_max_interval_ms: 2000\n\
         {cassandra}",
        cassandra = cassandra_section(cstar, p),
        host = serde_json::to_string(&l.host).unwrap_or_default(),
        port = l.proxy.port,
        web = l.proxy.webport,
        threads = proxy_threads(),
        errlog = q(&p.error_log(Role::Proxy)),
        acclog = q(&p.access_log()),
        n = l.replicas,
        w = l.w,
        r = l.r,
    )
}

/// Creates the directories and the marker, and writes every config file (keeping existing
/// ones with `keep`). Returns the config files in the order written.
pub fn write_all(
    dir: &Path,
    l: &Layout,
    fsync: &str,
    keep: bool,
    cstar: Option<&DevCassandra>,
) -> io::Result<Vec<PathBuf>> {
    fs::create_dir_all(dir)?;
    let marker = dir.join(MARKER);
    if !marker.exists() {
        fs::write(
            &marker,
            "Created by beansctl dev-cluster; `beansctl dev-cluster --clean` may delete this directory.\n",
        )?;
    }
    let route = l.route_yaml();
    let mut files = Vec::new();
    let mut put = |path: PathBuf, body: &str| -> io::Result<()> {
        if !(keep && path.exists()) {
            fs::write(&path, body)?;
        }
        files.push(path);
        Ok(())
    };
    for m in l.all() {
        let p = Paths::of(dir, m);
        fs::create_dir_all(&p.conf)?;
        fs::create_dir_all(&p.logs)?;
        if m.role == Role::Proxy {
            if cstar.is_some() {
                fs::create_dir_all(p.dual_write_errors())?;
            }
            put(p.conf.join("proxy.yaml"), &proxy_yaml(l, &p, cstar))?;
        } else {
            fs::create_dir_all(&p.data)?;
            put(
                p.conf.join("global.yaml"),
                &node_global_yaml(l, m, &p, fsync),
            )?;
        }
        put(p.conf.join("route.yaml"), &route)?;
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_rules() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("dev");
        assert!(check_dir(&d).is_ok(), "absent");
        assert!(clean(&d).is_ok(), "absent: nothing to clean");
        fs::create_dir(&d).unwrap();
        assert!(check_dir(&d).is_ok(), "empty");
        fs::write(d.join("x"), "y").unwrap();
        assert!(check_dir(&d)
            .unwrap_err()
            .contains("not created by dev-cluster"));
        assert!(clean(&d).unwrap_err().contains("no .beansdb-dev marker"));
        assert!(d.join("x").exists());
        fs::write(d.join(MARKER), "").unwrap();
        assert!(check_dir(&d).is_ok());
        clean(&d).unwrap();
        assert!(!d.exists());
    }

    #[test]
    fn writes_and_keeps_configs() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("dev");
        let l = Layout::new(5, 3, 16, 1, 7900, "127.0.0.1").unwrap();
        let files = write_all(&d, &l, "never", false, None).unwrap();
        assert_eq!(files.len(), 14);
        assert!(d.join(MARKER).is_file());
        let g = fs::read_to_string(d.join("node1/conf/global.yaml")).unwrap();
        assert!(g.contains("  port: 7920\n  webport: 7923\n"), "{g}");
        assert!(g.contains("    fsync: never\n"), "{g}");
        assert!(d.join("node1/data").is_dir() && d.join("node1/logs").is_dir());
        let p = fs::read_to_string(d.join("proxy/conf/proxy.yaml")).unwrap();
        assert!(p.contains("  n: 3\n  w: 2\n  r: 1\n"), "{p}");
        assert!(p.contains("access.log"), "{p}");
        assert_eq!(
            fs::read_to_string(d.join("backup0/conf/route.yaml")).unwrap(),
            l.route_yaml()
        );
        fs::write(d.join("node1/conf/global.yaml"), "edited").unwrap();
        write_all(&d, &l, "never", true, None).unwrap();
        assert_eq!(
            fs::read_to_string(d.join("node1/conf/global.yaml")).unwrap(),
            "edited"
        );
        write_all(&d, &l, "never", false, None).unwrap();
        assert_ne!(
            fs::read_to_string(d.join("node1/conf/global.yaml")).unwrap(),
            "edited"
        );
    }
}
