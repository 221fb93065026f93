//! Engine settings (the `hstore` part of the node config, already validated and in bytes).

use std::path::PathBuf;

use crate::compress::NotCompress;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncPolicy {
    Never,
    Interval,
    Always,
}

#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub home: PathBuf,
    pub numbucket: usize,
    /// `served[b]` is true when this node serves bucket `b`.
    pub served: Vec<bool>,
    pub tree_height: u32,
    pub datafile_max: u64,
    pub check_vhash: bool,
    pub fsync: FsyncPolicy,
    pub fsync_interval_ms: u64,
    pub bufio_cap: usize,
    pub hint_split_cap: usize,
    pub hint_index_interval: u64,
    pub hint_no_merged: bool,
    pub not_compress: NotCompress,
    pub no_gc_days: u32,
    pub body_max: u64,
    pub gc_max_mb_per_sec: u32,
}

impl StoreConfig {
    /// Defaults of node.md §7.2 for a home serving every bucket.
    pub fn new(home: impl Into<PathBuf>, numbucket: usize) -> StoreConfig {
        StoreConfig {
            home: home.into(),
            numbucket,
            served: vec![true; numbucket],
            tree_height: 3,
            datafile_max: 4000 << 20,
            check_vhash: false,
            fsync: FsyncPolicy::Interval,
            fsync_interval_ms: 1000,
            bufio_cap: 1 << 20,
            hint_split_cap: 1 << 20,
            hint_index_interval: 4096,
            hint_no_merged: false,
            not_compress: NotCompress::default(),
            no_gc_days: 0,
            body_max: 50 << 20,
            gc_max_mb_per_sec: 100,
        }
    }

    pub fn depth(&self) -> u32 {
        beansdb_hash::bucket_depth(self.numbucket).unwrap_or(1)
    }

    /// Directory of bucket `id`: `home/`, `home/%x/` or `home/%x/%x/`.
    pub fn bucket_dir(&self, id: usize) -> PathBuf {
        match self.depth() {
            0 => self.home.clone(),
            1 => self.home.join(format!("{id:x}")),
            _ => self
                .home
                .join(format!("{:x}", id >> 4))
                .join(format!("{:x}", id & 0xf)),
        }
    }

    /// Whether writes wait for fsync; other policies only bound the window.
    pub fn fsync_files(&self) -> bool {
        self.fsync != FsyncPolicy::Never
    }
}
