//! A hub on loopback, for tests (feature `mock-hub`): it answers the revision API and file
//! downloads as huggingface.co does (LFS files through a redirect to a CDN path, byte
//! ranges honoured, a token checked where one is set), records each request, and breaks
//! transfers on demand, so pulls can be tested without the network.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::digest::Digest;

/// A running mock hub; it stops when dropped.
pub struct MockHub {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

/// A file of a mock repository.
#[derive(Clone)]
pub struct MockFile {
    pub path: String,
    pub bytes: Arc<[u8]>,
    /// Stored in LFS (published with a sha256, downloaded through the CDN redirect) rather
    /// than in git (published with its git blob id).
    pub lfs: bool,
}

impl MockFile {
    pub fn new(path: &str, bytes: impl Into<Arc<[u8]>>, lfs: bool) -> MockFile {
        MockFile {
            path: path.to_string(),
            bytes: bytes.into(),
            lfs,
        }
    }

    /// The digest the hub publishes for it.
    pub fn digest(&self) -> Digest {
        match self.lfs {
            true => Digest::Sha256(String::new()).of(&self.bytes),
            false => Digest::GitBlob(String::new()).of(&self.bytes),
        }
    }
}

/// How the transfers of one file misbehave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Send this many bytes of the answer, then close the connection.
    CutAfter(u64),
    /// Send this many bytes, then hold the connection open until [`MockHub::release`]
    /// (or a minute passes): a transfer to kill mid-way.
    StallAfter(u64),
    /// Send other bytes than those published (one flipped).
    Corrupt,
}

/// A request the hub answered.
#[derive(Clone, Debug)]
pub struct Logged {
    /// The URL path, percent-decoded.
    pub path: String,
    /// The `Range` header.
    pub range: Option<String>,
    /// The `Authorization` header.
    pub authorization: Option<String>,
}

struct Repo {
    commit: String,
    /// Branch and tag names, all naming `commit`.
    refs: Vec<String>,
    files: Vec<MockFile>,
}

#[derive(Default)]
struct Shared {
    repos: Mutex<HashMap<String, Repo>>,
    faults: Mutex<HashMap<String, Fault>>,
    token: Mutex<Option<String>>,
    log: Mutex<Vec<Logged>>,
    omit_blob_ids: AtomicBool,
    stalled: Mutex<bool>,
    released: Mutex<bool>,
    wake: Condvar,
    stop: AtomicBool,
}

impl MockHub {
    /// Starts a hub on a free loopback port.
    pub fn start() -> MockHub {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let addr = listener.local_addr().expect("local address");
        let shared = Arc::new(Shared::default());
        let server = Arc::clone(&shared);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if server.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let server = Arc::clone(&server);
                std::thread::spawn(move || {
                    let _ = server.answer(stream, addr);
                });
            }
        });
        MockHub { addr, shared }
    }

    /// The URL to give as `HF_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Publishes repository `repo_id` (`ORG/NAME`) with `files` under the refs `refs`
    /// (e.g. `main`), returning its commit.
    pub fn add_repo(&self, repo_id: &str, refs: &[&str], files: Vec<MockFile>) -> String {
        let mut identity = repo_id.as_bytes().to_vec();
        for file in &files {
            identity.extend_from_slice(file.path.as_bytes());
            identity.extend_from_slice(file.digest().hex().as_bytes());
        }
        let commit = Digest::GitBlob(String::new())
            .of(&identity)
            .hex()
            .to_string();
        let repo = Repo {
            commit: commit.clone(),
            refs: refs.iter().map(|r| r.to_string()).collect(),
            files,
        };
        self.shared.lock_repos().insert(repo_id.to_string(), repo);
        commit
    }

    /// Makes transfers of the file at `path` (in any repository) misbehave.
    pub fn set_fault(&self, path: &str, fault: Fault) {
        lock(&self.shared.faults).insert(path.to_string(), fault);
        *lock(&self.shared.stalled) = false;
        *lock(&self.shared.released) = false;
    }

    /// Lets every file transfer normally again.
    pub fn clear_faults(&self) {
        lock(&self.shared.faults).clear();
        self.release();
    }

    /// Leaves git files' `blobId` and `size` out of the revision answer, so clients must
    /// take them from the file's headers (`ETag`, `Content-Length`).
    pub fn omit_blob_ids(&self) {
        self.shared.omit_blob_ids.store(true, Ordering::SeqCst);
    }

    /// Requires `Authorization: Bearer <token>` on every request.
    pub fn require_token(&self, token: &str) {
        *lock(&self.shared.token) = Some(token.to_string());
    }

    /// The requests answered so far.
    pub fn requests(&self) -> Vec<Logged> {
        lock(&self.shared.log).clone()
    }

    /// The `Range` header of each LFS download (through the CDN path), in order.
    pub fn lfs_ranges(&self) -> Vec<Option<String>> {
        let log = lock(&self.shared.log);
        log.iter()
            .filter(|r| r.path.starts_with("/cdn/"))
            .map(|r| r.range.clone())
            .collect()
    }

    /// Waits until a [`Fault::StallAfter`] transfer has sent its bytes; false after
    /// `timeout`.
    pub fn wait_stalled(&self, timeout: Duration) -> bool {
        let stalled = lock(&self.shared.stalled);
        let (stalled, _) = self
            .shared
            .wake
            .wait_timeout_while(stalled, timeout, |s| !*s)
            .expect("mock hub lock");
        *stalled
    }

    /// Ends stalled transfers (their connections close).
    pub fn release(&self) {
        *lock(&self.shared.released) = true;
        self.shared.wake.notify_all();
    }
}

impl Drop for MockHub {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.release();
        // Wakes the accept loop so that it sees `stop`.
        let _ = TcpStream::connect(self.addr);
    }
}

/// A fresh, empty folder for a test's cache, named after the process and `name`.
pub fn scratch_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("minerva-hub-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a scratch folder");
    dir
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    fn lock_repos(&self) -> std::sync::MutexGuard<'_, HashMap<String, Repo>> {
        lock(&self.repos)
    }

    /// Reads one request from `stream` and answers it; the connection then closes.
    fn answer(&self, mut stream: TcpStream, addr: SocketAddr) -> std::io::Result<()> {
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let head_only = line.starts_with("HEAD ");
        let target = line.split_whitespace().nth(1).unwrap_or("/").to_string();
        let mut headers = HashMap::new();
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                headers.insert(name.trim().to_lowercase(), value.trim().to_string());
            }
        }
        let path = percent_decode(target.split('?').next().unwrap_or("/"));
        let request = Logged {
            path: path.clone(),
            range: headers.get("range").cloned(),
            authorization: headers.get("authorization").cloned(),
        };
        lock(&self.log).push(request.clone());
        let token = lock(&self.token).clone();
        let authorized = token.is_none_or(|t| request.authorization == Some(format!("Bearer {t}")));
        if !authorized && !path.starts_with("/cdn/") {
            return respond(
                &mut stream,
                "401 Unauthorized",
                &[],
                b"{\"error\":\"Invalid credentials\"}",
            );
        }
        if let Some(rest) = path.strip_prefix("/api/models/") {
            return self.revision(&mut stream, rest);
        }
        if let Some(sha) = path.strip_prefix("/cdn/") {
            let file = self.find(|f| f.lfs && f.digest().hex() == sha);
            return self.serve(&mut stream, file, request.range.as_deref(), head_only);
        }
        let parts: Vec<&str> = path.trim_start_matches('/').splitn(5, '/').collect();
        let [org, name, "resolve", revision, file_path] = parts.as_slice() else {
            return respond(&mut stream, "404 Not Found", &[], b"not found");
        };
        let file = self.lookup(&format!("{org}/{name}"), revision, |r| {
            r.files.iter().find(|f| f.path == *file_path).cloned()
        });
        match file {
            Some(file) if file.lfs => {
                let location = format!("http://{addr}/cdn/{}", file.digest().hex());
                respond(&mut stream, "302 Found", &[("Location", location)], b"")
            }
            file => self.serve(&mut stream, file, request.range.as_deref(), head_only),
        }
    }

    /// `ORG/NAME/revision/REV`: the revision's commit and files, with their digests.
    fn revision(&self, stream: &mut TcpStream, rest: &str) -> std::io::Result<()> {
        let parts: Vec<&str> = rest.splitn(4, '/').collect();
        let [org, name, "revision", revision] = parts.as_slice() else {
            return respond(stream, "404 Not Found", &[], b"{\"error\":\"not found\"}");
        };
        let answer = self.lookup(&format!("{org}/{name}"), revision, |repo| {
            let omit = self.omit_blob_ids.load(Ordering::SeqCst);
            let siblings: Vec<String> = repo.files.iter().map(|f| sibling_json(f, omit)).collect();
            Some(format!(
                "{{\"sha\":\"{}\",\"siblings\":[{}]}}",
                repo.commit,
                siblings.join(",")
            ))
        });
        match answer {
            Some(json) => respond(stream, "200 OK", &[], json.as_bytes()),
            None => respond(
                stream,
                "404 Not Found",
                &[],
                b"{\"error\":\"Repository not found\"}",
            ),
        }
    }

    /// `then` of the repository `repo_id` where `revision` is one of its refs or its commit.
    fn lookup<T>(
        &self,
        repo_id: &str,
        revision: &str,
        then: impl Fn(&Repo) -> Option<T>,
    ) -> Option<T> {
        let repos = self.lock_repos();
        let repo = repos.get(repo_id)?;
        let known = repo.commit == revision || repo.refs.iter().any(|r| r == revision);
        known.then(|| then(repo)).flatten()
    }

    fn find(&self, matches: impl Fn(&MockFile) -> bool) -> Option<MockFile> {
        let repos = self.lock_repos();
        repos
            .values()
            .flat_map(|r| r.files.iter())
            .find(|f| matches(f))
            .cloned()
    }

    /// A file's bytes from the range's start, with its fault applied.
    fn serve(
        &self,
        stream: &mut TcpStream,
        file: Option<MockFile>,
        range: Option<&str>,
        head_only: bool,
    ) -> std::io::Result<()> {
        let Some(file) = file else {
            return respond(stream, "404 Not Found", &[], b"Entry not found");
        };
        let size = file.bytes.len() as u64;
        let start = range
            .and_then(|r| r.strip_prefix("bytes="))
            .and_then(|r| r.strip_suffix('-'))
            .and_then(|s| s.parse::<u64>().ok());
        let (status, start) = match start {
            Some(s) if s < size => ("206 Partial Content", s),
            Some(_) => return respond(stream, "416 Range Not Satisfiable", &[], b""),
            None => ("200 OK", 0),
        };
        let mut body = file.bytes[start as usize..].to_vec();
        let fault = lock(&self.faults).get(&file.path).copied();
        if fault == Some(Fault::Corrupt) && !body.is_empty() {
            body[0] ^= 0xff;
        }
        let mut headers = vec![("ETag", format!("\"{}\"", file.digest().hex()))];
        if status.starts_with("206") {
            headers.push((
                "Content-Range",
                format!("bytes {start}-{}/{size}", size - 1),
            ));
        }
        write_head(stream, status, &headers, body.len())?;
        if head_only {
            return stream.flush();
        }
        let cut = match fault {
            Some(Fault::CutAfter(n) | Fault::StallAfter(n)) => (n as usize).min(body.len()),
            _ => body.len(),
        };
        stream.write_all(&body[..cut])?;
        stream.flush()?;
        if let Some(Fault::StallAfter(_)) = fault {
            *lock(&self.stalled) = true;
            self.wake.notify_all();
            let released = lock(&self.released);
            let _ = self
                .wake
                .wait_timeout_while(released, Duration::from_secs(60), |r| !*r);
        }
        Ok(())
    }
}

/// One `siblings` entry as the hub writes it with `blobs=true` (a git file's id and size
/// left out where `omit`).
fn sibling_json(file: &MockFile, omit: bool) -> String {
    let size = file.bytes.len();
    let path = serde_json::to_string(&file.path).unwrap_or_default();
    match file.lfs {
        true => format!(
            "{{\"rfilename\":{path},\"size\":{size},\"blobId\":\"{}\",\"lfs\":{{\"sha256\":\"{}\",\"size\":{size},\"pointerSize\":134}}}}",
            "0".repeat(40),
            file.digest().hex()
        ),
        false if omit => format!("{{\"rfilename\":{path}}}"),
        false => format!(
            "{{\"rfilename\":{path},\"size\":{size},\"blobId\":\"{}\"}}",
            file.digest().hex()
        ),
    }
}

fn write_head(
    stream: &mut TcpStream,
    status: &str,
    headers: &[(&str, String)],
    length: usize,
) -> std::io::Result<()> {
    let mut head =
        format!("HTTP/1.1 {status}\r\nContent-Length: {length}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())
}

fn respond(
    stream: &mut TcpStream,
    status: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> std::io::Result<()> {
    write_head(stream, status, headers, body.len())?;
    stream.write_all(body)?;
    stream.flush()
}

/// `%XX` escapes decoded (the client escapes each path segment).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
