//! Multi-key get planning (proxy.md §4.3): deduplicated keys, rounds of per-host requests.
//!
//! The planner is pure: the executor (`nwr::getm`) asks it for a round, sends each group in
//! parallel and feeds the replies back. A key is only ever grouped under one of its own
//! replicas or a backup, so no host is asked for a key of a bucket it does not hold.

use std::collections::HashMap;

use bytes::Bytes;

/// At most this many keys per backend request; larger groups are split.
pub const MAX_KEYS_PER_REQUEST: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Mains,
    Backups,
}

#[derive(Debug)]
struct KeyState<T> {
    key: Bytes,
    /// Read order of the key's replicas (§3.5).
    order: Vec<usize>,
    next: usize,
    backup_next: usize,
    answered: usize,
    main_failed: bool,
    phase: Phase,
    done: bool,
    /// Answered locally (special keys): never fails the request.
    local: bool,
    hit: Option<T>,
    /// Host of the key's request in the current round.
    asked: Option<usize>,
}

/// One backend request of a round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub host: usize,
    /// Key indices, in request order.
    pub keys: Vec<usize>,
}

/// The request failed with fewer than R answers for some key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadFailed {
    pub key: Bytes,
    pub answered: usize,
}

#[derive(Debug)]
pub struct Planner<T> {
    keys: Vec<KeyState<T>>,
    index: HashMap<Bytes, usize>,
    backups: Vec<usize>,
    r: usize,
}

impl<T> Planner<T> {
    pub fn new(r: usize, backups: Vec<usize>) -> Planner<T> {
        Planner {
            keys: Vec::new(),
            index: HashMap::new(),
            backups,
            r,
        }
    }

    /// True if `key` was already added (duplicates keep their first position).
    pub fn contains(&self, key: &[u8]) -> bool {
        self.index.contains_key(key)
    }

    /// A routed key with its read order; `main_failed` when one of its replicas is down.
    pub fn add(&mut self, key: Bytes, order: Vec<usize>, main_failed: bool) {
        if self.index.contains_key(&key) {
            return;
        }
        self.index.insert(key.clone(), self.keys.len());
        self.keys.push(KeyState {
            key,
            order,
            next: 0,
            backup_next: 0,
            answered: 0,
            main_failed,
            phase: Phase::Mains,
            done: false,
            local: false,
            hit: None,
            asked: None,
        });
    }

    /// A key answered by the proxy itself.
    pub fn add_local(&mut self, key: Bytes, hit: Option<T>) {
        if self.index.contains_key(&key) {
            return;
        }
        self.index.insert(key.clone(), self.keys.len());
        self.keys.push(KeyState {
            key,
            order: Vec::new(),
            next: 0,
            backup_next: 0,
            answered: 0,
            main_failed: false,
            phase: Phase::Mains,
            done: true,
            local: true,
            hit,
            asked: None,
        });
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn key(&self, i: usize) -> &Bytes {
        &self.keys[i].key
    }

    /// Index of a key of this request.
    pub fn position(&self, key: &[u8]) -> Option<usize> {
        self.index.get(key).copied()
    }

    /// Plans the next round; empty when every key is done. `down` hosts are skipped (a
    /// skipped main counts as failed).
    pub fn round(&mut self, down: impl Fn(usize) -> bool) -> Vec<Group> {
        let mut by_host: Vec<Group> = Vec::new();
        for (i, k) in self.keys.iter_mut().enumerate() {
            k.asked = None;
            if k.done {
                continue;
            }
            let host = loop {
                match k.phase {
                    Phase::Mains => match k.order.get(k.next) {
                        Some(&h) if down(h) => {
                            k.main_failed = true;
                            k.next += 1;
                        }
                        Some(&h) => break Some(h),
                        None => {
                            if k.hit.is_none() && k.main_failed {
                                k.phase = Phase::Backups;
                            } else {
                                break None;
                            }
                        }
                    },
                    Phase::Backups => match self.backups.get(k.backup_next) {
                        Some(&h) if down(h) => k.backup_next += 1,
                        Some(&h) => break Some(h),
                        None => break None,
                    },
                }
            };
            let Some(host) = host else {
                k.done = true;
                continue;
            };
            k.asked = Some(host);
            match by_host
                .iter_mut()
                .rev()
                .find(|g| g.host == host && g.keys.len() < MAX_KEYS_PER_REQUEST)
            {
                Some(g) => g.keys.push(i),
                None => by_host.push(Group {
                    host,
                    keys: vec![i],
                }),
            }
        }
        by_host
    }

    /// A key of the current round came back in its host's reply.
    pub fn hit(&mut self, i: usize, item: T) {
        if let Some(k) = self.keys.get_mut(i) {
            if k.asked.is_some() && !k.done {
                k.hit = Some(item);
                k.done = true;
            }
        }
    }

    /// The host answered the group (keys not hit were absent there).
    pub fn answered(&mut self, group: &Group) {
        for &i in &group.keys {
            let Some(k) = self.keys.get_mut(i) else {
                continue;
            };
            if k.done {
                continue;
            }
            match k.phase {
                Phase::Mains => {
                    k.answered += 1;
                    k.next += 1;
                }
                // A backup miss is not counted in R.
                Phase::Backups => k.backup_next += 1,
            }
        }
    }

    /// The group's request failed (down, timeout, error).
    pub fn failed(&mut self, group: &Group) {
        for &i in &group.keys {
            let Some(k) = self.keys.get_mut(i) else {
                continue;
            };
            if k.done {
                continue;
            }
            match k.phase {
                Phase::Mains => {
                    k.main_failed = true;
                    k.next += 1;
                }
                Phase::Backups => k.backup_next += 1,
            }
        }
    }

    /// Hits in request order, or the first key that ended without a hit and with fewer
    /// than R answers.
    pub fn finish(self) -> Result<Vec<T>, ReadFailed> {
        if let Some(k) = self
            .keys
            .iter()
            .find(|k| !k.local && k.hit.is_none() && k.answered < self.r)
        {
            return Err(ReadFailed {
                key: k.key.clone(),
                answered: k.answered,
            });
        }
        Ok(self.keys.into_iter().filter_map(|k| k.hit).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::{read_order, Table};
    use beansdb_route::Route;

    const SPREAD: &str = "numbucket: 16\nmain:\n\
- {addr: 127.0.0.1:7910, buckets: [0, 3, 4, 5, 8, 9, a, d, e, f]}\n\
- {addr: 127.0.0.1:7920, buckets: [0, 1, 4, 5, 6, 9, a, b, e, f]}\n\
- {addr: 127.0.0.1:7930, buckets: [0, 1, 2, 5, 6, 7, a, b, c, f]}\n\
- {addr: 127.0.0.1:7940, buckets: [1, 2, 3, 6, 7, 8, b, c, d]}\n\
- {addr: 127.0.0.1:7950, buckets: [2, 3, 4, 7, 8, 9, c, d, e]}\n\
backup: [127.0.0.1:7960]\n";

    fn table() -> Table {
        let r = Route::parse(SPREAD).unwrap();
        Table::new(&r, 3)
    }

    fn plan(t: &Table, keys: &[&str], down: &[usize]) -> Planner<String> {
        let mut p = Planner::new(1, t.backups().to_vec());
        for k in keys {
            let b = t.bucket_of(k.as_bytes());
            let reps = t.replicas(k.as_bytes(), b);
            let failed = reps.iter().any(|h| down.contains(h));
            let order = read_order(&reps, |h| down.contains(&h), |_| 4000.0, 10000.0);
            p.add(Bytes::copy_from_slice(k.as_bytes()), order, failed);
        }
        p
    }

    fn port(t: &Table, h: usize) -> u16 {
        t.addr(h).rsplit(':').next().unwrap().parse().unwrap()
    }

    #[test]
    fn worked_example_round_one() {
        let t = table();
        let keys = [
            "apple", "banana", "cherry", "date", "fig", "kiwi", "mango", "apple",
        ];
        let mut p = plan(&t, &keys, &[]);
        assert_eq!(p.len(), 7, "duplicate dropped");
        let groups = p.round(|_| false);
        let mut got: Vec<(u16, Vec<&str>)> = groups
            .iter()
            .map(|g| {
                (
                    port(&t, g.host),
                    g.keys
                        .iter()
                        .map(|&i| std::str::from_utf8(p.key(i)).unwrap())
                        .collect(),
                )
            })
            .collect();
        got.sort();
        assert_eq!(
            got,
            vec![
                (7910, vec!["date"]),
                (7920, vec!["cherry", "mango"]),
                (7930, vec!["apple", "fig"]),
                (7940, vec!["kiwi"]),
                (7950, vec!["banana"]),
            ]
        );
        // Everyone hits: done after one round, results in request order.
        for g in &groups {
            for &i in &g.keys {
                let k = std::str::from_utf8(p.key(i)).unwrap().to_string();
                p.hit(i, k);
            }
            p.answered(g);
        }
        assert!(p.round(|_| false).is_empty());
        assert_eq!(
            p.finish().unwrap(),
            vec!["apple", "banana", "cherry", "date", "fig", "kiwi", "mango"]
        );
    }

    #[test]
    fn every_group_holds_only_its_hosts_keys() {
        let t = table();
        let keys: Vec<String> = (0..500).map(|i| format!("key:{i}")).collect();
        let refs: Vec<&str> = keys.iter().map(|s| s.as_str()).collect();
        // A host down forces some keys to other replicas and to the backup.
        let down = [t.mains(0)[0]];
        let mut p = plan(&t, &refs, &down);
        let mut rounds = 0;
        loop {
            let groups = p.round(|h| down.contains(&h));
            if groups.is_empty() {
                break;
            }
            rounds += 1;
            for g in &groups {
                assert!(g.keys.len() <= MAX_KEYS_PER_REQUEST);
                assert!(!down.contains(&g.host));
                for &i in &g.keys {
                    let b = t.bucket_of(p.key(i));
                    assert!(
                        t.mains(b).contains(&g.host) || t.backups().contains(&g.host),
                        "key {:?} (bucket {b}) sent to {}",
                        p.key(i),
                        t.addr(g.host)
                    );
                }
                // Nobody has anything: every key walks its whole replica list.
                p.answered(g);
            }
        }
        assert!(rounds >= 3);
        // All misses with answers ≥ R: an empty result, not a failure.
        assert_eq!(p.finish().unwrap(), Vec::<String>::new());
    }

    #[test]
    fn miss_on_primary_goes_to_the_next_replica() {
        let t = table();
        let mut p = plan(&t, &["fig", "apple"], &[]);
        let g1 = p.round(|_| false);
        // fig is absent on 7930, apple is there.
        for g in &g1 {
            for &i in &g.keys {
                if p.key(i).as_ref() == b"apple" {
                    p.hit(i, "apple".into());
                }
            }
            p.answered(g);
        }
        let g2 = p.round(|_| false);
        assert_eq!(g2.len(), 1);
        assert_eq!(port(&t, g2[0].host), 7950);
        p.hit(g2[0].keys[0], "fig".into());
        p.answered(&g2[0]);
        assert!(p.round(|_| false).is_empty());
        assert_eq!(p.finish().unwrap(), vec!["fig", "apple"]);
    }

    #[test]
    fn all_replicas_failing_then_backup() {
        let t = table();
        let mut p = plan(&t, &["apple"], &[]);
        // Every main fails: the key moves to the backup.
        for _ in 0..3 {
            let g = p.round(|_| false);
            assert_eq!(g.len(), 1);
            p.failed(&g[0]);
        }
        let g = p.round(|_| false);
        assert_eq!(port(&t, g[0].host), 7960);
        p.answered(&g[0]);
        assert!(p.round(|_| false).is_empty());
        let e = p.finish().unwrap_err();
        assert_eq!(e.answered, 0);
        assert_eq!(e.key.as_ref(), b"apple");
    }

    #[test]
    fn one_main_failed_others_miss_is_end_after_backups() {
        let t = table();
        let apple_primary = t.replicas(b"apple", t.bucket_of(b"apple"))[0];
        let mut p = plan(&t, &["apple"], &[apple_primary]);
        let mut hosts = Vec::new();
        loop {
            let g = p.round(|h| h == apple_primary);
            if g.is_empty() {
                break;
            }
            hosts.push(port(&t, g[0].host));
            p.answered(&g[0]);
        }
        // Two remaining mains, then the backup because a main was down.
        assert_eq!(hosts, vec![7920, 7940, 7960]);
        assert_eq!(p.finish().unwrap(), Vec::<String>::new());
    }

    #[test]
    fn local_keys_and_big_groups() {
        let t = table();
        let keys: Vec<String> = (0..1000).map(|i| format!("k{i}")).collect();
        let refs: Vec<&str> = keys.iter().map(|s| s.as_str()).collect();
        let mut p = plan(&t, &refs, &[]);
        p.add_local(Bytes::from_static(b"@zz"), Some("empty".into()));
        p.add_local(Bytes::from_static(b"??"), None);
        let groups = p.round(|_| false);
        let total: usize = groups.iter().map(|g| g.keys.len()).sum();
        assert_eq!(total, 1000);
        assert!(groups.iter().all(|g| g.keys.len() <= MAX_KEYS_PER_REQUEST));
        for g in &groups {
            p.failed(g);
        }
        // Local keys never fail the request; the routed ones still go on.
        assert!(!p.round(|_| false).is_empty());
    }
}
