//! Every preset's plan at 10 steps over the SDXL base scheduler config, as `sdxl schedulers
//! show PRESET --steps 10` prints it: one snapshot a human can review in one place (the
//! per-family parity tests check the numbers against diffusers).

mod common;

use common::{sdxl, stderr};
use sdxl_backend::Registries;

#[test]
fn every_preset_plan_at_ten_steps() {
    let registries = Registries::load(None, None).unwrap();
    let mut table = String::new();
    for preset in registries.schedulers.presets() {
        let output = sdxl(
            &[
                "schedulers",
                "show",
                &preset.name,
                "--steps",
                "10",
                "--json",
            ],
            &[],
        );
        assert!(
            output.status.success(),
            "{}: {}",
            preset.name,
            stderr(&output)
        );
        let plan: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        let timesteps = plan["timesteps"].as_array().unwrap();
        let sigmas = plan["sigmas"].as_array().unwrap();
        assert_eq!(sigmas.len(), 11, "{}: N + 1 sigmas", preset.name);
        assert!(
            timesteps.len() >= 10,
            "{}: one timestep per model evaluation",
            preset.name
        );
        let round = |v: &serde_json::Value| format!("{:.6}", v.as_f64().unwrap());
        table.push_str(&format!(
            "{}\n  timesteps: {}\n  sigmas:    {}\n",
            preset.name,
            timesteps.iter().map(round).collect::<Vec<_>>().join(" "),
            sigmas.iter().map(round).collect::<Vec<_>>().join(" ")
        ));
    }
    insta::assert_snapshot!(table);
}

#[test]
fn sampler_and_schedule_plans_print_as_json() {
    let output = sdxl(
        &[
            "schedulers",
            "show",
            "--sampler",
            "dpmpp_2m",
            "--schedule",
            "karras",
            "--steps",
            "4",
            "--json",
        ],
        &[],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let plan: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let sigmas: Vec<f64> = plan["sigmas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(sigmas.len(), 5);
    assert!(
        (sigmas[0] - 14.614_646_9).abs() < 1e-5 && sigmas[4] == 0.0,
        "{sigmas:?}"
    );
    assert_eq!(plan["timesteps"].as_array().unwrap().len(), 4);
    let model = common::fixture("tiny-sdxl");
    let output = sdxl(
        &[
            "schedulers",
            "show",
            "euler",
            "--steps",
            "8",
            "--model",
            model.to_str().unwrap(),
            "--json",
        ],
        &[],
    );
    let plan: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        plan["timesteps"][0], 876.0,
        "the model's own scheduler_config.json is used"
    );
}
