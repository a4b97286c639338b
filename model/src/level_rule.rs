//! How a track's level is set, chosen from what BS.1770 can measure of its source.
//!
//! Most sources have 400 ms gating blocks above the -70 LUFS absolute gate, and their integrated
//! loudness sets the level ([`LevelRule::IntegratedLoudness`]). Catalogues also hold sources that
//! have none, and each still gets a master:
//!
//! - **Too short to gate** (stings, idents, sound effects under 400 ms: no gating block at all, or
//!   sound only outside every complete block): the ungated K-weighted loudness over the whole
//!   track stands in for the integrated loudness ([`LevelRule::WholeTrackLoudness`]), and the
//!   track is taken to the same target through the same chain, limiter and calibration. Chosen
//!   over peak-normalising to the ceiling because it keeps the profile's own rule (a loudness
//!   target) and so the catalogue's level: a sting meant to sit between -14 LUFS tracks plays at
//!   about -14 LUFS, where one peak-normalised to -1 dBTP would come out as loud as its crest
//!   factor allows, often several LU louder than the music around it. The ceiling still holds
//!   (the limiter, or the peak cap without one). For one block of audio the ungated mean square is
//!   what the gated measurement would read anyway: the gates only drop quiet blocks of a longer
//!   programme. Only a source whose whole-track loudness is above the -70 LUFS gate is levelled
//!   this way; one below it is near-silent.
//! - **Near-silent** (room tone, a lone quiet click: nothing above -70 LUFS): its loudness cannot
//!   be measured reliably, and normalising it would mean a huge gain on noise. It is rendered at
//!   unity gain ([`LevelRule::UnityGain`]): 0 dB before and after the profile's chain, no target,
//!   the true peak still kept under the ceiling.
//! - **Digital silence** (every sample zero), and in album mode any source that is silent or
//!   near-silent: delivered as digital silence of the source's length, at the output's rate and in
//!   its format ([`LevelRule::Silence`]). No dither: a mastering engineer delivers true digital
//!   silence, not a noise floor.
//!
//! The rule is recorded in the track report and explained in a note among its warnings.

use serde::{Deserialize, Serialize};

use crate::analysis::Analysis;
use crate::gating::ABSOLUTE_GATE_LUFS;

/// How a track's level was set (see the module documentation).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LevelRule {
    /// By its BS.1770 integrated (gated) loudness: every source with a gating block above the
    /// -70 LUFS absolute gate.
    #[default]
    IntegratedLoudness,
    /// By its ungated K-weighted loudness over the whole track: a source with no gating block above
    /// the gate (shorter than 400 ms) whose whole-track loudness is above it.
    WholeTrackLoudness,
    /// Unity gain, no target: a near-silent source (its whole-track loudness below the gate too).
    UnityGain,
    /// Delivered as digital silence of the source's length: digital silence, or in album mode any
    /// silent or near-silent source.
    Silence,
}

impl LevelRule {
    /// The rule for a source of this analysis, mastered on its own.
    pub fn for_source(analysis: &Analysis) -> Self {
        if analysis.integrated_lufs.is_some() {
            Self::IntegratedLoudness
        } else if analysis.sample_peak_dbfs.is_none() {
            Self::Silence
        } else if analysis
            .ungated_lufs
            .is_some_and(|lufs| lufs > ABSOLUTE_GATE_LUFS)
        {
            Self::WholeTrackLoudness
        } else {
            Self::UnityGain
        }
    }

    /// The level this rule reads, LUFS, from a programme's integrated and ungated loudness; `None`
    /// where the rule reads none (unity gain, silence) or the programme has none.
    pub fn level_lufs(
        self,
        integrated_lufs: Option<f64>,
        ungated_lufs: Option<f64>,
    ) -> Option<f64> {
        match self {
            Self::IntegratedLoudness => integrated_lufs,
            Self::WholeTrackLoudness => ungated_lufs,
            Self::UnityGain | Self::Silence => None,
        }
    }

    /// [`LevelRule::level_lufs`] of an analysis.
    pub fn level_of(self, analysis: &Analysis) -> Option<f64> {
        self.level_lufs(analysis.integrated_lufs, analysis.ungated_lufs)
    }

    /// `true` when the rule sets the level from a measured loudness.
    pub fn measures_level(self) -> bool {
        matches!(self, Self::IntegratedLoudness | Self::WholeTrackLoudness)
    }

    /// What the measured level is called in QC messages.
    pub fn level_name(self) -> &'static str {
        match self {
            Self::WholeTrackLoudness => "whole-track loudness",
            _ => "integrated loudness",
        }
    }

    /// The note for the track report saying how the level was set, from the analyses of the source
    /// and the master; `None` for the ordinary rule.
    pub fn note(self, source: &Analysis, master: &Analysis) -> Option<String> {
        let lufs = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"));
        match self {
            Self::IntegratedLoudness => None,
            Self::WholeTrackLoudness => Some(format!(
                "the source ({:.3} s) has no 400 ms gating block above the -70 LUFS gate, so no integrated loudness: its level is set by its ungated K-weighted loudness over the whole track ({} LUFS in the source, {} LUFS in the master)",
                source.duration_s,
                lufs(source.ungated_lufs),
                lufs(master.ungated_lufs),
            )),
            Self::UnityGain => Some(format!(
                "the source is near-silent (ungated loudness {} LUFS, nothing above the -70 LUFS gate): rendered at unity gain (0 dB before and after the chain, no loudness target), the true peak kept under the ceiling",
                lufs(source.ungated_lufs),
            )),
            Self::Silence if source.sample_peak_dbfs.is_none() => Some(
                "the source is digital silence: delivered as digital silence of the same length (no dither)"
                    .to_owned(),
            ),
            Self::Silence => Some(format!(
                "the source is silent or near-silent (ungated loudness {} LUFS, nothing above the -70 LUFS gate): left out of the album loudness and delivered as digital silence of its length (no dither)",
                lufs(source.ungated_lufs),
            )),
        }
    }
}
