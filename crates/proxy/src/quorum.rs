//! Quorum arithmetic of proxy.md §4, kept free of I/O so every rule is unit-tested.

/// What a write should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Wait for more replies.
    Wait,
    /// The mains can no longer reach W: start the backups now (set only; once).
    StartBackups,
    /// Enough acks; `found` = some counted reply was `DELETED` (delete only).
    Success { found: bool },
    /// Everything finished with fewer than W acks.
    Failure,
}

/// W-of-N write accounting for set (§4.4) and delete (§4.5).
///
/// Backup acks count only once the mains cannot reach W on their own; for a set the backups
/// are started exactly then, for a delete they run from the start.
#[derive(Debug, Clone)]
pub struct WriteQuorum {
    w: usize,
    main_acks: usize,
    main_pending: usize,
    backup_acks: usize,
    backup_pending: usize,
    backups_started: bool,
    main_found: bool,
    backup_found: bool,
}

impl WriteQuorum {
    pub fn new(w: usize) -> WriteQuorum {
        WriteQuorum {
            w: w.max(1),
            main_acks: 0,
            main_pending: 0,
            backup_acks: 0,
            backup_pending: 0,
            backups_started: false,
            main_found: false,
            backup_found: false,
        }
    }

    pub fn main_sent(&mut self) {
        self.main_pending += 1;
    }

    /// Marks the backups as started (also when none could be contacted).
    pub fn backups_started(&mut self, sent: usize) {
        self.backups_started = true;
        self.backup_pending += sent;
    }

    pub fn main_result(&mut self, ack: bool, found: bool) {
        self.main_pending = self.main_pending.saturating_sub(1);
        if ack {
            self.main_acks += 1;
            self.main_found |= found;
        }
    }

    pub fn backup_result(&mut self, ack: bool, found: bool) {
        self.backup_pending = self.backup_pending.saturating_sub(1);
        if ack {
            self.backup_acks += 1;
            self.backup_found |= found;
        }
    }

    pub fn pending(&self) -> usize {
        self.main_pending + self.backup_pending
    }

    pub fn acks(&self) -> (usize, usize) {
        (self.main_acks, self.backup_acks)
    }

    pub fn decide(&self) -> Decision {
        if self.main_acks >= self.w {
            return Decision::Success {
                found: self.main_found,
            };
        }
        if self.main_acks + self.main_pending >= self.w {
            return Decision::Wait;
        }
        if self.main_acks + self.backup_acks >= self.w {
            return Decision::Success {
                found: self.main_found || self.backup_found,
            };
        }
        if !self.backups_started {
            return Decision::StartBackups;
        }
        if self.pending() == 0 {
            Decision::Failure
        } else {
            Decision::Wait
        }
    }
}

/// A read's result when no replica had the key (§4.2 last lines).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOutcome {
    /// At least R replicas answered: `END`.
    Miss,
    Timeout,
    Failed,
}

pub fn read_outcome(answered: usize, r: usize, deadline_passed: bool) -> ReadOutcome {
    if answered >= r {
        ReadOutcome::Miss
    } else if deadline_passed {
        ReadOutcome::Timeout
    } else {
        ReadOutcome::Failed
    }
}

/// incr replies of one step (mains, or backups), §4.6.
#[derive(Debug, Clone, Default)]
pub struct IncrTally {
    best: Option<i64>,
    answered: usize,
    non_number: bool,
    failed: bool,
}

/// What an incr replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncrOutcome {
    Value(i64),
    /// Every answering host replied with a number, none > 0: beansdb's failure value.
    Zero,
    Failed,
}

impl IncrTally {
    /// A reply: `Some(n)` for a number, `None` for any other well-formed reply.
    pub fn answer(&mut self, number: Option<i64>) {
        self.answered += 1;
        match number {
            Some(n) if n > 0 => self.best = Some(self.best.map_or(n, |b| b.max(n))),
            Some(_) => {}
            None => self.non_number = true,
        }
    }

    /// No reply (down, timeout, connection error).
    pub fn fail(&mut self) {
        self.failed = true;
    }

    pub fn acked(&self) -> bool {
        self.best.is_some()
    }

    /// True when some host of this step did not answer (the backups step runs then).
    pub fn any_failed(&self) -> bool {
        self.failed
    }

    /// Combined result of the steps that ran.
    pub fn outcome(steps: &[&IncrTally]) -> IncrOutcome {
        if let Some(v) = steps.iter().filter_map(|t| t.best).max() {
            return IncrOutcome::Value(v);
        }
        let answered: usize = steps.iter().map(|t| t.answered).sum();
        if answered > 0 && steps.iter().all(|t| !t.non_number) {
            IncrOutcome::Zero
        } else {
            IncrOutcome::Failed
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set_run(w: usize, mains: &[Option<bool>], backups: &[Option<bool>]) -> (Decision, bool) {
        // mains/backups: None = down (not sent), Some(ack).
        let mut q = WriteQuorum::new(w);
        let sent: Vec<bool> = mains.iter().filter_map(|m| *m).collect();
        for _ in &sent {
            q.main_sent();
        }
        let mut backups_used = false;
        let mut replies = sent.into_iter();
        let mut backup_replies: Vec<bool> = Vec::new();
        loop {
            match q.decide() {
                Decision::Wait => {
                    if let Some(a) = replies.next() {
                        q.main_result(a, false);
                    } else if let Some(a) = backup_replies.pop() {
                        q.backup_result(a, false);
                    } else {
                        panic!("waiting with nothing pending");
                    }
                }
                Decision::StartBackups => {
                    backups_used = true;
                    backup_replies = backups.iter().filter_map(|b| *b).collect();
                    q.backups_started(backup_replies.len());
                }
                d => return (d, backups_used),
            }
        }
    }

    #[test]
    fn set_table_of_spec() {
        let ok = Decision::Success { found: false };
        // all up
        assert_eq!(set_run(2, &[Some(true); 3], &[Some(true)]), (ok, false));
        // 1 main down
        assert_eq!(
            set_run(2, &[None, Some(true), Some(true)], &[Some(true)]),
            (ok, false)
        );
        // 2 mains down: 1 + backup
        assert_eq!(
            set_run(2, &[None, None, Some(true)], &[Some(true)]),
            (ok, true)
        );
        // 3 mains down: backup written, still a failure
        assert_eq!(
            set_run(2, &[None; 3], &[Some(true)]),
            (Decision::Failure, true)
        );
        // 3 mains down, backup down: fast failure
        assert_eq!(set_run(2, &[None; 3], &[None]), (Decision::Failure, true));
        // NOT_STORED everywhere: backups tried, failure
        assert_eq!(
            set_run(2, &[Some(false); 3], &[Some(false)]),
            (Decision::Failure, true)
        );
        // One main refuses, two ack: no backups
        assert_eq!(
            set_run(2, &[Some(false), Some(true), Some(true)], &[Some(true)]),
            (ok, false)
        );
        // Two backups both help
        assert_eq!(
            set_run(3, &[None, None, Some(true)], &[Some(true), Some(true)]),
            (ok, true)
        );
    }

    #[test]
    fn success_as_soon_as_w_acks() {
        let mut q = WriteQuorum::new(2);
        for _ in 0..3 {
            q.main_sent();
        }
        q.main_result(true, false);
        assert_eq!(q.decide(), Decision::Wait);
        q.main_result(true, false);
        assert_eq!(q.decide(), Decision::Success { found: false });
        assert_eq!(q.pending(), 1);
    }

    #[test]
    fn backups_start_when_certain_not_after_timeouts() {
        let mut q = WriteQuorum::new(2);
        for _ in 0..3 {
            q.main_sent();
        }
        q.main_result(false, false);
        assert_eq!(q.decide(), Decision::Wait);
        q.main_result(false, false);
        // One main still pending but 0 + 1 < 2: start now.
        assert_eq!(q.decide(), Decision::StartBackups);
    }

    #[test]
    fn delete_rules() {
        // Mains reach W: reply at once, DELETED if a counted main reply was DELETED.
        let mut q = WriteQuorum::new(2);
        for _ in 0..3 {
            q.main_sent();
        }
        q.backups_started(1);
        q.backup_result(true, true);
        q.main_result(true, false);
        assert_eq!(q.decide(), Decision::Wait);
        q.main_result(true, false);
        assert_eq!(q.decide(), Decision::Success { found: false });

        // 1 main down: 2 mains ack.
        let mut q = WriteQuorum::new(2);
        q.main_sent();
        q.main_sent();
        q.backups_started(1);
        q.main_result(true, true);
        q.main_result(true, true);
        assert_eq!(q.decide(), Decision::Success { found: true });

        // 2 mains down: 1 main + backup count.
        let mut q = WriteQuorum::new(2);
        q.main_sent();
        q.backups_started(1);
        q.main_result(true, false);
        assert_eq!(q.decide(), Decision::Wait);
        q.backup_result(true, true);
        assert_eq!(q.decide(), Decision::Success { found: true });

        // All mains and backup down: failure.
        let mut q = WriteQuorum::new(2);
        q.backups_started(0);
        assert_eq!(q.decide(), Decision::Failure);

        // All mains down, backup answers: 1 < W.
        let mut q = WriteQuorum::new(2);
        q.backups_started(1);
        assert_eq!(q.decide(), Decision::Wait);
        q.backup_result(true, true);
        assert_eq!(q.decide(), Decision::Failure);
    }

    #[test]
    fn reads() {
        assert_eq!(read_outcome(1, 1, false), ReadOutcome::Miss);
        assert_eq!(read_outcome(3, 1, true), ReadOutcome::Miss);
        assert_eq!(read_outcome(0, 1, false), ReadOutcome::Failed);
        assert_eq!(read_outcome(1, 2, false), ReadOutcome::Failed);
        assert_eq!(read_outcome(0, 1, true), ReadOutcome::Timeout);
    }

    #[test]
    fn incr() {
        let mut t = IncrTally::default();
        t.answer(Some(5));
        t.answer(Some(7));
        t.fail();
        assert!(t.acked() && t.any_failed());
        assert_eq!(IncrTally::outcome(&[&t]), IncrOutcome::Value(7));

        let mut zero = IncrTally::default();
        zero.answer(Some(0));
        assert_eq!(IncrTally::outcome(&[&zero]), IncrOutcome::Zero);

        let mut bad = IncrTally::default();
        bad.answer(None);
        bad.answer(Some(0));
        assert_eq!(IncrTally::outcome(&[&bad]), IncrOutcome::Failed);

        let mut none = IncrTally::default();
        none.fail();
        assert_eq!(IncrTally::outcome(&[&none]), IncrOutcome::Failed);

        let mut backup = IncrTally::default();
        backup.answer(Some(3));
        assert_eq!(IncrTally::outcome(&[&none, &backup]), IncrOutcome::Value(3));
    }
}
