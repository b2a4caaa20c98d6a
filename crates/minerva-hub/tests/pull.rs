//! Pulls from a loopback hub: the cache layout huggingface_hub writes, resuming a broken or
//! killed transfer, a digest mismatch leaving nothing behind, tokens.

use std::path::{Path, PathBuf};

use minerva_hub::mock_hub::{scratch_dir, Fault, MockFile, MockHub};
use minerva_hub::{pull, Hub, HubError, PlannedFile, PullProgress, Pulled};
use minerva_models::local_models::Caches;

const REPO: &str = "test-org/tiny-model";

/// Bytes that no shift of themselves repeats, so an offset error shows in the digest.
fn weights(len: usize) -> Vec<u8> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// A safetensors model as the hub holds one: small files in git, weights in LFS, and
/// PyTorch weights a pull skips.
fn tiny_model() -> Vec<MockFile> {
    vec![
        MockFile::new("config.json", b"{\"model_type\":\"llama\"}".to_vec(), false),
        MockFile::new("model.safetensors", weights(3 << 20), true),
        MockFile::new("tokenizer.json", b"{\"version\":\"1.0\"}".to_vec(), false),
        MockFile::new("pytorch_model.bin", weights(1000), true),
    ]
}

/// Every event, in order.
#[derive(Default)]
struct Recorder {
    planned: Vec<PlannedFile>,
    advanced: Vec<(String, u64)>,
    finished: Vec<String>,
}

impl PullProgress for Recorder {
    fn planned(&mut self, files: &[PlannedFile]) {
        self.planned = files.to_vec();
    }
    fn advanced(&mut self, path: &str, done: u64) {
        self.advanced.push((path.to_string(), done));
    }
    fn finished(&mut self, path: &str) {
        self.finished.push(path.to_string());
    }
}

fn pull_quietly(hub: &Hub, cache: &Path, spec: &str) -> Result<Pulled, HubError> {
    pull(hub, cache, spec, &mut Recorder::default())
}

fn repo_folder(cache: &Path) -> PathBuf {
    cache.join("models--test-org--tiny-model")
}

fn resolves(cache: &Path, spec: &str) -> Option<PathBuf> {
    let caches = Caches {
        hub: cache.to_path_buf(),
        minerva: cache.join("no-minerva-models"),
    };
    caches.resolve(spec).ok()
}

#[test]
fn a_pull_fills_the_hub_cache_layout() {
    let hub = MockHub::start();
    let files = tiny_model();
    let commit = hub.add_repo(REPO, &["main"], files.clone());
    let cache = scratch_dir("layout");
    let mut events = Recorder::default();
    let client = Hub::new(&hub.endpoint(), None).unwrap();
    let pulled = pull(&client, &cache, REPO, &mut events).unwrap();

    let folder = repo_folder(&cache);
    assert_eq!((pulled.commit.as_str(), pulled.files), (commit.as_str(), 3));
    assert_eq!(pulled.snapshot, folder.join("snapshots").join(&commit));
    assert_eq!(
        std::fs::read_to_string(folder.join("refs/main")).unwrap(),
        commit
    );
    for file in &files[..3] {
        let link = pulled.snapshot.join(&file.path);
        let target = std::fs::read_link(&link).unwrap();
        assert_eq!(
            target,
            Path::new("../../blobs").join(file.digest().hex()),
            "{} links to its blob, named by its digest",
            file.path
        );
        assert_eq!(std::fs::read(&link).unwrap(), &file.bytes[..]);
    }
    assert!(!pulled.snapshot.join("pytorch_model.bin").exists());
    assert_eq!(resolves(&cache, REPO), Some(pulled.snapshot.clone()));

    // Progress: the plan, bytes growing to each size, each file finished.
    let sizes: Vec<(String, u64, bool)> = events
        .planned
        .iter()
        .map(|p| (p.path.clone(), p.size, p.cached))
        .collect();
    assert_eq!(
        sizes,
        [
            ("config.json".to_string(), 22, false),
            ("model.safetensors".to_string(), 3 << 20, false),
            ("tokenizer.json".to_string(), 17, false),
        ]
    );
    let weights_done: Vec<u64> = events
        .advanced
        .iter()
        .filter(|(p, _)| p == "model.safetensors")
        .map(|(_, d)| *d)
        .collect();
    assert!(weights_done.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(weights_done.last(), Some(&(3 << 20)));
    assert_eq!(
        events.finished,
        ["config.json", "model.safetensors", "tokenizer.json"]
    );

    // Pulling again moves no bytes.
    let before = hub.requests().len();
    let mut again = Recorder::default();
    pull(&client, &cache, REPO, &mut again).unwrap();
    assert!(again.planned.iter().all(|p| p.cached));
    let new: Vec<String> = hub.requests()[before..]
        .iter()
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(new, [format!("/api/models/{REPO}/revision/main")]);
}

#[test]
fn a_broken_transfer_resumes_where_it_stopped() {
    let hub = MockHub::start();
    let files = tiny_model();
    hub.add_repo(REPO, &["main"], files.clone());
    // Every answer for the weights breaks off after 1 MiB: the pull resumes three times.
    hub.set_fault("model.safetensors", Fault::CutAfter(1 << 20));
    let cache = scratch_dir("broken");
    let client = Hub::new(&hub.endpoint(), None).unwrap();
    let pulled = pull_quietly(&client, &cache, &format!("{REPO}/model.safetensors")).unwrap();
    let ranges = hub.lfs_ranges();
    assert_eq!(
        ranges,
        [
            None,
            Some("bytes=1048576-".into()),
            Some("bytes=2097152-".into())
        ]
    );
    let bytes = std::fs::read(pulled.snapshot.join("model.safetensors")).unwrap();
    assert!(bytes == files[1].bytes[..]);
}

#[test]
fn a_killed_pull_leaves_a_partial_file_the_next_pull_resumes() {
    let hub = MockHub::start();
    let files = tiny_model();
    hub.add_repo(REPO, &["main"], files.clone());
    let cache = scratch_dir("resume");
    // What a pull killed after 1.5 MB leaves: the bytes so far beside the blob's name.
    let etag = files[1].digest().hex().to_string();
    let blobs = repo_folder(&cache).join("blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    let kept = 1_500_000;
    std::fs::write(
        blobs.join(format!("{etag}.incomplete")),
        &files[1].bytes[..kept],
    )
    .unwrap();

    let client = Hub::new(&hub.endpoint(), None).unwrap();
    let mut events = Recorder::default();
    let pulled = pull(&client, &cache, REPO, &mut events).unwrap();
    let weight_requests = hub.lfs_ranges();
    assert_eq!(weight_requests, [Some(format!("bytes={kept}-"))]);
    let first = events
        .advanced
        .iter()
        .find(|(p, _)| p == "model.safetensors");
    assert_eq!(
        first.map(|(_, d)| *d),
        Some(kept as u64),
        "progress starts at the bytes kept"
    );
    assert!(
        std::fs::read(pulled.snapshot.join("model.safetensors")).unwrap() == files[1].bytes[..]
    );
    assert!(!blobs.join(format!("{etag}.incomplete")).exists());
}

#[test]
fn a_digest_mismatch_is_an_error_and_leaves_nothing() {
    let hub = MockHub::start();
    let files = tiny_model();
    hub.add_repo(REPO, &["main"], files.clone());
    hub.set_fault("model.safetensors", Fault::Corrupt);
    let cache = scratch_dir("mismatch");
    let client = Hub::new(&hub.endpoint(), None).unwrap();
    let err = pull_quietly(&client, &cache, REPO).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, HubError::Mismatch { .. }), "{message}");
    assert!(
        message.starts_with("model.safetensors: sha256 mismatch")
            && message.contains(files[1].digest().hex()),
        "{message}"
    );
    let folder = repo_folder(&cache);
    let blobs: Vec<String> = std::fs::read_dir(folder.join("blobs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !blobs.iter().any(|b| b.starts_with(files[1].digest().hex())),
        "no blob and no partial file of the weights: {blobs:?}"
    );
    assert!(
        !folder.join("refs/main").exists(),
        "the name does not resolve to the broken pull"
    );
    assert_eq!(resolves(&cache, REPO), None);

    // A good transfer then completes the pull.
    hub.clear_faults();
    let pulled = pull_quietly(&client, &cache, REPO).unwrap();
    assert!(
        std::fs::read(pulled.snapshot.join("model.safetensors")).unwrap() == files[1].bytes[..]
    );
}

#[test]
fn gated_repositories_need_the_token() {
    let hub = MockHub::start();
    hub.add_repo(REPO, &["main", "v1"], tiny_model());
    hub.require_token("hf_secret");
    let cache = scratch_dir("token");
    let anonymous = Hub::new(&hub.endpoint(), None).unwrap();
    let err = pull_quietly(&anonymous, &cache, REPO)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("HTTP 401") && err.contains("HF_TOKEN"),
        "{err}"
    );

    let client = Hub::new(&hub.endpoint(), Some("hf_secret".into())).unwrap();
    let pulled = pull_quietly(&client, &cache, &format!("{REPO}@v1")).unwrap();
    assert!(hub
        .requests()
        .iter()
        .filter(|r| r.path.contains("/resolve/"))
        .all(|r| r.authorization.as_deref() == Some("Bearer hf_secret")));
    assert_eq!(
        std::fs::read_to_string(repo_folder(&cache).join("refs/v1")).unwrap(),
        pulled.commit
    );
    assert!(!repo_folder(&cache).join("refs/main").exists());
    assert_eq!(
        resolves(&cache, &format!("{REPO}@v1")),
        Some(pulled.snapshot)
    );
}

#[test]
fn unknown_repositories_and_names_are_clear_errors() {
    let hub = MockHub::start();
    hub.add_repo(REPO, &["main"], tiny_model());
    let cache = scratch_dir("unknown");
    let client = Hub::new(&hub.endpoint(), None).unwrap();
    let missing = pull_quietly(&client, &cache, "test-org/nope").unwrap_err();
    assert!(
        missing.to_string().contains("HTTP 404 (no such repository"),
        "{missing}"
    );
    let no_file = pull_quietly(&client, &cache, &format!("{REPO}/nope.gguf")).unwrap_err();
    assert!(
        no_file.to_string().contains("no such file or folder"),
        "{no_file}"
    );
    let bad = pull_quietly(&client, &cache, "not-a-repo").unwrap_err();
    assert!(
        bad.to_string().contains("ORG/NAME[@REVISION][/FILE]"),
        "{bad}"
    );
    assert!(Hub::new("ftp://example.com", None).is_err());
}

#[test]
fn git_files_without_ids_in_the_answer_take_them_from_their_headers() {
    let hub = MockHub::start();
    let files = tiny_model();
    hub.add_repo(REPO, &["main"], files.clone());
    hub.omit_blob_ids();
    let cache = scratch_dir("etags");
    let client = Hub::new(&hub.endpoint(), None).unwrap();
    let pulled = pull_quietly(&client, &cache, REPO).unwrap();
    for file in [&files[0], &files[2]] {
        let link = std::fs::read_link(pulled.snapshot.join(&file.path)).unwrap();
        assert_eq!(link, Path::new("../../blobs").join(file.digest().hex()));
        assert!(std::fs::read(pulled.snapshot.join(&file.path)).unwrap() == file.bytes[..]);
    }
}
