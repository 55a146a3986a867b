//! Build script of each function: release builds for Linux link the code that runs at a
//! cold start (listed in `functions/init-order.ld`) together at the front of `.text`.
//!
//! The kernel maps a binary's code on first touch, 64 KB around each page fault. Linked in
//! the compiler's order, the ~1,300 functions a function runs before its first `/next`
//! were spread over all 6 MB of `.text`, with a fault in nearly every 64 KB of it. Gathered
//! (1.7 to 2.2 MB with the generic copies that share a listed name), notify's cold start
//! takes about 25 fewer page faults and 0.2 to 0.5 ms less (see docs/performance.md).
//! A linker script rather than `--symbol-ordering-file`: the arm64 zips are linked by zig
//! (through cargo-lambda and `sam build`), which takes `-T` but rejects that flag, and a
//! script's patterns can leave out the symbol hashes, which differ between targets.
//! `scripts/init-order` regenerates the list; a stale list costs speed, never correctness.

use std::env;
use std::path::PathBuf;

fn main() {
    let list = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("set by cargo")).join("../init-order.ld");
    println!("cargo:rerun-if-changed={}", list.display());
    let release = env::var("PROFILE").is_ok_and(|p| p == "release");
    let linux = env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    if release && linux && list.exists() {
        println!("cargo:rustc-link-arg-bins=-T{}", list.display());
    }
}
