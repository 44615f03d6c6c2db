//! Generates the C header from the Rust source with cbindgen.
//!
//! The header is written to OUT_DIR, and also to `$DEVRIG_HEADER_OUT` when
//! that is set: `make header` copies it to include/devrig.h, and
//! `make check-header` fails when the committed header differs.

use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=src/ffi.rs");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-env-changed=DEVRIG_HEADER_OUT");
    // C users link against libdevrig.so.0; the soname changes only with the ABI.
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libdevrig.so.0");
    link_soname_in_target_dir();
    let crate_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let version = env::var("CARGO_PKG_VERSION").unwrap();
    let major = env::var("CARGO_PKG_VERSION_MAJOR").unwrap();
    let minor = env::var("CARGO_PKG_VERSION_MINOR").unwrap();
    let patch = env::var("CARGO_PKG_VERSION_PATCH").unwrap();

    let mut config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml"))
        .expect("cbindgen.toml is unreadable");
    config.after_includes = Some(format!(
        "\n#define DEVRIG_VERSION_MAJOR {major}\n#define DEVRIG_VERSION_MINOR {minor}\n#define DEVRIG_VERSION_PATCH {patch}\n#define DEVRIG_VERSION_STRING \"{version}\"\n"
    ));
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(crate_dir.join("src/ffi.rs"))
        .generate()
        .expect("cbindgen could not generate devrig.h");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("devrig.h");
    bindings.write_to_file(&out);
    if let Ok(extra) = env::var("DEVRIG_HEADER_OUT") {
        bindings.write_to_file(extra);
    }
}

/// A program linked with `-L target/release -ldevrig` asks the loader for
/// the soname, libdevrig.so.0, so that name must exist beside libdevrig.so
/// after a plain `cargo build`, not only after `make build`. The link is
/// made in the profile directory (OUT_DIR is PROFILE/build/PKG-HASH/out);
/// it may dangle until the library is linked, which happens right after.
/// With cargo's `build.build-dir` set, OUT_DIR is in that directory instead
/// and the link lands beside no library: `make build` makes it in the
/// target directory in any case, and failing to make it here only warns.
fn link_soname_in_target_dir() {
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    let Some(profile_dir) = out.ancestors().nth(3) else {
        return;
    };
    let link = profile_dir.join("libdevrig.so.0");
    if std::fs::read_link(&link).is_ok_and(|t| t == std::path::Path::new("libdevrig.so")) {
        return;
    }
    let _ = std::fs::remove_file(&link);
    if let Err(e) = std::os::unix::fs::symlink("libdevrig.so", &link) {
        println!(
            "cargo:warning=could not link {} to libdevrig.so: {e}",
            link.display()
        );
    }
}
