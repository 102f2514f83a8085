//! Reliability: every bad input of RELIABILITY.md's table gets a typed, readable error (never a
//! panic), nothing is lost, and the backend survives cancellation, unloads and concurrency.

mod common;

use std::path::Path;
use std::sync::Arc;

use sdxl_backend::backend::{GenerateOptions, ImageInput};
use sdxl_backend::runtime::{DevicePreference, SessionOptions};
use sdxl_backend::{
    BackendConfig, CancellationToken, Error, GenerateRequest, Registries, SdxlBackend,
};

fn cpu() -> SessionOptions {
    SessionOptions {
        device: DevicePreference::Cpu,
        intra_threads: Some(1),
        ..Default::default()
    }
}

fn backend() -> SdxlBackend {
    let backend = SdxlBackend::new(BackendConfig::default()).unwrap();
    backend.init_backend("tiny-sdxl", cpu()).unwrap();
    backend
}

fn request() -> GenerateRequest {
    GenerateRequest {
        prompt: "a red bicycle".into(),
        seed: Some(1),
        steps: Some(2),
        ..Default::default()
    }
}

/// The error of a request that must fail, checked to be typed and to mention `needle`.
fn rejects(backend: &SdxlBackend, request: &GenerateRequest, needle: &str) -> Error {
    let error = backend
        .generate(request)
        .expect_err("the request must be rejected");
    let text = error.to_string();
    assert!(
        text.contains(needle),
        "error should mention {needle:?}: {text}"
    );
    error
}

/// A copy of the tiny model in a temp dir (files symlinked), with `edit` applied.
fn tiny_copy(edit: impl FnOnce(&Path)) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let source = common::fixture("tiny-sdxl");
    for entry in walk(&source) {
        let relative = entry.strip_prefix(&source).unwrap();
        let target = dir.path().join(relative);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(&entry, &target).unwrap();
    }
    edit(dir.path());
    dir
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path))
        } else {
            files.push(path)
        }
    }
    files
}

fn replace_file(root: &Path, relative: &str, bytes: &[u8]) {
    let path = root.join(relative);
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, bytes).unwrap();
}

// ---------------------------------------------------------------- config

#[test]
fn huge_registry_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("schedulers.toml");
    let entry = "[presets.p{i}]\nsampler = \"euler\"\nschedule = \"karras\"\n";
    let text: String = (0..80_000)
        .map(|i| entry.replace("{i}", &i.to_string()))
        .collect();
    std::fs::write(&path, text).unwrap();
    let error = Registries::load(Some(&path), None).unwrap_err().to_string();
    assert!(error.contains("limited to"), "{error}");
}

// ---------------------------------------------------------------- requests

#[test]
fn unknown_names_list_the_valid_ones_and_suggest() {
    let backend = backend();
    let mut r = request();
    r.sampler = Some("dpmpp2m".into());
    rejects(&backend, &r, "did you mean \"dpmpp_2m\"");
    r.sampler = Some("euler".into());
    r.schedule = Some("karas".into());
    rejects(&backend, &r, "did you mean \"karras\"");
    let mut r = request();
    r.scheduler = Some("nope".into());
    rejects(&backend, &r, "valid: ddim, ddpm");
}

#[test]
fn steps_must_be_between_1_and_1000() {
    let backend = backend();
    for steps in [0, 100_000] {
        let mut r = request();
        r.steps = Some(steps);
        rejects(&backend, &r, "`steps`");
    }
}

#[test]
fn guidance_must_be_finite_and_non_negative() {
    let backend = backend();
    for guidance in [f64::NAN, f64::INFINITY, -1.0] {
        let mut r = request();
        r.guidance_scale = Some(guidance);
        rejects(&backend, &r, "`guidance_scale`");
    }
    let mut r = request();
    r.guidance_rescale = Some(1.5);
    rejects(&backend, &r, "`guidance_rescale`");
}

#[test]
fn sizes_are_checked_before_allocating() {
    let backend = backend();
    let mut r = request();
    r.width = Some(65);
    rejects(&backend, &r, "multiple of 8");
    r.width = Some(0);
    rejects(&backend, &r, "`width`");
    r.width = Some(4_000_000);
    r.height = Some(4_000_000);
    rejects(&backend, &r, "over the budget");
}

#[test]
fn strength_is_checked() {
    let backend = backend();
    let png = backend.generate(&request()).unwrap().images[0].png.clone();
    for (strength, needle) in [
        (0.0, "(0, 1]"),
        (1.5, "(0, 1]"),
        (0.01, "no denoising step would run"),
    ] {
        let mut r = request();
        r.init_image = Some(ImageInput::Bytes(png.clone()));
        r.strength = Some(strength);
        rejects(&backend, &r, needle);
    }
}

#[test]
fn batch_size_zero_is_rejected() {
    let backend = backend();
    let mut r = request();
    r.batch_size = Some(0);
    rejects(&backend, &r, "`batch_size`");
}

#[test]
fn empty_and_huge_prompts_work_with_a_truncation_warning() {
    let backend = backend();
    let mut r = request();
    r.prompt = String::new();
    assert!(backend.generate(&r).is_ok());
    r.prompt = "word ".repeat(2_000);
    let result = backend.generate(&r).unwrap();
    assert!(
        result.warnings.iter().any(|w| w.contains("was cut")),
        "{:?}",
        result.warnings
    );
}

#[test]
fn control_characters_and_invalid_utf8_are_rejected() {
    let backend = backend();
    let mut r = request();
    r.prompt = "a cat\u{0}\u{7}".into();
    rejects(&backend, &r, "control characters");
    let bytes = b"{\"prompt\": \"caf\xe9\"}";
    let error = serde_json::from_slice::<GenerateRequest>(bytes)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("invalid unicode code point at line 1 column 16"),
        "{error}"
    );
}

#[test]
fn init_image_variants_are_converted_resized_or_rejected() {
    let backend = backend();
    let with_image = |bytes: Vec<u8>| {
        let mut r = request();
        r.init_image = Some(ImageInput::Bytes(bytes));
        r.strength = Some(0.6);
        r
    };
    rejects(
        &backend,
        &with_image(b"not an image at all".to_vec()),
        "not a readable image",
    );
    let png = backend.generate(&request()).unwrap().images[0].png.clone();
    rejects(
        &backend,
        &with_image(png[..png.len() / 2].to_vec()),
        "not a readable image",
    );
    let encode = |image: image::DynamicImage| {
        let mut bytes = std::io::Cursor::new(Vec::new());
        image.write_to(&mut bytes, image::ImageFormat::Png).unwrap();
        bytes.into_inner()
    };
    let cases = [
        (image::DynamicImage::new_luma8(64, 64), "converted from L8"),
        (
            image::DynamicImage::new_rgba8(64, 64),
            "converted from Rgba8",
        ),
        (
            image::DynamicImage::new_rgb16(64, 64),
            "converted from Rgb16",
        ),
        (
            image::DynamicImage::new_rgb8(80, 48),
            "resized from 80x48 to 64x64",
        ),
    ];
    for (image, warning) in cases {
        let mut r = with_image(encode(image));
        r.width = Some(64);
        r.height = Some(64);
        let result = backend.generate(&r).unwrap();
        assert!(
            result.warnings.iter().any(|w| w.contains(warning)),
            "{warning}: {:?}",
            result.warnings
        );
    }
    let mut r = request();
    r.init_image = Some(ImageInput::Base64("%%% not base64".into()));
    rejects(&backend, &r, "invalid base64");
}

// ---------------------------------------------------------------- models

fn load_error(dir: &Path) -> String {
    let backend = SdxlBackend::new(BackendConfig::default()).unwrap();
    backend
        .init_backend(dir.to_str().unwrap(), cpu())
        .expect_err("the model must be rejected")
        .to_string()
}

#[test]
fn missing_component_names_the_file() {
    let dir = tiny_copy(|root| std::fs::remove_file(root.join("vae_decoder/model.onnx")).unwrap());
    let error = load_error(dir.path());
    assert!(error.contains("vae_decoder/model.onnx"), "{error}");
}

#[test]
fn corrupt_or_truncated_graph_names_the_file() {
    let original = std::fs::read(common::fixture("tiny-sdxl/unet/model.onnx")).unwrap();
    for bytes in [original[..original.len() / 3].to_vec(), b"garbage".to_vec()] {
        let dir = tiny_copy(|root| replace_file(root, "unet/model.onnx", &bytes));
        let error = load_error(dir.path());
        assert!(error.contains("unet/model.onnx"), "{error}");
    }
}

#[test]
fn sd15_unet_is_rejected_with_a_clear_message() {
    let stub = std::fs::read(common::fixture("sd15-unet-stub/model.onnx")).unwrap();
    let dir = tiny_copy(|root| replace_file(root, "unet/model.onnx", &stub));
    let error = load_error(dir.path());
    assert!(
        error.contains("unet/model.onnx") && error.contains("SD 1.x/2.x UNet, not SDXL"),
        "{error}"
    );
}

#[test]
fn malformed_or_incomplete_configs_are_reported() {
    let dir = tiny_copy(|root| replace_file(root, "model_index.json", b"{ not json"));
    let error = load_error(dir.path());
    assert!(error.contains("model_index.json"), "{error}");

    let config =
        std::fs::read_to_string(common::fixture("tiny-sdxl/vae_decoder/config.json")).unwrap();
    let without: serde_json::Value = {
        let mut value: serde_json::Value = serde_json::from_str(&config).unwrap();
        value.as_object_mut().unwrap().remove("scaling_factor");
        value
    };
    let dir = tiny_copy(|root| {
        replace_file(
            root,
            "vae_decoder/config.json",
            without.to_string().as_bytes(),
        )
    });
    let backend = SdxlBackend::new(BackendConfig::default()).unwrap();
    backend
        .init_backend(dir.path().to_str().unwrap(), cpu())
        .unwrap();
    let result = backend.generate(&request()).unwrap();
    assert!(
        result
            .warnings
            .iter()
            .any(|w| w.contains("no `scaling_factor`")),
        "{:?}",
        result.warnings
    );
}

// ---------------------------------------------------------------- runtime

#[test]
fn nan_latents_fail_clearly() {
    let backend = backend();
    let options = GenerateOptions {
        initial_latents: Some(ndarray::ArrayD::from_elem(
            ndarray::IxDyn(&[1, 4, 8, 8]),
            f32::NAN,
        )),
        return_latents: false,
    };
    let error = backend
        .generate_advanced(&request(), &options, &mut |_| {}, &CancellationToken::new())
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("non-finite values in the latents"),
        "{error}"
    );
    assert!(backend.generate(&request()).is_ok(), "usable afterwards");
}

#[test]
fn cancellation_at_every_step() {
    let backend = backend();
    let mut r = request();
    r.steps = Some(4);
    for cancel_at in 1..=4 {
        let token = CancellationToken::new();
        let mut last = 0;
        let outcome = backend.generate_with(
            &r,
            &mut |p| {
                last = p.step;
                if p.step == cancel_at {
                    token.cancel();
                }
            },
            &token,
        );
        let error = outcome.expect_err("cancelled");
        assert!(error.is_cancelled(), "{error}");
        assert_eq!(last, cancel_at);
    }
    assert!(backend.generate(&r).is_ok());
}

#[test]
fn unload_during_a_generation_keeps_its_sessions_alive() {
    let backend = Arc::new(backend());
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let worker = {
        let backend = Arc::clone(&backend);
        std::thread::spawn(move || {
            let mut r = request();
            r.steps = Some(12);
            let mut sent = false;
            backend.generate_with(
                &r,
                &mut |_| {
                    if !sent {
                        sent = true;
                        started_tx.send(()).unwrap();
                        std::thread::sleep(std::time::Duration::from_millis(50));
                    }
                },
                &CancellationToken::new(),
            )
        })
    };
    started_rx.recv().unwrap();
    backend.unload_backend();
    let finished = worker.join().unwrap();
    assert!(
        finished.is_ok(),
        "the running request completes on the sessions it holds: {finished:?}"
    );
    assert!(matches!(
        backend.generate(&request()),
        Err(Error::NotLoaded)
    ));
}

#[test]
fn concurrency_with_a_canceller_and_a_reloader() {
    let backend = Arc::new(backend());
    let twin = |seed: i64| {
        let mut r = request();
        r.seed = Some(seed);
        r
    };
    let singles: Vec<Vec<u8>> = (0..24)
        .map(|s| backend.generate(&twin(s)).unwrap().images[0].png.clone())
        .collect();
    let mut handles = Vec::new();
    for thread in 0..8 {
        let backend = Arc::clone(&backend);
        handles.push(std::thread::spawn(move || {
            (0..3)
                .map(|k| {
                    let seed = thread * 3 + k;
                    (
                        seed,
                        backend
                            .generate(&twin(seed))
                            .map(|r| r.images[0].png.clone()),
                    )
                })
                .collect::<Vec<_>>()
        }));
    }
    let canceller = {
        let backend = Arc::clone(&backend);
        std::thread::spawn(move || {
            for _ in 0..3 {
                let token = CancellationToken::new();
                token.cancel();
                let outcome = backend.generate_with(&request(), &mut |_| {}, &token);
                assert!(outcome.is_err());
            }
        })
    };
    let reloader = {
        let backend = Arc::clone(&backend);
        std::thread::spawn(move || {
            for _ in 0..2 {
                backend.unload_backend();
                std::thread::sleep(std::time::Duration::from_millis(20));
                backend.init_backend("tiny-sdxl", cpu()).unwrap();
            }
        })
    };
    canceller.join().expect("no panic in the canceller");
    reloader.join().expect("no panic in the reloader");
    let mut completed = 0;
    for handle in handles {
        for (seed, outcome) in handle.join().expect("no panic in a worker") {
            match outcome {
                Ok(png) => {
                    completed += 1;
                    assert_eq!(
                        png, singles[seed as usize],
                        "seed {seed} equals its single-threaded twin"
                    );
                }
                Err(error) => assert!(
                    matches!(error, Error::NotLoaded),
                    "only NotLoaded while reloading: {error}"
                ),
            }
        }
    }
    assert!(completed > 0);
}
