//! Per-bucket results, the text table and the `--json` document (tools.md §1.8).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

/// Key counters, per bucket and in total (JSON field names are the spec's).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Counters {
    pub keys_compared: u64,
    pub differing: u64,
    pub repaired: u64,
    pub would_repair: u64,
    pub skipped_hot: u64,
    pub skipped_changed: u64,
    pub held: u64,
    pub conflicts: u64,
    pub failed: u64,
    pub version_misaligned: u64,
    pub drained: u64,
}

impl Counters {
    pub fn add(&mut self, o: &Counters) {
        self.keys_compared += o.keys_compared;
        self.differing += o.differing;
        self.repaired += o.repaired;
        self.would_repair += o.would_repair;
        self.skipped_hot += o.skipped_hot;
        self.skipped_changed += o.skipped_changed;
        self.held += o.held;
        self.conflicts += o.conflicts;
        self.failed += o.failed;
        self.version_misaligned += o.version_misaligned;
        self.drained += o.drained;
    }
}

/// A subtree left alone because its live counts differ too much (`--max-diff-keys`).
#[derive(Debug, Clone, Serialize)]
pub struct GuardSkip {
    pub path: String,
    pub counts: BTreeMap<String, u32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ErrorEntry {
    pub node: String,
    /// Listing path (hex, no `@`), or the khash for a key-level error.
    pub path: String,
    pub error: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BucketState {
    InSync,
    Repaired,
    /// Dry-run: there is something to repair.
    Differs,
    /// Only hot keys differ; they are left for a later run.
    HotSkipped,
    /// Held, conflicting, failed or changed keys, or guard-skipped subtrees remain.
    Unresolved,
    ReplicaDown,
    Error,
    Interrupted,
}

impl BucketState {
    pub fn as_str(self) -> &'static str {
        match self {
            BucketState::InSync => "in-sync",
            BucketState::Repaired => "repaired",
            BucketState::Differs => "differs",
            BucketState::HotSkipped => "hot-skipped",
            BucketState::Unresolved => "unresolved",
            BucketState::ReplicaDown => "replica-down",
            BucketState::Error => "error",
            BucketState::Interrupted => "interrupted",
        }
    }

    /// Whether this bucket makes the exit code 1.
    pub fn leaves_work(self) -> bool {
        !matches!(
            self,
            BucketState::InSync | BucketState::Repaired | BucketState::HotSkipped
        )
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct BucketReport {
    pub bucket: String,
    pub replicas: Vec<String>,
    pub down: Vec<String>,
    pub backups: Vec<String>,
    pub root_equal: bool,
    pub keys: u64,
    pub dirs_listed: u64,
    #[serde(flatten)]
    pub counters: Counters,
    pub guard_skipped: Vec<GuardSkip>,
    pub errors: Vec<ErrorEntry>,
    pub duration_ms: u64,
    pub state: BucketState,
    #[serde(skip)]
    pub interrupted: bool,
    /// The bucket was skipped before any comparison (replica down).
    #[serde(skip)]
    pub skipped: bool,
}

impl BucketReport {
    pub fn new(bucket: String, replicas: Vec<String>, backups: Vec<String>) -> BucketReport {
        BucketReport {
            bucket,
            replicas,
            down: Vec::new(),
            backups,
            root_equal: false,
            keys: 0,
            dirs_listed: 0,
            counters: Counters::default(),
            guard_skipped: Vec::new(),
            errors: Vec::new(),
            duration_ms: 0,
            state: BucketState::InSync,
            interrupted: false,
            skipped: false,
        }
    }

    pub fn error(&mut self, node: &str, path: &str, error: impl ToString) {
        self.errors.push(ErrorEntry {
            node: node.to_string(),
            path: path.to_string(),
            error: error.to_string(),
        });
    }

    /// Sets `state` from the counters (tools.md §1.8 exit rules).
    pub fn finish(&mut self, dry_run: bool) {
        let c = &self.counters;
        let unresolved = c.held + c.conflicts + c.failed + c.skipped_changed > 0
            || !self.guard_skipped.is_empty();
        self.state = if self.interrupted {
            BucketState::Interrupted
        } else if self.skipped {
            BucketState::ReplicaDown
        } else if !self.errors.is_empty() {
            BucketState::Error
        } else if unresolved {
            BucketState::Unresolved
        } else if dry_run && c.would_repair > 0 {
            BucketState::Differs
        } else if !dry_run && c.repaired > 0 {
            BucketState::Repaired
        } else if c.skipped_hot > 0 {
            BucketState::HotSkipped
        } else {
            BucketState::InSync
        };
    }
}

/// Sums over buckets for the TOTAL row and the JSON `totals`.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Totals {
    pub buckets: u64,
    #[serde(flatten)]
    pub counters: Counters,
    pub dirs_listed: u64,
    pub guard_skipped: u64,
    pub errors: u64,
    pub states: BTreeMap<&'static str, u64>,
}

pub fn totals(buckets: &[BucketReport]) -> Totals {
    let mut t = Totals::default();
    for b in buckets {
        t.buckets += 1;
        t.counters.add(&b.counters);
        t.dirs_listed += b.dirs_listed;
        t.guard_skipped += b.guard_skipped.len() as u64;
        t.errors += b.errors.len() as u64;
        *t.states.entry(b.state.as_str()).or_default() += 1;
    }
    t
}

/// The text report: header, one row per bucket (with guard-skipped subtrees and errors
/// underneath), and the TOTAL line.
pub fn text(header: &str, buckets: &[BucketReport], dry_run: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{header}");
    let repaired_col = if dry_run { "WOULD_REPAIR" } else { "REPAIRED" };
    let head = [
        "BUCKET",
        "REPL",
        "KEYS",
        "COMPARED",
        "DIFF",
        repaired_col,
        "HOT",
        "CHANGED",
        "HELD",
        "CONFLICT",
        "FAILED",
        "ERRORS",
        "TIME",
        "STATE",
    ];
    let mut rows: Vec<Vec<String>> = vec![head.iter().map(|s| s.to_string()).collect()];
    for b in buckets {
        let c = &b.counters;
        let up = b.replicas.len() - b.down.len();
        let mut row = vec![b.bucket.clone(), format!("{up}/{}", b.replicas.len())];
        if b.skipped {
            row.extend(std::iter::repeat_n("-".to_string(), 9));
        } else {
            let rep = if dry_run { c.would_repair } else { c.repaired };
            row.extend(
                [
                    b.keys,
                    c.keys_compared,
                    c.differing,
                    rep,
                    c.skipped_hot,
                    c.skipped_changed,
                    c.held,
                    c.conflicts,
                    c.failed,
                ]
                .iter()
                .map(u64::to_string),
            );
        }
        row.push(b.errors.len().to_string());
        row.push(format!("{:.1}s", b.duration_ms as f64 / 1000.0));
        row.push(b.state.as_str().to_string());
        rows.push(row);
    }
    let mut widths = vec![0usize; head.len()];
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |r: &[String]| -> String {
        let mut s = String::new();
        for (i, cell) in r.iter().enumerate() {
            if i + 1 == r.len() {
                s.push_str(cell);
            } else {
                let _ = write!(s, "{cell:<w$} ", w = widths[i]);
            }
        }
        s
    };
    let _ = writeln!(out, "{}", line(&rows[0]));
    for (b, r) in buckets.iter().zip(&rows[1..]) {
        let _ = writeln!(out, "{}", line(r));
        for g in &b.guard_skipped {
            let counts: Vec<String> = g.counts.values().map(u32::to_string).collect();
            let _ = writeln!(
                out,
                "  skipped subtree @{} (counts {})",
                g.path,
                counts.join(" vs ")
            );
        }
        for e in &b.errors {
            let at = if e.path.is_empty() {
                String::new()
            } else {
                format!(" @{}", e.path)
            };
            let _ = writeln!(out, "  error {}{at}: {}", e.node, e.error);
        }
    }
    let t = totals(buckets);
    let mut parts: Vec<String> = Vec::new();
    let groups = [
        ("in-sync", vec!["in-sync"]),
        ("repaired", vec!["repaired"]),
        ("differ", vec!["differs"]),
        ("hot-skipped", vec!["hot-skipped"]),
        ("unresolved", vec!["unresolved"]),
        ("error", vec!["error", "replica-down"]),
        ("interrupted", vec!["interrupted"]),
    ];
    for (name, states) in groups {
        let n: u64 = states
            .iter()
            .map(|s| t.states.get(s).copied().unwrap_or(0))
            .sum();
        if n > 0 {
            parts.push(format!("{n} {name}"));
        }
    }
    let c = &t.counters;
    let rep = if dry_run {
        format!("would repair {}", c.would_repair)
    } else {
        format!("repaired {}", c.repaired)
    };
    let _ = writeln!(
        out,
        "TOTAL  {} buckets: {}; keys compared {}, differing {}, {rep}",
        t.buckets,
        parts.join(", "),
        c.keys_compared,
        c.differing
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(name: &str) -> BucketReport {
        BucketReport::new(
            name.into(),
            vec!["a:1".into(), "b:1".into(), "c:1".into()],
            vec![],
        )
    }

    #[test]
    fn states_follow_counters() {
        let mut b = bucket("0");
        b.finish(false);
        assert_eq!(b.state, BucketState::InSync);
        b.counters.repaired = 2;
        b.finish(false);
        assert_eq!(b.state, BucketState::Repaired);
        b.counters.held = 1;
        b.finish(false);
        assert_eq!(b.state, BucketState::Unresolved);
        let mut d = bucket("1");
        d.counters.would_repair = 1;
        d.finish(true);
        assert_eq!(d.state, BucketState::Differs);
        assert!(d.state.leaves_work());
        let mut h = bucket("2");
        h.counters.skipped_hot = 3;
        h.finish(false);
        assert!(!h.state.leaves_work());
        let mut down = bucket("3");
        down.skipped = true;
        down.down.push("c:1".into());
        down.error("c:1", "", "timeout");
        down.finish(false);
        assert_eq!(down.state, BucketState::ReplicaDown);
    }

    #[test]
    fn text_table_and_total() {
        let mut a = bucket("0");
        a.keys = 102334;
        a.finish(false);
        let mut b = bucket("3");
        b.counters.keys_compared = 812;
        b.counters.differing = 4;
        b.counters.repaired = 3;
        b.counters.skipped_hot = 1;
        b.guard_skipped.push(GuardSkip {
            path: "3a7".into(),
            counts: [("a:1".to_string(), 120034), ("b:1".to_string(), 3)]
                .into_iter()
                .collect(),
        });
        b.finish(false);
        let mut c = bucket("c");
        c.skipped = true;
        c.down.push("c:1".into());
        c.error("c:1", "", "timeout");
        c.finish(false);
        let t = text("sync route=r mode=repair", &[a, b, c], false);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "sync route=r mode=repair");
        assert!(lines[1].starts_with("BUCKET REPL KEYS   COMPARED DIFF REPAIRED"));
        assert!(lines[2].starts_with("0      3/3  102334 0"), "{t}");
        assert!(lines[2].ends_with("in-sync"));
        assert!(lines[3].ends_with("unresolved"));
        assert_eq!(lines[4], "  skipped subtree @3a7 (counts 120034 vs 3)");
        assert!(lines[5].starts_with("c      2/3  -"), "{t}");
        assert_eq!(lines[6], "  error c:1: timeout");
        assert_eq!(
            lines[7],
            "TOTAL  3 buckets: 1 in-sync, 1 unresolved, 1 error; keys compared 812, differing 4, repaired 3"
        );
    }

    #[test]
    fn json_fields() {
        let mut b = bucket("3");
        b.finish(true);
        let v = serde_json::to_value(&b).expect("json");
        for k in [
            "bucket",
            "replicas",
            "down",
            "backups",
            "root_equal",
            "keys",
            "dirs_listed",
            "keys_compared",
            "differing",
            "repaired",
            "would_repair",
            "skipped_hot",
            "skipped_changed",
            "held",
            "conflicts",
            "failed",
            "version_misaligned",
            "drained",
            "guard_skipped",
            "errors",
            "duration_ms",
        ] {
            assert!(v.get(k).is_some(), "missing {k} in {v}");
        }
        assert_eq!(v["state"], "in-sync");
    }
}
