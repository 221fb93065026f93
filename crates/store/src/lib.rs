//! Storage engine (in progress).
pub mod collision;
pub mod compress;
pub mod datafile;
pub mod hint;
pub mod htree;
pub mod nextgc;
pub mod record;
