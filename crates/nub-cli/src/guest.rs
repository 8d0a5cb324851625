//! The guest program a command runs: an ELF file or a guest crate directory
//! (built first) given with `--guest`, or the default guest built into
//! `nub`.

use std::{
    borrow::Cow,
    path::{Path, PathBuf},
};

use nub_sandbox::{GuestBinary, GuestBinaryError};

use crate::error::CliError;

pub use nub_cli::DEFAULT_GUEST;

/// The ELF file `--guest PATH` names: PATH itself, or for a directory the
/// ELF built from the guest crate there (cargo's output goes to stderr).
/// `None` (the built-in guest) stays `None`.
pub fn elf(path: Option<&Path>) -> Result<Option<PathBuf>, CliError> {
    match path {
        Some(dir) if dir.is_dir() => Ok(Some(nub_guest_build::build_guest(dir)?)),
        other => Ok(other.map(Path::to_path_buf)),
    }
}

/// The guest to boot: the file at `path`, or the built-in default guest.
pub fn binary(path: Option<&Path>) -> GuestBinary {
    match path {
        Some(path) => GuestBinary::FilePath(path.to_path_buf()),
        None => GuestBinary::Static(DEFAULT_GUEST),
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
    fn files_pass_through_and_directories_must_be_crates() {
        assert_eq!(elf(None).unwrap(), None);
        let file = Path::new("/nonexistent/guest.elf");
        assert_eq!(elf(Some(file)).unwrap().as_deref(), Some(file));
        let dir = tempfile::tempdir().unwrap();
        let err = elf(Some(dir.path())).unwrap_err();
        assert!(err.to_string().contains("no Cargo.toml"), "{err}");
    }

    #[test]
    fn missing_guest_file_names_the_path() {
        let err = bytes(Some(Path::new("/nonexistent/guest.elf"))).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/guest.elf"), "{err}");
    }
}
