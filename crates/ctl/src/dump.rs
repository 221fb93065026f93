//! `beansctl dump`: offline, read-only listing of data files, hint files, htree dumps and of
//! every record of one key (tools.md §3.2). Nothing is modified, locked or renamed, so it can
//! run on a live node's directory.
//!
//! Exit codes: 0 = everything read was valid; 1 = bad records, hint-file problems or htree
//! leaf mismatches were shown; 2 = usage; 3 = I/O error.

pub mod formats;
pub mod scan;

use std::ffi::OsString;
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{json, Map, Value};

use self::formats::{
    base64, discover, escape, flag_names, flag_text, hex, is_active, json_key, list_bucket,
    parse_hint, parse_htree, parse_legacy_hint, utc, Layout,
};
use self::scan::{Bad, Item, Rec, Scanner};
use crate::cli::GlobalOpts;
use crate::error::{exit, CliError, CliResult};
use crate::units::parse_size;

#[derive(Debug, Args)]
pub struct DumpArgs {
    #[command(subcommand)]
    pub what: DumpWhat,
}

#[derive(Debug, Subcommand)]
pub enum DumpWhat {
    /// Records of a data file (NNN.data), one line each
    Data(DataArgs),
    /// Items of a hint file (NNN.SSS.idx.s, .idx.m, or a legacy C NNN.hint.qlz)
    Hint(HintArgs),
    /// Leaves and items of an htree dump (NNN.SSS.idx.hash)
    Htree(HtreeArgs),
    /// Every record of KEY in its bucket directory, oldest first
    Key(KeyArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ValueMode {
    None,
    Text,
    Hex,
    Base64,
}

/// How values are shown (`--value`, `--value-bytes`, `--decode-client`).
#[derive(Debug, Clone, Args)]
pub struct ValueOpts {
    /// Append the (uncompressed) value
    #[arg(long, value_enum, default_value_t = ValueMode::None)]
    pub value: ValueMode,
    /// Show at most this many value bytes
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub value_bytes: usize,
    /// Inflate zlib-flagged (0x10, client-compressed) values for display
    #[arg(long)]
    pub decode_client: bool,
}

#[derive(Debug, Args)]
pub struct DataArgs {
    /// Data file (NNN.data)
    pub file: PathBuf,
    /// First offset to read (a multiple of 256; hex 0x… or decimal)
    #[arg(long, value_parser = parse_offset, value_name = "OFF")]
    pub from: Option<u64>,
    /// Stop before this offset
    #[arg(long, value_parser = parse_offset, value_name = "OFF")]
    pub to: Option<u64>,
    /// Show at most N records
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,
    /// Only records of this key (bytes as given)
    #[arg(long, value_parser = clap::value_parser!(OsString), value_name = "K")]
    pub key: Option<OsString>,
    /// Only records with this key hash (16 hex digits)
    #[arg(long, value_parser = parse_khash, value_name = "HEX")]
    pub khash: Option<u64>,
    /// Stop at the first bad record instead of resyncing
    #[arg(long)]
    pub stop_on_bad: bool,
    /// Largest valid value size (a bigger vsz is a bad header)
    #[arg(long, default_value = "100M", value_parser = parse_size, value_name = "SIZE")]
    pub max_value: u64,
    #[command(flatten)]
    pub values: ValueOpts,
}

#[derive(Debug, Args)]
pub struct HintArgs {
    /// Hint file
    pub file: PathBuf,
    /// Also list the sparse index entries
    #[arg(long)]
    pub index: bool,
}

#[derive(Debug, Args)]
pub struct HtreeArgs {
    /// Htree dump (NNN.SSS.idx.hash)
    pub file: PathBuf,
    /// Buckets of the store the file belongs to
    #[arg(long, value_parser = parse_numbucket)]
    pub numbucket: usize,
    /// Tree height (hstore.htree.tree_height)
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=8))]
    pub height: u32,
    /// Bucket id in hex (default: from the directory name)
    #[arg(long, value_parser = parse_hex_bucket, value_name = "HEX")]
    pub bucket: Option<usize>,
}

#[derive(Debug, Args)]
pub struct KeyArgs {
    /// Data home (hex bucket directories)
    pub home: PathBuf,
    /// The key (bytes as given)
    #[arg(value_parser = clap::value_parser!(OsString))]
    pub key: OsString,
    /// Buckets of the home (default: inferred from its directories)
    #[arg(long, value_parser = parse_numbucket)]
    pub numbucket: Option<usize>,
    /// Largest valid value size
    #[arg(long, default_value = "100M", value_parser = parse_size, value_name = "SIZE")]
    pub max_value: u64,
    #[command(flatten)]
    pub values: ValueOpts,
}

/// `0x1f00`, `7936` or `4K`.
pub fn parse_offset(s: &str) -> Result<u64, String> {
    let t = s.trim();
    if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        return u64::from_str_radix(h, 16).map_err(|_| format!("{s:?} is not a hex offset"));
    }
    parse_size(t)
}

fn parse_khash(s: &str) -> Result<u64, String> {
    if s.len() != 16 {
        return Err("a key hash is 16 hex digits".into());
    }
    u64::from_str_radix(s, 16).map_err(|_| format!("{s:?} is not hex"))
}

pub fn parse_numbucket(s: &str) -> Result<usize, String> {
    match s.trim() {
        "1" => Ok(1),
        "16" => Ok(16),
        "256" => Ok(256),
        _ => Err("must be 1, 16 or 256".into()),
    }
}

fn parse_hex_bucket(s: &str) -> Result<usize, String> {
    usize::from_str_radix(s.trim(), 16).map_err(|_| format!("{s:?} is not a hex bucket id"))
}

/// Entry point of `beansctl dump`.
pub fn run(args: DumpArgs, g: &GlobalOpts) -> CliResult<u8> {
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let r = match args.what {
        DumpWhat::Data(a) => dump_data(&a, g, &mut out),
        DumpWhat::Hint(a) => dump_hint(&a, g, &mut out),
        DumpWhat::Htree(a) => dump_htree(&a, g, &mut out),
        DumpWhat::Key(a) => dump_key(&a, g, &mut out),
    };
    let r = r.and_then(|code| out.flush().map(|()| code).map_err(write_error));
    match r {
        // A reader that stops early (`| head`) is not an error.
        Err(e) if is_broken_pipe(&e) => Ok(exit::OK),
        other => other,
    }
}

pub(crate) fn write_error(e: io::Error) -> CliError {
    CliError::runtime(anyhow::Error::new(e).context("cannot write to stdout"))
}

pub(crate) fn is_broken_pipe(e: &CliError) -> bool {
    e.error.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}

pub(crate) fn read_error(path: &Path, e: io::Error) -> CliError {
    let code = if e.kind() == io::ErrorKind::NotFound {
        exit::USAGE
    } else {
        exit::RUNTIME
    };
    CliError::new(
        code,
        anyhow::Error::new(e).context(format!("cannot read {}", path.display())),
    )
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

fn line(out: &mut impl Write, s: &str) -> CliResult<()> {
    writeln!(out, "{s}").map_err(write_error)
}

// ------------------------------------------------------------------------------------------------
// Records.

/// A record prepared for display.
pub struct Shown<'a> {
    pub rec: &'a Rec,
    /// Uncompressed value (raw when decompression failed).
    pub value: Vec<u8>,
    pub value_error: Option<String>,
    pub vhash: u16,
}

impl<'a> Shown<'a> {
    pub fn new(rec: &'a Rec) -> Shown<'a> {
        let d = rec.decode();
        let vhash = rec.vhash(&d);
        Shown {
            rec,
            value: d.value,
            value_error: d.error,
            vhash,
        }
    }

    /// Uncompressed length (`len`).
    pub fn value_len(&self) -> u64 {
        self.value.len() as u64
    }
}

/// The bytes `--value` shows: optionally inflated, then truncated. Returns them with the count
/// of bytes left out.
fn display_value(s: &Shown<'_>, o: &ValueOpts) -> (Vec<u8>, u64, Option<String>) {
    let mut v = s.value.clone();
    let mut note = None;
    if o.decode_client && s.rec.header.flag & 0x10 != 0 {
        let mut inflated = Vec::new();
        match flate2::read::ZlibDecoder::new(&v[..]).read_to_end(&mut inflated) {
            Ok(_) => v = inflated,
            Err(e) => note = Some(format!("zlib: {e}")),
        }
    }
    let total = v.len() as u64;
    v.truncate(o.value_bytes);
    let left = total - v.len() as u64;
    (v, left, note)
}

fn render_value(v: &[u8], mode: ValueMode) -> String {
    match mode {
        ValueMode::None => String::new(),
        ValueMode::Text => escape(v),
        ValueMode::Hex => hex(v),
        ValueMode::Base64 => base64(v),
    }
}

/// One text line (tools.md §3.2).
pub fn record_text(s: &Shown<'_>, o: &ValueOpts) -> String {
    let h = &s.rec.header;
    let mut l = format!(
        "{:#010x} ok  ts={} {} ver={:<2} flag={:<15} ksz={} vsz={:<3} len={:<3} vhash={:<5} khash={:016x} key={}",
        s.rec.offset,
        h.ts,
        utc(h.ts),
        h.ver,
        flag_text(h.flag),
        h.ksz,
        h.vsz,
        s.value_len(),
        s.vhash,
        s.rec.khash(),
        escape(&s.rec.key)
    );
    if s.rec.is_tombstone() {
        l.push_str(" tombstone");
    }
    if let Some(e) = &s.value_error {
        l.push_str(&format!(" BAD_VALUE ({e})"));
    }
    if s.rec.dirty_padding > 0 {
        l.push_str(&format!(" dirty-padding={}", s.rec.dirty_padding));
    }
    if o.value != ValueMode::None {
        let (v, left, note) = display_value(s, o);
        l.push_str(" value=");
        l.push_str(&render_value(&v, o.value));
        if left > 0 {
            l.push_str(&format!(" (+{left} B)"));
        }
        if let Some(n) = note {
            l.push_str(&format!(" ({n})"));
        }
    }
    l
}

/// One JSON line (tools.md §3.2).
pub fn record_json(file: &str, s: &Shown<'_>, o: &ValueOpts) -> Value {
    let h = &s.rec.header;
    let mut m = Map::new();
    m.insert("file".into(), file.into());
    m.insert("offset".into(), s.rec.offset.into());
    m.insert("disk_size".into(), s.rec.padded.into());
    m.insert("status".into(), "ok".into());
    m.insert("error".into(), s.value_error.clone().into());
    m.insert("crc".into(), h.crc.into());
    m.insert("ts".into(), h.ts.into());
    m.insert("ver".into(), h.ver.into());
    m.insert("flag".into(), h.flag.into());
    m.insert("flags".into(), flag_names(h.flag).into());
    m.insert("ksz".into(), h.ksz.into());
    m.insert("vsz".into(), h.vsz.into());
    m.insert("len".into(), s.value_len().into());
    m.insert("compressed".into(), s.rec.compressed().into());
    m.insert("vhash".into(), s.vhash.into());
    m.insert("khash".into(), format!("{:016x}", s.rec.khash()).into());
    json_key(&mut m, &s.rec.key);
    m.insert("tombstone".into(), s.rec.is_tombstone().into());
    m.insert("dirty_padding".into(), s.rec.dirty_padding.into());
    if o.value != ValueMode::None {
        let (v, left, _) = display_value(s, o);
        m.insert("value_b64".into(), base64(&v).into());
        m.insert("value_truncated".into(), (left > 0).into());
    }
    Value::Object(m)
}

pub fn bad_text(b: &Bad) -> String {
    let next = if b.to_eof {
        format!("no valid record up to EOF at {:#010x}", b.end)
    } else {
        format!("resync found next record at {:#010x}", b.end)
    };
    format!("{:#010x} BAD {}; {next}", b.start, b.reason)
}

pub fn bad_json(file: &str, b: &Bad) -> Value {
    json!({
        "file": file,
        "offset": b.start,
        "disk_size": b.end - b.start,
        "status": "bad",
        "error": b.reason,
        "next_offset": if b.to_eof { Value::Null } else { b.end.into() },
    })
}

fn data_header(path: &Path, size: u64) -> String {
    let active = if is_active(path) { " (active)" } else { "" };
    format!("# {} size={size}{active}", file_name(path))
}

fn dump_data(a: &DataArgs, g: &GlobalOpts, out: &mut impl Write) -> CliResult<u8> {
    let from = a.from.unwrap_or(0);
    if from & 255 != 0 {
        return Err(CliError::usage(format!(
            "--from {from:#x} is not a multiple of 256 (records start at 256-byte boundaries)"
        )));
    }
    let scanner = Scanner::open(&a.file, a.max_value)
        .map_err(|e| read_error(&a.file, e))?
        .range(from, a.to);
    let name = file_name(&a.file);
    if !g.json {
        line(out, &data_header(&a.file, scanner.size()))?;
    }
    let key = a.key.as_ref().map(|k| k.as_bytes().to_vec());
    let mut scanner = scanner;
    let mut shown = 0u64;
    let mut bad = false;
    while let Some(item) = scanner.next_item().map_err(|e| read_error(&a.file, e))? {
        if a.limit.is_some_and(|n| shown >= n) {
            break;
        }
        match item {
            Item::Rec(rec) => {
                if key.as_ref().is_some_and(|k| *k != rec.key)
                    || a.khash.is_some_and(|kh| kh != rec.khash())
                {
                    continue;
                }
                let s = Shown::new(&rec);
                bad |= s.value_error.is_some();
                if g.json {
                    line(out, &record_json(&name, &s, &a.values).to_string())?;
                } else {
                    line(out, &record_text(&s, &a.values))?;
                }
                shown += 1;
            }
            Item::Bad(b) => {
                bad = true;
                if g.json {
                    line(out, &bad_json(&name, &b).to_string())?;
                } else {
                    line(out, &bad_text(&b))?;
                }
                shown += 1;
                if a.stop_on_bad {
                    break;
                }
            }
        }
    }
    Ok(if bad { exit::FOUND } else { exit::OK })
}

fn dump_key(a: &KeyArgs, g: &GlobalOpts, out: &mut impl Write) -> CliResult<u8> {
    let key = a.key.as_bytes().to_vec();
    let (numbucket, buckets) = match discover(&a.home, a.numbucket)? {
        Layout::File(_) => {
            return Err(CliError::usage(format!(
                "{} is a file; dump key needs a data home or bucket directory",
                a.home.display()
            )))
        }
        Layout::Buckets { numbucket, buckets } => (numbucket, buckets),
    };
    let depth = beansdb_hash::bucket_depth(numbucket).unwrap_or(0);
    let bucket = beansdb_hash::bucket_of_key(&key, depth);
    let bdir = if buckets.len() == 1 && buckets[0].rel.is_empty() {
        // A bucket directory given directly is searched whatever its id.
        Some(&buckets[0])
    } else {
        buckets.iter().find(|b| b.id == Some(bucket))
    };
    let Some(bdir) = bdir else {
        eprintln!(
            "no directory for bucket {} (numbucket {numbucket}) under {}",
            beansdb_route::bucket_hex(bucket, numbucket),
            a.home.display()
        );
        return Ok(exit::OK);
    };
    let files = list_bucket(&bdir.dir).map_err(|e| read_error(&bdir.dir, e))?;
    let mut bad = false;
    let mut found = 0u64;
    for (_, path) in &files.data {
        let mut scanner = Scanner::open(path, a.max_value).map_err(|e| read_error(path, e))?;
        let shown_name = bdir.show(&file_name(path));
        let mut header_done = false;
        while let Some(item) = scanner.next_item().map_err(|e| read_error(path, e))? {
            let Item::Rec(rec) = item else { continue };
            if rec.key != key {
                continue;
            }
            found += 1;
            let s = Shown::new(&rec);
            bad |= s.value_error.is_some();
            if g.json {
                line(out, &record_json(&shown_name, &s, &a.values).to_string())?;
            } else {
                if !header_done {
                    line(out, &format!("# {shown_name} size={}", scanner.size()))?;
                    header_done = true;
                }
                line(out, &record_text(&s, &a.values))?;
            }
        }
    }
    if found == 0 && !g.quiet {
        eprintln!("no record of {} in {}", escape(&key), bdir.dir.display());
    }
    Ok(if bad { exit::FOUND } else { exit::OK })
}

// ------------------------------------------------------------------------------------------------
// Hints.

fn chunk_of_name(name: &str) -> Option<u32> {
    name.get(..3).and_then(|s| s.parse().ok())
}

fn dump_hint(a: &HintArgs, g: &GlobalOpts, out: &mut impl Write) -> CliResult<u8> {
    let bytes = std::fs::read(&a.file).map_err(|e| read_error(&a.file, e))?;
    let name = file_name(&a.file);
    if name.ends_with(".hint.qlz") {
        return dump_legacy_hint(&name, &bytes, g, out);
    }
    let p = parse_hint(&bytes);
    if g.json {
        let header = json!({
            "file": name, "kind": "header", "size": p.size, "index_offset": p.index_offset,
            "num_keys": p.num_keys, "data_size": p.data_size, "problems": p.problems,
        });
        line(out, &header.to_string())?;
    } else {
        line(
            out,
            &format!(
                "# {name} size={} index_offset={} num_keys={} data_size={}",
                p.size, p.index_offset, p.num_keys, p.data_size
            ),
        )?;
        for prob in &p.problems {
            line(out, &format!("# problem: {prob}"))?;
        }
        line(out, "# khash chunk offset ver vhash ksz key")?;
    }
    for e in &p.items {
        let it = &e.item;
        if g.json {
            let mut m = Map::new();
            m.insert("file".into(), name.clone().into());
            m.insert("kind".into(), "item".into());
            m.insert("khash".into(), format!("{:016x}", it.keyhash).into());
            m.insert("chunk".into(), it.chunk_id.into());
            m.insert("offset".into(), it.offset.into());
            m.insert("ver".into(), it.ver.into());
            m.insert("vhash".into(), it.vhash.into());
            m.insert("ksz".into(), it.key.len().into());
            json_key(&mut m, &it.key);
            line(out, &Value::Object(m).to_string())?;
        } else {
            line(
                out,
                &format!(
                    "{:016x} {} {:#010x} {} {} {} {}",
                    it.keyhash,
                    it.chunk_id,
                    it.offset,
                    it.ver,
                    it.vhash,
                    it.key.len(),
                    escape(&it.key)
                ),
            )?;
        }
    }
    if a.index {
        for (kh, off) in &p.index {
            if g.json {
                let v = json!({"file": name, "kind": "index", "khash": format!("{kh:016x}"), "item_offset": off});
                line(out, &v.to_string())?;
            } else {
                line(out, &format!("# index {kh:016x} {off}"))?;
            }
        }
    }
    Ok(if p.problems.is_empty() {
        exit::OK
    } else {
        exit::FOUND
    })
}

fn dump_legacy_hint(
    name: &str,
    bytes: &[u8],
    g: &GlobalOpts,
    out: &mut impl Write,
) -> CliResult<u8> {
    let chunk = chunk_of_name(name).unwrap_or(0);
    let entries = parse_legacy_hint(bytes)
        .map_err(|e| CliError::new(exit::FOUND, anyhow::anyhow!("{name}: {e}")))?;
    if !g.json {
        line(
            out,
            &format!("# {name} legacy C hint, {} entries", entries.len()),
        )?;
        line(out, "# khash chunk offset ver vhash ksz key")?;
    }
    for e in &entries {
        let kh = beansdb_hash::keyhash(&e.key);
        if g.json {
            let mut m = Map::new();
            m.insert("file".into(), name.into());
            m.insert("kind".into(), "item".into());
            m.insert("khash".into(), format!("{kh:016x}").into());
            m.insert("chunk".into(), chunk.into());
            m.insert("offset".into(), e.offset.into());
            m.insert("ver".into(), e.ver.into());
            m.insert("vhash".into(), e.vhash.into());
            m.insert("ksz".into(), e.key.len().into());
            json_key(&mut m, &e.key);
            line(out, &Value::Object(m).to_string())?;
        } else {
            line(
                out,
                &format!(
                    "{kh:016x} {chunk} {:#010x} {} {} {} {}",
                    e.offset,
                    e.ver,
                    e.vhash,
                    e.key.len(),
                    escape(&e.key)
                ),
            )?;
        }
    }
    Ok(exit::OK)
}

// ------------------------------------------------------------------------------------------------
// Htree.

fn hex_digit_dir(p: Option<&Path>) -> Option<usize> {
    let name = p?.file_name()?.to_str()?;
    (name.len() == 1)
        .then(|| usize::from_str_radix(name, 16).ok())
        .flatten()
}

/// The bucket of an htree file from its directory (`home/3/…`, `home/a/3/…`).
pub fn bucket_from_path(file: &Path, numbucket: usize) -> Option<usize> {
    let dir = file.parent();
    match numbucket {
        1 => Some(0),
        16 => hex_digit_dir(dir),
        _ => {
            let lo = hex_digit_dir(dir)?;
            let hi = hex_digit_dir(dir.and_then(Path::parent))?;
            Some(hi * 16 + lo)
        }
    }
}

fn dump_htree(a: &HtreeArgs, g: &GlobalOpts, out: &mut impl Write) -> CliResult<u8> {
    let bucket = match a.bucket.or_else(|| bucket_from_path(&a.file, a.numbucket)) {
        Some(b) if b < a.numbucket => b,
        Some(b) => {
            return Err(CliError::usage(format!(
                "bucket {b:x} is out of range for numbucket {}",
                a.numbucket
            )))
        }
        None => {
            return Err(CliError::usage(format!(
                "cannot tell the bucket of {} from its directory; pass --bucket",
                a.file.display()
            )))
        }
    };
    let bytes = std::fs::read(&a.file).map_err(|e| read_error(&a.file, e))?;
    let name = file_name(&a.file);
    let leaves = parse_htree(&bytes, a.numbucket, a.height, bucket)
        .map_err(|e| CliError::new(exit::FOUND, anyhow::anyhow!("{name}: {e}")))?;
    let items: usize = leaves.iter().map(|l| l.items.len()).sum();
    let mut mismatches = 0u64;
    if !g.json {
        line(
            out,
            &format!(
                "# {name} numbucket={} height={} bucket={} leaves={} items={items}",
                a.numbucket,
                a.height,
                beansdb_route::bucket_hex(bucket, a.numbucket),
                leaves.len()
            ),
        )?;
        line(out, "# khash ver vhash chunk offset")?;
    }
    for (i, leaf) in leaves.iter().enumerate() {
        let computed = leaf.computed();
        let ok = computed == (leaf.count, leaf.hash);
        if !ok {
            mismatches += 1;
        }
        if leaf.items.is_empty() && leaf.count == 0 && ok {
            continue;
        }
        if g.json {
            let its: Vec<Value> = leaf
                .items
                .iter()
                .map(|it| {
                    json!({"khash": format!("{:016x}", it.khash), "ver": it.ver, "vhash": it.vhash,
                           "chunk": it.chunk, "offset": it.offset})
                })
                .collect();
            let v = json!({"file": name, "leaf": i, "count": leaf.count, "hash": leaf.hash,
                           "computed_count": computed.0, "computed_hash": computed.1, "ok": ok,
                           "items": its});
            line(out, &v.to_string())?;
        } else {
            let mut l = format!("# leaf {i:x} count={} hash={}", leaf.count, leaf.hash);
            if !ok {
                l.push_str(&format!(
                    " MISMATCH (computed count={} hash={})",
                    computed.0, computed.1
                ));
            }
            line(out, &l)?;
            for it in &leaf.items {
                line(
                    out,
                    &format!(
                        "{:016x} {} {} {} {:#010x}",
                        it.khash, it.ver, it.vhash, it.chunk, it.offset
                    ),
                )?;
            }
        }
    }
    Ok(if mismatches > 0 {
        exit::FOUND
    } else {
        exit::OK
    })
}
