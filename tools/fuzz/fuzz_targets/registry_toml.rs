//! Any text as a user schedulers.toml and models.toml: parsing and validation return a result,
//! never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sdxl_backend::registry::{
    BUILTIN_MODELS_TOML, BUILTIN_SCHEDULERS_TOML, ModelRegistry, SchedulerRegistry, SourceFile,
};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let user = SourceFile {
        name: "fuzz.toml".into(),
        text: text.to_string(),
    };
    let builtin = SourceFile::builtin("schedulers.toml", BUILTIN_SCHEDULERS_TOML);
    let schedulers = SchedulerRegistry::from_sources(&[builtin.clone(), user.clone()]);
    if let Ok(error) = schedulers.as_ref().map_err(|e| e.to_string()) {
        let _ = error;
    }
    let base = SchedulerRegistry::from_sources(&[builtin]).expect("the built-in registry is valid");
    let models = SourceFile::builtin("models.toml", BUILTIN_MODELS_TOML);
    let _ = ModelRegistry::from_sources(&[models, user], &base).map_err(|e| e.to_string());
});
