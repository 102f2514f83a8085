//! Model discovery and loading against a fake hub on 127.0.0.1: download into a temporary HF
//! cache and generate from it, resumed and restarted downloads, 404s, offline mode, a cache laid
//! out by Python's huggingface_hub, external-data graphs and incomplete checkpoints.
//!
//! Nothing here reads or writes the real user cache: every test passes its cache directory
//! explicitly ([`HubSettings`]) or, for the `sdxl` binary, sets `HF_HOME` and friends on the
//! child process only, so the tests need no lock around the process environment.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::mock_hub::{Fault, MockHub, MockRepo, etag_of, sha256_hex};
use common::{fixture, stderr, stdout};
use sdxl_backend::model_loader::{
    DownloadError, DownloadEvent, GraphCache, HubSettings, ModelLoaderError, ModelLocations,
    ModelLookupError, RootKind, SearchRoot, directory_details, download_model,
    find_local_checkpoint, load_pipeline, load_pipeline_cached, resolve_model,
};
use sdxl_backend::pipeline::{GenerateParams, SchedulerChoice, SdxlPipeline};
use sdxl_backend::registry::{ModelEntry, Registries};
use sdxl_backend::rng::TorchCpuRng;
use sdxl_backend::runtime::{DevicePreference, SessionOptions};

const REPO: &str = "mock-org/tiny-sdxl-onnx";
const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const SUBFOLDER: &str = "onnx";
const ID: &str = "mock-tiny";

/// The files of the tiny model's entry (as the built-in `tiny-sdxl` lists them).
fn tiny_files() -> Vec<String> {
    Registries::load(None, None)
        .unwrap()
        .models
        .model("tiny-sdxl")
        .unwrap()
        .files
        .clone()
}

/// A user models.toml with `mock-tiny` (the fake repo, layout under `onnx/`) and
/// `mock-missing` (a repo the hub does not have).
fn user_models_toml(dir: &Path) -> PathBuf {
    let files: Vec<String> = tiny_files().iter().map(|f| format!("\"{f}\"")).collect();
    let files = files.join(", ");
    let text = format!(
        r#"
[models.{ID}]
label = "Tiny SDXL from the mock hub"
kind = "base"
repo = "{REPO}"
subfolder = "{SUBFOLDER}"
files = [{files}]
[models.{ID}.defaults]
width = 64
height = 64
steps = 2
guidance_scale = 5.0

[models.mock-missing]
kind = "base"
repo = "mock-org/does-not-exist"
files = [{files}]
[models.mock-missing.defaults]
width = 64
height = 64
steps = 2
guidance_scale = 5.0
"#
    );
    let path = dir.join("models.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A temporary home for one test: the user models file, an HF home and its hub cache.
struct Sandbox {
    dir: tempfile::TempDir,
    registries: Registries,
}

impl Sandbox {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let toml = user_models_toml(dir.path());
        let registries = Registries::load(None, Some(&toml)).unwrap();
        Self { dir, registries }
    }

    fn hf_home(&self) -> PathBuf {
        self.dir.path().join("hf-home")
    }

    fn cache(&self) -> PathBuf {
        self.hf_home().join("hub")
    }

    fn toml(&self) -> PathBuf {
        self.dir.path().join("models.toml")
    }

    fn entry(&self, id: &str) -> ModelEntry {
        self.registries.models.model(id).unwrap().clone()
    }

    fn hub(&self, hub: &MockHub) -> HubSettings {
        HubSettings {
            endpoint: hub.endpoint(),
            token: Some("hf_mock_token".to_string()),
            max_retries: 0,
            ..HubSettings::new(self.cache())
        }
    }

    /// Runs `sdxl` with this sandbox's environment (and the mock's endpoint when given).
    fn sdxl(&self, args: &[&str], hub: Option<&MockHub>, extra: &[(&str, &str)]) -> Output {
        self.command(args, hub, extra)
            .output()
            .expect("the sdxl binary runs")
    }

    fn command(&self, args: &[&str], hub: Option<&MockHub>, extra: &[(&str, &str)]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_sdxl"));
        command.args(args).current_dir(self.dir.path());
        for var in [
            "HF_HUB_CACHE",
            "HF_HUB_OFFLINE",
            "HF_TOKEN",
            "HF_TOKEN_PATH",
            "SDXL_MODELS_DIR",
            "SDXL_SCHEDULERS_TOML",
            "HTTP_PROXY",
            "http_proxy",
            "HTTPS_PROXY",
            "https_proxy",
            "ALL_PROXY",
            "all_proxy",
        ] {
            command.env_remove(var);
        }
        command
            .env("HF_HOME", self.hf_home())
            .env("XDG_DATA_HOME", self.dir.path().join("data"))
            .env("SDXL_MODELS_TOML", self.toml())
            .env(
                "HF_ENDPOINT",
                hub.map_or_else(|| "http://127.0.0.1:9".to_string(), MockHub::endpoint),
            );
        for (key, value) in extra {
            command.env(key, value);
        }
        command
    }
}

/// The fake repo: the tiny model under `onnx/`, plus files the entry does not list.
fn mock_repo() -> MockRepo {
    MockRepo::new(REPO, COMMIT)
        .with_dir(&fixture("tiny-sdxl"), SUBFOLDER)
        .with_file("README.md", b"# not needed\n")
        .with_file(
            "onnx/unet/diffusion_pytorch_model.safetensors",
            b"not needed",
        )
}

fn quiet(_: DownloadEvent<'_>) {}

/// Every listed file under `dir` has the fixture's bytes.
fn assert_same_as_fixture(dir: &Path) {
    for file in tiny_files() {
        let expected = std::fs::read(fixture("tiny-sdxl").join(&file)).unwrap();
        let actual = std::fs::read(dir.join(&file)).unwrap_or_default();
        assert!(
            actual == expected,
            "{file} differs from the fixture (sha256 {} vs {})",
            sha256_hex(&actual),
            sha256_hex(&expected)
        );
    }
}

/// A 1-step, 64x64 generation; returns the pixels.
fn generate_pixels(pipeline: &SdxlPipeline, registries: &Registries) -> Vec<u8> {
    let params = GenerateParams {
        prompt: "a photo of an astronaut riding a horse".to_string(),
        width: 64,
        height: 64,
        steps: 1,
        guidance_scale: 5.0,
        scheduler: SchedulerChoice::ModelDefault,
        ..Default::default()
    };
    let output = pipeline
        .generate(
            &params,
            &registries.schedulers,
            &mut TorchCpuRng::new(42),
            &mut |_| true,
            true,
        )
        .unwrap();
    assert_eq!(output.images.len(), 1);
    assert_eq!((output.images[0].width, output.images[0].height), (64, 64));
    output.images[0].pixels.clone()
}

#[test]
fn downloads_only_the_listed_files_into_the_hf_layout_and_generates_from_them() {
    let sandbox = Sandbox::new();
    let hub = MockHub::start(vec![mock_repo()]);
    let entry = sandbox.entry(ID);
    let settings = sandbox.hub(&hub);
    let locations = ModelLocations::hub_only(settings.clone());
    assert!(!locations.is_downloaded(&entry));

    let mut events = Vec::new();
    let report = download_model(&entry, &settings, &mut |e| events.push(format!("{e:?}"))).unwrap();
    let snapshot = sandbox
        .cache()
        .join("models--mock-org--tiny-sdxl-onnx/snapshots")
        .join(COMMIT);
    assert_eq!(report.commit, COMMIT);
    assert_eq!(report.dir, snapshot.join(SUBFOLDER));
    assert_eq!(report.fetched, entry.files);
    assert!(report.cached.is_empty());
    assert!(events.iter().any(|e| e.starts_with("Finished")));
    assert_same_as_fixture(&report.dir);

    // The layout huggingface_hub shares: refs/main, relative symlinks into blobs named by etag.
    let repo_dir = sandbox.cache().join("models--mock-org--tiny-sdxl-onnx");
    assert_eq!(
        std::fs::read_to_string(repo_dir.join("refs/main")).unwrap(),
        COMMIT
    );
    for file in ["unet/model.onnx", "model_index.json"] {
        let pointer = report.dir.join(file);
        let target = std::fs::read_link(&pointer).unwrap();
        assert!(target.is_relative(), "{file} -> {}", target.display());
        let bytes = std::fs::read(fixture("tiny-sdxl").join(file)).unwrap();
        let etag = etag_of(&format!("{SUBFOLDER}/{file}"), &bytes);
        assert_eq!(target.file_name().unwrap().to_str().unwrap(), etag);
        assert!(repo_dir.join("blobs").join(&etag).is_file());
    }
    let leftovers: Vec<_> = std::fs::read_dir(repo_dir.join("blobs"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".part"))
        .collect();
    assert!(leftovers.is_empty(), "partial files left: {leftovers:?}");

    // Only listed files were asked for, and with the token.
    assert!(hub.requests_for("README.md").is_empty());
    assert!(hub.requests_for("safetensors").is_empty());
    let resolves = hub.requests_for("/resolve/");
    assert!(!resolves.is_empty());
    assert!(
        resolves
            .iter()
            .all(|r| r.authorization.as_deref() == Some("Bearer hf_mock_token"))
    );

    assert_eq!(locations.find(&entry), Some(report.dir.clone()));
    let pipeline = load_pipeline(&report.dir, &SessionOptions::default()).unwrap();
    let from_cache = generate_pixels(&pipeline, &sandbox.registries);
    let bundled = SdxlPipeline::load(&fixture("tiny-sdxl"), &SessionOptions::default()).unwrap();
    assert_eq!(from_cache, generate_pixels(&bundled, &sandbox.registries));

    // A second run finds everything in the snapshot and sends no request.
    let before = hub.requests().len();
    let again = download_model(&entry, &settings, &mut quiet).unwrap();
    assert_eq!(again.cached, entry.files);
    assert!(again.fetched.is_empty());
    assert_eq!(hub.requests().len(), before);
}

#[test]
fn the_cli_downloads_lists_shows_and_generates_offline() {
    let sandbox = Sandbox::new();
    let hub = MockHub::start(vec![mock_repo()]);
    let output = sandbox.sdxl(&["models", "download", ID], Some(&hub), &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let dir = PathBuf::from(stdout(&output).trim());
    assert!(stderr(&output).contains("fetching"), "{}", stderr(&output));
    assert_same_as_fixture(&dir);

    let listed = sandbox.sdxl(&["models", "list", "--json"], None, &[]);
    assert!(listed.status.success(), "{}", stderr(&listed));
    let models: Vec<serde_json::Value> = serde_json::from_slice(&listed.stdout).unwrap();
    let mock = models.iter().find(|m| m["id"] == ID).unwrap();
    assert_eq!(mock["downloaded"], true);
    let missing = models.iter().find(|m| m["id"] == "mock-missing").unwrap();
    assert_eq!(missing["downloaded"], false);

    let shown = sandbox.sdxl(&["models", "show", ID, "--json"], None, &[]);
    assert!(shown.status.success(), "{}", stderr(&shown));
    let details: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    let keys: Vec<&String> = details.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["downloaded", "files", "id", "path", "total_bytes"]);
    assert_eq!(details["downloaded"], true);
    let unet = details["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "unet/model.onnx")
        .unwrap();
    assert_eq!(unet["component"], "unet");
    let unet_len = std::fs::metadata(fixture("tiny-sdxl/unet/model.onnx"))
        .unwrap()
        .len();
    assert_eq!(unet["bytes"], unet_len);

    let paths = sandbox.sdxl(&["models", "paths", "--json"], None, &[]);
    let roots: Vec<serde_json::Value> = serde_json::from_slice(&paths.stdout).unwrap();
    assert_eq!(roots.last().unwrap()["kind"], "hf cache");
    assert_eq!(
        roots.last().unwrap()["path"],
        sandbox.cache().display().to_string()
    );

    // Offline: the cache answers, no hub is reachable (HF_ENDPOINT is a closed port).
    let out = sandbox.dir.path().join("out.png");
    let generated = sandbox.sdxl(
        &[
            "generate",
            "--model",
            ID,
            "--prompt",
            "a red cube",
            "--steps",
            "1",
            "--seed",
            "1",
            "--out",
            out.to_str().unwrap(),
        ],
        None,
        &[("HF_HUB_OFFLINE", "1")],
    );
    assert!(generated.status.success(), "{}", stderr(&generated));
    assert!(out.is_file());
    let offline = sandbox.sdxl(
        &["models", "download", ID],
        None,
        &[("HF_HUB_OFFLINE", "1")],
    );
    assert!(offline.status.success(), "{}", stderr(&offline));
    assert_eq!(PathBuf::from(stdout(&offline).trim()), dir);
}

#[test]
fn a_transfer_cut_mid_body_leaves_only_a_part_file_and_the_next_run_resumes_it() {
    let sandbox = Sandbox::new();
    let hub = MockHub::start(vec![mock_repo()]);
    let entry = sandbox.entry(ID);
    let settings = sandbox.hub(&hub);
    let unet = std::fs::read(fixture("tiny-sdxl/unet/model.onnx")).unwrap();
    let half = unet.len() / 2;
    hub.fault("onnx/unet/model.onnx", Fault::CutAfter(half));

    let error = download_model(&entry, &settings, &mut quiet).unwrap_err();
    assert!(
        matches!(&error, DownloadError::Transfer { file, .. } if file == "onnx/unet/model.onnx"),
        "{error}"
    );
    assert!(error.to_string().contains("unet/model.onnx"), "{error}");
    let blobs = sandbox
        .cache()
        .join("models--mock-org--tiny-sdxl-onnx/blobs");
    let part = blobs.join(format!("{}.part", sha256_hex(&unet)));
    assert_eq!(std::fs::metadata(&part).unwrap().len(), half as u64);
    assert!(!blobs.join(sha256_hex(&unet)).exists());
    assert!(!ModelLocations::hub_only(settings.clone()).is_downloaded(&entry));

    let mut resumed_at = None;
    let report = download_model(&entry, &settings, &mut |event| {
        if let DownloadEvent::Started { file, done, .. } = event
            && file == "unet/model.onnx"
        {
            resumed_at = Some(done);
        }
    })
    .unwrap();
    assert_eq!(resumed_at, Some(half as u64));
    let ranges: Vec<_> = hub
        .requests_for("/cdn/")
        .into_iter()
        .filter_map(|r| r.range)
        .collect();
    assert!(
        ranges.contains(&format!("bytes={half}-")),
        "no resumed range request in {ranges:?}"
    );
    assert!(!part.exists());
    assert!(report.cached.iter().any(|f| f == "model_index.json"));
    assert_same_as_fixture(&report.dir);
}

#[test]
fn a_cut_transfer_is_resumed_within_one_call_when_retries_are_allowed() {
    let sandbox = Sandbox::new();
    let hub = MockHub::start(vec![mock_repo()]);
    let entry = sandbox.entry(ID);
    let settings = HubSettings {
        max_retries: 2,
        ..sandbox.hub(&hub)
    };
    let data = std::fs::read(fixture("tiny-sdxl/text_encoder_2/model.onnx")).unwrap();
    hub.fault(
        "onnx/text_encoder_2/model.onnx",
        Fault::CutAfter(data.len() / 3),
    );
    let report = download_model(&entry, &settings, &mut quiet).unwrap();
    assert_same_as_fixture(&report.dir);
}

#[test]
fn a_download_killed_half_way_restarts_with_correct_files() {
    let sandbox = Sandbox::new();
    let hub = MockHub::start(vec![mock_repo()]);
    let unet = std::fs::read(fixture("tiny-sdxl/unet/model.onnx")).unwrap();
    hub.fault("onnx/unet/model.onnx", Fault::StallAfter(unet.len() / 2));
    let mut child = sandbox
        .command(&["models", "download", ID], Some(&hub), &[])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let part = sandbox
        .cache()
        .join("models--mock-org--tiny-sdxl-onnx/blobs")
        .join(format!("{}.part", sha256_hex(&unet)));
    let started = Instant::now();
    while std::fs::metadata(&part).map_or(0, |m| m.len()) < (unet.len() / 2) as u64 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the download never reached the stalled file"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the download ended early"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let entry = sandbox.entry(ID);
    assert!(!ModelLocations::hub_only(sandbox.hub(&hub)).is_downloaded(&entry));

    let output = sandbox.sdxl(&["models", "download", ID], Some(&hub), &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stderr(&output).contains("resuming"), "{}", stderr(&output));
    assert_same_as_fixture(Path::new(stdout(&output).trim()));
}

#[test]
fn corrupt_bytes_are_removed_instead_of_being_taken_as_complete() {
    let sandbox = Sandbox::new();
    let hub = MockHub::start(vec![mock_repo()]);
    let entry = sandbox.entry(ID);
    let settings = sandbox.hub(&hub);
    hub.fault("onnx/vae_decoder/model.onnx", Fault::Corrupt);
    let error = download_model(&entry, &settings, &mut quiet).unwrap_err();
    assert!(
        matches!(&error, DownloadError::Integrity { file, .. } if file == "onnx/vae_decoder/model.onnx"),
        "{error}"
    );
    let locations = ModelLocations::hub_only(settings.clone());
    assert!(!locations.is_downloaded(&entry));
    let report = download_model(&entry, &settings, &mut quiet).unwrap();
    // The rest continues from the corrupt file; what came before it stays cached.
    assert_eq!(report.fetched[0], "vae_decoder/model.onnx");
    assert!(report.cached.iter().any(|f| f == "unet/model.onnx"));
    assert_same_as_fixture(&report.dir);
}

#[test]
fn a_404_names_the_missing_file() {
    let sandbox = Sandbox::new();
    let hub = MockHub::start(vec![
        mock_repo().without_file("onnx/vae_encoder/config.json"),
    ]);
    let entry = sandbox.entry(ID);
    let error = download_model(&entry, &sandbox.hub(&hub), &mut quiet).unwrap_err();
    assert!(
        matches!(&error, DownloadError::NotFound { file, .. } if file == "onnx/vae_encoder/config.json"),
        "{error}"
    );
    let message = error.to_string();
    assert!(
        message.contains("\"onnx/vae_encoder/config.json\""),
        "{message}"
    );
    assert!(message.contains("404"), "{message}");

    let output = sandbox.sdxl(&["models", "download", ID], Some(&hub), &[]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("onnx/vae_encoder/config.json"),
        "{}",
        stderr(&output)
    );

    let refused = download_model(
        &sandbox.entry("mock-missing"),
        &sandbox.hub(&hub),
        &mut quiet,
    )
    .unwrap_err();
    assert!(
        matches!(refused, DownloadError::Unauthorized { status: 401, .. }),
        "{refused}"
    );
    assert!(refused.to_string().contains("HF_TOKEN"), "{refused}");
}

#[test]
fn offline_mode_uses_a_complete_cache_and_lists_what_an_incomplete_one_lacks() {
    let sandbox = Sandbox::new();
    let hub = MockHub::start(vec![mock_repo()]);
    let entry = sandbox.entry(ID);
    let online = sandbox.hub(&hub);
    let report = download_model(&entry, &online, &mut quiet).unwrap();
    let requests = hub.requests().len();

    let offline = HubSettings {
        offline: true,
        endpoint: "http://127.0.0.1:9".to_string(),
        ..online
    };
    let cached = download_model(&entry, &offline, &mut quiet).unwrap();
    assert_eq!(cached.dir, report.dir);
    assert_eq!(cached.cached, entry.files);
    assert_eq!(
        hub.requests().len(),
        requests,
        "offline mode reached the hub"
    );

    for file in ["unet/model.onnx", "tokenizer_2/merges.txt"] {
        std::fs::remove_file(report.dir.join(file)).unwrap();
    }
    let error = download_model(&entry, &offline, &mut quiet).unwrap_err();
    match &error {
        DownloadError::Offline { missing, .. } => assert_eq!(
            missing,
            &["onnx/tokenizer_2/merges.txt", "onnx/unet/model.onnx"]
        ),
        other => panic!("expected an offline error, got {other}"),
    }
    assert!(error.to_string().contains("HF_HUB_OFFLINE"), "{error}");
    assert_eq!(hub.requests().len(), requests);

    let output = sandbox.sdxl(
        &["models", "download", ID],
        None,
        &[("HF_HUB_OFFLINE", "1")],
    );
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(message.contains("onnx/unet/model.onnx"), "{message}");
    assert!(message.contains("onnx/tokenizer_2/merges.txt"), "{message}");
}

/// Lays `files` out as huggingface_hub does: `blobs/<etag>`, `snapshots/<commit>/<path>` as
/// relative symlinks, `refs/main`.
fn python_layout(cache: &Path, repo: &str, commit: &str, files: &[(String, Vec<u8>)]) {
    let repo_dir = cache.join(format!("models--{}", repo.replace('/', "--")));
    std::fs::create_dir_all(repo_dir.join("blobs")).unwrap();
    std::fs::create_dir_all(repo_dir.join("refs")).unwrap();
    std::fs::write(repo_dir.join("refs/main"), commit).unwrap();
    for (path, bytes) in files {
        let etag = etag_of(path, bytes);
        std::fs::write(repo_dir.join("blobs").join(&etag), bytes).unwrap();
        let pointer = repo_dir.join("snapshots").join(commit).join(path);
        std::fs::create_dir_all(pointer.parent().unwrap()).unwrap();
        let depth = path.matches('/').count() + 2;
        let target = format!("{}blobs/{etag}", "../".repeat(depth));
        std::os::unix::fs::symlink(target, &pointer).unwrap();
    }
}

#[test]
fn a_cache_laid_out_by_huggingface_hub_is_found_and_loads() {
    let sandbox = Sandbox::new();
    let entry = sandbox.entry(ID);
    let files: Vec<(String, Vec<u8>)> = entry
        .files
        .iter()
        .map(|f| {
            (
                format!("{SUBFOLDER}/{f}"),
                std::fs::read(fixture("tiny-sdxl").join(f)).unwrap(),
            )
        })
        .collect();
    python_layout(&sandbox.cache(), REPO, COMMIT, &files);
    let roots = [SearchRoot::new(RootKind::HfCache, sandbox.cache())];
    let expected = sandbox
        .cache()
        .join("models--mock-org--tiny-sdxl-onnx/snapshots")
        .join(COMMIT)
        .join(SUBFOLDER);
    assert_eq!(
        find_local_checkpoint(&entry, &roots),
        Some(expected.clone())
    );
    assert_same_as_fixture(&expected);

    // A pinned commit needs no ref.
    let pinned = ModelEntry {
        revision: COMMIT.to_string(),
        ..entry.clone()
    };
    std::fs::remove_file(
        sandbox
            .cache()
            .join("models--mock-org--tiny-sdxl-onnx/refs/main"),
    )
    .unwrap();
    assert_eq!(
        find_local_checkpoint(&pinned, &roots),
        Some(expected.clone())
    );
    assert_eq!(find_local_checkpoint(&entry, &roots), None);

    let pipeline = load_pipeline(&expected, &SessionOptions::default()).unwrap();
    generate_pixels(&pipeline, &sandbox.registries);
}

/// tiny-sdxl with the UNet from `tiny-sdxl-external` (graph + `model.onnx_data`).
fn external_data_checkpoint(dir: &Path) {
    copy_dir(&fixture("tiny-sdxl"), dir);
    for file in ["model.onnx", "model.onnx_data"] {
        std::fs::copy(
            fixture("tiny-sdxl-external/unet").join(file),
            dir.join("unet").join(file),
        )
        .unwrap();
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[test]
fn a_unet_with_external_data_loads_and_both_files_are_counted() {
    let sandbox = Sandbox::new();
    let root = sandbox.dir.path().join("models");
    let dir = root.join(ID);
    external_data_checkpoint(&dir);
    let external = |name: &str| fixture("tiny-sdxl-external/unet").join(name);
    let data_len = std::fs::metadata(external("model.onnx_data"))
        .unwrap()
        .len();
    let graph_len = std::fs::metadata(external("model.onnx")).unwrap().len();

    // Found through a search root under the entry's id; the entry does not list the data file.
    let entry = sandbox.entry(ID);
    let locations = ModelLocations::new(
        vec![SearchRoot::new(RootKind::Explicit, &root)],
        HubSettings::new(sandbox.cache()),
    );
    assert_eq!(locations.find(&entry), Some(dir.clone()));
    for details in [locations.details(&entry), directory_details(&dir)] {
        let unet: Vec<_> = details
            .files
            .iter()
            .filter(|f| f.component == "unet" && f.path.contains("model.onnx"))
            .map(|f| (f.path.as_str(), f.bytes))
            .collect();
        assert!(
            unet.contains(&("unet/model.onnx", Some(graph_len))),
            "{unet:?}"
        );
        assert!(
            unet.contains(&("unet/model.onnx_data", Some(data_len))),
            "{unet:?}"
        );
        assert!(details.downloaded);
        assert!(details.total_bytes.unwrap() > data_len + graph_len);
    }

    // Same weights, so the same pixels as the single-file UNet.
    let pipeline = load_pipeline(&dir, &SessionOptions::default()).unwrap();
    let bundled = SdxlPipeline::load(&fixture("tiny-sdxl"), &SessionOptions::default()).unwrap();
    assert_eq!(
        generate_pixels(&pipeline, &sandbox.registries),
        generate_pixels(&bundled, &sandbox.registries)
    );
}

#[test]
fn a_checkpoint_missing_a_component_fails_naming_the_file_and_the_places_searched() {
    let sandbox = Sandbox::new();
    let root = sandbox.dir.path().join("models");
    let dir = root.join(ID);
    copy_dir(&fixture("tiny-sdxl"), &dir);
    std::fs::remove_file(dir.join("vae_decoder/model.onnx")).unwrap();
    let roots = [
        SearchRoot::new(RootKind::Explicit, &root),
        SearchRoot::new(RootKind::HfCache, sandbox.cache()),
    ];

    let error = resolve_model(ID, &sandbox.registries.models, &roots).unwrap_err();
    assert!(
        matches!(error, ModelLookupError::NotDownloaded { .. }),
        "{error}"
    );
    let message = error.to_string();
    for needle in [
        "vae_decoder/model.onnx".to_string(),
        root.display().to_string(),
        sandbox.cache().display().to_string(),
        format!("sdxl models download {ID}"),
    ] {
        assert!(message.contains(&needle), "{needle:?} not in: {message}");
    }

    let error = load_pipeline(&dir, &SessionOptions::default()).unwrap_err();
    assert!(
        matches!(&error, ModelLoaderError::IncompleteCheckpoint { missing, .. } if missing == &["vae_decoder/model.onnx"]),
        "{error}"
    );
    let message = error.to_string();
    assert!(message.contains("vae_decoder/model.onnx"), "{message}");
    assert!(message.contains(&dir.display().to_string()), "{message}");

    // The same directory given as --model.
    let error = resolve_model(dir.to_str().unwrap(), &sandbox.registries.models, &roots);
    assert!(
        error.is_ok(),
        "a layout with unet and model_index is a checkpoint dir"
    );
    std::fs::remove_file(dir.join("unet/model.onnx")).unwrap();
    let error = resolve_model(dir.to_str().unwrap(), &sandbox.registries.models, &roots)
        .unwrap_err()
        .to_string();
    assert!(error.contains("unet/model.onnx"), "{error}");
    assert!(error.contains("vae_decoder/model.onnx"), "{error}");
}

#[test]
fn the_built_in_hub_entries_list_their_external_data() {
    let registries = Registries::load(None, None).unwrap();
    for id in ["sdxl-base-1.0", "sdxl-turbo"] {
        let entry = registries.models.model(id).unwrap();
        assert_eq!(
            entry.subfolder, "",
            "{id} keeps its ONNX export at the repo root"
        );
        for file in ["unet/model.onnx_data", "text_encoder_2/model.onnx_data"] {
            assert!(entry.files.iter().any(|f| f == file), "{id} lacks {file}");
        }
    }
    // stabilityai's refiner repo has no ONNX files; the entry points at an Olive export whose
    // external data is named `model.onnx.data`.
    let refiner = registries.models.model("sdxl-refiner-1.0").unwrap();
    assert_ne!(
        refiner.repo.as_deref(),
        Some("stabilityai/stable-diffusion-xl-refiner-1.0")
    );
    assert!(refiner.files.iter().any(|f| f == "unet/model.onnx.data"));
}

#[test]
fn the_optimised_graph_cache_is_built_once_and_generates_the_same_image() {
    let sandbox = Sandbox::new();
    let cache = GraphCache::new(sandbox.dir.path().join("graphs"));
    let options = SessionOptions {
        device: DevicePreference::Cpu,
        ..Default::default()
    };
    let dir = sandbox.dir.path().join("external");
    external_data_checkpoint(&dir);
    let plain = load_pipeline(&dir, &options).unwrap();
    let expected = generate_pixels(&plain, &sandbox.registries);

    let cached = load_pipeline_cached(&dir, &options, &cache).unwrap();
    let entries: Vec<PathBuf> = std::fs::read_dir(cache.root())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let mirror = &entries[0];
    assert!(
        mirror.join("unet/model.onnx_data").is_file(),
        "external data kept external"
    );
    assert!(std::fs::read_link(mirror.join("model_index.json")).is_ok());
    let pixels = generate_pixels(&cached, &sandbox.registries);
    let worst = pixels
        .iter()
        .zip(&expected)
        .map(|(a, b)| a.abs_diff(*b))
        .max()
        .unwrap();
    assert!(worst <= 1, "optimised graphs changed pixels by {worst}");

    // A second load reuses the entry; a changed checkpoint gets a new one.
    load_pipeline_cached(&dir, &options, &cache).unwrap();
    assert_eq!(std::fs::read_dir(cache.root()).unwrap().count(), 1);
    std::fs::File::options()
        .write(true)
        .open(dir.join("unet/config.json"))
        .unwrap()
        .set_modified(std::time::SystemTime::now() + Duration::from_secs(10))
        .unwrap();
    load_pipeline_cached(&dir, &options, &cache).unwrap();
    assert_eq!(std::fs::read_dir(cache.root()).unwrap().count(), 2);
}
