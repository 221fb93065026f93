//! Choosing the winner of a differing key (tools.md §1.5). Pure: no I/O, so every row of the
//! spec's table is a unit test.

use clap::ValueEnum;

/// A replica's authoritative state of one key, from `?key`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Live {
        ver: i32,
        vhash: u16,
        flag: u32,
        ts: u32,
    },
    Tomb {
        ver: i32,
        ts: u32,
    },
    Absent,
}

impl State {
    /// |ver|, or `None` for Absent.
    pub fn abs_ver(&self) -> Option<u32> {
        match *self {
            State::Live { ver, .. } | State::Tomb { ver, .. } => Some(ver.unsigned_abs()),
            State::Absent => None,
        }
    }

    pub fn ts(&self) -> Option<u32> {
        match *self {
            State::Live { ts, .. } | State::Tomb { ts, .. } => Some(ts),
            State::Absent => None,
        }
    }

    pub fn is_live(&self) -> bool {
        matches!(self, State::Live { .. })
    }
}

/// One replica as the decision sees it: its state, its fetched content when live, and
/// whether it is a main (only mains are ever written).
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub state: State,
    /// `(flag, value)` fetched with `@@` for a Live state.
    pub content: Option<(u32, &'a [u8])>,
    pub main: bool,
}

/// What `--tombstone-minority` does with a winning tombstone outnumbered by live mains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TombstoneMinority {
    Hold,
    Delete,
    Restore,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing to write (every main already agrees with the winner, or the key vanished).
    Nothing { reason: &'static str },
    /// Write the live content of `winner` at version `version` to `targets`.
    Set {
        action: &'static str,
        reason: &'static str,
        winner: usize,
        version: i32,
        targets: Vec<usize>,
    },
    /// Delete on `targets` (all Live mains) so they end at `-version`.
    Delete {
        reason: &'static str,
        winner: usize,
        version: i32,
        targets: Vec<usize>,
    },
    /// A lone tombstone against live copies (`--tombstone-minority hold`).
    Hold { winner: usize },
    /// Equal version, equal ts and no majority: nobody can be trusted.
    Conflict,
}

/// Content identity for equality: a tombstone is one group; live copies compare flag and bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Group<'a> {
    Tomb,
    Live(u32, &'a [u8]),
    /// Live but its value was not fetched: equal to nothing, not even itself.
    Unknown(usize),
}

fn group<'a>(i: usize, inp: &Input<'a>) -> Group<'a> {
    match (inp.state, inp.content) {
        (State::Tomb { .. }, _) => Group::Tomb,
        (State::Live { .. }, Some((flag, v))) => Group::Live(flag, v),
        _ => Group::Unknown(i),
    }
}

/// Applies tools.md §1.5 to the states of one key.
pub fn decide(inputs: &[Input<'_>], minority: TombstoneMinority) -> Decision {
    let Some(m) = inputs.iter().filter_map(|i| i.state.abs_ver()).max() else {
        return Decision::Nothing { reason: "vanished" };
    };
    let top: Vec<usize> = (0..inputs.len())
        .filter(|&i| inputs[i].state.abs_ver() == Some(m))
        .collect();
    let first_group = group(top[0], &inputs[top[0]]);
    let uniform = top
        .iter()
        .all(|&i| group(i, &inputs[i]) == first_group && !matches!(first_group, Group::Unknown(_)));

    // (winner index, target version, broken = same version with different content, reason)
    let (winner, version, broken, reason) = if uniform {
        (prefer_main(inputs, &top), m, false, "higher_version")
    } else {
        let newest = top
            .iter()
            .filter_map(|&i| inputs[i].state.ts())
            .max()
            .unwrap_or(0);
        let newest_top: Vec<usize> = top
            .iter()
            .copied()
            .filter(|&i| inputs[i].state.ts() == Some(newest))
            .collect();
        let g0 = group(newest_top[0], &inputs[newest_top[0]]);
        if newest_top
            .iter()
            .all(|&i| group(i, &inputs[i]) == g0 && !matches!(g0, Group::Unknown(_)))
        {
            (prefer_main(inputs, &newest_top), m + 1, true, "newer_ts")
        } else {
            // Majority over all replicas holding each candidate content, at any version.
            let mut best: Option<(usize, usize)> = None; // (holders, index)
            let mut tie = false;
            let mut seen: Vec<Group<'_>> = Vec::new();
            for &i in &newest_top {
                let g = group(i, &inputs[i]);
                if seen.contains(&g) {
                    continue;
                }
                seen.push(g);
                let holders = (0..inputs.len())
                    .filter(|&j| group(j, &inputs[j]) == g)
                    .count();
                match best {
                    Some((n, _)) if holders < n => {}
                    Some((n, _)) if holders == n => tie = true,
                    _ => {
                        best = Some((holders, i));
                        tie = false;
                    }
                }
            }
            match best {
                Some((_, i)) if !tie && !matches!(group(i, &inputs[i]), Group::Unknown(_)) => {
                    let g = group(i, &inputs[i]);
                    let holders: Vec<usize> = newest_top
                        .iter()
                        .copied()
                        .filter(|&j| group(j, &inputs[j]) == g)
                        .collect();
                    (prefer_main(inputs, &holders), m + 1, true, "majority")
                }
                _ => return Decision::Conflict,
            }
        }
    };
    // Versions are i32 on the wire; a winner at i32::MAX cannot be bumped.
    let Ok(version) = i32::try_from(version) else {
        return Decision::Conflict;
    };
    let mains = || (0..inputs.len()).filter(|&i| inputs[i].main);
    let winner_group = group(winner, &inputs[winner]);

    if inputs[winner].state.is_live() {
        let targets: Vec<usize> = if broken {
            mains().collect()
        } else {
            mains()
                .filter(|&i| match inputs[i].state {
                    State::Absent | State::Tomb { .. } => true,
                    State::Live { ver, .. } => {
                        group(i, &inputs[i]) != winner_group || ver.unsigned_abs() < version as u32
                    }
                })
                .collect()
        };
        if targets.is_empty() {
            return Decision::Nothing {
                reason: "mains_agree",
            };
        }
        let action = if broken {
            "bump"
        } else if targets
            .iter()
            .all(|&i| group(i, &inputs[i]) == winner_group)
        {
            "version_only"
        } else {
            "copy"
        };
        let reason = if !broken && targets.iter().all(|&i| inputs[i].state == State::Absent) {
            "missing"
        } else {
            reason
        };
        return Decision::Set {
            action,
            reason,
            winner,
            version,
            targets,
        };
    }

    // The winner is a tombstone: every live main is older than the delete.
    let live: Vec<usize> = mains().filter(|&i| inputs[i].state.is_live()).collect();
    if live.is_empty() {
        return Decision::Nothing {
            reason: "mains_agree",
        };
    }
    let others = mains().filter(|&i| !inputs[i].state.is_live()).count();
    if live.len() > others {
        match minority {
            TombstoneMinority::Hold => return Decision::Hold { winner },
            TombstoneMinority::Delete => {}
            TombstoneMinority::Restore => {
                // The newest live content (highest version, then newest ts) comes back above
                // every existing version, on every main.
                // Reversed: on a full tie max_by_key keeps the last, i.e. the first replica.
                let Some(restore) = (0..inputs.len())
                    .rev()
                    .filter(|&i| inputs[i].state.is_live() && inputs[i].content.is_some())
                    .max_by_key(|&i| {
                        (
                            inputs[i].state.abs_ver(),
                            inputs[i].state.ts(),
                            inputs[i].main,
                        )
                    })
                else {
                    return Decision::Conflict;
                };
                let Ok(version) = i32::try_from(m + 1) else {
                    return Decision::Conflict;
                };
                return Decision::Set {
                    action: "bump",
                    reason: "minority_tombstone",
                    winner: restore,
                    version,
                    targets: mains().collect(),
                };
            }
        }
    }
    Decision::Delete {
        reason: if broken { reason } else { "deleted" },
        winner,
        version,
        targets: live,
    }
}

/// The first main among `idx`, else the first index: the node named as the winner.
fn prefer_main(inputs: &[Input<'_>], idx: &[usize]) -> usize {
    idx.iter()
        .copied()
        .find(|&i| inputs[i].main)
        .unwrap_or(idx[0])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(ver: i32, ts: u32, v: &'static [u8]) -> Input<'static> {
        Input {
            state: State::Live {
                ver,
                vhash: beansdb_hash::vhash(v),
                flag: 0,
                ts,
            },
            content: Some((0, v)),
            main: true,
        }
    }

    fn tomb(ver: i32, ts: u32) -> Input<'static> {
        Input {
            state: State::Tomb { ver, ts },
            content: None,
            main: true,
        }
    }

    fn absent() -> Input<'static> {
        Input {
            state: State::Absent,
            content: None,
            main: true,
        }
    }

    fn hold() -> TombstoneMinority {
        TombstoneMinority::Hold
    }

    fn set(action: &'static str, winner: usize, version: i32, targets: &[usize]) -> Decision {
        Decision::Set {
            action,
            reason: usual_reason(action),
            winner,
            version,
            targets: targets.to_vec(),
        }
    }

    // The reason is checked separately where it matters; this helper picks the usual one.
    fn usual_reason(action: &'static str) -> &'static str {
        match action {
            "bump" => "newer_ts",
            _ => "higher_version",
        }
    }

    // Rows of the tools.md §1.5 table.

    #[test]
    fn higher_version_copies_to_lower() {
        let d = decide(
            &[live(5, 100, b"X"), live(3, 90, b"Y"), live(3, 90, b"Y")],
            hold(),
        );
        assert_eq!(d, set("copy", 0, 5, &[1, 2]));
    }

    #[test]
    fn absent_is_filled_in() {
        let d = decide(&[live(4, 100, b"X"), absent(), live(4, 100, b"X")], hold());
        match d {
            Decision::Set {
                action,
                reason,
                winner,
                version,
                targets,
            } => {
                assert_eq!((action, reason, winner, version), ("copy", "missing", 0, 4));
                assert_eq!(targets, vec![1]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn tombstone_majority_deletes_live() {
        let d = decide(&[tomb(-4, 100), tomb(-4, 100), live(3, 90, b"X")], hold());
        assert_eq!(
            d,
            Decision::Delete {
                reason: "deleted",
                winner: 0,
                version: 4,
                targets: vec![2]
            }
        );
    }

    #[test]
    fn tombstone_plus_absent_deletes_live() {
        let d = decide(&[tomb(-4, 100), absent(), live(3, 90, b"X")], hold());
        assert!(matches!(d, Decision::Delete { version: 4, ref targets, .. } if targets == &[2]));
    }

    #[test]
    fn lone_tombstone_is_held() {
        let rows = [tomb(-4, 100), live(3, 90, b"X"), live(3, 90, b"X")];
        assert_eq!(decide(&rows, hold()), Decision::Hold { winner: 0 });
        assert!(matches!(
            decide(&rows, TombstoneMinority::Delete),
            Decision::Delete { version: 4, ref targets, .. } if targets == &[1, 2]
        ));
        assert_eq!(
            decide(&rows, TombstoneMinority::Restore),
            Decision::Set {
                action: "bump",
                reason: "minority_tombstone",
                winner: 1,
                version: 5,
                targets: vec![0, 1, 2]
            }
        );
    }

    #[test]
    fn equal_version_newer_ts_wins_everywhere() {
        let d = decide(
            &[live(3, 100, b"X"), live(3, 105, b"Y"), live(3, 100, b"X")],
            hold(),
        );
        assert_eq!(d, set("bump", 1, 4, &[0, 1, 2]));
    }

    #[test]
    fn equal_version_same_ts_majority_wins() {
        let d = decide(
            &[live(3, 100, b"X"), live(3, 100, b"Y"), live(3, 100, b"X")],
            hold(),
        );
        assert_eq!(
            d,
            Decision::Set {
                action: "bump",
                reason: "majority",
                winner: 0,
                version: 4,
                targets: vec![0, 1, 2]
            }
        );
    }

    #[test]
    fn same_bytes_lower_version_is_version_only() {
        let d = decide(&[live(5, 100, b"X"), live(3, 90, b"X")], hold());
        assert_eq!(d, set("version_only", 0, 5, &[1]));
    }

    #[test]
    fn tomb_live_tie_without_majority_is_conflict() {
        let d = decide(&[tomb(-3, 100), live(3, 100, b"X")], hold());
        assert_eq!(d, Decision::Conflict);
    }

    #[test]
    fn flag_is_part_of_content() {
        let mut a = live(3, 100, b"X");
        a.content = Some((7, b"X"));
        let d = decide(&[a, live(3, 100, b"X"), live(3, 100, b"X")], hold());
        // Same bytes, different flag: a broken replica; the majority (flag 0) wins.
        assert!(matches!(
            d,
            Decision::Set {
                reason: "majority",
                winner: 1,
                version: 4,
                ..
            }
        ));
    }

    #[test]
    fn newer_tombstone_at_equal_version_wins_by_ts() {
        let d = decide(
            &[tomb(-3, 105), live(3, 100, b"X"), live(3, 100, b"X")],
            hold(),
        );
        // Live mains (2) outnumber the tombstone: held even in the broken case.
        assert_eq!(d, Decision::Hold { winner: 0 });
        let d = decide(&[tomb(-3, 105), live(3, 100, b"X"), absent()], hold());
        assert_eq!(
            d,
            Decision::Delete {
                reason: "newer_ts",
                winner: 0,
                version: 4,
                targets: vec![1]
            }
        );
    }

    #[test]
    fn agreeing_mains_need_nothing() {
        let d = decide(&[live(2, 1, b"a"), live(2, 1, b"a")], hold());
        assert!(matches!(d, Decision::Nothing { .. }));
        let d = decide(&[tomb(-2, 1), absent(), tomb(-5, 3)], hold());
        assert!(matches!(d, Decision::Nothing { .. }));
        assert!(matches!(
            decide(&[absent(), absent()], hold()),
            Decision::Nothing { reason: "vanished" }
        ));
    }

    #[test]
    fn backups_vote_but_are_never_targets() {
        let mut b = live(6, 100, b"B");
        b.main = false;
        let d = decide(&[live(4, 90, b"X"), absent(), b], hold());
        assert_eq!(d, set("copy", 2, 6, &[0, 1]));
    }

    #[test]
    fn lower_tombstone_is_overwritten_by_newer_set() {
        let d = decide(
            &[live(5, 100, b"X"), tomb(-4, 90), live(5, 100, b"X")],
            hold(),
        );
        assert_eq!(d, set("copy", 0, 5, &[1]));
    }
}
