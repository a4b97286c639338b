//! Stereo image: mid/side width and mono bass on the front left/right pair.
//!
//! The pair is split into mid `M = (L + R) / 2` and side `S = (L - R) / 2`; the side is scaled by
//! `width` (0 is mono, 1 unchanged, 2 twice as wide) and the pair rebuilt as `L = M + S`, `R = M - S`.
//!
//! With `mono_bass_hz` set, the side signal is also high-passed with a Linkwitz-Riley 4th-order filter
//! at that frequency, which makes the bass mono (a turntable's vertical rumble, out-of-phase bass that
//! a cutting lathe or a club system cannot take). The mid path goes through the matching 2nd-order
//! all-pass (the sum of the LR4 low- and high-pass), so above the frequency mid and side keep the same
//! phase and the image is unchanged there; in-phase bass keeps its level exactly.
//!
//! Channels 0 and 1 are taken as front left and right when there are at least 2 channels; any further
//! channels pass through untouched. Mono input passes through unchanged (it has no side signal). With
//! `width` 1 and no mono bass the stage is an exact identity.

use crate::audio::AudioBlock;
use crate::master::biquad::{BiquadCascade, BiquadCoefficients, PassBand, check_below_nyquist};
use crate::stage::Stage;
use lathe_model::config::InvalidValue;
use lathe_model::stage_config::StereoConfig;

/// The filters of the mono-bass split (one state set: they run on the mid and side signals).
#[derive(Debug, Clone)]
struct MonoBass {
    /// LR4 high-pass on the side signal.
    side_highpass: BiquadCascade,
    /// Matching all-pass on the mid signal.
    mid_allpass: BiquadCascade,
}

/// Stereo width and mono-bass stage (see the module documentation).
#[derive(Debug, Clone)]
pub struct StereoImage {
    width: f64,
    mono_bass: Option<MonoBass>,
}

impl StereoImage {
    /// Builds the stage. It needs no buffers, and works on channels 0 and 1 whatever the channel count,
    /// so `channel_count` and `max_block_frames` are accepted only for the common constructor shape.
    ///
    /// # Errors
    /// An out-of-range value (see [`StereoConfig::validate`]), or `mono_bass_hz` at or above 0.49 times
    /// the sample rate.
    pub fn new(
        config: &StereoConfig,
        channel_count: usize,
        sample_rate_hz: u32,
        max_block_frames: usize,
    ) -> Result<Self, InvalidValue> {
        let _ = (channel_count, max_block_frames);
        config.validate()?;
        let mono_bass = match config.mono_bass_hz {
            Some(frequency_hz) => {
                check_below_nyquist("mono_bass_hz", frequency_hz, sample_rate_hz)?;
                Some(MonoBass {
                    side_highpass: BiquadCascade::linkwitz_riley4(
                        PassBand::Highpass,
                        frequency_hz,
                        sample_rate_hz,
                        1,
                    ),
                    mid_allpass: BiquadCascade::new(
                        vec![BiquadCoefficients::allpass(
                            frequency_hz,
                            std::f64::consts::FRAC_1_SQRT_2,
                            sample_rate_hz,
                        )],
                        1,
                    ),
                })
            }
            None => None,
        };
        Ok(Self {
            width: config.width,
            mono_bass,
        })
    }

    /// Whether the stage leaves the audio exactly as it is (width 1, no mono bass).
    pub fn is_identity(&self) -> bool {
        self.width == 1.0 && self.mono_bass.is_none()
    }
}

impl Stage for StereoImage {
    fn name(&self) -> &'static str {
        "stereo"
    }

    fn process(&mut self, block: &mut AudioBlock) {
        if block.channel_count() < 2 || self.is_identity() {
            return;
        }
        let width = self.width;
        let (left, right) = block.channel_pair_mut(0, 1);
        for (l, r) in left.iter_mut().zip(right.iter_mut()) {
            let (x_l, x_r) = (f64::from(*l), f64::from(*r));
            let mut mid = 0.5 * (x_l + x_r);
            let mut side = 0.5 * (x_l - x_r);
            if let Some(mono_bass) = &mut self.mono_bass {
                mid = mono_bass.mid_allpass.process_sample(0, mid);
                side = mono_bass.side_highpass.process_sample(0, side);
            }
            side *= width;
            *l = (mid + side) as f32;
            *r = (mid - side) as f32;
        }
    }

    fn reset(&mut self) {
        if let Some(mono_bass) = &mut self.mono_bass {
            mono_bass.side_highpass.reset();
            mono_bass.mid_allpass.reset();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{noise, process_in_blocks, sine, steady_rms_db};

    const FS: u32 = 48_000;

    fn stage(width: f64, mono_bass_hz: Option<f64>) -> StereoImage {
        let config = StereoConfig {
            width,
            mono_bass_hz,
        };
        StereoImage::new(&config, 2, FS, 4096).expect("valid config")
    }

    /// A 2 s stereo tone; `polarity` -1 makes the right channel the inverse of the left.
    fn tone(frequency_hz: f64, polarity: f32) -> AudioBlock {
        let left = sine(1, 2 * FS as usize, FS, frequency_hz, 0.5);
        let right: Vec<f32> = left.channel(0).iter().map(|&x| polarity * x).collect();
        AudioBlock::from_channels(vec![left.channel(0).to_vec(), right], FS)
    }

    /// Level change of both channels over the second half of a 2 s tone.
    fn level_change_db(stage: &mut StereoImage, input: &AudioBlock, frequency_hz: f64) -> [f64; 2] {
        let output = process_in_blocks(stage, input, &[4096]);
        let skip = FS as usize;
        [0, 1].map(|c| {
            steady_rms_db(&output.channel(c)[skip..], FS, frequency_hz)
                - steady_rms_db(&input.channel(c)[skip..], FS, frequency_hz)
        })
    }

    #[test]
    fn width_zero_makes_left_equal_right() {
        for mono_bass_hz in [None, Some(120.0)] {
            let input = noise(2, 20_000, FS, 0.9, 17);
            let output = process_in_blocks(&mut stage(0.0, mono_bass_hz), &input, &[1000]);
            assert_eq!(output.channel(0), output.channel(1));
            assert!(output.channel(0).iter().any(|&x| x != 0.0));
        }
    }

    #[test]
    fn unit_width_without_mono_bass_is_bit_identical() {
        let mut input = noise(3, 20_000, FS, 1.0, 23);
        // Include extremes: tiny values next to large ones, and signed zeros.
        input.channel_mut(0)[0] = 1.0;
        input.channel_mut(1)[0] = 1e-30;
        input.channel_mut(0)[1] = -0.0;
        let output = process_in_blocks(&mut stage(1.0, None), &input, &[1000]);
        for c in 0..3 {
            let same = input
                .channel(c)
                .iter()
                .zip(output.channel(c))
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "channel {c}");
        }
    }

    #[test]
    fn width_scales_the_side_signal() {
        // An out-of-phase tone is all side: width 2 doubles it (+6.02 dB), 0.5 halves it.
        for (width, want_db) in [(2.0, 20.0 * 2f64.log10()), (0.5, -20.0 * 2f64.log10())] {
            let input = tone(1000.0, -1.0);
            let changes = level_change_db(&mut stage(width, None), &input, 1000.0);
            for change in changes {
                assert!((change - want_db).abs() < 0.01, "width {width}: {change}");
            }
            // An in-phase tone is all mid and keeps its level.
            let input = tone(1000.0, 1.0);
            for change in level_change_db(&mut stage(width, None), &input, 1000.0) {
                assert!(change.abs() < 0.001);
            }
        }
    }

    #[test]
    fn mono_bass_removes_out_of_phase_bass_only() {
        let out_of_phase_bass =
            level_change_db(&mut stage(1.0, Some(150.0)), &tone(40.0, -1.0), 40.0);
        let out_of_phase_treble =
            level_change_db(&mut stage(1.0, Some(150.0)), &tone(2000.0, -1.0), 2000.0);
        let in_phase_bass = level_change_db(&mut stage(1.0, Some(150.0)), &tone(40.0, 1.0), 40.0);
        eprintln!(
            "out-of-phase 40 Hz {out_of_phase_bass:?}, 2 kHz {out_of_phase_treble:?}, \
             in-phase 40 Hz {in_phase_bass:?}"
        );
        for c in 0..2 {
            assert!(out_of_phase_bass[c] < -30.0, "{out_of_phase_bass:?}");
            assert!(
                out_of_phase_treble[c].abs() < 0.1,
                "{out_of_phase_treble:?}"
            );
            assert!(in_phase_bass[c].abs() < 0.1, "{in_phase_bass:?}");
        }
    }

    #[test]
    fn mono_bass_keeps_mid_and_side_aligned_above_the_split() {
        // A tone only in the left channel, well above the split, must stay (nearly) only in the left
        // channel: mid and side are phase-aligned there.
        let left = sine(1, 2 * FS as usize, FS, 3000.0, 0.5);
        let input = AudioBlock::from_channels(
            vec![left.channel(0).to_vec(), vec![0.0; 2 * FS as usize]],
            FS,
        );
        let output = process_in_blocks(&mut stage(1.0, Some(150.0)), &input, &[4096]);
        let skip = FS as usize;
        let leak_db = steady_rms_db(&output.channel(1)[skip..], FS, 3000.0)
            - steady_rms_db(&input.channel(0)[skip..], FS, 3000.0);
        assert!(leak_db < -40.0, "{leak_db}");
    }

    #[test]
    fn mono_and_extra_channels_pass_through() {
        let mono = noise(1, 5000, FS, 0.5, 1);
        assert_eq!(
            process_in_blocks(&mut stage(0.0, Some(100.0)), &mono, &[512]),
            mono
        );
        let surround = noise(6, 5000, FS, 0.5, 2);
        let output = process_in_blocks(&mut stage(0.0, Some(100.0)), &surround, &[512]);
        for c in 2..6 {
            assert_eq!(output.channel(c), surround.channel(c));
        }
        assert_eq!(output.channel(0), output.channel(1));
    }

    #[test]
    fn block_size_independent() {
        for (width, mono_bass_hz) in [(1.4, Some(200.0)), (0.3, None)] {
            let input = noise(2, 20_000, FS, 0.8, 29);
            let reference = process_in_blocks(&mut stage(width, mono_bass_hz), &input, &[4096]);
            for sizes in [&[1][..], &[7], &[64], &[3, 999]] {
                let output = process_in_blocks(&mut stage(width, mono_bass_hz), &input, sizes);
                assert_eq!(output, reference, "{sizes:?}");
            }
        }
    }

    #[test]
    fn reset_repeats_the_render() {
        let mut stage = stage(1.7, Some(90.0));
        let input = noise(2, 10_000, FS, 0.5, 6);
        let first = process_in_blocks(&mut stage, &input, &[300]);
        stage.reset();
        assert_eq!(process_in_blocks(&mut stage, &input, &[300]), first);
    }

    #[test]
    fn silence_in_silence_out_and_noise_stays_finite() {
        let mut stage = stage(2.0, Some(500.0));
        let silence = AudioBlock::from_channels(vec![vec![0.0; 8000]; 2], FS);
        let out = process_in_blocks(&mut stage, &silence, &[512]);
        assert!(out.channels().flatten().all(|&x| x == 0.0));
        let out = process_in_blocks(&mut stage, &noise(2, 48_000, FS, 1.0, 4), &[512]);
        assert!(out.channels().flatten().all(|x| x.is_finite()));
    }

    #[test]
    fn config_defaults_and_validation() {
        let config: StereoConfig = toml::from_str("").expect("defaults");
        assert_eq!(config, StereoConfig::default());
        let config: StereoConfig =
            toml::from_str("width = 1.2\nmono_bass_hz = 120.0").expect("valid");
        assert_eq!(config.mono_bass_hz, Some(120.0));
        let text = toml::to_string(&config).expect("serialise");
        assert_eq!(toml::from_str::<StereoConfig>(&text).ok(), Some(config));
        assert!(toml::from_str::<StereoConfig>("balance = 0.1").is_err());
        let key = |width: f64, mono_bass_hz: Option<f64>| {
            StereoImage::new(
                &StereoConfig {
                    width,
                    mono_bass_hz,
                },
                2,
                FS,
                64,
            )
            .map(|_| ())
            .map_err(|e| e.key)
        };
        assert_eq!(key(2.5, None), Err("width".into()));
        assert_eq!(key(1.0, Some(10.0)), Err("mono_bass_hz".into()));
        assert_eq!(key(1.0, Some(500.0)), Ok(()));
    }
}
