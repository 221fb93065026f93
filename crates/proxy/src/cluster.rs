//! The routing state (route table + host objects) and its file-based reload (§7.2).
//!
//! A request clones the current `Arc<RoutingState>` once and uses it to the end, so a reload
//! never changes the hosts of a request in flight. Host objects (pools, health) are carried
//! over for addresses that stay; removed hosts are closed.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use beansdb_route::Route;
use parking_lot::RwLock;
use tracing::{info, warn};

use crate::pool::{BackendSettings, Host};
use crate::routing::Table;

pub struct RoutingState {
    pub route: Route,
    pub table: Table,
    /// Indexed like `table.addrs`.
    pub hosts: Vec<Arc<Host>>,
}

impl RoutingState {
    pub fn host(&self, i: usize) -> &Arc<Host> {
        &self.hosts[i]
    }

    pub fn is_down(&self, i: usize) -> bool {
        self.hosts.get(i).is_none_or(|h| !h.is_up())
    }
}

pub struct Cluster {
    cur: RwLock<Arc<RoutingState>>,
    settings: Arc<BackendSettings>,
    n: usize,
    route_path: Option<PathBuf>,
    reloading: AtomicBool,
}

fn build(
    route: Route,
    n: usize,
    settings: &Arc<BackendSettings>,
    old: Option<&RoutingState>,
) -> RoutingState {
    let table = Table::new(&route, n);
    let hosts = table
        .addrs
        .iter()
        .map(|a| {
            old.and_then(|o| o.hosts.iter().find(|h| &h.addr == a).cloned())
                .unwrap_or_else(|| Host::new(a, settings.clone()))
        })
        .collect();
    RoutingState {
        route,
        table,
        hosts,
    }
}

/// Clears the reloading flag on every exit path.
struct ReloadGuard<'a>(&'a AtomicBool);

impl Drop for ReloadGuard<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl Cluster {
    pub fn new(
        route: Route,
        n: usize,
        settings: Arc<BackendSettings>,
        route_path: Option<PathBuf>,
    ) -> Cluster {
        let state = build(route, n, &settings, None);
        Cluster {
            cur: RwLock::new(Arc::new(state)),
            settings,
            n,
            route_path,
            reloading: AtomicBool::new(false),
        }
    }

    pub fn current(&self) -> Arc<RoutingState> {
        self.cur.read().clone()
    }

    /// Re-reads and validates route.yaml, swaps it in and closes hosts that left.
    /// Errors are the `/route/reload` texts without the `err: ` prefix.
    pub fn reload(&self) -> Result<(), String> {
        if self.reloading.swap(true, Ordering::AcqRel) {
            return Err("reloading".into());
        }
        let _guard = ReloadGuard(&self.reloading);
        let Some(path) = &self.route_path else {
            return Err("no route file (started without -confdir)".into());
        };
        let result = Route::load_with_warnings(path).and_then(|(route, mut warnings)| {
            warnings.extend(route.validate_for_proxy(self.n)?);
            Ok((route, warnings))
        });
        let (route, warnings) = match result {
            Ok(r) => r,
            Err(e) => {
                warn!("route reload refused, old route kept: {e}");
                crate::metrics::route_reload(false);
                return Err(e.to_string());
            }
        };
        for w in warnings {
            warn!("{w}");
        }
        let old = self.current();
        let new = Arc::new(build(route, self.n, &self.settings, Some(&old)));
        *self.cur.write() = new.clone();
        let mut removed = Vec::new();
        for h in &old.hosts {
            if !new.hosts.iter().any(|n| Arc::ptr_eq(n, h)) {
                h.close();
                removed.push(h.addr.clone());
            }
        }
        info!(
            "route reloaded: {} hosts, {} removed {:?}",
            new.hosts.len(),
            removed.len(),
            removed
        );
        crate::metrics::route_reload(true);
        Ok(())
    }

    /// Closes idle connections past their TTL on every current host.
    pub fn sweep(&self) {
        for h in &self.current().hosts {
            h.sweep_idle();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reload_keeps_hosts_and_refuses_bad_routes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("route.yaml");
        let r1 =
            "numbucket: 1\nmain:\n- {addr: 'h:1', buckets: [0]}\n- {addr: 'h:2', buckets: [0]}\n";
        std::fs::write(&path, r1).unwrap();
        let c = Cluster::new(
            Route::parse(r1).unwrap(),
            1,
            Arc::new(BackendSettings::default()),
            Some(path.clone()),
        );
        let before = c.current();
        let h1 = before.hosts[0].clone();
        let h2 = before.hosts[1].clone();
        std::fs::write(
            &path,
            "numbucket: 1\nmain:\n- {addr: 'h:1', buckets: [0]}\n- {addr: 'h:3', buckets: [0]}\n",
        )
        .unwrap();
        c.reload().unwrap();
        let after = c.current();
        assert!(Arc::ptr_eq(&after.hosts[0], &h1), "kept host reused");
        assert_eq!(after.hosts[1].addr, "h:3");
        assert!(h2.is_closed() && !h1.is_closed());
        // The old state still works for requests that hold it.
        assert_eq!(before.table.addr(1), "h:2");
        std::fs::write(&path, "numbucket: 3\n").unwrap();
        assert_eq!(
            c.reload().unwrap_err(),
            "route: numbucket must be 1, 16 or 256 (got 3)"
        );
        assert_eq!(c.current().hosts[1].addr, "h:3");
        std::fs::remove_file(&path).unwrap();
        assert!(c.reload().unwrap_err().starts_with("route: cannot read"));
    }
}
