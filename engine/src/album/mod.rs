//! Albums: sequencing, album loudness and the deliverables made from them.
//!
//! One file per concern: [`fade`] (fade and crossfade curves), [`sequence`] (where each track sits
//! in a continuous album and rendering it), [`gain`] (album-mode levelling), [`cue`] (CUE sheets and
//! the Red Book checks), [`ddp`] (DDP 2.0 images), [`vinyl`] (sides), [`lossy`] (MP3 and Opus with
//! the decoded true-peak check), [`codec_headroom`] (lossy masters re-rendered until their decode is
//! under the ceiling), [`platforms`] (streaming normalisation preview) and [`deliver`]
//! (running a catalogue's outlets and writing the delivery manifest and report).

pub mod codec_headroom;
pub mod cue;
pub mod ddp;
pub mod deliver;
pub mod fade;
pub mod gain;
pub mod graph;
pub mod lossy;
pub mod platforms;
pub mod report;
pub mod sequence;
pub mod vinyl;
