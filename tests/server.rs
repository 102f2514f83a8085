//! `sdxl serve` end to end: the server runs in-process on a free 127.0.0.1 port with the bundled
//! tiny model on CPU, and is driven with plain HTTP (ureq) as an A1111 client would.

use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::Engine;
use sdxl_backend::output::read_png_parameters;
use sdxl_backend::runtime::{DevicePreference, SessionOptions};
use sdxl_backend::server::{Credentials, Server, ServerConfig};
use sdxl_backend::{GenerateRequest, SdxlBackend};
use serde_json::{Value, json};

/// A server on its own runtime thread; dropping it shuts it down and waits for it.
struct TestServer {
    base: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

fn cpu() -> SessionOptions {
    SessionOptions {
        device: DevicePreference::Cpu,
        ..Default::default()
    }
}

fn config() -> ServerConfig {
    ServerConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        model: Some("tiny-sdxl".into()),
        session: cpu(),
        ..Default::default()
    }
}

impl TestServer {
    fn start(config: ServerConfig) -> Self {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let server = Server::bind(config).await.expect("the server starts");
                addr_tx.send(server.local_addr().unwrap()).unwrap();
                server
                    .run(async {
                        let _ = stopped.await;
                    })
                    .await
                    .expect("the server runs");
            });
        });
        let addr = addr_rx.recv().expect("the server binds");
        Self {
            base: format!("http://{addr}/sdapi/v1"),
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn get(&self, path: &str) -> Reply {
        call("GET", &format!("{}{path}", self.base), None, None)
    }

    fn post(&self, path: &str, body: Value) -> Reply {
        call("POST", &format!("{}{path}", self.base), Some(body), None)
    }

    /// Polls `/progress` until a job has done at least one step.
    fn wait_until_running(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let progress = self.get("/progress").json;
            if progress["state"]["sampling_step"].as_u64().unwrap_or(0) >= 1 {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("no job started within 60 s");
    }

    fn shut_down(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            thread.join().expect("the server thread ends cleanly");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shut_down();
    }
}

struct Reply {
    status: u16,
    json: Value,
    retry_after: Option<String>,
    www_authenticate: Option<String>,
}

fn call(method: &str, url: &str, body: Option<Value>, auth: Option<&str>) -> Reply {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(300))
        .build();
    let mut request = agent.request(method, url);
    if let Some(user_password) = auth {
        let token = base64::engine::general_purpose::STANDARD.encode(user_password);
        request = request.set("Authorization", &format!("Basic {token}"));
    }
    let result = match body {
        Some(body) => request
            .set("Content-Type", "application/json")
            .send_string(&body.to_string()),
        None => request.call(),
    };
    let response = match result {
        Ok(response) => response,
        Err(ureq::Error::Status(_, response)) => response,
        Err(error) => panic!("{method} {url}: {error}"),
    };
    let status = response.status();
    let retry_after = response.header("Retry-After").map(str::to_string);
    let www_authenticate = response.header("WWW-Authenticate").map(str::to_string);
    let text = response.into_string().expect("a readable body");
    let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Reply {
        status,
        json,
        retry_after,
        www_authenticate,
    }
}

fn png_of(image: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(image.as_str().expect("base64 text"))
        .expect("valid base64")
}

fn info_of(reply: &Reply) -> Value {
    serde_json::from_str(reply.json["info"].as_str().expect("info is a JSON string"))
        .expect("info parses")
}

/// The 422 error's field.
fn field_of(reply: &Reply) -> &str {
    assert_eq!(reply.status, 422, "{}", reply.json);
    reply.json["field"].as_str().expect("field")
}

fn tiny_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-sdxl")
}

#[test]
fn txt2img_returns_pngs_with_infotext_equal_to_the_library() {
    let server = TestServer::start(config());
    let reply = server.post(
        "/txt2img",
        json!({"prompt": "a photo of a cat", "seed": 42, "steps": 4, "batch_size": 2,
               "sampler_name": "DPM++ 2M", "scheduler": "Karras",
               "some_extension_field": {"ignored": true}}),
    );
    assert_eq!(reply.status, 200, "{}", reply.json);
    let images = reply.json["images"].as_array().unwrap();
    assert_eq!(images.len(), 2);
    let info = info_of(&reply);
    assert_eq!(info["all_seeds"], json!([42, 43]));
    assert_eq!(info["sampler_name"], "DPM++ 2M");
    assert_eq!(info["extra_generation_params"]["Schedule type"], "Karras");
    assert_eq!(
        (info["width"].clone(), info["height"].clone()),
        (json!(64), json!(64))
    );
    for key in [
        "prompt",
        "all_prompts",
        "seed",
        "infotexts",
        "steps",
        "cfg_scale",
        "job_timestamp",
    ] {
        assert!(info.get(key).is_some(), "info lacks {key}: {info}");
    }
    assert_eq!(reply.json["parameters"]["steps"], 4);
    assert_eq!(reply.json["parameters"]["seed"], 42);
    for (image, seed) in images.iter().zip([42, 43]) {
        let png = png_of(image);
        let decoded = image::load_from_memory(&png).expect("a PNG");
        assert_eq!((decoded.width(), decoded.height()), (64, 64));
        let text = read_png_parameters(&png).expect("a parameters chunk");
        assert!(text.starts_with("a photo of a cat\n"), "{text}");
        assert!(text.contains(&format!("Seed: {seed},")), "{text}");
        assert!(
            text.contains("Sampler: DPM++ 2M, Schedule type: Karras"),
            "{text}"
        );
    }
    assert_eq!(
        info["infotexts"][1],
        read_png_parameters(&png_of(&images[1])).unwrap()
    );

    // The A1111 mapping changes nothing: the library gives the same pixels.
    let backend = SdxlBackend::new(Default::default()).unwrap();
    backend.init_backend("tiny-sdxl", cpu()).unwrap();
    let direct = backend
        .generate(&GenerateRequest {
            prompt: "a photo of a cat".into(),
            negative_prompt: Some(String::new()),
            sampler: Some("dpmpp_2m".into()),
            schedule: Some("karras".into()),
            seed: Some(42),
            steps: Some(4),
            batch_size: Some(2),
            ..Default::default()
        })
        .unwrap();
    let pixels = |png: &[u8]| image::load_from_memory(png).unwrap().to_rgb8().into_raw();
    assert_eq!(pixels(&png_of(&images[0])), pixels(&direct.images[0].png));
    assert_eq!(pixels(&png_of(&images[1])), pixels(&direct.images[1].png));
}

#[test]
fn img2img_takes_a_base64_image() {
    let server = TestServer::start(config());
    let source = server.post(
        "/txt2img",
        json!({"prompt": "a red cube", "seed": 1, "steps": 4}),
    );
    let init = source.json["images"][0].as_str().unwrap().to_string();
    let reply = server.post(
        "/img2img",
        json!({"prompt": "a blue cube", "seed": 5, "steps": 10, "denoising_strength": 0.5,
               "width": 128, "height": 128, "sampler_name": "Euler a",
               "init_images": [format!("data:image/png;base64,{init}")]}),
    );
    assert_eq!(reply.status, 200, "{}", reply.json);
    let png = png_of(&reply.json["images"][0]);
    let decoded = image::load_from_memory(&png).unwrap();
    assert_eq!((decoded.width(), decoded.height()), (128, 128));
    let text = read_png_parameters(&png).unwrap();
    assert!(text.contains("Denoising strength: 0.5"), "{text}");
    let info = info_of(&reply);
    assert_eq!(info["denoising_strength"], 0.5);
    assert!(info["warnings"][0].as_str().unwrap().contains("resized"));
    // A1111 drops the input images from `parameters` unless asked to echo them.
    assert_eq!(reply.json["parameters"]["init_images"], Value::Null);
    let missing = server.post("/img2img", json!({"prompt": "no image"}));
    assert_eq!(field_of(&missing), "init_images");
}

#[test]
fn listings_have_a1111_shapes() {
    let server = TestServer::start(config());
    let samplers = server.get("/samplers").json;
    let names: Vec<&str> = samplers
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            assert!(s["aliases"].is_array() && s["options"].is_object(), "{s}");
            s["name"].as_str().unwrap()
        })
        .collect();
    for name in [
        "Euler a",
        "Euler",
        "DPM++ 2M",
        "DPM++ 2M SDE",
        "DPM++ 2M Karras",
        "UniPC",
    ] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
    let schedulers = server.get("/schedulers").json;
    let karras = schedulers
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "karras")
        .expect("karras listed");
    assert_eq!(karras["label"], "Karras");
    let models = server.get("/sd-models").json;
    let tiny = models
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["title"] == "tiny-sdxl")
        .expect("tiny-sdxl listed");
    for key in [
        "title",
        "model_name",
        "hash",
        "sha256",
        "filename",
        "config",
    ] {
        assert!(tiny.get(key).is_some(), "{key} missing from {tiny}");
    }
    let memory = server.get("/memory").json;
    assert!(memory["ram"]["used"].as_u64().unwrap() > 0, "{memory}");
    assert_eq!(server.get("/no-such-endpoint").status, 404);
}

#[test]
fn options_switch_the_model() {
    let server = TestServer::start(config());
    assert_eq!(
        server.get("/options").json["sd_model_checkpoint"],
        "tiny-sdxl"
    );
    let dir = tiny_dir().display().to_string();
    let switched = server.post("/options", json!({"sd_model_checkpoint": dir}));
    assert_eq!(switched.status, 200, "{}", switched.json);
    assert_eq!(server.get("/options").json["sd_model_checkpoint"], dir);
    let reply = server.post("/txt2img", json!({"steps": 2}));
    assert_eq!(info_of(&reply)["sd_model_name"], dir);
    let unknown = server.post("/options", json!({"sd_model_checkpoint": "no-such-model"}));
    assert_eq!(field_of(&unknown), "sd_model_checkpoint");
    // Only listed models: a client cannot make the server open an arbitrary directory.
    let elsewhere = json!({"sd_model_checkpoint": std::env::temp_dir()});
    assert_eq!(
        field_of(&server.post("/options", elsewhere)),
        "sd_model_checkpoint"
    );
    // An alias, with an A1111-style hash suffix, switches back to the registry id.
    let back = server.post(
        "/options",
        json!({"sd_model_checkpoint": "tiny [0123abcd]"}),
    );
    assert_eq!(back.status, 200, "{}", back.json);
    assert_eq!(
        server.get("/options").json["sd_model_checkpoint"],
        "tiny-sdxl"
    );
    let rng = server.post(
        "/options",
        json!({"randn_source": "NV", "unknown_option": 3}),
    );
    assert_eq!(rng.status, 200);
    let reply = server.post("/txt2img", json!({"steps": 2, "seed": 3}));
    assert!(
        info_of(&reply)["infotexts"][0]
            .as_str()
            .unwrap()
            .contains("RNG: NV")
    );
}

#[test]
fn interrupt_cancels_the_running_job_and_the_server_stays_usable() {
    let server = TestServer::start(config());
    let base = server.base.clone();
    let long = std::thread::spawn(move || {
        call(
            "POST",
            &format!("{base}/txt2img"),
            Some(json!({"steps": 20, "width": 256, "height": 256, "seed": 7})),
            None,
        )
    });
    server.wait_until_running();
    let progress = server.get("/progress").json;
    assert_eq!(progress["state"]["job"], "txt2img");
    assert!(progress["progress"].as_f64().unwrap() > 0.0);
    assert_eq!(server.post("/interrupt", json!({})).json, json!({}));
    let reply = long.join().unwrap();
    assert_eq!(reply.status, 200, "{}", reply.json);
    assert_eq!(reply.json["images"], json!([]));
    assert_eq!(info_of(&reply)["interrupted"], true);
    assert_eq!(server.get("/progress").json["state"]["job"], "");
    let after = server.post("/txt2img", json!({"steps": 2}));
    assert_eq!(after.status, 200);
    assert_eq!(after.json["images"].as_array().unwrap().len(), 1);
}

/// Chosen behaviour (A1111's): after an unload the next generation loads the model again.
#[test]
fn unload_then_txt2img_loads_the_model_again() {
    let server = TestServer::start(config());
    assert_eq!(server.post("/unload-checkpoint", json!({})).status, 200);
    let reply = server.post("/txt2img", json!({"steps": 2}));
    assert_eq!(reply.status, 200, "{}", reply.json);
    assert_eq!(info_of(&reply)["sd_model_name"], "tiny-sdxl");
    assert_eq!(server.post("/reload-checkpoint", json!({})).status, 200);

    // With no model ever chosen there is nothing to load: a clear 409.
    let empty = TestServer::start(ServerConfig {
        model: None,
        ..config()
    });
    let reply = empty.post("/txt2img", json!({"steps": 2}));
    assert_eq!(reply.status, 409);
    assert!(
        reply.json["detail"]
            .as_str()
            .unwrap()
            .contains("sd_model_checkpoint")
    );
    assert_eq!(empty.post("/reload-checkpoint", json!({})).status, 409);
}

#[test]
fn bad_fields_are_422_naming_the_field() {
    let server = TestServer::start(config());
    let cases = [
        (json!({"steps": "many"}), "steps"),
        (json!({"width": 65}), "width"),
        (json!({"cfg_scale": "high"}), "cfg_scale"),
        (json!({"sampler_name": "DPM++ 9Z"}), "sampler_name"),
        (
            json!({"sampler_name": "Euler", "scheduler": "Wobbly"}),
            "scheduler",
        ),
        (json!({"batch_size": 0}), "batch_size"),
        (json!({"enable_hr": true}), "enable_hr"),
    ];
    for (body, field) in cases {
        let reply = server.post("/txt2img", body.clone());
        assert_eq!(field_of(&reply), field, "{body}");
        assert_eq!(reply.json["detail"][0]["loc"], json!(["body", field]));
    }
    let not_json = ureq::post(&format!("{}/txt2img", server.base)).send_string("{\"steps\": 2,");
    match not_json {
        Err(ureq::Error::Status(status, response)) => {
            assert_eq!(status, 422);
            let body: Value = serde_json::from_str(&response.into_string().unwrap()).unwrap();
            assert_eq!(body["field"], "body");
        }
        other => panic!("expected a 422, got {other:?}"),
    }
    // Unknown fields are ignored, as A1111 does.
    let extra = server.post(
        "/txt2img",
        json!({"steps": 2, "hr_checkpoint_name": null, "eta": 1}),
    );
    assert_eq!(extra.status, 200, "{}", extra.json);
}

#[test]
fn basic_auth_is_required_when_configured() {
    let server = TestServer::start(ServerConfig {
        auth: Some(Credentials::parse("user:secret").unwrap()),
        body_limit: 4096,
        ..config()
    });
    let url = format!("{}/samplers", server.base);
    let anonymous = call("GET", &url, None, None);
    assert_eq!(anonymous.status, 401);
    assert_eq!(anonymous.www_authenticate.as_deref(), Some("Basic"));
    assert_eq!(call("GET", &url, None, Some("user:wrong")).status, 401);
    assert_eq!(call("GET", &url, None, Some("user:secret")).status, 200);
    // The body limit applies to authenticated requests too.
    let huge = json!({"prompt": "x".repeat(8192)});
    let reply = call(
        "POST",
        &format!("{}/txt2img", server.base),
        Some(huge),
        Some("user:secret"),
    );
    assert_eq!(reply.status, 413);
}

#[test]
fn a_full_queue_answers_503_with_retry_after() {
    let server = TestServer::start(ServerConfig {
        queue: 1,
        ..config()
    });
    let base = server.base.clone();
    let long = std::thread::spawn(move || {
        call(
            "POST",
            &format!("{base}/txt2img"),
            Some(json!({"steps": 20, "width": 256, "height": 256})),
            None,
        )
    });
    server.wait_until_running();
    // One more may wait; of two more at once, exactly one is refused.
    let waiting: Vec<_> = (0..2)
        .map(|_| {
            let base = server.base.clone();
            std::thread::spawn(move || {
                call(
                    "POST",
                    &format!("{base}/txt2img"),
                    Some(json!({"steps": 2})),
                    None,
                )
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.get("/progress").json["state"]["queued"] != 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    server.post("/interrupt", json!({}));
    let mut statuses: Vec<u16> = Vec::new();
    for handle in waiting {
        let reply = handle.join().unwrap();
        if reply.status == 503 {
            let retry_after: u64 = reply.retry_after.expect("Retry-After").parse().unwrap();
            assert!(retry_after >= 1);
        }
        statuses.push(reply.status);
    }
    statuses.sort();
    assert_eq!(statuses, [200, 503]);
    assert_eq!(long.join().unwrap().status, 200);
}

#[test]
fn shutdown_cancels_the_running_job_and_answers_it() {
    let mut server = TestServer::start(config());
    let base = server.base.clone();
    let long = std::thread::spawn(move || {
        call(
            "POST",
            &format!("{base}/txt2img"),
            Some(json!({"steps": 20, "width": 256, "height": 256, "n_iter": 3})),
            None,
        )
    });
    server.wait_until_running();
    let started = Instant::now();
    server.shut_down();
    let reply = long.join().unwrap();
    assert_eq!(reply.status, 200, "{}", reply.json);
    assert_eq!(info_of(&reply)["interrupted"], true);
    assert!(started.elapsed() < Duration::from_secs(20));
}
