//! Any bytes as an init image (the PNG decoding path the backend uses): an error or an image,
//! never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sdxl_backend::pipeline::RgbImage;

fuzz_target!(|data: &[u8]| {
    if let Ok(image) = RgbImage::from_png(data) {
        assert_eq!(
            image.pixels.len(),
            image.width as usize * image.height as usize * 3
        );
    }
});
