//! The farm against real servers: `nats-server -js`, `etcd`, the coordinator and workers as separate
//! processes on loopback (see `lathe_tests::farm`). One test binary for every farm test, so that the
//! whole farm is linked once; the tests of all its modules take `lathe_tests::farm::serial` and run
//! one at a time.

mod dashboard;
mod guarantees;
mod manifest;
mod observability;
mod webdriver;

use lathe_tests::farm::Binaries;

/// The farm's processes, built by this crate (`src/bin/`).
const BINARIES: Binaries = Binaries {
    coordinator: env!("CARGO_BIN_EXE_farm-coordinator"),
    worker: env!("CARGO_BIN_EXE_farm-worker"),
};
