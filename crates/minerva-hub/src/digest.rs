//! The digests the hub publishes for a file, and hashing a download to check it.

use sha1::Digest as _;

/// What a file must hash to. Its hex form is also the file's etag, the name of its blob in
/// the cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Digest {
    /// An LFS file: sha256 of its bytes.
    Sha256(String),
    /// A file kept in git itself: the git blob id, sha1 of `blob <size>\0` and its bytes.
    GitBlob(String),
}

impl Digest {
    /// The hex digest, lowercase.
    pub fn hex(&self) -> &str {
        match self {
            Digest::Sha256(hex) | Digest::GitBlob(hex) => hex,
        }
    }

    /// The algorithm, for messages.
    pub fn algorithm(&self) -> &'static str {
        match self {
            Digest::Sha256(_) => "sha256",
            Digest::GitBlob(_) => "git blob sha1",
        }
    }

    /// An empty hasher for a file of `size` bytes with this digest.
    pub(crate) fn hasher(&self, size: u64) -> Hasher {
        match self {
            Digest::Sha256(_) => Hasher::Sha256(sha2::Sha256::new()),
            Digest::GitBlob(_) => {
                let mut sha1 = sha1::Sha1::new();
                sha1.update(format!("blob {size}\0").as_bytes());
                Hasher::GitBlob(sha1)
            }
        }
    }

    /// The digest `bytes` have under this digest's algorithm.
    pub fn of(&self, bytes: &[u8]) -> Digest {
        let mut hasher = self.hasher(bytes.len() as u64);
        hasher.update(bytes);
        match self {
            Digest::Sha256(_) => Digest::Sha256(hasher.finish()),
            Digest::GitBlob(_) => Digest::GitBlob(hasher.finish()),
        }
    }
}

/// A digest being computed over a download.
pub(crate) enum Hasher {
    Sha256(sha2::Sha256),
    GitBlob(sha1::Sha1),
}

impl Hasher {
    pub(crate) fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::GitBlob(h) => h.update(bytes),
        }
    }

    /// The lowercase hex digest.
    pub(crate) fn finish(self) -> String {
        let bytes = match self {
            Hasher::Sha256(h) => h.finalize().to_vec(),
            Hasher::GitBlob(h) => h.finalize().to_vec(),
        };
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known answers: `printf abc | sha256sum` and `printf 'hello\n' | git hash-object --stdin`.
    #[test]
    fn digests_match_sha256sum_and_git_hash_object() {
        let sha = Digest::Sha256(String::new()).of(b"abc");
        assert_eq!(
            sha.hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let blob = Digest::GitBlob(String::new()).of(b"hello\n");
        assert_eq!(blob.hex(), "ce013625030ba8dba906f756967f9e9ca394464a");
    }
}
