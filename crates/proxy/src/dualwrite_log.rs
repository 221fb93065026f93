//! Dual-write error log (cassandra.md §7.1): one JSON line per failed C* half of a dual write,
//! the input of `beansctl replay-errors`.
//!
//! Each line is a single `write(2)` on an `O_APPEND` file under one mutex, so lines never
//! interleave; `fsync` runs at most once per second. Rotation follows lumberjack: a write that
//! would push the file past the size limit first renames it to
//! `<stem>-<UTC YYYY-MM-DDTHH-MM-SS.mmm><.ext>` and starts a new file; a background thread then
//! prunes old backups (`max_backups`, `max_ages_days`) and gzips the rest when `compress` is set.
//! [`DualWriteLog::reopen`] is for SIGUSR1 after an external tool moved the file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Local, NaiveDateTime, SecondsFormat, TimeDelta, Utc};
use parking_lot::{Condvar, Mutex};

const MIB: u64 = 1024 * 1024;
/// lumberjack's default when the size is 0.
const DEFAULT_ROTATE_MB: u64 = 100;
const SYNC_INTERVAL: Duration = Duration::from_secs(1);
/// The timestamp part of a backup name (lumberjack's `2006-01-02T15-04-05.000`, UTC).
const BACKUP_TIME_FORMAT: &str = "%Y-%m-%dT%H-%M-%S%.3f";
const GZ_SUFFIX: &str = ".gz";
/// Suffix of a compression in progress; renamed to `.gz` only when complete.
const GZ_TMP_SUFFIX: &str = ".gz.tmp";

/// The `dual_write_err_cfg` settings, resolved.
#[derive(Debug, Clone)]
pub struct DualWriteLogCfg {
    /// Existing directory (`dump_to_dir`); it is not created.
    pub dir: PathBuf,
    /// `log_file_name`: a plain file name inside `dir`.
    pub file_name: String,
    /// Rotate when a write would push the file past this many MiB; 0 = 100 (as lumberjack).
    pub rotate_size_mb: u64,
    /// Gzip rotated files in the background.
    pub compress: bool,
    /// Delete rotated files older than this many days; 0 = keep.
    pub max_ages_days: u64,
    /// Keep at most this many rotated files; 0 = keep all.
    pub max_backups: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DualOp {
    Set,
    Del,
}

impl DualOp {
    pub fn as_str(self) -> &'static str {
        match self {
            DualOp::Set => "set",
            DualOp::Del => "del",
        }
    }
}

/// One failed C* half of a dual write.
#[derive(Debug, Clone, Copy)]
pub struct DualWriteEntry<'a> {
    pub op: DualOp,
    pub key: &'a [u8],
    /// The key's rw status, e.g. `br1w1cr0w1`.
    pub status: &'a str,
    /// The failed statement's `USING TIMESTAMP`.
    pub ts_us: i64,
    pub error: &'a str,
    /// This proxy's `host:port`.
    pub proxy: &'a str,
}

/// The line for `e` at time `now`, without the trailing newline. Fields are appended by hand
/// because the order is part of the format; every string goes through serde_json for escaping.
pub fn format_line(e: &DualWriteEntry<'_>, now: DateTime<Local>) -> String {
    let key = String::from_utf8_lossy(e.key);
    let mut s = String::with_capacity(160 + 3 * e.key.len() + e.error.len());
    s.push_str("{\"time\":\"");
    s.push_str(&now.to_rfc3339_opts(SecondsFormat::Micros, false));
    s.push_str("\",\"level\":\"error\",\"op\":\"");
    s.push_str(e.op.as_str());
    s.push_str("\",\"key\":");
    s.push_str(&json_str(&key));
    if std::str::from_utf8(e.key).is_err() {
        s.push_str(",\"key_hex\":\"");
        s.push_str(&hex_lower(e.key));
        s.push('"');
    }
    s.push_str(",\"status\":");
    s.push_str(&json_str(e.status));
    s.push_str(",\"ts_us\":");
    s.push_str(&e.ts_us.to_string());
    s.push_str(",\"error\":");
    s.push_str(&json_str(e.error));
    s.push_str(",\"proxy\":");
    s.push_str(&json_str(e.proxy));
    s.push('}');
    s
}

/// A JSON string literal; going through `Value` keeps this infallible.
fn json_str(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

fn hex_lower(b: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(2 * b.len());
    for &x in b {
        s.push(DIGITS[usize::from(x >> 4)] as char);
        s.push(DIGITS[usize::from(x & 0xf)] as char);
    }
    s
}

/// How backup names are built and recognised. The extension starts at the last dot of the
/// file name, as Go's `filepath.Ext` (which lumberjack uses) does.
#[derive(Debug)]
struct Names {
    stem: String,
    ext: String,
}

impl Names {
    fn new(file_name: &str) -> Names {
        let (stem, ext) = match file_name.rfind('.') {
            Some(i) => file_name.split_at(i),
            None => (file_name, ""),
        };
        Names {
            stem: stem.to_owned(),
            ext: ext.to_owned(),
        }
    }

    fn backup_name(&self, t: DateTime<Utc>) -> String {
        format!("{}-{}{}", self.stem, t.format(BACKUP_TIME_FORMAT), self.ext)
    }

    /// The time in a backup's name and whether it is compressed; `None` for other files.
    fn parse_backup(&self, name: &str) -> Option<(DateTime<Utc>, bool)> {
        let (base, gz) = match name.strip_suffix(GZ_SUFFIX) {
            Some(b) => (b, true),
            None => (name, false),
        };
        let ts = base
            .strip_prefix(self.stem.as_str())?
            .strip_prefix('-')?
            .strip_suffix(self.ext.as_str())?;
        let t = NaiveDateTime::parse_from_str(ts, BACKUP_TIME_FORMAT)
            .ok()?
            .and_utc();
        // Reject anything the lenient parser accepted but we would never have written.
        (t.format(BACKUP_TIME_FORMAT).to_string() == ts).then_some((t, gz))
    }
}

/// What the background pruning/compression pass needs.
#[derive(Debug)]
struct MillCfg {
    dir: PathBuf,
    names: Names,
    compress: bool,
    max_ages_days: u64,
    max_backups: u64,
}

/// Requested vs completed mill passes, so callers can wait for the background work.
#[derive(Default)]
struct MillProgress {
    state: Mutex<(u64, u64)>,
    cv: Condvar,
}

struct Inner {
    file: File,
    /// Bytes in `file` as far as this process knows (its length at open plus our writes).
    size: u64,
    max_bytes: u64,
    last_sync: Option<Instant>,
    /// Time in the newest backup name, so names stay strictly increasing even when several
    /// rotations fall in one millisecond (otherwise a rename would overwrite a backup).
    last_backup: Option<DateTime<Utc>>,
    #[cfg(test)]
    syncs: u64,
}

/// The dual-write error log. `Send + Sync`; share it in an `Arc`.
pub struct DualWriteLog {
    path: PathBuf,
    mill_cfg: Arc<MillCfg>,
    inner: Mutex<Inner>,
    mill_tx: SyncSender<()>,
    progress: Arc<MillProgress>,
}

impl std::fmt::Debug for DualWriteLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DualWriteLog")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl DualWriteLog {
    /// Opens (creating) `dir/file_name` in append mode and starts the background thread, which
    /// also runs one pruning/compression pass at once for backups left by an earlier run.
    pub fn open(cfg: DualWriteLogCfg) -> io::Result<DualWriteLog> {
        if cfg.file_name.is_empty() || cfg.file_name.contains('/') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "dual-write log file name {:?} must be a plain file name",
                    cfg.file_name
                ),
            ));
        }
        let path = cfg.dir.join(&cfg.file_name);
        let file = open_append(&path)?;
        let size = file.metadata()?.len();
        let mb = if cfg.rotate_size_mb == 0 {
            DEFAULT_ROTATE_MB
        } else {
            cfg.rotate_size_mb
        };
        let mill_cfg = Arc::new(MillCfg {
            names: Names::new(&cfg.file_name),
            dir: cfg.dir,
            compress: cfg.compress,
            max_ages_days: cfg.max_ages_days,
            max_backups: cfg.max_backups,
        });
        let progress = Arc::new(MillProgress::default());
        let mill_tx = spawn_mill(Arc::clone(&mill_cfg), Arc::clone(&progress))?;
        let log = DualWriteLog {
            path,
            mill_cfg,
            inner: Mutex::new(Inner {
                file,
                size,
                max_bytes: mb.saturating_mul(MIB),
                last_sync: None,
                last_backup: None,
                #[cfg(test)]
                syncs: 0,
            }),
            mill_tx,
            progress,
        };
        log.trigger_mill();
        Ok(log)
    }

    /// Overrides the rotation limit in bytes (tests use small files).
    pub fn set_rotate_bytes(&self, bytes: u64) {
        self.inner.lock().max_bytes = bytes.max(1);
    }

    pub fn path(&self) -> PathBuf {
        self.path.clone()
    }

    /// Appends one line. A rotation failure is logged and the line goes to the current file
    /// anyway: an oversized file is better than a lost entry. A line longer than the limit is
    /// written alone into a fresh file rather than refused (lumberjack refuses it).
    pub fn write(&self, e: &DualWriteEntry<'_>) -> io::Result<()> {
        let mut line = format_line(e, Local::now()).into_bytes();
        line.push(b'\n');
        let len = line.len() as u64;
        let mut rotated = false;
        let res = {
            let mut g = self.inner.lock();
            if g.size > 0 && g.size.saturating_add(len) > g.max_bytes {
                match self.rotate(&mut g) {
                    Ok(()) => rotated = true,
                    Err(err) => tracing::error!(
                        path = %self.path.display(),
                        "dual-write log rotation failed: {err}"
                    ),
                }
            }
            self.append(&mut g, &line)
        };
        // Outside the lock: the mill must never hold up writers.
        if rotated {
            self.trigger_mill();
        }
        res
    }

    fn append(&self, g: &mut Inner, line: &[u8]) -> io::Result<()> {
        // A regular file takes the whole buffer in one write(2); write_all only loops on a
        // short write (e.g. disk full), which is then reported as an error.
        if let Err(err) = g.file.write_all(line) {
            g.size = g.file.metadata().map(|m| m.len()).unwrap_or(g.size);
            return Err(err);
        }
        g.size = g.size.saturating_add(line.len() as u64);
        if g.last_sync.is_none_or(|t| t.elapsed() >= SYNC_INTERVAL) {
            // Set before syncing so a failing disk is not hammered on every line.
            g.last_sync = Some(Instant::now());
            #[cfg(test)]
            {
                g.syncs += 1;
            }
            g.file.sync_data()?;
        }
        Ok(())
    }

    /// Renames the current file to a fresh backup name and opens a new one at `path`.
    fn rotate(&self, g: &mut Inner) -> io::Result<()> {
        // Hand the old file's data to disk before it becomes a backup the mill may gzip.
        if let Err(err) = g.file.sync_data() {
            tracing::warn!(
                path = %self.path.display(),
                "dual-write log fsync before rotation: {err}"
            );
        }
        let names = &self.mill_cfg.names;
        let mut t = Utc::now();
        if let Some(last) = g.last_backup {
            if t <= last {
                t = last + TimeDelta::milliseconds(1);
            }
        }
        // Another process (or an earlier run) may own the name: never overwrite a backup.
        for _ in 0..1000 {
            let name = names.backup_name(t);
            let dir = &self.mill_cfg.dir;
            if !dir.join(&name).exists() && !dir.join(format!("{name}{GZ_SUFFIX}")).exists() {
                break;
            }
            t += TimeDelta::milliseconds(1);
        }
        let backup = self.mill_cfg.dir.join(names.backup_name(t));
        let renamed = match fs::rename(&self.path, &backup) {
            Ok(()) => true,
            // Moved away by someone else since we opened it: just start a new file.
            Err(err) if err.kind() == io::ErrorKind::NotFound => false,
            Err(err) => return Err(err),
        };
        let opened = open_append(&self.path).and_then(|f| Ok((f.metadata()?.len(), f)));
        let (size, file) = match opened {
            Ok(x) => x,
            Err(err) => {
                // We keep writing to the old file, so it must not stay a backup the mill
                // could compress and delete under us.
                if renamed {
                    if let Err(back) = fs::rename(&backup, &self.path) {
                        tracing::error!(
                            path = %backup.display(),
                            "dual-write log: cannot move back after a failed rotation: {back}"
                        );
                    }
                }
                return Err(err);
            }
        };
        if renamed {
            g.last_backup = Some(t);
        }
        g.size = size;
        g.file = file;
        g.last_sync = None;
        Ok(())
    }

    /// Reopens `path` (SIGUSR1): later lines go to whatever file is there now, created if an
    /// external tool moved the old one away.
    pub fn reopen(&self) -> io::Result<()> {
        // Under the lock, so a concurrent rotation cannot leave us writing into a backup.
        let mut g = self.inner.lock();
        let file = open_append(&self.path)?;
        let size = file.metadata()?.len();
        if let Err(err) = g.file.sync_data() {
            tracing::warn!(
                path = %self.path.display(),
                "dual-write log fsync before reopen: {err}"
            );
        }
        g.file = file;
        g.size = size;
        g.last_sync = None;
        Ok(())
    }

    /// Forces an fsync now (e.g. at shutdown), regardless of the once-per-second throttle.
    pub fn sync(&self) -> io::Result<()> {
        let mut g = self.inner.lock();
        g.last_sync = Some(Instant::now());
        g.file.sync_data()
    }

    /// Waits until the background pruning/compression requested so far has finished; false
    /// on timeout.
    pub fn wait_background(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = self.progress.state.lock();
        let target = st.0;
        while st.1 < target {
            if self.progress.cv.wait_until(&mut st, deadline).timed_out() {
                return st.1 >= target;
            }
        }
        true
    }

    fn trigger_mill(&self) {
        self.progress.state.lock().0 += 1;
        match self.mill_tx.try_send(()) {
            // Full: a pass is already queued and will see this request too.
            Ok(()) | Err(TrySendError::Full(())) => {}
            Err(TrySendError::Disconnected(())) => {
                tracing::error!(
                    path = %self.path.display(),
                    "dual-write log background thread is gone; backups are not pruned or compressed"
                );
            }
        }
    }
}

impl Drop for DualWriteLog {
    fn drop(&mut self) {
        // Lines written since the last throttled fsync.
        let _ = self.inner.get_mut().file.sync_data();
    }
}

fn spawn_mill(cfg: Arc<MillCfg>, progress: Arc<MillProgress>) -> io::Result<SyncSender<()>> {
    // Capacity 1 coalesces bursts of rotations into one pending pass.
    let (tx, rx) = mpsc::sync_channel::<()>(1);
    std::thread::Builder::new()
        .name("dualwrite-log-mill".into())
        .spawn(move || {
            // Ends when the log (the only sender) is dropped.
            while rx.recv().is_ok() {
                let target = progress.state.lock().0;
                run_mill(&cfg, Utc::now());
                let mut st = progress.state.lock();
                st.1 = st.1.max(target);
                progress.cv.notify_all();
            }
        })?;
    Ok(tx)
}

#[derive(Debug)]
struct Backup {
    name: String,
    time: DateTime<Utc>,
    gz: bool,
}

fn list_backups(cfg: &MillCfg) -> io::Result<Vec<Backup>> {
    let mut out = Vec::new();
    for ent in fs::read_dir(&cfg.dir)? {
        let ent = ent?;
        let Ok(name) = ent.file_name().into_string() else {
            continue;
        };
        if !ent.file_type().map(|t| t.is_file()).unwrap_or(false) {
            continue;
        }
        if let Some(base) = name.strip_suffix(GZ_TMP_SUFFIX) {
            // A compression interrupted by a crash; the source is still there and is redone.
            if cfg.names.parse_backup(base).is_some() {
                remove_logged(&cfg.dir.join(&name));
            }
            continue;
        }
        if let Some((time, gz)) = cfg.names.parse_backup(&name) {
            out.push(Backup { name, time, gz });
        }
    }
    Ok(out)
}

fn remove_logged(path: &Path) {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => {
            tracing::warn!(
                path = %path.display(),
                "dual-write log: cannot remove old backup: {err}"
            )
        }
    }
}

/// One pruning/compression pass (lumberjack's `millRunOnce`), judging age by the name.
fn run_mill(cfg: &MillCfg, now: DateTime<Utc>) {
    let mut files = match list_backups(cfg) {
        Ok(f) => f,
        Err(err) => {
            tracing::warn!(dir = %cfg.dir.display(), "dual-write log: cannot list backups: {err}");
            return;
        }
    };
    // Newest first.
    files.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| b.name.cmp(&a.name)));
    let mut remove: Vec<String> = Vec::new();
    if cfg.max_backups > 0 {
        // `x.log` and `x.log.gz` (left by an interrupted compression) count as one backup.
        let mut kept_bases: Vec<String> = Vec::new();
        files.retain(|f| {
            let base = f.name.strip_suffix(GZ_SUFFIX).unwrap_or(&f.name);
            if !kept_bases.iter().any(|k| k == base) {
                kept_bases.push(base.to_owned());
            }
            let keep = kept_bases.len() as u64 <= cfg.max_backups;
            if !keep {
                remove.push(f.name.clone());
            }
            keep
        });
    }
    if cfg.max_ages_days > 0 {
        let cutoff = i64::try_from(cfg.max_ages_days)
            .ok()
            .and_then(|d| d.checked_mul(86_400))
            .and_then(TimeDelta::try_seconds)
            .and_then(|age| now.checked_sub_signed(age));
        // No representable cutoff means nothing can be that old.
        if let Some(cutoff) = cutoff {
            files.retain(|f| {
                let keep = f.time >= cutoff;
                if !keep {
                    remove.push(f.name.clone());
                }
                keep
            });
        }
    }
    for name in &remove {
        remove_logged(&cfg.dir.join(name));
    }
    if cfg.compress {
        for f in files.iter().filter(|f| !f.gz) {
            let src = cfg.dir.join(&f.name);
            if let Err(err) = compress_file(&src) {
                tracing::warn!(
                    path = %src.display(),
                    "dual-write log: cannot compress backup: {err}"
                );
            }
        }
    }
}

/// Gzips `src` into `src.gz` via a temporary file, then removes `src`; a crash at any point
/// leaves `src` complete.
fn compress_file(src: &Path) -> io::Result<()> {
    let mut gz_name = src.as_os_str().to_owned();
    gz_name.push(GZ_SUFFIX);
    let dst = PathBuf::from(gz_name);
    let mut tmp_name = src.as_os_str().to_owned();
    tmp_name.push(GZ_TMP_SUFFIX);
    let tmp = PathBuf::from(tmp_name);
    let res = (|| {
        let mut input = File::open(src)?;
        let out = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        // Same permissions as the log it replaces.
        out.set_permissions(input.metadata()?.permissions())?;
        let mut enc = flate2::write::GzEncoder::new(out, flate2::Compression::default());
        io::copy(&mut input, &mut enc)?;
        let out = enc.finish()?;
        out.sync_all()?;
        fs::rename(&tmp, &dst)
    })();
    if let Err(err) = res {
        remove_logged(&tmp);
        return Err(err);
    }
    fs::remove_file(src)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::FixedOffset;
    use std::collections::HashSet;
    use std::io::Read;

    fn cfg(dir: &Path, compress: bool, max_ages_days: u64, max_backups: u64) -> DualWriteLogCfg {
        DualWriteLogCfg {
            dir: dir.to_path_buf(),
            file_name: "dual_write_err.log".into(),
            rotate_size_mb: 100,
            compress,
            max_ages_days,
            max_backups,
        }
    }

    fn entry(key: &[u8]) -> DualWriteEntry<'_> {
        DualWriteEntry {
            op: DualOp::Set,
            key,
            status: "br1w1cr0w1",
            ts_us: 1_772_331_630_123_456,
            error: "timeout: no response in 1000ms",
            proxy: "127.0.0.1:7905",
        }
    }

    /// The spec's example instant, at +08:00 whatever the machine's zone.
    fn example_time() -> DateTime<Local> {
        let utc = DateTime::from_timestamp_micros(1_772_331_630_123_456).unwrap();
        DateTime::<Local>::from_naive_utc_and_offset(
            utc.naive_utc(),
            FixedOffset::east_opt(8 * 3600).unwrap(),
        )
    }

    fn wait(log: &DualWriteLog) {
        assert!(
            log.wait_background(Duration::from_secs(30)),
            "mill timed out"
        );
    }

    /// Backup file names in `dir`, sorted (= chronological, the names embed the time).
    fn backups(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with("dual_write_err-"))
            .collect();
        v.sort();
        v
    }

    fn read_maybe_gz(path: &Path) -> String {
        let raw = fs::read(path).unwrap();
        if path.to_string_lossy().ends_with(".gz") {
            let mut s = String::new();
            flate2::read::GzDecoder::new(&raw[..])
                .read_to_string(&mut s)
                .unwrap();
            s
        } else {
            String::from_utf8(raw).unwrap()
        }
    }

    /// All lines of the backups (oldest first) followed by the current file.
    fn all_content(dir: &Path) -> String {
        let mut s = String::new();
        for b in backups(dir) {
            s.push_str(&read_maybe_gz(&dir.join(b)));
        }
        s.push_str(&read_maybe_gz(&dir.join("dual_write_err.log")));
        s
    }

    fn key_of(line: &str) -> String {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        v["key"].as_str().unwrap().to_owned()
    }

    #[test]
    fn format_utf8_key_exact() {
        let line = format_line(&entry(b"/test_prefix_c/42"), example_time());
        assert_eq!(
            line,
            r#"{"time":"2026-03-01T10:20:30.123456+08:00","level":"error","op":"set","key":"/test_prefix_c/42","status":"br1w1cr0w1","ts_us":1772331630123456,"error":"timeout: no response in 1000ms","proxy":"127.0.0.1:7905"}"#
        );
        let mut e = entry(b"k");
        e.op = DualOp::Del;
        e.ts_us = -5;
        let line = format_line(&e, example_time());
        assert!(line.contains(r#""op":"del","key":"k","status""#), "{line}");
        assert!(line.contains(r#""ts_us":-5,"#), "{line}");
        assert!(!line.contains("key_hex"));
    }

    #[test]
    fn format_non_utf8_key_and_escapes() {
        let mut e = entry(b"/k\xff\x00a\"");
        e.error = "bad \"quote\" \\ back\nnew\ttab\u{1}é";
        e.status = "bw_crw";
        e.proxy = "h:1";
        let line = format_line(&e, example_time());
        assert_eq!(
            line,
            "{\"time\":\"2026-03-01T10:20:30.123456+08:00\",\"level\":\"error\",\"op\":\"set\",\
             \"key\":\"/k\u{fffd}\\u0000a\\\"\",\"key_hex\":\"2f6bff006122\",\"status\":\"bw_crw\",\
             \"ts_us\":1772331630123456,\
             \"error\":\"bad \\\"quote\\\" \\\\ back\\nnew\\ttab\\u0001é\",\"proxy\":\"h:1\"}"
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["error"], e.error);
        assert_eq!(v["key"], "/k\u{fffd}\u{0}a\"");
        assert_eq!(v["key_hex"], "2f6bff006122");
    }

    #[test]
    fn format_time_uses_local_offset_with_micros() {
        let now = Local::now();
        let line = format_line(&entry(b"k"), now);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let t = v["time"].as_str().unwrap();
        // 2026-03-01T10:20:30.123456+08:00 (a zero offset is written +00:00, not Z).
        assert_eq!(t.len(), 32, "{t}");
        assert_eq!(&t[19..20], ".");
        assert!(t[20..26].bytes().all(|b| b.is_ascii_digit()), "{t}");
        let parsed = DateTime::parse_from_rfc3339(t).unwrap();
        assert_eq!(parsed, now.fixed_offset().with_nanosecond_trunc_micros());
        assert_eq!(parsed.offset(), now.offset());
    }

    trait TruncMicros {
        fn with_nanosecond_trunc_micros(self) -> Self;
    }
    impl TruncMicros for DateTime<FixedOffset> {
        fn with_nanosecond_trunc_micros(self) -> Self {
            use chrono::Timelike;
            self.with_nanosecond(self.nanosecond() / 1000 * 1000)
                .unwrap()
        }
    }

    #[test]
    fn backup_names() {
        let n = Names::new("dual_write_err.log");
        let t = DateTime::from_timestamp_micros(1_772_331_630_123_456).unwrap();
        assert_eq!(
            n.backup_name(t),
            "dual_write_err-2026-03-01T02-20-30.123.log"
        );
        let ms = DateTime::from_timestamp_millis(1_772_331_630_123).unwrap();
        assert_eq!(
            n.parse_backup("dual_write_err-2026-03-01T02-20-30.123.log"),
            Some((ms, false))
        );
        assert_eq!(
            n.parse_backup("dual_write_err-2026-03-01T02-20-30.123.log.gz"),
            Some((ms, true))
        );
        for other in [
            "dual_write_err.log",
            "dual_write_err-2026-03-01T02-20-30.log",
            "dual_write_err-2026-03-01T02-20-30.1234.log",
            "dual_write_err-2026-13-01T02-20-30.123.log",
            "dual_write_err-2026-03-01T02-20-30.123.txt",
            "dual_write_err-2026-03-01T02-20-30.123.log.gz.tmp",
            "x-2026-03-01T02-20-30.123.log",
        ] {
            assert_eq!(n.parse_backup(other), None, "{other}");
        }
        let n = Names::new("a.b.log");
        assert_eq!(n.backup_name(t), "a.b-2026-03-01T02-20-30.123.log");
        let n = Names::new("errlog");
        assert_eq!(n.backup_name(t), "errlog-2026-03-01T02-20-30.123");
        assert_eq!(
            n.parse_backup("errlog-2026-03-01T02-20-30.123.gz"),
            Some((ms, true))
        );
    }

    #[test]
    fn is_send_sync() {
        fn check<T: Send + Sync>() {}
        check::<DualWriteLog>();
    }

    #[test]
    fn open_appends_and_rejects_bad_names() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("dual_write_err.log"), "old\n").unwrap();
        let log = DualWriteLog::open(cfg(dir.path(), false, 0, 0)).unwrap();
        assert_eq!(log.path(), dir.path().join("dual_write_err.log"));
        log.write(&entry(b"k1")).unwrap();
        let s = fs::read_to_string(log.path()).unwrap();
        assert!(s.starts_with("old\n{\"time\":"), "{s}");
        assert!(s.ends_with("\"proxy\":\"127.0.0.1:7905\"}\n"), "{s}");
        assert_eq!(s.lines().count(), 2);

        let mut c = cfg(dir.path(), false, 0, 0);
        c.file_name = "sub/x.log".into();
        assert!(DualWriteLog::open(c).is_err());
        // The directory must exist; it is not created.
        assert!(DualWriteLog::open(cfg(&dir.path().join("missing"), false, 0, 0)).is_err());
    }

    #[test]
    fn concurrent_lines_are_intact() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(DualWriteLog::open(cfg(dir.path(), false, 0, 0)).unwrap());
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let log = Arc::clone(&log);
                std::thread::spawn(move || {
                    // Long, varying error text makes interleaving visible if it happens.
                    let err = "x".repeat(200 + t * 37);
                    for i in 0..500 {
                        let key = format!("/t{t}/k{i}");
                        let mut e = entry(key.as_bytes());
                        e.error = &err;
                        log.write(&e).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let s = fs::read_to_string(log.path()).unwrap();
        assert!(s.ends_with('\n'));
        let keys: HashSet<String> = s.lines().map(key_of).collect();
        assert_eq!(s.lines().count(), 4000);
        assert_eq!(keys.len(), 4000);
        for t in 0..8 {
            for i in 0..500 {
                assert!(keys.contains(&format!("/t{t}/k{i}")));
            }
        }
        assert!(backups(dir.path()).is_empty());
    }

    #[test]
    fn rotates_before_exceeding_limit() {
        let dir = tempfile::tempdir().unwrap();
        let log = DualWriteLog::open(cfg(dir.path(), false, 0, 0)).unwrap();
        let line_len = format_line(&entry(b"k00"), Local::now()).len() as u64 + 1;
        // Exactly three lines fit: reaching the limit is fine, passing it is not.
        log.set_rotate_bytes(3 * line_len);
        let before = Utc::now();
        for i in 0..3 {
            log.write(&entry(format!("k{i:02}").as_bytes())).unwrap();
        }
        assert!(backups(dir.path()).is_empty());
        log.write(&entry(b"k03")).unwrap();
        let after = Utc::now();
        let b = backups(dir.path());
        assert_eq!(b.len(), 1, "{b:?}");

        // dual_write_err-YYYY-MM-DDTHH-MM-SS.mmm.log, in UTC.
        let name = &b[0];
        let ts = name
            .strip_prefix("dual_write_err-")
            .unwrap()
            .strip_suffix(".log")
            .unwrap();
        assert_eq!(ts.len(), 23, "{name}");
        let t = NaiveDateTime::parse_from_str(ts, "%Y-%m-%dT%H-%M-%S%.3f")
            .unwrap()
            .and_utc();
        assert!(
            t >= before - TimeDelta::milliseconds(1) && t <= after,
            "{name}"
        );

        let old = fs::read_to_string(dir.path().join(name)).unwrap();
        assert_eq!(old.len() as u64, 3 * line_len);
        assert_eq!(
            old.lines().map(key_of).collect::<Vec<_>>(),
            ["k00", "k01", "k02"]
        );
        let cur = fs::read_to_string(log.path()).unwrap();
        assert_eq!(cur.lines().map(key_of).collect::<Vec<_>>(), ["k03"]);
    }

    #[test]
    fn rotation_keeps_every_line_whole_and_names_unique() {
        let dir = tempfile::tempdir().unwrap();
        let log = DualWriteLog::open(cfg(dir.path(), false, 0, 0)).unwrap();
        let limit = 1000;
        log.set_rotate_bytes(limit);
        // Many rotations within the same millisecond must not overwrite each other.
        for i in 0..300 {
            log.write(&entry(format!("/k/{i}").as_bytes())).unwrap();
        }
        let b = backups(dir.path());
        // ~200-byte lines: five per file, so 300 lines give 59 backups plus the current file.
        assert!(b.len() >= 50, "{}", b.len());
        for name in b
            .iter()
            .chain(std::iter::once(&"dual_write_err.log".to_owned()))
        {
            let s = fs::read_to_string(dir.path().join(name)).unwrap();
            assert!(!s.is_empty() && s.ends_with('\n'), "{name}");
            assert!(s.len() as u64 <= limit, "{name}: {}", s.len());
        }
        let all = all_content(dir.path());
        let keys: Vec<String> = all.lines().map(key_of).collect();
        let want: Vec<String> = (0..300).map(|i| format!("/k/{i}")).collect();
        assert_eq!(keys, want);
    }

    #[test]
    fn concurrent_writes_with_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(DualWriteLog::open(cfg(dir.path(), false, 0, 0)).unwrap());
        log.set_rotate_bytes(16 * 1024);
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let log = Arc::clone(&log);
                std::thread::spawn(move || {
                    for i in 0..500 {
                        log.write(&entry(format!("/t{t}/k{i}").as_bytes())).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        wait(&log);
        assert!(backups(dir.path()).len() > 10);
        for name in backups(dir.path()) {
            let s = fs::read_to_string(dir.path().join(&name)).unwrap();
            assert!(s.len() <= 16 * 1024 && s.ends_with('\n'), "{name}");
        }
        let all = all_content(dir.path());
        let keys: HashSet<String> = all.lines().map(key_of).collect();
        assert_eq!(all.lines().count(), 4000);
        assert_eq!(keys.len(), 4000);
    }

    #[test]
    fn oversized_line_goes_alone_into_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let log = DualWriteLog::open(cfg(dir.path(), false, 0, 0)).unwrap();
        log.set_rotate_bytes(10);
        for i in 0..3 {
            log.write(&entry(format!("k{i}").as_bytes())).unwrap();
        }
        let b = backups(dir.path());
        assert_eq!(b.len(), 2);
        for name in &b {
            let s = fs::read_to_string(dir.path().join(name)).unwrap();
            assert_eq!(s.lines().count(), 1, "{name}");
        }
        let keys: Vec<String> = all_content(dir.path()).lines().map(key_of).collect();
        assert_eq!(keys, ["k0", "k1", "k2"]);
    }

    #[test]
    fn existing_file_size_counts_towards_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("dual_write_err.log"),
            "x".repeat(900) + "\n",
        )
        .unwrap();
        let log = DualWriteLog::open(cfg(dir.path(), false, 0, 0)).unwrap();
        log.set_rotate_bytes(1000);
        log.write(&entry(b"k")).unwrap();
        let b = backups(dir.path());
        assert_eq!(b.len(), 1);
        assert_eq!(
            fs::read_to_string(dir.path().join(&b[0])).unwrap().len(),
            901
        );
        assert_eq!(fs::read_to_string(log.path()).unwrap().lines().count(), 1);
    }

    #[test]
    fn compress_gzips_rotated_files() {
        let dir = tempfile::tempdir().unwrap();
        let log = DualWriteLog::open(cfg(dir.path(), true, 0, 0)).unwrap();
        let line_len = format_line(&entry(b"/c/00"), Local::now()).len() as u64 + 1;
        log.set_rotate_bytes(4 * line_len);
        for i in 0..10 {
            log.write(&entry(format!("/c/{i:02}").as_bytes())).unwrap();
        }
        wait(&log);
        let b = backups(dir.path());
        assert_eq!(b.len(), 2, "{b:?}");
        for name in &b {
            assert!(name.ends_with(".log.gz"), "{name}");
            // Only the .gz remains; no temporary or original file.
            let plain = name.strip_suffix(".gz").unwrap();
            assert!(!dir.path().join(plain).exists());
            assert!(!dir.path().join(format!("{name}.tmp")).exists());
        }
        let first = read_maybe_gz(&dir.path().join(&b[0]));
        assert_eq!(
            first.lines().map(key_of).collect::<Vec<_>>(),
            ["/c/00", "/c/01", "/c/02", "/c/03"]
        );
        assert_eq!(first.len() as u64, 4 * line_len);
        assert!(first.ends_with('\n'));
        let keys: Vec<String> = all_content(dir.path()).lines().map(key_of).collect();
        let want: Vec<String> = (0..10).map(|i| format!("/c/{i:02}")).collect();
        assert_eq!(keys, want);
        // The current file is never compressed.
        assert_eq!(fs::read_to_string(log.path()).unwrap().lines().count(), 2);
    }

    #[test]
    fn max_backups_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let log = DualWriteLog::open(cfg(dir.path(), false, 0, 2)).unwrap();
        let line_len = format_line(&entry(b"/b/00"), Local::now()).len() as u64 + 1;
        log.set_rotate_bytes(2 * line_len);
        for i in 0..13 {
            log.write(&entry(format!("/b/{i:02}").as_bytes())).unwrap();
            wait(&log);
        }
        let b = backups(dir.path());
        assert_eq!(b.len(), 2, "{b:?}");
        let keys: Vec<String> = all_content(dir.path()).lines().map(key_of).collect();
        assert_eq!(keys, ["/b/08", "/b/09", "/b/10", "/b/11", "/b/12"]);
    }

    #[test]
    fn names_stay_ordered_when_pruning_frees_a_name() {
        // Rotations faster than 1 ms with pruning in between: a name freed by pruning must
        // not be reused, or the newest backup would sort as older and be pruned next.
        let dir = tempfile::tempdir().unwrap();
        let log = DualWriteLog::open(cfg(dir.path(), false, 0, 1)).unwrap();
        log.set_rotate_bytes(1);
        for i in 0..200 {
            log.write(&entry(format!("/o/{i:03}").as_bytes())).unwrap();
            wait(&log);
            if i > 0 {
                let b = backups(dir.path());
                assert_eq!(b.len(), 1, "{b:?}");
                let s = fs::read_to_string(dir.path().join(&b[0])).unwrap();
                assert_eq!(key_of(s.trim_end()), format!("/o/{:03}", i - 1));
            }
        }
    }

    #[test]
    fn max_backups_with_compress() {
        let dir = tempfile::tempdir().unwrap();
        let log = DualWriteLog::open(cfg(dir.path(), true, 0, 3)).unwrap();
        let line_len = format_line(&entry(b"/z/00"), Local::now()).len() as u64 + 1;
        log.set_rotate_bytes(line_len);
        // No waiting between writes: passes coalesce, the end state must still be right.
        for i in 0..20 {
            log.write(&entry(format!("/z/{i:02}").as_bytes())).unwrap();
        }
        wait(&log);
        let b = backups(dir.path());
        assert_eq!(b.len(), 3, "{b:?}");
        assert!(b.iter().all(|n| n.ends_with(".gz")), "{b:?}");
        let keys: Vec<String> = all_content(dir.path()).lines().map(key_of).collect();
        assert_eq!(keys, ["/z/16", "/z/17", "/z/18", "/z/19"]);
    }

    #[test]
    fn zero_limits_keep_everything() {
        let dir = tempfile::tempdir().unwrap();
        let ancient = Names::new("dual_write_err.log")
            .backup_name(DateTime::from_timestamp_millis(86_400_000).unwrap());
        fs::write(dir.path().join(&ancient), "a\n").unwrap();
        let log = DualWriteLog::open(cfg(dir.path(), false, 0, 0)).unwrap();
        log.set_rotate_bytes(1);
        for i in 0..30 {
            log.write(&entry(format!("k{i}").as_bytes())).unwrap();
        }
        wait(&log);
        let b = backups(dir.path());
        assert_eq!(b.len(), 30);
        assert!(b.contains(&ancient));
    }

    #[test]
    fn max_backups_counts_plain_and_gz_of_one_backup_once() {
        let dir = tempfile::tempdir().unwrap();
        let n = Names::new("dual_write_err.log");
        let now = Utc::now();
        let t = |mins: i64| n.backup_name(now - TimeDelta::minutes(mins));
        // Newest first: t1 (plain + the gz of an interrupted compression), t2 (gz), t3.
        let (t1, t2, t3) = (t(1), t(2), t(3));
        for name in [
            t1.clone(),
            format!("{t1}.gz"),
            format!("{t2}.gz"),
            t3.clone(),
            format!("{t3}.gz.tmp"),
        ] {
            fs::write(dir.path().join(name), "x\n").unwrap();
        }
        fs::write(dir.path().join("unrelated.txt"), "u").unwrap();
        let log = DualWriteLog::open(cfg(dir.path(), false, 0, 2)).unwrap();
        wait(&log);
        // t1 and t1.gz are one backup, so t2 is the second one kept; t3 and the stale
        // temporary file go.
        assert_eq!(
            backups(dir.path()),
            [format!("{t2}.gz"), t1.clone(), format!("{t1}.gz")]
        );
        assert!(dir.path().join("unrelated.txt").exists());
    }

    #[test]
    fn max_ages_prunes_by_name_time_after_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let log = DualWriteLog::open(cfg(dir.path(), false, 7, 0)).unwrap();
        wait(&log);
        let n = Names::new("dual_write_err.log");
        let now = Utc::now();
        let old = n.backup_name(now - TimeDelta::days(10));
        let old_gz = format!("{}.gz", n.backup_name(now - TimeDelta::days(30)));
        let recent = n.backup_name(now - TimeDelta::days(6));
        let garbage = "dual_write_err-garbage.log".to_owned();
        for name in [&old, &old_gz, &recent, &garbage] {
            fs::write(dir.path().join(name), "x\n").unwrap();
        }
        let before = backups(dir.path());
        assert_eq!(before.len(), 4);
        // Rotation triggers the pass.
        log.set_rotate_bytes(1);
        log.write(&entry(b"a")).unwrap();
        log.write(&entry(b"b")).unwrap();
        wait(&log);
        let after = backups(dir.path());
        assert!(!after.contains(&old), "{after:?}");
        assert!(!after.contains(&old_gz), "{after:?}");
        assert!(after.contains(&recent), "{after:?}");
        assert!(after.contains(&garbage), "{after:?}");
        // recent, garbage and the fresh backup of line "a".
        assert_eq!(after.len(), 3, "{after:?}");
    }

    #[test]
    fn reopen_after_external_rename() {
        let dir = tempfile::tempdir().unwrap();
        let log = DualWriteLog::open(cfg(dir.path(), false, 0, 0)).unwrap();
        log.write(&entry(b"a")).unwrap();
        let moved = dir.path().join("moved.log");
        fs::rename(log.path(), &moved).unwrap();
        // Until reopen, lines follow the open file.
        log.write(&entry(b"b")).unwrap();
        assert!(!log.path().exists());
        log.reopen().unwrap();
        assert!(log.path().exists());
        log.write(&entry(b"c")).unwrap();
        let m = fs::read_to_string(&moved).unwrap();
        assert_eq!(m.lines().map(key_of).collect::<Vec<_>>(), ["a", "b"]);
        let cur = fs::read_to_string(log.path()).unwrap();
        assert_eq!(cur.lines().map(key_of).collect::<Vec<_>>(), ["c"]);
    }

    #[test]
    fn reopen_resets_the_size_for_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let log = DualWriteLog::open(cfg(dir.path(), false, 0, 0)).unwrap();
        let line_len = format_line(&entry(b"a"), Local::now()).len() as u64 + 1;
        log.set_rotate_bytes(2 * line_len);
        log.write(&entry(b"a")).unwrap();
        log.write(&entry(b"b")).unwrap();
        fs::rename(log.path(), dir.path().join("moved.log")).unwrap();
        log.reopen().unwrap();
        // The new file is empty, so two more lines fit without a rotation.
        log.write(&entry(b"c")).unwrap();
        log.write(&entry(b"d")).unwrap();
        assert!(backups(dir.path()).is_empty());
        let cur = fs::read_to_string(log.path()).unwrap();
        assert_eq!(cur.lines().map(key_of).collect::<Vec<_>>(), ["c", "d"]);
    }

    #[test]
    fn rotation_after_external_rename_without_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let log = DualWriteLog::open(cfg(dir.path(), false, 0, 0)).unwrap();
        let line_len = format_line(&entry(b"a"), Local::now()).len() as u64 + 1;
        log.set_rotate_bytes(line_len);
        log.write(&entry(b"a")).unwrap();
        fs::rename(log.path(), dir.path().join("moved.log")).unwrap();
        // The rename finds nothing at the path; a new file is started all the same.
        log.write(&entry(b"b")).unwrap();
        assert!(backups(dir.path()).is_empty());
        let cur = fs::read_to_string(log.path()).unwrap();
        assert_eq!(cur.lines().map(key_of).collect::<Vec<_>>(), ["b"]);
    }

    #[test]
    fn fsync_at_most_once_per_second() {
        let dir = tempfile::tempdir().unwrap();
        let log = DualWriteLog::open(cfg(dir.path(), false, 0, 0)).unwrap();
        let start = Instant::now();
        for i in 0..200 {
            log.write(&entry(format!("k{i}").as_bytes())).unwrap();
        }
        let secs = start.elapsed().as_secs();
        let syncs = log.inner.lock().syncs;
        // The first line syncs at once; later ones only after a second has passed.
        assert!(syncs >= 1 && syncs <= 1 + secs, "syncs={syncs} secs={secs}");
        log.inner.lock().last_sync = Some(Instant::now() - SYNC_INTERVAL);
        log.write(&entry(b"late")).unwrap();
        assert_eq!(log.inner.lock().syncs, syncs + 1);
    }
}
