//! `SdxlBackend` on the bundled tiny model: the init -> generate -> unload -> init cycle,
//! memory after unload, cancellation, concurrency, batch seeds and PNG metadata.

mod common;

use std::sync::Arc;

use sdxl_backend::output::{Infotext, read_png_parameters};
use sdxl_backend::runtime::{DevicePreference, SessionOptions};
use sdxl_backend::{BackendConfig, CancellationToken, Error, GenerateRequest, SdxlBackend};

fn cpu() -> SessionOptions {
    SessionOptions {
        device: DevicePreference::Cpu,
        intra_threads: Some(1),
        ..Default::default()
    }
}

fn loaded() -> SdxlBackend {
    let backend = SdxlBackend::new(BackendConfig::default()).unwrap();
    backend.init_backend("tiny-sdxl", cpu()).unwrap();
    backend
}

fn request(seed: i64) -> GenerateRequest {
    GenerateRequest {
        prompt: "a lighthouse at dusk".into(),
        seed: Some(seed),
        steps: Some(4),
        ..Default::default()
    }
}

#[test]
fn init_generate_unload_init_cycle() {
    let backend = loaded();
    let first = backend.generate(&request(7)).unwrap();
    assert_eq!(backend.status().model.as_deref(), Some("tiny-sdxl"));
    backend.unload_backend();
    assert!(backend.status().model.is_none());
    let error = backend.generate(&request(7)).unwrap_err();
    assert!(matches!(error, Error::NotLoaded), "{error}");
    assert!(error.to_string().contains("init_backend"));
    backend.init_backend("tiny-sdxl", cpu()).unwrap();
    let again = backend.generate(&request(7)).unwrap();
    assert_eq!(
        first.images[0].png, again.images[0].png,
        "same seed, same image after reload"
    );
}

#[test]
fn png_metadata_reads_back_as_a1111_infotext() {
    let backend = loaded();
    let mut req = request(1234);
    req.negative_prompt = Some("blurry".into());
    req.scheduler = Some("euler_a".into());
    req.guidance_scale = Some(6.5);
    let result = backend.generate(&req).unwrap();
    let text = read_png_parameters(&result.images[0].png).expect("parameters chunk");
    assert_eq!(text, result.infotext);
    let info = Infotext::parse(&text);
    assert_eq!(info.prompt, "a lighthouse at dusk");
    assert_eq!(info.negative_prompt, "blurry");
    assert_eq!(info.field("Steps"), Some("4"));
    assert_eq!(info.field("Sampler"), Some("Euler a"));
    assert_eq!(info.field("CFG scale"), Some("6.5"));
    assert_eq!(info.field("Seed"), Some("1234"));
    assert_eq!(info.field("Size"), Some("64x64"));
    assert_eq!(info.field("Model"), Some("tiny-sdxl"));
    assert_eq!(result.parameters.seed, 1234);
    assert_eq!(result.timings.steps.len(), 4);
}

#[test]
fn batch_image_i_equals_the_single_image_with_seed_plus_i() {
    let backend = loaded();
    let mut batch = request(100);
    batch.batch_size = Some(3);
    let result = backend.generate(&batch).unwrap();
    assert_eq!(
        result.images.iter().map(|i| i.seed).collect::<Vec<_>>(),
        vec![100, 101, 102]
    );
    for image in &result.images {
        let single = backend.generate(&request(image.seed as i64)).unwrap();
        let a = sdxl_backend::pipeline::RgbImage::from_png(&image.png).unwrap();
        let b = sdxl_backend::pipeline::RgbImage::from_png(&single.images[0].png).unwrap();
        // Batched and single UNet calls may round differently in the last bits.
        let worst = a
            .pixels
            .iter()
            .zip(&b.pixels)
            .map(|(x, y)| x.abs_diff(*y))
            .max()
            .unwrap();
        assert!(worst <= 1, "seed {}: differs by {worst} levels", image.seed);
    }
}

#[test]
fn cancellation_returns_within_one_step_and_the_backend_stays_usable() {
    let backend = loaded();
    let token = CancellationToken::new();
    let mut seen = Vec::new();
    let mut req = request(5);
    req.steps = Some(8);
    let error = backend
        .generate_with(
            &req,
            &mut |progress| {
                seen.push(progress.step);
                if progress.step == 3 {
                    token.cancel();
                }
            },
            &token,
        )
        .unwrap_err();
    assert!(error.is_cancelled(), "{error}");
    assert_eq!(
        seen,
        vec![1, 2, 3],
        "stops right after the step that cancelled"
    );
    assert!(
        backend.generate(&request(5)).is_ok(),
        "usable after a cancelled request"
    );
}

#[test]
fn progress_reports_every_step_with_an_eta() {
    let backend = loaded();
    let mut events = Vec::new();
    backend
        .generate_with(
            &request(3),
            &mut |p| events.push(p),
            &CancellationToken::new(),
        )
        .unwrap();
    assert_eq!(
        events.iter().map(|p| (p.step, p.total)).collect::<Vec<_>>(),
        vec![(1, 4), (2, 4), (3, 4), (4, 4)]
    );
    assert_eq!(events[3].eta, std::time::Duration::ZERO);
}

#[test]
fn four_threads_at_once_match_single_threaded_results() {
    let backend = Arc::new(loaded());
    let seeds = [11, 12, 13, 14];
    let single: Vec<Vec<u8>> = seeds
        .iter()
        .map(|&s| backend.generate(&request(s)).unwrap().images[0].png.clone())
        .collect();
    let handles: Vec<_> = seeds
        .iter()
        .map(|&seed| {
            let backend = Arc::clone(&backend);
            std::thread::spawn(move || {
                backend.generate(&request(seed)).unwrap().images[0]
                    .png
                    .clone()
            })
        })
        .collect();
    let concurrent: Vec<Vec<u8>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(single, concurrent);
}

#[test]
fn unknown_scheduler_lists_the_valid_ones_before_any_work() {
    let backend = loaded();
    let mut req = request(1);
    req.scheduler = Some("eular".into());
    let error = backend.generate(&req).unwrap_err().to_string();
    assert!(
        error.contains("unknown scheduler \"eular\"; did you mean \"euler\"?"),
        "{error}"
    );
}

#[test]
fn request_json_accepts_a1111_field_names() {
    let json = r#"{"prompt": "x", "cfg_scale": 7, "sampler_name": "Euler a", "denoising_strength": 0.5,
                   "num_inference_steps": 3, "seed": -1}"#;
    let req: GenerateRequest = serde_json::from_str(json).unwrap();
    assert_eq!(req.guidance_scale, Some(7.0));
    assert_eq!(req.sampler.as_deref(), Some("Euler a"));
    assert_eq!(req.strength, Some(0.5));
    assert_eq!(req.steps, Some(3));
    let typo = serde_json::from_str::<GenerateRequest>(r#"{"promt": "x"}"#)
        .unwrap_err()
        .to_string();
    assert!(typo.contains("unknown field `promt`"), "{typo}");
}

#[test]
fn any_sampler_over_any_schedule_generates_and_img2img_uses_the_denoise_tail() {
    let backend = loaded();
    let mut req = request(9);
    req.sampler = Some("DPM++ 2M".into());
    req.schedule = Some("karras".into());
    let txt2img = backend.generate(&req).unwrap();
    assert_eq!(txt2img.parameters.scheduler, "dpmpp_2m + karras");
    assert_eq!(txt2img.parameters.evaluations, 4);
    let info = Infotext::parse(&txt2img.infotext);
    assert_eq!(info.field("Sampler"), Some("DPM++ 2M"));
    assert_eq!(info.field("Schedule type"), Some("Karras"));
    // img2img of that image at denoise 0.5: ComfyUI plans 8 steps and runs the last 4.
    req.init_image = Some(sdxl_backend::backend::ImageInput::Bytes(
        txt2img.images[0].png.clone(),
    ));
    req.strength = Some(0.5);
    let img2img = backend.generate(&req).unwrap();
    assert_eq!(img2img.parameters.evaluations, 4);
    assert_eq!(img2img.parameters.strength, Some(0.5));
}

#[test]
fn philox_rng_is_reported_and_gives_its_own_image() {
    let backend = loaded();
    let cpu = backend.generate(&request(21)).unwrap();
    let mut req = request(21);
    req.rng = sdxl_backend::backend::RngKind::Philox;
    let philox = backend.generate(&req).unwrap();
    assert_ne!(cpu.images[0].png, philox.images[0].png);
    assert_eq!(Infotext::parse(&philox.infotext).field("RNG"), Some("NV"));
    assert_eq!(Infotext::parse(&cpu.infotext).field("RNG"), Some("CPU"));
    let json = serde_json::to_value(&philox.parameters).unwrap();
    assert_eq!(json["rng"], "philox");
}
