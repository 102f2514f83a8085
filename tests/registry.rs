//! The TOML registries: built-ins parse, user files layer over them, and every malformed user
//! file is an error naming file, line, column and entry.

mod common;

use common::temp_file;
use sdxl_backend::registry::{PresetKind, Registries, RegistryError};

fn load_schedulers(text: &str) -> Result<Registries, RegistryError> {
    let (_dir, path) = temp_file("schedulers.toml", text);
    Registries::load(Some(&path), None)
}

fn load_models(text: &str) -> Result<Registries, RegistryError> {
    let (_dir, path) = temp_file("models.toml", text);
    Registries::load(None, Some(&path))
}

/// The error's text, checked to name the user file with `line:column`.
fn error_at(result: Result<Registries, RegistryError>, file: &str, line: usize) -> String {
    let error = result.expect_err("the file must be rejected").to_string();
    let expected = format!("{file}:{line}:");
    assert!(
        error.contains(&expected),
        "error should point at {expected}, got: {error}"
    );
    error
}

#[test]
fn builtin_registries_parse_and_hold_the_required_entries() {
    let registries = Registries::load(None, None).expect("built-in TOML is valid");
    let presets: Vec<_> = registries
        .schedulers
        .presets()
        .map(|p| p.name.as_str())
        .collect();
    for required in [
        "euler",
        "euler_karras",
        "euler_trailing",
        "euler_a",
        "heun",
        "lms",
        "lms_karras",
        "dpm_2",
        "dpm_2_a",
        "dpmpp_2m",
        "dpmpp_2m_karras",
        "dpmpp_2m_sde_karras",
        "dpmpp_2s",
        "dpmpp_sde_karras",
        "ddim",
        "ddpm",
        "pndm",
        "unipc",
        "deis",
        "lcm",
    ] {
        assert!(presets.contains(&required), "missing preset {required}");
    }
    for sampler in [
        "euler",
        "euler_ancestral",
        "heun",
        "dpm_2",
        "dpm_2_ancestral",
        "lms",
        "dpmpp_2s_ancestral",
        "dpmpp_sde",
        "dpmpp_2m",
        "dpmpp_2m_sde",
        "dpmpp_2m_sde_heun",
        "dpmpp_3m_sde",
        "ddim",
        "ddpm",
        "uni_pc",
        "deis",
        "ipndm",
        "lcm",
    ] {
        registries
            .schedulers
            .sampler(sampler)
            .expect("required sampler");
    }
    for schedule in [
        "normal",
        "karras",
        "exponential",
        "polyexponential",
        "sgm_uniform",
        "simple",
        "ddim_uniform",
        "beta",
        "kl_optimal",
        "linear_quadratic",
        "align_your_steps",
        "leading",
        "trailing",
        "linspace",
    ] {
        registries
            .schedulers
            .schedule(schedule)
            .expect("required schedule");
    }
    for model in [
        "tiny-sdxl",
        "sdxl-base-1.0",
        "sdxl-refiner-1.0",
        "sdxl-turbo",
    ] {
        assert!(
            registries.models.model(model).is_some(),
            "missing model {model}"
        );
    }
}

#[test]
fn lookups_accept_aliases_and_labels_case_insensitively() {
    let registries = Registries::load(None, None).unwrap();
    assert_eq!(
        registries.schedulers.sampler("Euler a").unwrap().name,
        "euler_ancestral"
    );
    assert_eq!(
        registries.schedulers.sampler("k_dpmpp_2m").unwrap().name,
        "dpmpp_2m"
    );
    assert_eq!(
        registries.schedulers.schedule("KARRAS").unwrap().name,
        "karras"
    );
    assert_eq!(
        registries
            .schedulers
            .preset("DPM++ 2M Karras")
            .unwrap()
            .name,
        "dpmpp_2m_karras"
    );
    assert_eq!(registries.models.model("sdxl").unwrap().id, "sdxl-base-1.0");
    let error = registries
        .schedulers
        .sampler("dpmpp2m")
        .unwrap_err()
        .to_string();
    assert!(error.contains("did you mean \"dpmpp_2m\""), "{error}");
    assert!(error.contains("valid: ddim, ddpm"), "{error}");
}

#[test]
fn a_user_preset_combining_existing_pieces_is_a_toml_only_change() {
    let (_dir, path) = temp_file(
        "schedulers.toml",
        r#"
[presets.my_fast]
label = "My fast"
sampler = "dpmpp_2m"
schedule = "Karras"

[presets.euler]
label = "Euler, replaced"
class = "EulerDiscreteScheduler"
config = { timestep_spacing = "trailing" }
"#,
    );
    let registries = Registries::load(Some(&path), None).unwrap();
    let preset = registries.schedulers.preset("my_fast").unwrap();
    assert_eq!(
        preset.kind,
        PresetKind::Sampling {
            sampler: "dpmpp_2m".to_string(),
            schedule: "karras".to_string()
        }
    );
    assert_eq!(
        registries.schedulers.preset("euler").unwrap().label,
        "Euler, replaced"
    );
    // Built-ins not named by the user file are still there.
    assert!(registries.schedulers.preset("dpmpp_2m_karras").is_ok());
}

#[test]
fn syntax_error_names_file_line_and_column() {
    let error = error_at(
        load_schedulers("[presets.x]\nclass = \"EulerDiscreteScheduler\n"),
        "schedulers.toml",
        2,
    );
    assert!(error.contains("schedulers.toml:2:"), "{error}");
}

#[test]
fn unknown_key_is_named_with_the_valid_keys() {
    let error = error_at(
        load_schedulers(
            "[samplers.fast]\nalgorithm = \"euler\"\ndefault_schedule = \"karras\"\nstochastik = true\n",
        ),
        "schedulers.toml",
        4,
    );
    assert!(error.contains("unknown field `stochastik`"), "{error}");
    assert!(
        error.contains("discard_penultimate_sigma"),
        "lists valid keys: {error}"
    );
}

#[test]
fn wrong_type_is_an_error_at_the_value() {
    let error = error_at(
        load_schedulers("[schedules.k2]\nkind = \"karras\"\nrho = \"seven\"\n"),
        "schedulers.toml",
        3,
    );
    assert!(error.contains("invalid type"), "{error}");
}

#[test]
fn duplicate_table_in_one_file_is_an_error() {
    let text = "[presets.a]\nclass = \"DDIMScheduler\"\n\n[presets.a]\nclass = \"DDPMScheduler\"\n";
    let error = error_at(load_schedulers(text), "schedulers.toml", 4);
    assert!(error.to_lowercase().contains("duplicate"), "{error}");
}

#[test]
fn alias_taken_by_another_entry_is_a_duplicate_name() {
    let text = "[samplers.my_euler]\nalgorithm = \"euler\"\naliases = [\"k_euler\"]\ndefault_schedule = \"normal\"\n";
    let error = error_at(load_schedulers(text), "schedulers.toml", 1);
    assert!(error.contains("sampler \"my_euler\""), "{error}");
    assert!(
        error.contains("already used by sampler \"euler\""),
        "{error}"
    );
}

#[test]
fn dangling_sampler_reference_suggests_the_nearest_name() {
    let text = "[presets.fast]\nsampler = \"dpmpp2m\"\nschedule = \"karras\"\n";
    let error = error_at(load_schedulers(text), "schedulers.toml", 2);
    assert!(error.contains("preset \"fast\""), "{error}");
    assert!(
        error.contains("sampler \"dpmpp2m\" does not exist; did you mean \"dpmpp_2m\"?"),
        "{error}"
    );
}

#[test]
fn dangling_schedule_reference_lists_the_valid_ones() {
    let text = "[samplers.s]\nalgorithm = \"euler\"\ndefault_schedule = \"karas\"\n";
    let error = error_at(load_schedulers(text), "schedulers.toml", 3);
    assert!(error.contains("did you mean \"karras\"?"), "{error}");
    assert!(error.contains("valid: align_your_steps, beta"), "{error}");
}

#[test]
fn out_of_range_parameter_says_what_is_valid() {
    let text = "[samplers.a]\nalgorithm = \"euler_ancestral\"\ndefault_schedule = \"normal\"\neta = -1.0\n";
    let error = error_at(load_schedulers(text), "schedulers.toml", 4);
    assert!(
        error.contains("`eta` = -1 is out of range; valid: 0 to 10"),
        "{error}"
    );
}

#[test]
fn parameter_that_does_not_apply_is_rejected() {
    let text = "[schedules.e]\nkind = \"exponential\"\nrho = 3.0\n";
    let error = error_at(load_schedulers(text), "schedulers.toml", 3);
    assert!(error.contains("parameter `rho` does not apply"), "{error}");
}

#[test]
fn unknown_diffusers_config_key_in_a_preset_is_rejected() {
    let text =
        "[presets.e]\nclass = \"EulerDiscreteScheduler\"\nconfig = { use_karas_sigmas = true }\n";
    let error = error_at(load_schedulers(text), "schedulers.toml", 3);
    assert!(
        error.contains(
            "unknown scheduler config key `use_karas_sigmas`; did you mean \"use_karras_sigmas\"?"
        ),
        "{error}"
    );
}

#[test]
fn unknown_diffusers_class_lists_the_known_ones() {
    let error = error_at(
        load_schedulers("[presets.e]\nclass = \"FlowMatchScheduler\"\n"),
        "schedulers.toml",
        2,
    );
    assert!(error.contains("EulerDiscreteScheduler"), "{error}");
}

#[test]
fn empty_user_file_is_an_error() {
    let error = error_at(load_schedulers("# nothing here\n"), "schedulers.toml", 1);
    assert!(error.contains("defines no entries"), "{error}");
    let error = error_at(load_models(""), "models.toml", 1);
    assert!(error.contains("defines no entries"), "{error}");
}

#[test]
fn model_defaults_must_name_an_existing_scheduler() {
    let text = r#"
[models.mine]
kind = "base"
bundled = "x"
files = ["model_index.json", "unet/model.onnx", "vae_decoder/model.onnx", "text_encoder_2/model.onnx"]
[models.mine.defaults]
width = 512
height = 512
steps = 20
guidance_scale = 5.0
scheduler = "eulr"
"#;
    let error = error_at(load_models(text), "models.toml", 11);
    assert!(error.contains("model \"mine\""), "{error}");
    assert!(
        error.contains("unknown scheduler \"eulr\"; did you mean \"euler\"?"),
        "{error}"
    );
}

#[test]
fn model_sizes_must_be_multiples_of_eight() {
    let text = r#"
[models.mine]
kind = "base"
repo = "me/mine"
files = ["model_index.json", "unet/model.onnx", "vae_decoder/model.onnx", "text_encoder_2/model.onnx"]
defaults = { width = 500, height = 512, steps = 20, guidance_scale = 5.0 }
"#;
    let error = error_at(load_models(text), "models.toml", 6);
    assert!(
        error.contains("defaults.width = 500: must be a multiple of 8"),
        "{error}"
    );
}

#[test]
fn missing_user_file_is_an_io_error_naming_it() {
    let error = Registries::load(
        Some(std::path::Path::new("/nonexistent/schedulers.toml")),
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("/nonexistent/schedulers.toml"), "{error}");
}
