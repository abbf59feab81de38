//! Links libtorch (see `link.rs`), then compiles the c10d shim (`src/dist/c10d.cpp`) where the
//! headers it needs are present.

use std::path::{Path, PathBuf};

mod link;

fn main() {
    let lib = link::libtorch();
    build_c10d_shim(Path::new(&lib));
}

/// Compiles the c10d shim against the headers of the libtorch torch-sys found and Gloo's (which
/// PyPI's torch does not ship: Debian's libgloo-dev, or `GLOO_INCLUDE_DIR`), and sets `cfg(c10d)`.
/// Without them gptlab builds without data-parallel training, and says so when asked for it.
fn build_c10d_shim(lib: &Path) {
    println!("cargo::rustc-check-cfg=cfg(c10d)");
    println!("cargo:rerun-if-changed=src/dist/c10d.cpp");
    println!("cargo:rerun-if-env-changed=GLOO_INCLUDE_DIR");
    let include = lib.parent().map(|p| p.join("include")).unwrap_or_default();
    let c10d = include.join("torch/csrc/distributed/c10d/ProcessGroupGloo.hpp");
    let candidates: Vec<PathBuf> = match std::env::var_os("GLOO_INCLUDE_DIR") {
        Some(dir) => vec![dir.into()],
        None => vec!["/usr/include".into(), "/usr/local/include".into()],
    };
    let gloo = candidates.iter().find(|d| d.join("gloo/algorithm.h").is_file());
    match gloo {
        Some(gloo) if c10d.is_file() => {
            println!("cargo:rerun-if-changed={}", gloo.join("gloo").display());
            cc::Build::new()
                .cpp(true)
                .std("c++17")
                .file("src/dist/c10d.cpp")
                .include(&include)
                .include(include.join("torch/csrc/api/include"))
                .include(gloo)
                .define("USE_C10D_GLOO", None)
                .define("USE_DISTRIBUTED", None)
                .define("_GLIBCXX_USE_CXX11_ABI", "1")
                .warnings(false)
                .compile("gptlab_c10d");
            println!("cargo:rustc-link-lib=dylib=torch_cpu");
            println!("cargo:rustc-link-lib=dylib=c10");
            println!("cargo:rustc-cfg=c10d");
        }
        _ => {
            for dir in &candidates {
                println!("cargo:rerun-if-changed={}", dir.display());
            }
            let missing = if c10d.is_file() {
                "Gloo's headers (gloo/algorithm.h; Debian/Ubuntu: apt-get install libgloo-dev, or set GLOO_INCLUDE_DIR)"
                    .to_string()
            } else {
                format!("c10d's headers ({})", c10d.display())
            };
            println!("cargo:warning=no {missing}: building without data-parallel training");
        }
    }
}
