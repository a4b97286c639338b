//! A catalogue delivery as a graph of tasks: the unit of work a farm worker (or a local thread) runs.
//!
//! ```text
//! measure(track)          the source's 400 ms loudness blocks and its plot curves   (every album track)
//! measure_chain(track)    the chain's output loudness and true peak                 (album mode, no limiter)
//! render(track, outlet)   master_track with the outlet's profile (+ lossy encode and check)
//! assemble(album, outlet) CD image + CUE + DDP, or vinyl sides, from the float masters
//! ```
//!
//! [`plan::DeliveryPlan::of`] plans a catalogue on the machine that holds it (profiles loaded,
//! source rates read through the caller); every [`plan::Work`] is then self-contained (profiles
//! inline, no catalogue paths), so a worker on another host needs only the source bytes and its
//! input files. The album level plan (`plan(album)` in the design) is [`resolve::resolve`]: a cheap
//! function of the `needs` tasks' outcomes ([`outcome::TaskOutcome`]), run by whoever schedules the
//! graph just before the task is handed out. The engine executes a task and writes the delivery;
//! this module is what the coordinator plans and resolves with, without linking a codec.

pub mod outcome;
pub mod outlet;
pub mod plan;
pub mod resolve;
