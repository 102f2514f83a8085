//! Checking a downloaded blob against the etag the hub named it by.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use sha1::Sha1;
use sha2::{Digest, Sha256};

/// Which hash an etag is: 64 hex digits = sha256 of the content (LFS files), 40 = the git blob
/// sha1 (`sha1("blob <len>\0" + content)`, regular files).
pub(super) fn etag_algorithm(etag: &str) -> Option<&'static str> {
    if !etag.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    match etag.len() {
        64 => Some("sha256"),
        40 => Some("git-sha1"),
        _ => None,
    }
}

pub(super) fn hash_file(path: &Path, algorithm: &str) -> std::io::Result<String> {
    let mut file = File::open(path)?;
    let mut buffer = vec![0u8; 1 << 20];
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    if algorithm == "sha256" {
        let mut hasher = Sha256::new();
        loop {
            let n = file.read(&mut buffer)?;
            if n == 0 {
                return Ok(hex(&hasher.finalize()));
            }
            hasher.update(&buffer[..n]);
        }
    }
    let mut hasher = Sha1::new();
    hasher.update(format!("blob {}\0", file.metadata()?.len()).as_bytes());
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            return Ok(hex(&hasher.finalize()));
        }
        hasher.update(&buffer[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_name_their_hash() {
        assert_eq!(etag_algorithm(&"a".repeat(64)), Some("sha256"));
        assert_eq!(etag_algorithm(&"0".repeat(40)), Some("git-sha1"));
        assert_eq!(etag_algorithm("W/abc"), None);
    }

    #[test]
    fn git_blob_sha1_matches_git() {
        // `printf 'hello\n' | git hash-object --stdin`
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "hello\n").unwrap();
        assert_eq!(
            hash_file(&path, "git-sha1").unwrap(),
            "ce013625030ba8dba906f756967f9e9ca394464a"
        );
    }
}
