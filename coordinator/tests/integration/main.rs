//! The coordinator's integration tests, in one test binary so that the crate and its dependencies
//! are linked once: the bounds on what a client may send, the conformance suite of each
//! infrastructure trait, the scheduling and failure rules, jobs of thousands of tasks on real
//! servers, and the trace exporter.

mod bounds;
mod conformance;
mod real_servers_scale;
mod scheduling;
mod telemetry;
