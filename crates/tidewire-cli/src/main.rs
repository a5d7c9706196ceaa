//! The `tidewire` command: the server and its tools.

mod cli;

/// mimalloc: faster than the system allocator for the many small, short-lived
/// allocations of streaming, and it returns freed memory to the system.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cli::main()
}
