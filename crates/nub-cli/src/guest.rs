//! The guest program a command runs: a file given with `--guest`, or the
//! default guest built into `nub`.

use std::{borrow::Cow, path::Path};

use nub_sandbox::{GuestBinary, GuestBinaryError};

/// The default guest's ELF, built by `build.rs` and embedded in `nub`.
pub static DEFAULT_GUEST: &[u8] = include_bytes!(env!("NUB_GUEST_NUB_DEFAULT_GUEST"));

/// The guest to boot: the file at `path`, or the built-in default guest.
pub fn binary(path: Option<&Path>) -> GuestBinary {
    match path {
        Some(path) => GuestBinary::FilePath(path.to_path_buf()),
        None => GuestBinary::Buffer(DEFAULT_GUEST.to_vec()),
    }
}

/// The ELF bytes of the guest at `path`, or of the built-in default guest.
pub fn bytes(path: Option<&Path>) -> Result<Cow<'static, [u8]>, GuestBinaryError> {
    match path {
        Some(path) => std::fs::read(path)
            .map(Cow::Owned)
            .map_err(|source| GuestBinaryError::Io {
                path: path.to_path_buf(),
                source,
            }),
        None => Ok(Cow::Borrowed(DEFAULT_GUEST)),
    }
}

/// How to name the guest in output.
pub fn describe(path: Option<&Path>) -> String {
    match path {
        Some(path) => path.display().to_string(),
        None => "built-in default guest (nub-default-guest)".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nub_sandbox::binary::GuestImage;

    #[test]
    fn embedded_guest_is_a_valid_image() {
        let image = GuestImage::parse(DEFAULT_GUEST).expect("the embedded guest parses");
        assert!(!image.segments.is_empty());
    }

    #[test]
    fn missing_guest_file_names_the_path() {
        let err = bytes(Some(Path::new("/nonexistent/guest.elf"))).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/guest.elf"), "{err}");
    }
}
