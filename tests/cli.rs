//! The `sdxl` command line: listings (snapshotted as a human reads them), JSON output, and
//! clear errors with a non-zero exit code.

mod common;

use common::{sdxl, stderr, stdout, temp_file};

fn listing(command: &str) -> String {
    let output = sdxl(&[command, "list"], &[]);
    assert!(
        output.status.success(),
        "sdxl {command} list failed: {}",
        stderr(&output)
    );
    stdout(&output)
}

fn json_listing(command: &str) -> Vec<serde_json::Value> {
    let output = sdxl(&[command, "list", "--json"], &[]);
    assert!(
        output.status.success(),
        "sdxl {command} list --json failed: {}",
        stderr(&output)
    );
    serde_json::from_slice(&output.stdout).expect("stdout is a JSON array")
}

#[test]
fn scheduler_table() {
    insta::assert_snapshot!(listing("schedulers"));
}

#[test]
fn sampler_table() {
    insta::assert_snapshot!(listing("samplers"));
}

#[test]
fn schedule_table() {
    insta::assert_snapshot!(listing("schedules"));
}

#[test]
fn model_table() {
    insta::assert_snapshot!(listing("models"));
}

#[test]
fn json_listings_carry_name_label_aliases_description_and_parameters() {
    let samplers = json_listing("samplers");
    let euler_a = samplers
        .iter()
        .find(|s| s["name"] == "euler_ancestral")
        .expect("euler_ancestral listed");
    assert_eq!(euler_a["label"], "Euler a");
    assert_eq!(euler_a["stochastic"], true);
    assert_eq!(euler_a["params"]["eta"], 1.0);
    assert!(
        euler_a["aliases"]
            .as_array()
            .unwrap()
            .contains(&"euler_a".into())
    );
    assert!(!euler_a["description"].as_str().unwrap().is_empty());

    let presets = json_listing("schedulers");
    let sde = presets
        .iter()
        .find(|p| p["name"] == "dpmpp_2m_sde_karras")
        .unwrap();
    assert_eq!(sde["class"], "DPMSolverMultistepScheduler");
    assert_eq!(sde["config"]["algorithm_type"], "sde-dpmsolver++");

    let schedules = json_listing("schedules");
    let karras = schedules.iter().find(|s| s["name"] == "karras").unwrap();
    assert_eq!(karras["kind"], "karras");
    assert_eq!(karras["rho"], 7.0);

    let models = json_listing("models");
    let base = models.iter().find(|m| m["id"] == "sdxl-base-1.0").unwrap();
    assert_eq!(base["repo"], "stabilityai/stable-diffusion-xl-base-1.0");
    assert!(
        base["files"]
            .as_array()
            .unwrap()
            .contains(&"unet/model.onnx_data".into())
    );
}

#[test]
fn user_file_from_the_environment_adds_a_preset() {
    let (_dir, path) = temp_file(
        "mine.toml",
        "[presets.mine]\nsampler = \"euler\"\nschedule = \"beta\"\n",
    );
    let output = sdxl(
        &["schedulers", "list"],
        &[("SDXL_SCHEDULERS_TOML", path.to_str().unwrap())],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("sampler euler + schedule beta"));
}

#[test]
fn malformed_user_file_fails_with_one_located_paragraph() {
    let (_dir, path) = temp_file(
        "bad.toml",
        "[presets.mine]\nsampler = \"eulr\"\nschedule = \"beta\"\n",
    );
    let output = sdxl(
        &[
            "--schedulers-toml",
            path.to_str().unwrap(),
            "schedulers",
            "list",
        ],
        &[],
    );
    assert!(!output.status.success());
    let err = stderr(&output);
    assert!(err.contains("bad.toml:2:11"), "{err}");
    assert!(err.contains("did you mean \"euler\""), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn missing_ort_dylib_path_is_a_clear_error_not_a_panic() {
    let output = sdxl(
        &["info"],
        &[("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")],
    );
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(
        err.starts_with("error: ORT_DYLIB_PATH is set to /nonexistent/libonnxruntime.so"),
        "{err}"
    );
    assert!(
        err.contains("onnxruntime==1.32.0"),
        "says how to fix it: {err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "one paragraph: {err}");
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
}

#[test]
fn no_library_anywhere_is_a_clear_error_listing_the_places_searched() {
    let empty_cache = tempfile::tempdir().unwrap();
    let output = sdxl(
        &["info"],
        &[
            ("ORT_DYLIB_PATH", ""),
            (
                "SDXL_BACKEND_CACHE_DIR",
                empty_cache.path().to_str().unwrap(),
            ),
        ],
    );
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(err.contains("ONNX Runtime library not found"), "{err}");
    assert!(
        err.contains(empty_cache.path().to_str().unwrap()),
        "names the cache it searched: {err}"
    );
    assert!(err.contains("next to the executable"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn generate_writes_a_png_with_infotext_and_latents() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tiny.png");
    let latents = dir.path().join("final.npy");
    let output = sdxl(
        &[
            "generate",
            "--model",
            "tiny-sdxl",
            "--prompt",
            "a photo of an astronaut riding a horse",
            "--seed",
            "42",
            "--out",
            out.to_str().unwrap(),
            "--output-latents",
            latents.to_str().unwrap(),
            "--json",
        ],
        &[],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let result: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(result["parameters"]["seed"], 42);
    assert_eq!(result["parameters"]["evaluations"], 8);
    assert_eq!(result["images"][0]["seed"], 42);
    assert!(result["timings"]["inside_ort"].as_f64().unwrap() > 0.0);
    let png = std::fs::read(&out).unwrap();
    let infotext = sdxl_backend::output::read_png_parameters(&png).expect("parameters chunk");
    let parsed = sdxl_backend::output::Infotext::parse(&infotext);
    assert_eq!(parsed.prompt, "a photo of an astronaut riding a horse");
    assert_eq!(parsed.field("Seed"), Some("42"));
    assert_eq!(parsed.field("Sampler"), Some("Euler"));
    assert_eq!(parsed.field("Size"), Some("64x64"));
    // Same seed, prompt and settings as diffusers' reference case: the same pixels.
    let reference =
        std::fs::read(common::fixture("pipeline_refs/t2i_euler_seeded/image.png")).unwrap();
    let ours = sdxl_backend::pipeline::RgbImage::from_png(&png).unwrap();
    let theirs = sdxl_backend::pipeline::RgbImage::from_png(&reference).unwrap();
    let worst = ours
        .pixels
        .iter()
        .zip(&theirs.pixels)
        .map(|(a, b)| a.abs_diff(*b))
        .max()
        .unwrap();
    assert!(worst <= 1, "differs from diffusers by {worst} levels");
    let final_latents = sdxl_backend::npy::read_f32(&latents).unwrap();
    assert_eq!(final_latents.shape(), &[1, 4, 8, 8]);
}

#[test]
fn generate_with_an_unknown_model_suggests_the_nearest_id() {
    let output = sdxl(&["generate", "--model", "tiny-sdx", "--prompt", "x"], &[]);
    assert!(!output.status.success());
    let err = stderr(&output);
    assert!(
        err.contains("unknown model \"tiny-sdx\"; did you mean \"tiny-sdxl\"?"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn generate_to_an_unwritable_path_fails_without_partial_files() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir").join("out.png");
    let output = sdxl(
        &[
            "generate",
            "--model",
            "tiny-sdxl",
            "--prompt",
            "x",
            "--steps",
            "1",
            "--out",
            missing.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(
        err.contains("cannot write") && err.contains("no-such-dir/out.png"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing left behind"
    );
}
