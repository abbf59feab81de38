//! Links libtorch (see `link.rs` at the workspace root).

#[path = "../link.rs"]
mod link;

fn main() {
    link::libtorch();
}
