//! Talking to a hub: which files a revision holds (with their sizes and digests) and
//! fetching a file's bytes from an offset.

use std::time::Duration;

use reqwest::blocking::{Client, Response};
use reqwest::header::{AUTHORIZATION, RANGE};
use reqwest::{StatusCode, Url};
use serde::Deserialize;

use crate::digest::Digest;
use crate::error::{HubError, Result};

/// The public hub.
const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// A hub endpoint and the token sent to it.
#[derive(Clone, Debug)]
pub struct Hub {
    endpoint: Url,
    token: Option<String>,
    http: Client,
}

/// A revision of a repository: its commit and its files.
#[derive(Clone, Debug)]
pub struct RepoInfo {
    /// The 40-hex commit the revision names now.
    pub commit: String,
    pub files: Vec<RemoteFile>,
}

/// One file of a revision.
#[derive(Clone, Debug)]
pub struct RemoteFile {
    /// Its path in the repository (`/`-separated).
    pub path: String,
    pub size: u64,
    pub digest: Digest,
}

/// The revision endpoint's answer, with `blobs=true` (the fields huggingface_hub reads).
#[derive(Deserialize)]
struct RevisionAnswer {
    sha: Option<String>,
    #[serde(default)]
    siblings: Vec<Sibling>,
}

#[derive(Deserialize)]
struct Sibling {
    rfilename: String,
    size: Option<u64>,
    #[serde(rename = "blobId")]
    blob_id: Option<String>,
    lfs: Option<Lfs>,
}

#[derive(Deserialize)]
struct Lfs {
    sha256: String,
    size: u64,
}

impl Hub {
    /// The hub the environment names: `$HF_ENDPOINT` (else huggingface.co), with the token
    /// from `$HF_TOKEN`, else the file `$HF_TOKEN_PATH`, else `huggingface-cli login`'s
    /// (`$HF_HOME/token`). `$HF_HUB_OFFLINE=1` refuses to pull.
    pub fn from_env() -> Result<Hub> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        if env("HF_HUB_OFFLINE").is_some_and(|v| v != "0" && v.to_lowercase() != "false") {
            return Err(HubError::Invalid(
                "HF_HUB_OFFLINE is set: unset it to pull from the hub".into(),
            ));
        }
        let token_file = env("HF_TOKEN_PATH")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| minerva_models::local_models::hf_home().join("token"));
        let token = env("HF_TOKEN").or_else(|| {
            std::fs::read_to_string(token_file)
                .ok()
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
        });
        Hub::new(
            env("HF_ENDPOINT").as_deref().unwrap_or(DEFAULT_ENDPOINT),
            token,
        )
    }

    /// A hub at `endpoint` (e.g. `https://huggingface.co`), sending `token` if given.
    pub fn new(endpoint: &str, token: Option<String>) -> Result<Hub> {
        let endpoint = Url::parse(endpoint.trim_end_matches('/'))
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| {
                HubError::Invalid(format!("HF_ENDPOINT '{endpoint}': not an http(s) URL"))
            })?;
        let http = Client::builder()
            .user_agent(concat!("minerva/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(30))
            // In the blocking client this bounds each read, not the whole transfer.
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|source| HubError::Network {
                url: endpoint.to_string(),
                source,
            })?;
        Ok(Hub {
            endpoint,
            token,
            http,
        })
    }

    /// The endpoint, for messages.
    pub fn endpoint(&self) -> &str {
        self.endpoint.as_str().trim_end_matches('/')
    }

    /// The files of `revision` of the model repository `repo_id` (`ORG/NAME`).
    pub fn repo_info(&self, repo_id: &str, revision: &str) -> Result<RepoInfo> {
        let mut url = self.url(&["api", "models"], repo_id, &["revision", revision], "");
        url.set_query(Some("blobs=true"));
        let response = self.send(&url, 0)?;
        let answer: RevisionAnswer = response.json().map_err(|source| HubError::Network {
            url: url.to_string(),
            source,
        })?;
        let commit = answer
            .sha
            .filter(|c| c.len() == 40 && c.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| HubError::Invalid(format!("{url}: no commit sha in the answer")))?;
        let files = answer
            .siblings
            .into_iter()
            .map(|s| self.remote_file(s, &url, repo_id, &commit))
            .collect::<Result<_>>()?;
        Ok(RepoInfo { commit, files })
    }

    /// The bytes of `path` at `commit` from offset `start` on. The answer is 206 where the
    /// server honoured the range, 200 where it sends the whole file.
    pub(crate) fn fetch(
        &self,
        repo_id: &str,
        commit: &str,
        path: &str,
        start: u64,
    ) -> Result<Response> {
        let url = self.url(&[], repo_id, &["resolve", commit], path);
        self.send(&url, start)
    }

    /// `endpoint/prefix.../ORG/NAME/middle.../path`, each segment escaped.
    fn url(&self, prefix: &[&str], repo_id: &str, middle: &[&str], path: &str) -> Url {
        let mut url = self.endpoint.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty();
            segments.extend(prefix);
            segments.extend(repo_id.split('/'));
            segments.extend(middle);
            if !path.is_empty() {
                segments.extend(path.split('/'));
            }
        }
        url
    }

    fn send(&self, url: &Url, start: u64) -> Result<Response> {
        let mut request = self.http.get(url.clone());
        if let Some(token) = &self.token {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        if start > 0 {
            request = request.header(RANGE, format!("bytes={start}-"));
        }
        let response = request.send().map_err(|source| HubError::Network {
            url: url.to_string(),
            source,
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let hint = match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN if self.token.is_none() => {
                " (the repository is gated, private or missing: set HF_TOKEN or run `huggingface-cli login`)"
            }
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                " (the token has no access: accept the model's terms on its page, or check HF_TOKEN)"
            }
            StatusCode::NOT_FOUND => " (no such repository, revision or file)",
            _ => "",
        };
        Err(HubError::Status {
            url: url.to_string(),
            status: status.as_u16(),
            hint: hint.into(),
        })
    }
}

/// Whether `h` is `len` hex digits.
fn is_hex(h: &str, len: usize) -> bool {
    h.len() == len && h.bytes().all(|b| b.is_ascii_hexdigit())
}

impl Hub {
    /// A sibling as a file to fetch: LFS files by sha256, the others by git blob id. Where
    /// the answer lacks a git file's id or size, the file's own headers give them (its
    /// `ETag` is the blob id), as huggingface_hub reads them.
    fn remote_file(
        &self,
        sibling: Sibling,
        url: &Url,
        repo_id: &str,
        commit: &str,
    ) -> Result<RemoteFile> {
        let invalid =
            |what: &str| HubError::Invalid(format!("{url}: '{}' has {what}", sibling.rfilename));
        let (size, digest) = match (&sibling.lfs, sibling.blob_id.as_deref(), sibling.size) {
            (Some(lfs), _, _) if is_hex(&lfs.sha256, 64) => {
                (lfs.size, Digest::Sha256(lfs.sha256.to_lowercase()))
            }
            (Some(_), _, _) => return Err(invalid("no valid lfs.sha256")),
            (None, Some(blob), Some(size)) if is_hex(blob, 40) => {
                (size, Digest::GitBlob(blob.to_lowercase()))
            }
            (None, _, _) => {
                let (etag, size) = self.head(repo_id, commit, &sibling.rfilename)?;
                let etag = etag.filter(|e| is_hex(e, 40));
                let etag =
                    etag.ok_or_else(|| invalid("no blob id, in the answer or as an ETag"))?;
                let size = size.or(sibling.size).ok_or_else(|| invalid("no size"))?;
                (size, Digest::GitBlob(etag.to_lowercase()))
            }
        };
        Ok(RemoteFile {
            path: sibling.rfilename,
            size,
            digest,
        })
    }

    /// The `ETag` (unquoted) and `Content-Length` of `path` at `commit`.
    fn head(
        &self,
        repo_id: &str,
        commit: &str,
        path: &str,
    ) -> Result<(Option<String>, Option<u64>)> {
        let url = self.url(&[], repo_id, &["resolve", commit], path);
        let mut request = self.http.head(url.clone());
        if let Some(token) = &self.token {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        let response = request.send().map_err(|source| HubError::Network {
            url: url.to_string(),
            source,
        })?;
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let etag = header("etag").map(|e| e.trim_start_matches("W/").trim_matches('"').to_string());
        let size = header("content-length").and_then(|l| l.parse().ok());
        Ok((etag, size))
    }
}
