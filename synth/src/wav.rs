//! A generated track written to a WAV file.

use std::path::{Path, PathBuf};

use crate::generator::{TrackRecipe, TrackSynth};

/// Frames generated per read while writing.
const WAV_BLOCK_FRAMES: usize = 4096;

/// Why [`write_wav`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WavError {
    /// The bit depth asked for is not one WAV writing supports here.
    #[error(
        "{path}: cannot write WAV: bit depth {bit_depth} is not supported: use 16 or 24 (integer) or 32 (float)"
    )]
    UnsupportedBitDepth {
        /// The file that was to be written.
        path: PathBuf,
        /// The bit depth asked for.
        bit_depth: u32,
    },
    /// Creating or writing the file failed.
    #[error("{path}: cannot write WAV: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The WAV writer's error (an I/O error or a format limit).
        source: hound::Error,
    },
}

/// Writes a recipe to a WAV file with hound, streaming: `bit_depth` 32 writes 32-bit float (peaks over
/// 0 dBFS survive), 16 or 24 writes integer PCM (samples clipped to full scale, rounded, not dithered).
///
/// # Errors
/// [`WavError::UnsupportedBitDepth`] for another bit depth, [`WavError::Write`] if the file cannot be
/// created or written.
pub fn write_wav(recipe: &TrackRecipe, path: &Path, bit_depth: u32) -> Result<(), WavError> {
    let sample_format = match bit_depth {
        16 | 24 => hound::SampleFormat::Int,
        32 => hound::SampleFormat::Float,
        other => {
            return Err(WavError::UnsupportedBitDepth {
                path: path.to_path_buf(),
                bit_depth: other,
            });
        }
    };
    let write_error = |source| WavError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut synth = TrackSynth::new(recipe);
    let channel_count = synth.channel_count();
    let spec = hound::WavSpec {
        channels: channel_count as u16,
        sample_rate: synth.sample_rate_hz(),
        bits_per_sample: bit_depth as u16,
        sample_format,
    };
    let mut writer = hound::WavWriter::create(path, spec).map_err(write_error)?;
    let full_scale = ((1_i64 << (bit_depth - 1)) - 1) as f32;
    let mut channels = vec![vec![0.0_f32; WAV_BLOCK_FRAMES]; channel_count];
    loop {
        let frames = synth.read(&mut channels);
        if frames == 0 {
            break;
        }
        for frame in 0..frames {
            for channel in &channels {
                let sample = channel[frame];
                let written = if sample_format == hound::SampleFormat::Float {
                    writer.write_sample(sample)
                } else {
                    writer.write_sample((sample.clamp(-1.0, 1.0) * full_scale).round() as i32)
                };
                written.map_err(write_error)?;
            }
        }
    }
    writer.finalize().map_err(write_error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generator::Style;

    /// Every sample of a recipe, read in one go.
    fn render(recipe: &TrackRecipe) -> Vec<Vec<f32>> {
        let mut synth = TrackSynth::new(recipe);
        let frames = synth.total_frames() as usize;
        let mut channels = vec![vec![0.0; frames]; synth.channel_count()];
        assert_eq!(synth.read(&mut channels), frames);
        channels
    }

    #[test]
    fn write_wav_round_trips_float_samples_and_length() {
        let dir = tempfile::tempdir().expect("temp dir");
        let r = TrackRecipe {
            peak_boost_db: 12.0,
            duration_s: 5.0,
            ..TrackRecipe::new(Style::Rock, 13)
        };
        let expected = render(&r);
        let path = dir.path().join("rock.wav");
        write_wav(&r, &path, 32).expect("write float WAV");
        let mut reader = hound::WavReader::open(&path).expect("read WAV");
        assert_eq!(reader.spec().sample_format, hound::SampleFormat::Float);
        assert_eq!(reader.duration() as u64, r.total_frames());
        let samples: Vec<f32> = reader
            .samples::<f32>()
            .map(|s| s.expect("sample"))
            .collect();
        let interleaved: Vec<f32> = (0..expected[0].len())
            .flat_map(|i| [expected[0][i], expected[1][i]])
            .collect();
        assert_eq!(samples, interleaved);
        assert!(
            samples.iter().any(|s| s.abs() > 1.0),
            "over-0-dBFS peaks survive"
        );

        for bits in [16, 24] {
            let path = dir.path().join(format!("rock-{bits}.wav"));
            write_wav(&r, &path, bits).expect("write integer WAV");
            let mut reader = hound::WavReader::open(&path).expect("read WAV");
            assert_eq!(reader.spec().bits_per_sample, bits as u16);
            assert_eq!(reader.duration() as u64, r.total_frames());
            let full_scale = ((1 << (bits - 1)) - 1) as f32;
            let mut count = 0;
            for (s, x) in reader.samples::<i32>().zip(&interleaved) {
                let s = s.expect("sample") as f32 / full_scale;
                // Clipped at full scale, then rounded to the nearest step.
                assert!((s - x.clamp(-1.0, 1.0)).abs() <= 0.5 / full_scale + 1e-7);
                count += 1;
            }
            assert_eq!(count, interleaved.len());
        }
        let path = dir.path().join("rock-12.wav");
        let error = write_wav(&r, &path, 12).expect_err("12 bits");
        assert_eq!(
            error.to_string(),
            format!(
                "{}: cannot write WAV: bit depth 12 is not supported: use 16 or 24 (integer) or 32 (float)",
                path.display()
            )
        );
        assert!(!path.exists());
    }
}
