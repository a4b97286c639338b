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

use crate::loudness::ABSOLUTE_GATE_LUFS;
use crate::qc::Analysis;

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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::audio::AudioBlock;
    use crate::decode::Decoder;
    use crate::qc::analyze_file;
    use crate::render::{Level, LevelOverride, MasterRequest, TrackReport, master_track};
    use crate::testkit;
    use lathe_model::profile::Profile;
    use lathe_model::tags::TrackTags;

    /// A 16-bit integer (or 32-bit float) WAV of `block`.
    fn write_wav(path: &Path, block: &AudioBlock, float: bool) {
        let spec = hound::WavSpec {
            channels: block.channel_count() as u16,
            sample_rate: block.sample_rate_hz(),
            bits_per_sample: if float { 32 } else { 16 },
            sample_format: if float {
                hound::SampleFormat::Float
            } else {
                hound::SampleFormat::Int
            },
        };
        let mut writer = hound::WavWriter::create(path, spec).unwrap();
        for frame in 0..block.frames() {
            for channel in block.channels() {
                if float {
                    writer.write_sample(channel[frame]).unwrap();
                } else {
                    writer
                        .write_sample((channel[frame] * 32768.0).round() as i16)
                        .unwrap();
                }
            }
        }
        writer.finalize().unwrap();
    }

    fn master(
        source: &Path,
        output: &Path,
        profile: &str,
        level: Option<LevelOverride>,
    ) -> TrackReport {
        master_track(
            &MasterRequest {
                input: source,
                output,
                profile: &Profile::preset(profile).unwrap(),
                tags: TrackTags::default(),
                level,
                fades: None,
            },
            &mut |_| std::ops::ControlFlow::Continue(()),
        )
        .unwrap()
    }

    /// Every sample of the file, channel after channel.
    fn decoded(path: &Path) -> Vec<Vec<f32>> {
        let mut decoder = Decoder::open(path).unwrap();
        let info = decoder.info().clone();
        let mut block = AudioBlock::new(info.channel_count, 4096, info.sample_rate_hz);
        let mut channels = vec![Vec::new(); info.channel_count];
        while decoder.read(&mut block).unwrap() > 0 {
            for (all, part) in channels.iter_mut().zip(block.channels()) {
                all.extend_from_slice(part);
            }
        }
        channels
    }

    /// A source `frames` long at `rate_hz` in a temporary folder.
    fn source(dir: &Path, name: &str, block: &AudioBlock, float: bool) -> PathBuf {
        let path = dir.join(name);
        write_wav(&path, block, float);
        path
    }

    #[test]
    fn digital_silence_masters_to_digital_silence_of_the_same_length() {
        let dir = tempfile::tempdir().unwrap();
        let frames = 48_000 * 5 / 2;
        let silence = AudioBlock::from_channels(vec![vec![0.0; frames]; 2], 48_000);
        let silent = source(dir.path(), "silent.wav", &silence, false);
        let tone = source(
            dir.path(),
            "tone.wav",
            &testkit::sine(2, frames, 48_000, 440.0, 0.3),
            false,
        );
        // TPDF at 24 bits (FLAC), noise-shaped at 16 bits resampled to 44.1 kHz (WAV), TPDF
        // resampled to 96 kHz: dither never lifts digital silence off zero.
        for (profile, extension) in [("streaming", "flac"), ("cd", "wav"), ("hires", "flac")] {
            let output = dir.path().join(format!("silent-{profile}.{extension}"));
            let report = master(&silent, &output, profile, None);
            assert_eq!(report.level_rule, LevelRule::Silence, "{profile}");
            assert!(report.qc.passed, "{profile}: {:?}", report.qc.issues);
            assert!(
                report
                    .warnings
                    .iter()
                    .any(|w| w.contains("digital silence")),
                "{profile}: {:?}",
                report.warnings
            );
            assert_eq!(report.output_analysis.integrated_lufs, None);
            let samples = decoded(&output);
            assert!(
                samples.iter().flatten().all(|x| x.to_bits() == 0),
                "{profile}: a sample is not +0.0"
            );
            // As long as the master of a sounding source of the same length.
            let normal = master(
                &tone,
                &dir.path().join(format!("tone-{profile}.{extension}")),
                profile,
                None,
            );
            assert_eq!(normal.level_rule, LevelRule::IntegratedLoudness);
            let tone_frames = decoded(&normal.output)[0].len();
            assert_eq!(samples[0].len(), tone_frames, "{profile}");
            assert_eq!(
                Decoder::open(&output).unwrap().info().sample_rate_hz,
                report.output_sample_rate_hz
            );
        }
    }

    #[test]
    fn a_sting_shorter_than_a_gating_block_meets_the_target_by_its_whole_track_loudness() {
        let dir = tempfile::tempdir().unwrap();
        // 250 ms: a decaying two-note chime with a little noise, about 10 dB from its peak to
        // its whole-track loudness, so -14 LUFS fits under the -1 dBTP ceiling.
        let rate = 48_000;
        let frames = rate / 4;
        let noise = testkit::noise(2, frames, rate as u32, 0.1, 3);
        let low = testkit::sine(2, frames, rate as u32, 660.0, 1.0);
        let high = testkit::sine(2, frames, rate as u32, 990.0, 0.5);
        let channels: Vec<Vec<f32>> = (0..2)
            .map(|c| {
                (0..frames)
                    .map(|i| {
                        let envelope = (-(i as f32) / (0.12 * rate as f32)).exp();
                        let x = low.channel(c)[i] + high.channel(c)[i] + noise.channel(c)[i];
                        0.2 * envelope * x
                    })
                    .collect()
            })
            .collect();
        let sting = source(
            dir.path(),
            "sting.wav",
            &AudioBlock::from_channels(channels, rate as u32),
            true,
        );
        let output = dir.path().join("sting.flac");
        let report = master(&sting, &output, "streaming", None);
        assert_eq!(report.level_rule, LevelRule::WholeTrackLoudness);
        assert_eq!(report.input_analysis.integrated_lufs, None);
        let written = analyze_file(&output).unwrap();
        let lufs = written.ungated_lufs.unwrap();
        assert!((lufs - -14.0).abs() <= 0.5, "{lufs:.2} LUFS");
        let error = report.loudness_error_lu.unwrap();
        assert!(error.abs() <= 0.5, "{error:.2} LU off");
        let peak = written.true_peak_dbtp.unwrap();
        assert!(peak <= -1.0, "{peak:.2} dBTP");
        assert!(report.qc.passed, "{:?}", report.qc.issues);
        assert!(
            report
                .warnings
                .iter()
                .any(|w| w.contains("ungated K-weighted loudness over the whole track")),
            "{:?}",
            report.warnings
        );
    }

    /// Noise at about -77 LUFS: every gating block under the -70 LUFS gate.
    fn near_silent(dir: &Path) -> PathBuf {
        let source = source(
            dir,
            "room.wav",
            &testkit::noise(2, 48_000 * 3, 48_000, 1.5e-4, 9),
            true,
        );
        let analysis = analyze_file(&source).unwrap();
        assert_eq!(analysis.integrated_lufs, None);
        assert!(analysis.ungated_lufs.unwrap() < -70.0, "{analysis:?}");
        source
    }

    #[test]
    fn a_near_silent_source_is_mastered_at_unity_gain() {
        let dir = tempfile::tempdir().unwrap();
        let room = near_silent(dir.path());
        let output = dir.path().join("room.flac");
        let report = master(&room, &output, "streaming", None);
        assert_eq!(report.level_rule, LevelRule::UnityGain);
        assert_eq!(
            (
                report.chain_input_gain_db,
                report.gain_db,
                report.target_lufs
            ),
            (0.0, 0.0, None)
        );
        assert!(report.qc.passed, "{:?}", report.qc.issues);
        assert!(
            report.warnings.iter().any(|w| w.contains("unity gain")),
            "{:?}",
            report.warnings
        );
        // Its samples kept at their level: well under the profile's max_gain_db, not lifted to
        // the target.
        let before = report.input_analysis.ungated_lufs.unwrap();
        let after = analyze_file(&output).unwrap().ungated_lufs.unwrap();
        let max_gain_db = Profile::preset("streaming").unwrap().loudness.max_gain_db;
        assert!(after - before <= max_gain_db, "{before:.2} -> {after:.2}");
        assert!((after - before).abs() <= 1.0, "{before:.2} -> {after:.2}");
    }

    #[test]
    fn an_album_plans_silence_for_a_near_silent_track() {
        let dir = tempfile::tempdir().unwrap();
        let room = near_silent(dir.path());
        let output = dir.path().join("room.flac");
        let level = LevelOverride {
            chain_input_gain_db: 4.0,
            level: Level::Silence,
        };
        let report = master(&room, &output, "streaming", Some(level));
        assert_eq!(report.level_rule, LevelRule::Silence);
        assert!(
            report
                .warnings
                .iter()
                .any(|w| w.contains("left out of the album loudness")),
            "{:?}",
            report.warnings
        );
        let samples = decoded(&output);
        assert_eq!(samples[0].len(), 48_000 * 3);
        assert!(samples.iter().flatten().all(|x| x.to_bits() == 0));
    }
}
