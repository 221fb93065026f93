//! `beansdb -buildhint PATH`: rebuild hint files offline (node.md §6.3).

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::Path;

use crate::datafile::DataStreamReader;
use crate::hint::{
    hint_file_name, parse_file_name, read_hint_file, sort_hint_items, write_hint_file, FileName,
    HintItem,
};

/// A data file: its hints are deleted and rebuilt. A bucket directory: every chunk's hints are
/// checked and the uncovered tail of each data file is scanned into a new split. Returns the
/// number of data files whose hints were (re)written.
pub fn build_hints(path: &Path, split_cap: usize, index_interval: u64) -> io::Result<usize> {
    let meta = fs::metadata(path)?;
    if meta.is_file() {
        let (dir, chunk) = data_file_parts(path)?;
        remove_hints(dir, chunk)?;
        rebuild(dir, chunk, 0, 0, split_cap, index_interval)?;
        return Ok(1);
    }
    let mut chunks: Vec<u32> = Vec::new();
    for e in fs::read_dir(path)?.flatten() {
        if let Some(FileName::Data(c)) = parse_file_name(&e.file_name().to_string_lossy()) {
            chunks.push(c);
        }
    }
    chunks.sort();
    let mut n = 0;
    for c in chunks {
        let size = fs::metadata(path.join(crate::hint::data_file_name(c)))?.len();
        // Keep the valid contiguous splits, rebuild what they do not cover.
        let mut split = 0u32;
        let mut covered = 0u64;
        loop {
            match read_hint_file(path.join(hint_file_name(c, split, false))) {
                Ok(h) if h.datasize as u64 <= size => {
                    covered = covered.max(h.datasize as u64);
                    split += 1;
                }
                _ => break,
            }
        }
        // Anything after the first bad split is stale.
        let mut s = split;
        while path.join(hint_file_name(c, s, false)).exists() {
            fs::remove_file(path.join(hint_file_name(c, s, false)))?;
            s += 1;
        }
        if covered < size {
            rebuild(path, c, covered, split, split_cap, index_interval)?;
            n += 1;
        }
    }
    Ok(n)
}

fn data_file_parts(path: &Path) -> io::Result<(&Path, u32)> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = path.parent().unwrap_or(Path::new("."));
    match parse_file_name(&name) {
        Some(FileName::Data(c)) => Ok((dir, c)),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a NNN.data file",
        )),
    }
}

fn remove_hints(dir: &Path, chunk: u32) -> io::Result<()> {
    for e in fs::read_dir(dir)?.flatten() {
        if let Some(FileName::Hint { chunk: c, .. }) =
            parse_file_name(&e.file_name().to_string_lossy())
        {
            if c == chunk {
                fs::remove_file(e.path())?;
            }
        }
    }
    Ok(())
}

/// Scans `chunk` from `from` and writes splits of at most `split_cap` keys from `first_split`.
fn rebuild(
    dir: &Path,
    chunk: u32,
    from: u64,
    first_split: u32,
    split_cap: usize,
    interval: u64,
) -> io::Result<()> {
    let mut reader = DataStreamReader::open(dir.join(crate::hint::data_file_name(chunk)), from)?;
    let mut split = first_split;
    let mut items: HashMap<Vec<u8>, HintItem> = HashMap::new();
    let mut end = from;
    let flush = |items: &mut HashMap<Vec<u8>, HintItem>, split: u32, end: u64| -> io::Result<()> {
        let mut list: Vec<HintItem> = items.drain().map(|(_, v)| v).collect();
        sort_hint_items(&mut list);
        write_hint_file(
            dir.join(hint_file_name(chunk, split, false)),
            &mut list,
            end as u32,
            interval,
            true,
        )
    };
    while let Some(it) = reader.next_record()? {
        let h = HintItem::from_record(&it.record, 0, it.offset);
        if items.len() >= split_cap.max(1) && !items.contains_key(&h.key) {
            flush(&mut items, split, end)?;
            split += 1;
        }
        end = (it.offset as u64 + it.padded_size as u64).min(reader.file_size());
        items.insert(h.key.clone(), h);
    }
    if !items.is_empty() {
        flush(&mut items, split, end)?;
    }
    Ok(())
}
