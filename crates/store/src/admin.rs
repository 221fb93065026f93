//! Read-only views of the engine for the HTTP admin.

use crate::bucket::Bucket;
use crate::error::StoreError;
use crate::record::Record;
use crate::store::Store;

impl Bucket {
    /// The collision table as `collision.yaml` text.
    pub fn collision_yaml(&self) -> String {
        self.inner.lock().collisions.to_yaml()
    }

    /// Bytes held by the index of this bucket.
    pub fn index_bytes(&self) -> usize {
        self.inner.lock().tree.memory_bytes()
    }
}

impl Store {
    /// The record the index holds for a keyhash, as stored (for `/hash/<khash>`).
    pub fn raw_record(&self, keyhash: u64) -> Result<Option<Record>, StoreError> {
        match self.bucket(beansdb_hash::bucket_of_hash(keyhash, self.depth())) {
            Some(b) => b.raw(keyhash),
            None => Ok(None),
        }
    }
}
