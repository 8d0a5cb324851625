//! The environment a nested guest build runs in.
//!
//! A build script inherits the variables cargo sets for it (`RUSTC`,
//! `TARGET`, `CARGO_*` flags, clippy's `RUSTC_WORKSPACE_WRAPPER`, the outer
//! target directory, …). None of them may change how a guest builds, and an
//! inherited target directory could even make the nested cargo wait for the
//! lock its parent holds. Only the user's own cargo settings (home,
//! registries, network, terminal) are kept.

use std::process::Command;

/// Whether the nested build keeps the inherited variable `key`.
pub fn keep_var(key: &str) -> bool {
    const KEPT_CARGO: [&str; 6] = [
        "CARGO_HOME",
        "CARGO_NET_",
        "CARGO_HTTP_",
        "CARGO_REGISTRIES_",
        "CARGO_REGISTRY_",
        "CARGO_TERM_",
    ];
    if key.starts_with("CARGO_") {
        return KEPT_CARGO.iter().any(|kept| key.starts_with(kept));
    }
    let outer = key == "CARGO"
        || key.starts_with("RUSTC")
        || key.starts_with("RUSTDOC")
        || key == "RUSTFLAGS"
        || key == "TARGET"
        || key == "HOST"
        || key == "OUT_DIR"
        || key == "OPT_LEVEL"
        || key == "PROFILE"
        || key == "DEBUG"
        || key == "NUM_JOBS"
        || key.starts_with("DEP_");
    !outer
}

/// Removes every inherited variable [`keep_var`] rejects from `cmd`.
pub fn clean_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        match key.to_str() {
            Some(name) if keep_var(name) => {}
            _ => {
                cmd.env_remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outer_build_variables_are_dropped() {
        for key in [
            "CARGO",
            "CARGO_MANIFEST_DIR",
            "CARGO_TARGET_DIR",
            "CARGO_ENCODED_RUSTFLAGS",
            "CARGO_BUILD_TARGET",
            "CARGO_CFG_TARGET_OS",
            "RUSTC",
            "RUSTC_WRAPPER",
            "RUSTC_WORKSPACE_WRAPPER",
            "RUSTDOCFLAGS",
            "RUSTFLAGS",
            "TARGET",
            "OUT_DIR",
            "PROFILE",
            "DEP_Z_INCLUDE",
        ] {
            assert!(!keep_var(key), "{key} must not reach the guest build");
        }
    }

    #[test]
    fn user_settings_are_kept() {
        for key in [
            "PATH",
            "HOME",
            "RUSTUP_HOME",
            "RUSTUP_TOOLCHAIN",
            "CARGO_HOME",
            "CARGO_NET_OFFLINE",
            "CARGO_HTTP_PROXY",
            "CARGO_REGISTRIES_CRATES_IO_PROTOCOL",
            "CARGO_TERM_COLOR",
        ] {
            assert!(keep_var(key), "{key} is the user's setting");
        }
    }
}
