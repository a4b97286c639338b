//! Album-mode levelling, the measurements: each source's 400 ms gating blocks
//! ([`measure_source`], the farm's `measure` task) and, for an album levelled with one fixed gain,
//! its chain output ([`measure_source_chain`], the `measure_chain` task). The plan itself is
//! `lathe_model::album_level::plan_from_measurements`.

use std::path::Path;

use crate::audio::AudioBlock;
use crate::audio::BLOCK_FRAMES;
use crate::decode::Decoder;
use crate::error::Result;
use crate::loudness::LoudnessMeter;
use crate::render::measure_chain;
use lathe_model::album_level::{ChainFigures, SourceMeasurement};
use lathe_model::profile::Profile;

/// Measures a source for the album plan (one decode pass at its own rate).
///
/// # Errors
/// A decode error.
pub fn measure_source(path: &Path) -> Result<SourceMeasurement> {
    let mut decoder = Decoder::open(path)?;
    let info = decoder.info().clone();
    let mut meter = LoudnessMeter::integrated_only(info.channel_count, info.sample_rate_hz);
    let mut block = AudioBlock::new(info.channel_count, BLOCK_FRAMES, info.sample_rate_hz);
    while decoder.read(&mut block)? > 0 {
        meter.add(&block);
    }
    Ok(SourceMeasurement {
        integrated_lufs: meter.figures().integrated_lufs,
        gating_blocks: meter.gating_blocks().to_vec(),
        ungated_lufs: meter.ungated_lufs(),
    })
}

/// Runs `profile`'s chain on a source after the album's chain-input gain and measures its output.
///
/// # Errors
/// A decode or profile error.
pub fn measure_source_chain(
    path: &Path,
    profile: &Profile,
    chain_input_gain_db: f64,
) -> Result<ChainFigures> {
    let info = Decoder::open(path)?.info().clone();
    let mut meter = LoudnessMeter::integrated_only(
        info.channel_count,
        profile.output_rate_hz(info.sample_rate_hz),
    );
    let figures = measure_chain(path, profile, chain_input_gain_db, &mut |block| {
        meter.add(block);
    })?;
    Ok(ChainFigures {
        integrated_lufs: figures.integrated_lufs,
        true_peak_dbtp: figures.true_peak_dbtp,
        gating_blocks: meter.gating_blocks().to_vec(),
        ungated_lufs: meter.ungated_lufs(),
    })
}
