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
/// Where libtorch has CUDA and the CUDA and NCCL headers are found beside it
/// ([`nccl_includes`]), the shim also gets the NCCL backend (`cfg(c10d_nccl)`).
fn build_c10d_shim(lib: &Path) {
    println!("cargo::rustc-check-cfg=cfg(c10d)");
    println!("cargo::rustc-check-cfg=cfg(c10d_nccl)");
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
            let mut build = cc::Build::new();
            build
                .cpp(true)
                .std("c++17")
                .file("src/dist/c10d.cpp")
                .include(&include)
                .include(include.join("torch/csrc/api/include"))
                .include(gloo)
                .define("USE_C10D_GLOO", None)
                .define("USE_DISTRIBUTED", None)
                .define("_GLIBCXX_USE_CXX11_ABI", "1")
                .warnings(false);
            let nccl = nccl_includes(lib);
            if let Some(dirs) = &nccl {
                build.define("USE_C10D_NCCL", None).includes(dirs);
            }
            build.compile("gptlab_c10d");
            println!("cargo:rustc-link-lib=dylib=torch_cpu");
            println!("cargo:rustc-link-lib=dylib=c10");
            println!("cargo:rustc-cfg=c10d");
            if nccl.is_some() {
                println!("cargo:rustc-link-lib=dylib=torch_cuda");
                println!("cargo:rustc-link-lib=dylib=c10_cuda");
                println!("cargo:rustc-cfg=c10d_nccl");
            } else if lib.join("libtorch_cuda.so").is_file() {
                println!(
                    "cargo:warning=no CUDA or NCCL headers (scripts/setup.sh installs them): data-parallel training on \
                     GPUs goes through Gloo"
                );
            }
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

/// The include directories the NCCL backend's headers need, when libtorch has CUDA
/// (`libtorch_cuda.so`): CUDA's runtime with its `crt` and CCCL headers, and NCCL's, from PyPI's
/// nvidia packages beside torch (nvidia-cuda-runtime, -crt and -cccl, nvidia-nccl). Only those:
/// `ProcessGroupNCCL`'s inline code must see the NCCL and CUDA versions torch was built with,
/// not whatever else the machine has.
fn nccl_includes(lib: &Path) -> Option<Vec<PathBuf>> {
    // Through links (LIBTORCH is .venv/libtorch), to torch's own directory in site-packages.
    let lib = std::fs::canonicalize(lib).ok()?;
    let c10d = lib.parent()?.join("include/torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp");
    if !lib.join("libtorch_cuda.so").is_file() || !c10d.is_file() {
        return None;
    }
    let nvidia = lib.parent()?.parent()?.join("nvidia");
    let (cuda, nccl) = (nvidia.join("cu13/include"), nvidia.join("nccl/include"));
    for dir in [&cuda, &nccl] {
        if dir.is_dir() {
            // Installing the headers' packages later rebuilds the shim with NCCL.
            println!("cargo:rerun-if-changed={}", dir.display());
        }
    }
    let needs = ["cuda_runtime.h", "crt/host_config.h", "nv/target", "cusparse.h", "cublasLt.h"];
    (needs.iter().all(|f| cuda.join(f).exists()) && nccl.join("nccl.h").is_file()).then(|| vec![cuda, nccl])
}
