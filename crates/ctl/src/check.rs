//! `beansctl check`: offline consistency check of data files, hint files and (optionally)
//! htree dumps (tools.md §3.3). Read-only: nothing is modified, locked or renamed.
//!
//! Exit codes: 0 = no errors (warnings and info allowed), 1 = errors found, 2 = usage,
//! 3 = I/O error (the report is still printed).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::{json, Map, Value};

use crate::cli::GlobalOpts;
use crate::dump::formats::{
    discover, escape, is_active, json_key, list_bucket, parse_hint, parse_htree, BucketDir,
    BucketFiles, Layout,
};
use crate::dump::scan::{Item, Scanner};
use crate::dump::{is_broken_pipe, parse_numbucket, write_error};
use crate::error::{exit, CliError, CliResult};
use crate::output::Progress;
use crate::units::{human_bytes, parse_size};

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// A data file, a bucket directory, or a home (hex bucket directories)
    pub path: PathBuf,
    /// Buckets of the home (default: inferred from the directory depth)
    #[arg(long, value_parser = parse_numbucket)]
    pub numbucket: Option<usize>,
    /// Largest valid value size (a bigger vsz is a bad header)
    #[arg(long, default_value = "100M", value_parser = parse_size, value_name = "SIZE")]
    pub max_value: u64,
    /// Check data files only
    #[arg(long)]
    pub no_hints: bool,
    /// Also check .idx.hash dumps, for a tree of this height
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=8), value_name = "H")]
    pub htree_height: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Info,
    Warning,
    Error,
}

impl Severity {
    fn name(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Problem {
    pub kind: &'static str,
    pub severity: Severity,
    pub file: String,
    /// A byte range `[start, end)` of the file.
    pub range: Option<(u64, u64)>,
    /// A record offset (hint items point at one).
    pub offset: Option<u64>,
    pub key: Option<Vec<u8>>,
    pub detail: String,
}

impl Problem {
    fn new(kind: &'static str, severity: Severity, file: &str, detail: String) -> Problem {
        Problem {
            kind,
            severity,
            file: file.to_string(),
            range: None,
            offset: None,
            key: None,
            detail,
        }
    }

    fn range(mut self, start: u64, end: u64) -> Problem {
        self.range = Some((start, end));
        self
    }

    fn at(mut self, offset: u64, key: &[u8]) -> Problem {
        self.offset = Some(offset);
        self.key = Some(key.to_vec());
        self
    }

    fn text(&self) -> String {
        let mut s = format!("{} {}", self.kind, self.file);
        if let Some((a, b)) = self.range {
            s.push_str(&format!(" [{a:#010x},{b:#010x}) {}", size_text(b - a)));
        }
        if let Some(o) = self.offset {
            s.push_str(&format!(" offset {o:#010x}"));
        }
        if let Some(k) = &self.key {
            s.push_str(&format!(" key={}", escape(k)));
        }
        s.push_str(": ");
        s.push_str(&self.detail);
        if self.severity == Severity::Warning && default_severity(self.kind) != Severity::Warning {
            s.push_str(" (warning)");
        }
        s
    }

    fn json(&self) -> Value {
        let mut m = Map::new();
        m.insert("kind".into(), self.kind.into());
        m.insert("severity".into(), self.severity.name().into());
        m.insert("file".into(), self.file.clone().into());
        m.insert("start".into(), self.range.map(|r| r.0).into());
        m.insert("end".into(), self.range.map(|r| r.1).into());
        m.insert("offset".into(), self.offset.into());
        match &self.key {
            Some(k) => json_key(&mut m, k),
            None => {
                m.insert("key".into(), Value::Null);
            }
        }
        m.insert("detail".into(), self.detail.clone().into());
        Value::Object(m)
    }
}

/// The severity a kind has unless circumstances change it (tools.md §3.3 table).
fn default_severity(kind: &str) -> Severity {
    match kind {
        "DIRTY_PADDING" | "HINT_VER_RAISED" | "ORPHAN_HINT" => Severity::Warning,
        "UNHINTED_TAIL" | "NO_HINT" => Severity::Info,
        _ => Severity::Error,
    }
}

/// `768 B` exactly for small sizes, binary units above.
fn size_text(n: u64) -> String {
    if n < 1024 {
        format!("{n} B")
    } else {
        format!("{n} B ({})", human_bytes(n))
    }
}

/// What a valid record contributes to the hint checks.
struct RecMeta {
    key: Vec<u8>,
    ver: i32,
    vhash: u16,
}

#[derive(Default)]
struct ChunkData {
    size: u64,
    records: BTreeMap<u64, RecMeta>,
    /// Bad ranges, to explain hint items that point into them.
    bad: Vec<(u64, u64)>,
}

#[derive(Default, Debug, Clone, Copy)]
struct DataCounters {
    records: u64,
    live: u64,
    tombstones: u64,
    compressed: u64,
    corrupt: u64,
    corrupt_bytes: u64,
    torn_bytes: u64,
    bad_values: u64,
    dirty_padding: u64,
}

struct BucketReport {
    bucket: Option<String>,
    dir: String,
    /// Per-file text lines and JSON objects, in order.
    files: Vec<(String, Value)>,
    problems: Vec<Problem>,
    data_files: u64,
    hint_files: u64,
    htree_files: u64,
    records: u64,
    io_error: bool,
}

struct Ctx<'a> {
    args: &'a CheckArgs,
    numbucket: usize,
}

/// Entry point of `beansctl check`.
pub fn run(args: CheckArgs, g: &GlobalOpts) -> CliResult<u8> {
    let layout = discover(&args.path, args.numbucket)?;
    let (numbucket, buckets, only_chunk) = match layout {
        Layout::File(f) => {
            let name = f
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_string();
            let Some(beansdb_store::hint::FileName::Data(chunk)) =
                beansdb_store::hint::parse_file_name(&name)
            else {
                return Err(CliError::usage(format!(
                    "{} is not a data file (NNN.data); pass a data file, a bucket directory or a home",
                    f.display()
                )));
            };
            let dir = f
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("."));
            let nb = args.numbucket.unwrap_or(16);
            let id = crate::dump::bucket_from_path(&f, nb);
            (
                nb,
                vec![BucketDir {
                    id,
                    dir,
                    rel: String::new(),
                }],
                Some(chunk),
            )
        }
        Layout::Buckets { numbucket, buckets } => (numbucket, buckets, None),
    };
    let ctx = Ctx {
        args: &args,
        numbucket,
    };
    let progress = Progress::new("check", g);
    let mut reports = Vec::new();
    let (mut errors, mut warnings) = (0u64, 0u64);
    for (i, b) in buckets.iter().enumerate() {
        let r = check_bucket(&ctx, b, only_chunk);
        errors += r
            .problems
            .iter()
            .filter(|p| p.severity == Severity::Error)
            .count() as u64;
        warnings += r
            .problems
            .iter()
            .filter(|p| p.severity == Severity::Warning)
            .count() as u64;
        reports.push(r);
        progress.update(
            i as u64 + 1,
            buckets.len() as u64,
            &format!(
                "buckets {}/{} errors {errors} warnings {warnings}",
                i + 1,
                buckets.len()
            ),
        );
    }
    progress.finish();
    let io_error = reports.iter().any(|r| r.io_error);
    let code = if io_error {
        exit::RUNTIME
    } else if errors > 0 {
        exit::FOUND
    } else {
        exit::OK
    };
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let r = print_report(&mut out, g, &ctx, &reports, errors, warnings, code)
        .and_then(|()| out.flush())
        .map_err(write_error);
    match r {
        Err(e) if is_broken_pipe(&e) => Ok(code),
        Err(e) => Err(e),
        Ok(()) => Ok(code),
    }
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn print_report(
    out: &mut impl Write,
    g: &GlobalOpts,
    ctx: &Ctx<'_>,
    reports: &[BucketReport],
    errors: u64,
    warnings: u64,
    code: u8,
) -> io::Result<()> {
    let data_files: u64 = reports.iter().map(|r| r.data_files).sum();
    let hint_files: u64 = reports.iter().map(|r| r.hint_files).sum();
    let htree_files: u64 = reports.iter().map(|r| r.htree_files).sum();
    let records: u64 = reports.iter().map(|r| r.records).sum();
    let infos: u64 = reports
        .iter()
        .flat_map(|r| &r.problems)
        .filter(|p| p.severity == Severity::Info)
        .count() as u64;
    let verdict = if errors > 0 || code == exit::RUNTIME {
        "PROBLEMS"
    } else {
        "OK"
    };
    if g.json {
        let buckets: Vec<Value> = reports
            .iter()
            .map(|r| {
                json!({
                    "bucket": r.bucket,
                    "dir": r.dir,
                    "files": r.files.iter().map(|f| f.1.clone()).collect::<Vec<_>>(),
                    "problems": r.problems.iter().map(Problem::json).collect::<Vec<_>>(),
                })
            })
            .collect();
        let doc = json!({
            "tool": "beansctl check",
            "version": crate::cli::version(),
            "path": ctx.args.path.display().to_string(),
            "numbucket": ctx.numbucket,
            "buckets": buckets,
            "summary": {
                "buckets": reports.len(),
                "data_files": data_files,
                "hint_files": hint_files,
                "htree_files": htree_files,
                "records": records,
                "errors": errors,
                "warnings": warnings,
                "infos": infos,
                "result": verdict,
            },
            "exit_code": code,
        });
        return writeln!(out, "{doc}");
    }
    for r in reports {
        for (text, _) in &r.files {
            writeln!(out, "{text}")?;
        }
        for p in &r.problems {
            writeln!(out, "{}", p.text())?;
        }
    }
    writeln!(
        out,
        "summary: {}, {}, {}; {}, {} → {verdict}",
        plural(reports.len() as u64, "bucket", "buckets"),
        plural(data_files, "data file", "data files"),
        plural(hint_files, "hint file", "hint files"),
        plural(errors, "error", "errors"),
        plural(warnings, "warning", "warnings"),
    )
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn check_bucket(ctx: &Ctx<'_>, b: &BucketDir, only_chunk: Option<u32>) -> BucketReport {
    let mut r = BucketReport {
        bucket: b.id.map(|id| beansdb_route::bucket_hex(id, ctx.numbucket)),
        dir: if b.rel.is_empty() {
            b.dir.display().to_string()
        } else {
            b.rel.clone()
        },
        files: Vec::new(),
        problems: Vec::new(),
        data_files: 0,
        hint_files: 0,
        htree_files: 0,
        records: 0,
        io_error: false,
    };
    let mut files = match list_bucket(&b.dir) {
        Ok(f) => f,
        Err(e) => {
            io_problem(&mut r, &b.show(""), &e);
            return r;
        }
    };
    if let Some(c) = only_chunk {
        files.data.retain(|(chunk, _)| *chunk == c);
        files.hints.retain(|(chunk, ..)| *chunk == c);
        files.htrees.clear();
    }
    let mut chunks: HashMap<u32, ChunkData> = HashMap::new();
    for (chunk, path) in &files.data {
        match check_data_file(ctx, b, path, &mut r) {
            Ok(cd) => {
                chunks.insert(*chunk, cd);
            }
            Err(e) => io_problem(&mut r, &b.show(&file_name(path)), &e),
        }
    }
    if !ctx.args.no_hints {
        check_hints(b, &files, &chunks, &mut r);
    }
    if let Some(h) = ctx.args.htree_height {
        for (_, _, path) in &files.htrees {
            check_htree(ctx, b, path, h, &mut r);
        }
    }
    r
}

fn io_problem(r: &mut BucketReport, file: &str, e: &io::Error) {
    r.io_error = true;
    r.problems.push(Problem::new(
        "IO_ERROR",
        Severity::Error,
        file,
        format!("cannot read: {e}"),
    ));
}

fn check_data_file(
    ctx: &Ctx<'_>,
    b: &BucketDir,
    path: &Path,
    r: &mut BucketReport,
) -> io::Result<ChunkData> {
    let shown = b.show(&file_name(path));
    let active = is_active(path);
    let mut scanner = Scanner::open(path, ctx.args.max_value)?;
    let size = scanner.size();
    let mut cd = ChunkData {
        size,
        ..ChunkData::default()
    };
    let mut c = DataCounters::default();
    let mut torn_reported = false;
    while let Some(item) = scanner.next_item()? {
        match item {
            Item::Rec(rec) => {
                c.records += 1;
                if rec.is_tombstone() {
                    c.tombstones += 1;
                } else {
                    c.live += 1;
                }
                if rec.compressed() {
                    c.compressed += 1;
                }
                let d = rec.decode();
                if let Some(e) = &d.error {
                    c.bad_values += 1;
                    r.problems.push(
                        Problem::new("BAD_VALUE", Severity::Error, &shown, e.clone())
                            .at(rec.offset, &rec.key),
                    );
                }
                if rec.dirty_padding > 0 {
                    c.dirty_padding += 1;
                    r.problems.push(
                        Problem::new(
                            "DIRTY_PADDING",
                            Severity::Warning,
                            &shown,
                            format!("{} non-zero padding bytes", rec.dirty_padding),
                        )
                        .at(rec.offset, &rec.key),
                    );
                }
                let vhash = rec.vhash(&d);
                cd.records.insert(
                    rec.offset,
                    RecMeta {
                        ver: rec.header.ver,
                        vhash,
                        key: rec.key,
                    },
                );
            }
            Item::Bad(bad) => {
                cd.bad.push((bad.start, bad.end));
                if bad.to_eof {
                    torn_reported = true;
                    c.torn_bytes += bad.end - bad.start;
                    let sev = if active {
                        Severity::Warning
                    } else {
                        Severity::Error
                    };
                    let mut detail = format!("invalid final record: {}", bad.reason);
                    if active {
                        detail.push_str(" (active file: a write may be in progress)");
                    }
                    r.problems.push(
                        Problem::new("TORN_TAIL", sev, &shown, detail).range(bad.start, bad.end),
                    );
                } else {
                    c.corrupt += 1;
                    c.corrupt_bytes += bad.end - bad.start;
                    r.problems.push(
                        Problem::new("CORRUPT", Severity::Error, &shown, bad.reason)
                            .range(bad.start, bad.end),
                    );
                }
            }
        }
    }
    // The final record is valid but the size is not a multiple of 256 (padding cut off).
    if size % 256 != 0 && !torn_reported {
        let sev = if active {
            Severity::Warning
        } else {
            Severity::Error
        };
        c.torn_bytes += size % 256;
        r.problems.push(
            Problem::new(
                "TORN_TAIL",
                sev,
                &shown,
                format!(
                    "file size {size} is not a multiple of 256 (the final record lacks padding)"
                ),
            )
            .range(size - size % 256, size),
        );
    }
    r.data_files += 1;
    r.records += c.records;
    let mut text = format!(
        "{shown} size={size} records={} live={} tombstones={} compressed={} corrupt={} ({})",
        c.records,
        c.live,
        c.tombstones,
        c.compressed,
        c.corrupt,
        size_text(c.corrupt_bytes)
    );
    if c.torn_bytes > 0 {
        text.push_str(&format!(" torn_tail={}", size_text(c.torn_bytes)));
    }
    if active {
        text.push_str(" (active)");
    }
    let v = json!({
        "file": shown, "type": "data", "size": size, "active": active, "records": c.records,
        "live": c.live, "tombstones": c.tombstones, "compressed": c.compressed,
        "corrupt": c.corrupt, "corrupt_bytes": c.corrupt_bytes, "torn_tail_bytes": c.torn_bytes,
        "bad_values": c.bad_values, "dirty_padding": c.dirty_padding,
    });
    r.files.push((text, v));
    Ok(cd)
}

/// Compares one hint item with the record it points at.
fn check_item(
    shown: &str,
    it: &beansdb_store::hint::HintItem,
    cd: &ChunkData,
    merged: bool,
    r: &mut BucketReport,
) {
    // A merged hint may predate a later GC that moved records: its findings are warnings.
    let sev = if merged {
        Severity::Warning
    } else {
        Severity::Error
    };
    let off = u64::from(it.offset);
    let Some(rec) = cd.records.get(&off) else {
        let why = if cd.bad.iter().any(|&(a, b)| off >= a && off < b) {
            "the record there is in a corrupt range"
        } else {
            "no valid record starts there"
        };
        r.problems
            .push(Problem::new("HINT_DANGLING", sev, shown, why.to_string()).at(off, &it.key));
        return;
    };
    let mut what = Vec::new();
    if rec.key != it.key {
        what.push(format!("record has key {}", escape(&rec.key)));
    }
    let kh = beansdb_hash::keyhash(&it.key);
    if kh != it.keyhash {
        what.push(format!(
            "khash {:016x} in hint, khash(key) = {kh:016x}",
            it.keyhash
        ));
    }
    if rec.key == it.key && rec.vhash != it.vhash {
        what.push(format!(
            "vhash {} in hint, {} computed from the value",
            it.vhash, rec.vhash
        ));
    }
    let raised = it.ver > rec.ver && rec.ver > 0 && it.vhash == rec.vhash;
    if rec.key == it.key && it.ver != rec.ver && !raised {
        what.push(format!("ver {} in hint, {} in record", it.ver, rec.ver));
    }
    if !what.is_empty() {
        r.problems
            .push(Problem::new("HINT_MISMATCH", sev, shown, what.join("; ")).at(off, &it.key));
    } else if raised {
        r.problems.push(
            Problem::new(
                "HINT_VER_RAISED",
                Severity::Warning,
                shown,
                format!(
                    "ver {} in hint, {} in record with the same value (version raised in place)",
                    it.ver, rec.ver
                ),
            )
            .at(off, &it.key),
        );
    }
}

/// A chunk's largest hint data_size and every `(key, offset)` its splits list.
type Covered = (u64, HashSet<(Vec<u8>, u64)>);

fn check_hints(
    b: &BucketDir,
    files: &BucketFiles,
    chunks: &HashMap<u32, ChunkData>,
    r: &mut BucketReport,
) {
    // Per chunk: the largest data_size and every (key, offset) its splits list.
    let mut covered: HashMap<u32, Covered> = HashMap::new();
    for (chunk, split, merged, path) in &files.hints {
        let shown = b.show(&file_name(path));
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) => {
                io_problem(r, &shown, &e);
                continue;
            }
        };
        r.hint_files += 1;
        let p = parse_hint(&bytes);
        let text = format!("{shown} items={} data_size={}", p.items.len(), p.data_size);
        let v = json!({"file": shown, "type": if *merged { "merged_hint" } else { "hint" },
                       "chunk": chunk, "split": split, "size": p.size, "items": p.items.len(),
                       "data_size": p.data_size});
        r.files.push((text, v));
        for prob in &p.problems {
            r.problems.push(Problem::new(
                "HINT_BAD_FILE",
                Severity::Error,
                &shown,
                prob.clone(),
            ));
        }
        if *merged {
            for e in &p.items {
                match chunks.get(&e.item.chunk_id) {
                    Some(cd) => check_item(&shown, &e.item, cd, true, r),
                    None => r.problems.push(
                        Problem::new(
                            "HINT_DANGLING",
                            Severity::Warning,
                            &shown,
                            format!("chunk {} has no data file", e.item.chunk_id),
                        )
                        .at(u64::from(e.item.offset), &e.item.key),
                    ),
                }
            }
            continue;
        }
        let Some(cd) = chunks.get(chunk) else {
            r.problems.push(Problem::new(
                "ORPHAN_HINT",
                Severity::Warning,
                &shown,
                format!("no data file {chunk:03}.data"),
            ));
            continue;
        };
        let ds = u64::from(p.data_size);
        if ds > cd.size {
            r.problems.push(Problem::new(
                "HINT_BAD_FILE",
                Severity::Error,
                &shown,
                format!("data_size {ds} is beyond the data file size {}", cd.size),
            ));
        }
        let entry = covered.entry(*chunk).or_default();
        entry.0 = entry.0.max(ds.min(cd.size));
        for e in &p.items {
            let off = u64::from(e.item.offset);
            entry.1.insert((e.item.key.clone(), off));
            if off >= ds {
                r.problems.push(
                    Problem::new(
                        "HINT_DANGLING",
                        Severity::Error,
                        &shown,
                        format!("offset is not below data_size {ds}"),
                    )
                    .at(off, &e.item.key),
                );
                continue;
            }
            check_item(&shown, &e.item, cd, false, r);
        }
    }
    let mut chunk_ids: Vec<&u32> = chunks.keys().collect();
    chunk_ids.sort();
    for chunk in chunk_ids {
        let cd = &chunks[chunk];
        let shown = b.show(&format!("{chunk:03}.data"));
        let Some((max_ds, listed)) = covered.get(chunk) else {
            if cd.size > 0 {
                r.problems.push(Problem::new(
                    "NO_HINT",
                    Severity::Info,
                    &shown,
                    "no hint file (the node rebuilds it from the data)".into(),
                ));
            }
            continue;
        };
        // The last record of each key inside the hinted prefix must be listed.
        let mut last: HashMap<&[u8], u64> = HashMap::new();
        for (off, rec) in cd.records.range(..*max_ds) {
            last.insert(&rec.key, *off);
        }
        let mut missing: Vec<(u64, &[u8])> = last
            .into_iter()
            .filter(|(k, off)| !listed.contains(&(k.to_vec(), *off)))
            .map(|(k, off)| (off, k))
            .collect();
        missing.sort();
        for (off, key) in missing {
            r.problems.push(
                Problem::new(
                    "HINT_MISSING",
                    Severity::Error,
                    &shown,
                    "the key's last record in the hinted prefix is in no hint split".into(),
                )
                .at(off, key),
            );
        }
        if cd.size > *max_ds {
            r.problems.push(
                Problem::new(
                    "UNHINTED_TAIL",
                    Severity::Info,
                    &shown,
                    "data beyond the largest hint data_size (the node rebuilds its hints)".into(),
                )
                .range(*max_ds, cd.size),
            );
        }
    }
}

fn check_htree(ctx: &Ctx<'_>, b: &BucketDir, path: &Path, height: u32, r: &mut BucketReport) {
    let shown = b.show(&file_name(path));
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            io_problem(r, &shown, &e);
            return;
        }
    };
    r.htree_files += 1;
    let Some(bucket) = b.id else {
        r.problems.push(Problem::new(
            "HTREE_MISMATCH",
            Severity::Error,
            &shown,
            "cannot tell the bucket id from the directory; check the home instead".into(),
        ));
        return;
    };
    match parse_htree(&bytes, ctx.numbucket, height, bucket) {
        Err(e) => r
            .problems
            .push(Problem::new("HTREE_MISMATCH", Severity::Error, &shown, e)),
        Ok(leaves) => {
            let items: usize = leaves.iter().map(|l| l.items.len()).sum();
            r.files.push((
                format!("{shown} leaves={} items={items}", leaves.len()),
                json!({"file": shown, "type": "htree", "size": bytes.len(), "leaves": leaves.len(), "items": items}),
            ));
            for (i, leaf) in leaves.iter().enumerate() {
                let (count, hash) = leaf.computed();
                if (count, hash) != (leaf.count, leaf.hash) {
                    r.problems.push(Problem::new(
                        "HTREE_MISMATCH",
                        Severity::Error,
                        &shown,
                        format!(
                            "leaf {i:x}: stored count {} hash {}, recomputed count {count} hash {hash}",
                            leaf.count, leaf.hash
                        ),
                    ));
                }
            }
        }
    }
}
