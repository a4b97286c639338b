//! The level rules (`lathe_model::level_rule`) through `master_track`: sources too short to gate,
//! near-silent and silent, alone and in albums.

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::path::{Path, PathBuf};

    use crate::audio::AudioBlock;
    use crate::decode::Decoder;
    use crate::qc::analyze_file;
    use crate::render::{MasterRequest, master_track};
    use crate::testkit;
    use lathe_model::level::{Level, LevelOverride};
    use lathe_model::level_rule::LevelRule;
    use lathe_model::profile::Profile;
    use lathe_model::report::TrackReport;
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
