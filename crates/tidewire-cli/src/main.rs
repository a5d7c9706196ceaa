//! The `tidewire` command: the server and its tools.

mod cli;

/// mimalloc: faster than the system allocator for the many small, short-lived
/// allocations of streaming, and it returns freed memory to the system.
///
/// Built without its transparent huge pages (`no_thp`): memory it returns and takes
/// back came back as a fresh 2 MiB page the kernel zeroed whole for a few small
/// allocations, 12 to 16 % of the server's time in a burst, with stalls of up to 2 s
/// in paced streams. (Where the kernel gives huge pages unasked, THP `always`,
/// `MIMALLOC_ALLOW_THP=0` in the environment turns them off for the process.)
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cli::main()
}
