//! The per-cluster sync lock (tools.md §1.8): an exclusive `flock`, so a crashed run leaves
//! no stale lock, with `pid host start_time` inside for the "another sync" message.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::{exit, CliError, CliResult};

/// Held for the whole run; the kernel releases it when the file is closed.
pub struct SyncLock {
    _file: File,
}

/// `<OS temp dir>/beansctl-sync-<first 12 hex of sha256(sorted addrs)>.lock`.
pub fn default_path(addrs: &[String]) -> PathBuf {
    let mut sorted: Vec<&str> = addrs.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    sorted.dedup();
    let digest = sha256(sorted.join("\n").as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    std::env::temp_dir().join(format!("beansctl-sync-{}.lock", &hex[..12]))
}

/// Takes the lock or fails with exit 4 naming the holder.
pub fn acquire(path: &Path, started: &str) -> CliResult<SyncLock> {
    // No truncation on open: a busy lock's contents name the holder.
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| CliError::usage(format!("cannot open lock file {}: {e}", path.display())))?;
    // SAFETY: flock on a descriptor this File owns; no memory is shared with the kernel.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let mut f = holder.split_whitespace();
            let msg = match (f.next(), f.next(), f.next()) {
                (Some(pid), Some(host), Some(since)) => format!(
                    "another sync is running against this cluster (pid {pid} on {host} since {since})"
                ),
                _ => "another sync is running against this cluster".to_string(),
            };
            return Err(CliError::new(exit::LOCKED, anyhow::anyhow!(msg))
                .with_hint(format!("lock file {}", path.display())));
        }
        return Err(CliError::runtime(anyhow::anyhow!(
            "cannot lock {}: {err}",
            path.display()
        )));
    }
    let line = format!("{} {} {started}\n", std::process::id(), hostname());
    let written = file
        .set_len(0)
        .and_then(|()| file.seek(SeekFrom::Start(0)))
        .and_then(|_| file.write_all(line.as_bytes()))
        .and_then(|()| file.flush());
    if let Err(e) = written {
        return Err(CliError::runtime(anyhow::anyhow!(
            "cannot write lock file {}: {e}",
            path.display()
        )));
    }
    Ok(SyncLock { _file: file })
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates on success.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).replace(char::is_whitespace, "_");
    if name.is_empty() {
        "unknown".into()
    } else {
        name
    }
}

/// SHA-256 (FIPS 180-4); only used to name the lock file, so no dependency is pulled in.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];
    let mut h: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];
    let mut msg = data.to_vec();
    let bits = (data.len() as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bits.to_be_bytes());
    for block in msg.chunks_exact(64) {
        let mut w = [0u32; 64];
        for (i, word) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16]
                .wrapping_add(s0)
                .wrapping_add(w[i - 7])
                .wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut hh] = h;
        for i in 0..64 {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = hh
                .wrapping_add(s1)
                .wrapping_add(ch)
                .wrapping_add(K[i])
                .wrapping_add(w[i]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(maj);
            hh = g;
            g = f;
            f = e;
            e = d.wrapping_add(t1);
            d = c;
            c = b;
            b = a;
            a = t1.wrapping_add(t2);
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e, f, g, hh]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 32];
    for (i, x) in h.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&x.to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(d: [u8; 32]) -> String {
        d.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn sha256_vectors() {
        assert_eq!(
            hex(sha256(b"")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hex(sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hex(sha256(
                b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
            )),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
    }

    #[test]
    fn default_path_ignores_order() {
        let a = default_path(&["b:1".into(), "a:2".into()]);
        let b = default_path(&["a:2".into(), "b:1".into()]);
        assert_eq!(a, b);
        let name = a.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        assert!(name.starts_with("beansctl-sync-") && name.ends_with(".lock"));
        assert_eq!(name.len(), "beansctl-sync-".len() + 12 + ".lock".len());
    }

    #[test]
    fn second_lock_is_refused_with_holder() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("x.lock");
        let held = acquire(&p, "2026-01-01T10:00:00Z").expect("first");
        let e = acquire(&p, "later").err().expect("busy");
        assert_eq!(e.code, exit::LOCKED);
        let msg = e.error.to_string();
        assert!(
            msg.starts_with(&format!(
                "another sync is running against this cluster (pid {} on ",
                std::process::id()
            )),
            "{msg}"
        );
        assert!(msg.ends_with("since 2026-01-01T10:00:00Z)"), "{msg}");
        drop(held);
        assert!(acquire(&p, "again").is_ok());
    }
}
