//! Link libtorch so that a crate's binaries and tests run without LD_LIBRARY_PATH and see CUDA
//! where the machine has it: an rpath to the libtorch that torch-sys found, and `--no-as-needed
//! -ltorch` so the linker keeps libtorch (and through it libtorch_cuda) even though no symbol is
//! used directly. Shared by the build scripts of `gptlab`, `gptlab-nn` and `gptlab-vision`.

/// Emits the link arguments and returns libtorch's lib directory.
pub fn libtorch() -> String {
    let lib = std::env::var("DEP_TCH_LIBTORCH_LIB")
        .expect("torch-sys did not report its libtorch lib dir (DEP_TCH_LIBTORCH_LIB)");
    println!("cargo:rustc-link-arg=-Wl,-rpath={lib}");
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
    println!("cargo:rustc-link-arg=-ltorch");
    println!("cargo:rerun-if-changed=build.rs");
    lib
}
