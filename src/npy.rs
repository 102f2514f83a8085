//! Reading and writing float32 `.npy` files (NumPy format 1.0/2.0), for `--latents` and
//! `--output-latents` and the reference data of the tests.

use std::path::{Path, PathBuf};

use ndarray::{ArrayD, IxDyn};

/// Errors reading or writing `.npy`.
#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    /// The file could not be read or written.
    #[error("{}: {reason}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        reason: String,
    },
    /// Not a float32 little-endian C-order `.npy` file.
    #[error("{}: {reason} (expected a float32 little-endian C-order .npy file, as numpy.save writes)", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// Reads a float32 array.
pub fn read_f32(path: &Path) -> Result<ArrayD<f32>, NpyError> {
    let bytes = std::fs::read(path).map_err(|e| NpyError::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    parse_f32(&bytes).map_err(|reason| NpyError::Format {
        path: path.to_path_buf(),
        reason,
    })
}

fn parse_f32(bytes: &[u8]) -> Result<ArrayD<f32>, String> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err("missing the \\x93NUMPY magic".to_string());
    }
    let (header_len, header_start) = match bytes[6] {
        1 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        version => return Err(format!("unsupported format version {version}")),
    };
    let header = bytes
        .get(header_start..header_start + header_len)
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or("truncated or non-UTF-8 header")?;
    if !header.contains("'descr': '<f4'") {
        return Err(format!("dtype is not '<f4' (header: {})", header.trim()));
    }
    if header.contains("'fortran_order': True") {
        return Err("Fortran order".to_string());
    }
    let shape_text = header
        .split("'shape':")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .map(|s| s.trim().trim_start_matches('('))
        .ok_or("no shape in the header")?;
    let shape: Vec<usize> = shape_text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| format!("bad shape entry {s:?}"))
        })
        .collect::<Result<_, _>>()?;
    let data = &bytes[header_start + header_len..];
    let count: usize = shape.iter().product();
    if data.len() != count * 4 {
        return Err(format!(
            "shape {shape:?} needs {} data bytes, the file has {}",
            count * 4,
            data.len()
        ));
    }
    let values = data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    ArrayD::from_shape_vec(IxDyn(&shape), values).map_err(|e| e.to_string())
}

/// Serialises a float32 array as `.npy` bytes (format 1.0).
pub fn to_bytes(array: &ArrayD<f32>) -> Vec<u8> {
    let shape = match array.shape() {
        [single] => format!("({single},)"),
        dims => format!(
            "({})",
            dims.iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
    // Pad so that the data starts on a 64-byte boundary, ending with a newline.
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut bytes = Vec::with_capacity(10 + header.len() + array.len() * 4);
    bytes.extend_from_slice(b"\x93NUMPY\x01\x00");
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for value in array.iter() {
        bytes.extend_from_slice(&value.to_le_bytes());
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_shape_and_values() {
        let array =
            ArrayD::from_shape_vec(IxDyn(&[1, 2, 3]), vec![0.5, -1.0, 2.25, 3.0, 1e-8, -0.0])
                .unwrap();
        let bytes = to_bytes(&array);
        assert_eq!((bytes.len() - array.len() * 4) % 64, 0);
        assert_eq!(parse_f32(&bytes).unwrap(), array);
    }

    #[test]
    fn wrong_dtype_is_rejected() {
        let bytes = to_bytes(&ArrayD::zeros(IxDyn(&[2])));
        let position = bytes.windows(3).position(|w| w == b"<f4").unwrap();
        let mut float64 = bytes.clone();
        float64[position + 2] = b'8';
        assert!(parse_f32(&float64).unwrap_err().contains("'<f4'"));
    }
}
