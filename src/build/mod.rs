//! The producers: the engine fleet (classic and BuildKit builds, routed native,
//! emulated or cross) and the daemonless assembler, with QEMU binfmt setup.

pub mod assemble;
pub mod binfmt;
pub mod fleet;
