//! Shadow-read verification (cassandra.md §8): in the dual-write statuses a sample of plain
//! reads is repeated on the other store by a detached task and compared; a mismatch is read
//! again after `recheck_delay_ms` and only then counted and logged. Never delays a reply.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use beansdb_cassandra::CassandraStore;
use bytes::Bytes;
use metrics::counter;
use serde_json::json;
use tracing::warn;

use crate::buffers::{track, BufKind, Tracked};
use crate::cluster::Cluster;
use crate::cstar::CStar;
use crate::nwr::{Background, Exec, Reply, Targets};
use crate::switch::{Dispatch, Status};
use crate::trailing::TrailingWrites;
use beansdb_cassandra::dispatch::show_prefix;

/// One store's answer for a key.
#[derive(Debug, Clone)]
pub enum Seen {
    Hit { flag: u32, body: Bytes },
    Miss,
}

impl Seen {
    fn describe(&self) -> String {
        match self {
            Seen::Hit { flag, body } => format!("hit:len={}:flag={flag}", body.len()),
            Seen::Miss => "miss".into(),
        }
    }

    fn json(&self) -> serde_json::Value {
        match self {
            Seen::Hit { flag, body } => json!({"hit": true, "len": body.len(), "flag": flag}),
            Seen::Miss => json!({"hit": false}),
        }
    }

    fn size(&self) -> usize {
        match self {
            Seen::Hit { body, .. } => body.len(),
            Seen::Miss => 0,
        }
    }
}

/// Mismatch kinds of §8 (metric label `kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Value,
    Flag,
    MissingInCstar,
    MissingInBeansdb,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Value => "value",
            Kind::Flag => "flag",
            Kind::MissingInCstar => "missing_in_cstar",
            Kind::MissingInBeansdb => "missing_in_beansdb",
        }
    }
}

/// Compares beansdb's and C*'s answers: `None` = match.
pub fn compare(beansdb: &Seen, cstar: &Seen) -> Option<Kind> {
    match (beansdb, cstar) {
        (Seen::Miss, Seen::Miss) => None,
        (Seen::Hit { flag: fb, body: bb }, Seen::Hit { flag: fc, body: bc }) => {
            if bb != bc {
                Some(Kind::Value)
            } else if fb != fc {
                Some(Kind::Flag)
            } else {
                None
            }
        }
        (Seen::Hit { .. }, Seen::Miss) => Some(Kind::MissingInCstar),
        (Seen::Miss, Seen::Hit { .. }) => Some(Kind::MissingInBeansdb),
    }
}

/// Reads beansdb outside of any client request, with the normal NWR read path.
pub struct BeansdbReader {
    pub cluster: Arc<Cluster>,
    pub bg: Arc<Background>,
    pub r: usize,
    pub score_floor: f64,
    pub deviation: f64,
    pub timeout: Duration,
}

impl BeansdbReader {
    pub async fn get(&self, key: Bytes) -> Result<Seen, String> {
        let mut targets = Targets::default();
        let mut trailing = TrailingWrites::default();
        let mut ex = Exec {
            state: self.cluster.current(),
            deadline: Instant::now() + self.timeout,
            r: self.r,
            w: 1,
            score_floor: self.score_floor,
            deviation: self.deviation,
            bg: &self.bg,
            targets: &mut targets,
            trailing: &mut trailing,
        };
        match ex.get(key, false).await {
            Reply::Values { mut items, .. } => Ok(match items.pop() {
                Some(i) => Seen::Hit {
                    flag: i.flag,
                    body: i.data.clone(),
                },
                None => Seen::Miss,
            }),
            Reply::Static(s) => Err(String::from_utf8_lossy(s).trim_end().to_string()),
            Reply::Text(t) => Err(t.trim_end().to_string()),
            Reply::Number(_) => Err("unexpected reply".into()),
        }
    }
}

/// Settings of `shadow_read`.
#[derive(Debug, Clone)]
pub struct ShadowSettings {
    pub ratio: f64,
    pub prefixes: Vec<Vec<u8>>,
    pub max_inflight: usize,
    pub recheck_delay: Duration,
    pub mismatch_log: Option<PathBuf>,
}

pub struct Shadow {
    settings: ShadowSettings,
    inflight: AtomicUsize,
    beansdb: BeansdbReader,
    cstar: Arc<CStar>,
    mismatch_log: Option<parking_lot::Mutex<std::fs::File>>,
}

/// One sampled read: the key, its status and matched prefix, and the primary's answer.
struct Sample {
    key: Bytes,
    status: Status,
    prefix: String,
    store: CassandraStore,
    primary: Seen,
    /// GetData accounting of the primary's copy while the task holds it (§8).
    _acct: Tracked,
}

/// Decrements the in-flight count when a task ends, however it ends.
struct InflightSlot(Arc<Shadow>);

impl Drop for InflightSlot {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Shadow {
    pub fn new(
        settings: ShadowSettings,
        beansdb: BeansdbReader,
        cstar: Arc<CStar>,
    ) -> std::io::Result<Shadow> {
        let mismatch_log = match &settings.mismatch_log {
            Some(p) => Some(parking_lot::Mutex::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)?,
            )),
            None => None,
        };
        Ok(Shadow {
            settings,
            inflight: AtomicUsize::new(0),
            beansdb,
            cstar,
            mismatch_log,
        })
    }

    fn eligible(&self, key: &[u8], status: Status) -> bool {
        matches!(status, Status::BrwCw | Status::BwCrw)
            && !matches!(key.first(), Some(b'?' | b'@'))
            && (self.settings.prefixes.is_empty()
                || self.settings.prefixes.iter().any(|p| key.starts_with(p)))
            && fastrand::f64() < self.settings.ratio
    }

    /// Samples the plain keys of a finished get/getm. `reply` is the primary's reply; if it
    /// failed nothing is compared.
    pub fn after_read(self: &Arc<Self>, snap: &Dispatch, keys: &[Bytes], reply: &Reply) {
        let Reply::Values { items, .. } = reply else {
            return;
        };
        for key in keys {
            let (status, prefix) = snap.status_and_prefix(key);
            if !self.eligible(key, status) {
                continue;
            }
            let Some(store) = snap.store(key).cloned() else {
                continue;
            };
            let prefix = prefix.map_or_else(|| "default".to_string(), show_prefix);
            if self.inflight.fetch_add(1, Ordering::Relaxed) >= self.settings.max_inflight {
                self.inflight.fetch_sub(1, Ordering::Relaxed);
                counter!("beansproxy_shadow_reads_total", "prefix" => prefix, "result" => "dropped")
                    .increment(1);
                continue;
            }
            let slot = InflightSlot(self.clone());
            let primary = match items.iter().find(|i| i.key == key) {
                Some(i) => Seen::Hit {
                    flag: i.flag,
                    body: i.data.clone(),
                },
                None => Seen::Miss,
            };
            let sample = Sample {
                key: key.clone(),
                status,
                prefix,
                store,
                _acct: track(BufKind::GetData, primary.size()),
                primary,
            };
            let me = self.clone();
            tokio::spawn(async move {
                let _slot = slot;
                me.check(sample).await;
            });
        }
    }

    async fn read_cstar(&self, store: &CassandraStore, key: &[u8]) -> Result<Seen, String> {
        let deadline = Instant::now() + self.beansdb.timeout;
        match self.cstar.read(store, key, deadline).await {
            Ok(Some(v)) => Ok(Seen::Hit {
                flag: v.flag,
                body: Bytes::from(v.body),
            }),
            Ok(None) => Ok(Seen::Miss),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Both stores now, as (beansdb, cstar).
    async fn read_both(&self, s: &Sample) -> Result<(Seen, Seen), String> {
        let (b, c) = tokio::join!(
            self.beansdb.get(s.key.clone()),
            self.read_cstar(&s.store, &s.key)
        );
        Ok((b?, c?))
    }

    async fn check(&self, s: Sample) {
        let shadow = if s.status == Status::BrwCw {
            self.read_cstar(&s.store, &s.key).await
        } else {
            self.beansdb.get(s.key.clone()).await
        };
        let result = |r: &'static str| {
            counter!("beansproxy_shadow_reads_total", "prefix" => s.prefix.clone(), "result" => r)
                .increment(1);
        };
        let Ok(shadow) = shadow else {
            return result("error");
        };
        let (b, c) = if s.status == Status::BrwCw {
            (&s.primary, &shadow)
        } else {
            (&shadow, &s.primary)
        };
        if compare(b, c).is_none() {
            return result("match");
        }
        tokio::time::sleep(self.settings.recheck_delay).await;
        let Ok((b, c)) = self.read_both(&s).await else {
            return result("error");
        };
        let Some(kind) = compare(&b, &c) else {
            return result("transient");
        };
        result("mismatch");
        counter!("beansproxy_shadow_mismatches_total", "prefix" => s.prefix.clone(), "kind" => kind.label())
            .increment(1);
        warn!(
            "shadow-read mismatch kind={} status={} prefix={} key={} beansdb={} cstar={}",
            kind.label(),
            s.status.as_str(),
            s.prefix,
            crate::logging::escape(&s.key),
            b.describe(),
            c.describe()
        );
        if let Some(f) = &self.mismatch_log {
            let mut line = json!({
                "time": chrono::Local::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, false),
                "key": String::from_utf8_lossy(&s.key),
                "status": s.status.as_str(),
                "kind": kind.label(),
                "beansdb": b.json(),
                "cstar": c.json(),
            });
            if std::str::from_utf8(&s.key).is_err() {
                line["key_hex"] =
                    json!(s.key.iter().map(|b| format!("{b:02x}")).collect::<String>());
            }
            let mut text = line.to_string();
            text.push('\n');
            if let Err(e) = f.lock().write_all(text.as_bytes()) {
                warn!("shadow_read.mismatch_log: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(flag: u32, body: &'static [u8]) -> Seen {
        Seen::Hit {
            flag,
            body: Bytes::from_static(body),
        }
    }

    #[test]
    fn comparison_table() {
        assert_eq!(compare(&Seen::Miss, &Seen::Miss), None);
        assert_eq!(compare(&hit(1, b"a"), &hit(1, b"a")), None);
        assert_eq!(compare(&hit(1, b"a"), &hit(1, b"b")), Some(Kind::Value));
        assert_eq!(compare(&hit(1, b"a"), &hit(2, b"a")), Some(Kind::Flag));
        assert_eq!(compare(&hit(1, b"a"), &hit(2, b"b")), Some(Kind::Value));
        assert_eq!(
            compare(&hit(1, b"a"), &Seen::Miss),
            Some(Kind::MissingInCstar)
        );
        assert_eq!(
            compare(&Seen::Miss, &hit(1, b"a")),
            Some(Kind::MissingInBeansdb)
        );
        assert_eq!(hit(3, b"abc").describe(), "hit:len=3:flag=3");
    }
}
