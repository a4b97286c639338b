//! Checks of the repository itself, with no server and no audio: the deploy files against the
//! binaries, and no cycle between the modules of any crate. One test binary for both.

mod deploy_manifests;
mod module_cycles;
