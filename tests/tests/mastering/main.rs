//! `lathe master` and `lathe analyze` end to end, as a user runs them: loudness compliance, every
//! preset, album levelling and album delivery. One test binary for all of them, so that the engine
//! and the CLI are linked once.

mod album_delivery;
mod album_loudness;
mod loudness_compliance;
mod master_end_to_end;
