//! Link libtorch so that `target/*/gptlab` runs without LD_LIBRARY_PATH and sees CUDA where the
//! machine has it: an rpath to the libtorch that torch-sys found, and `--no-as-needed -ltorch` so
//! the linker keeps libtorch (and through it libtorch_cuda) even though no symbol is used directly.
fn main() {
    let lib = std::env::var("DEP_TCH_LIBTORCH_LIB")
        .expect("torch-sys did not report its libtorch lib dir (DEP_TCH_LIBTORCH_LIB)");
    println!("cargo:rustc-link-arg=-Wl,-rpath={lib}");
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
    println!("cargo:rustc-link-arg=-ltorch");
    println!("cargo:rerun-if-changed=build.rs");
}
