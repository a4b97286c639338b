//! Albums: sequencing, album loudness and the deliverables made from them.
//!
//! One file per concern: [`fade`] (fade and crossfade curves), [`sequence`] (where each track sits
//! in a continuous album and rendering it), [`gain`] (album-mode levelling), [`cue`] (CUE sheets and
//! the Red Book checks), [`ddp`] (DDP 2.0 images), [`vinyl`] (sides), [`lossy`] (MP3 and Opus with
//! the decoded true-peak check), [`codec_headroom`] (lossy masters re-rendered until their decode is
//! under the ceiling), [`deliver`] (the delivery manifest's types and what the tasks share),
//! [`execute`] (running one task of a delivery plan), [`assemble`] (CD images and vinyl sides),
//! [`outcome_files`] (the files a task wrote, as its outcome lists them) and [`delivery_writer`]
//! (`delivery.json` and the album reports). The plan itself is `lathe_model::delivery`.

pub mod assemble;
pub mod codec_headroom;
pub mod cue;
pub mod ddp;
pub mod deliver;
pub mod delivery_writer;
pub mod execute;
pub mod fade;
pub mod gain;
pub mod lossy;
pub mod outcome_files;
pub mod report;
pub mod sequence;
pub mod vinyl;

use std::path::Path;

use crate::decode::Decoder;

/// A source's sample rate, Hz, as `lathe_model::delivery::plan::DeliveryPlan::of` asks for it
/// (`None` when the source cannot be opened: it then fails in its own tasks).
pub fn source_rate_hz(path: &Path) -> Option<u32> {
    Decoder::open(path)
        .ok()
        .map(|decoder| decoder.info().sample_rate_hz)
}
