//! The `gptlab` command line. Every failure ends as one `error: ...` line and a non-zero exit.

mod cli;

use clap::Parser;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    // Like every Unix tool, end quietly when a reader such as `head` closes the pipe, rather than
    // failing on the next write (Rust ignores SIGPIPE by default).
    // SAFETY: setting a signal's disposition to its default before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // Library panics (libtorch exceptions surface as panics) still end as one line, no backtrace.
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("unknown panic");
        // libtorch errors carry a C++ backtrace after the first (possibly escaped) newline.
        let first = msg.lines().next().unwrap_or("").split("\\n").next().unwrap_or("");
        eprintln!("error: internal error: {first}");
    }));
    let cli = cli::Cli::parse();
    if let Err(e) = cli::run(cli) {
        let msg = format!("{e:#}");
        eprintln!("error: {}", msg.lines().next().unwrap_or(""));
        std::process::exit(1);
    }
}
