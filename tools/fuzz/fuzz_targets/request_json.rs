//! Any bytes as a GenerateRequest JSON body: parsing, and decoding its init_image input,
//! return results, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sdxl_backend::GenerateRequest;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = serde_json::from_slice::<GenerateRequest>(data) {
        if let Some(image) = &request.init_image {
            let _ = image.bytes();
        }
        let _ = serde_json::to_string(&request);
    }
});
