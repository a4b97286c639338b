//! Signal generators and tolerance helpers for the engine's unit tests.

use crate::audio::AudioBlock;
use crate::stage::Stage;
use lathe_synth::TrackSynth;

/// A sine of `amplitude` (peak) at `frequency_hz`, `frames` long, the same in every channel.
pub fn sine(
    channels: usize,
    frames: usize,
    sample_rate_hz: u32,
    frequency_hz: f64,
    amplitude: f64,
) -> AudioBlock {
    let samples: Vec<f32> = (0..frames)
        .map(|n| {
            (amplitude
                * (2.0 * std::f64::consts::PI * frequency_hz * n as f64
                    / f64::from(sample_rate_hz))
                .sin()) as f32
        })
        .collect();
    AudioBlock::from_channels(vec![samples; channels], sample_rate_hz)
}

/// Deterministic white noise in [-amplitude, amplitude], different in every channel.
pub fn noise(
    channels: usize,
    frames: usize,
    sample_rate_hz: u32,
    amplitude: f64,
    seed: u64,
) -> AudioBlock {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let data = (0..channels)
        .map(|_| {
            (0..frames)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    let unit = (state >> 11) as f64 / (1u64 << 53) as f64;
                    (amplitude * (2.0 * unit - 1.0)) as f32
                })
                .collect()
        })
        .collect();
    AudioBlock::from_channels(data, sample_rate_hz)
}

/// Fills `block` from `synth` to its capacity (fewer frames at the end of the track) and labels it
/// with the track's sample rate; returns the frames written, 0 when the track is done.
pub fn read_synth(synth: &mut TrackSynth, block: &mut AudioBlock) -> usize {
    block.set_frames(block.capacity());
    block.set_sample_rate_hz(synth.sample_rate_hz());
    let mut channels: Vec<&mut [f32]> = block.channels_mut().collect();
    let frames = synth.read(&mut channels);
    block.set_frames(frames);
    frames
}

/// Runs `stage` over `input` cut into blocks of the given sizes (cycled), returning the whole output.
pub fn process_in_blocks(
    stage: &mut dyn Stage,
    input: &AudioBlock,
    block_sizes: &[usize],
) -> AudioBlock {
    let max = block_sizes.iter().copied().max().unwrap_or(1);
    let mut out = AudioBlock::new(
        input.channel_count(),
        input.frames(),
        input.sample_rate_hz(),
    );
    let mut block = AudioBlock::new(input.channel_count(), max, input.sample_rate_hz());
    let mut pos = 0;
    let mut sizes = block_sizes.iter().cycle();
    while pos < input.frames() {
        let n = (*sizes.next().unwrap_or(&max)).min(input.frames() - pos);
        block.set_frames(n);
        for ch in 0..input.channel_count() {
            block
                .channel_mut(ch)
                .copy_from_slice(&input.channel(ch)[pos..pos + n]);
        }
        stage.process(&mut block);
        out.append(&block);
        pos += n;
    }
    out
}

/// RMS level of a slice in dBFS (a full-scale sine reads -3.01 dB).
pub fn rms_db(samples: &[f32]) -> f64 {
    let sum: f64 = samples.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
    10.0 * (sum / samples.len().max(1) as f64).max(1e-30).log10()
}

/// Largest absolute difference between two equally long sample slices.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "compared signals differ in length");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// RMS level in dBFS of a steady tone at `frequency_hz`, measured over the longest prefix of `samples`
/// that spans a whole number of periods (rounded to the nearest frame), so that the reading does not
/// depend on where the window cuts the waveform. Falls back to all samples if shorter than one period.
pub fn steady_rms_db(samples: &[f32], sample_rate_hz: u32, frequency_hz: f64) -> f64 {
    let period = f64::from(sample_rate_hz) / frequency_hz;
    let cycles = (samples.len() as f64 / period).floor();
    let len = ((cycles * period).round() as usize).clamp(1, samples.len().max(1));
    rms_db(&samples[..len.min(samples.len())])
}

/// `count` frequencies from `from_hz` to `to_hz` inclusive, evenly spaced on a log scale.
pub fn log_spaced_hz(from_hz: f64, to_hz: f64, count: usize) -> Vec<f64> {
    let step = (to_hz / from_hz).ln() / (count.max(2) - 1) as f64;
    (0..count)
        .map(|i| from_hz * (step * i as f64).exp())
        .collect()
}

/// True peak of a block in dBTP over all channels, read by the independent `ebur128` meter
/// (BS.1770-4 true-peak mode; includes the sample peak). Silence reads `-inf`.
pub fn true_peak_dbtp(block: &AudioBlock) -> f64 {
    let channels = block.channel_count();
    let mut meter = ebur128::EbuR128::new(
        channels as u32,
        block.sample_rate_hz(),
        ebur128::Mode::TRUE_PEAK,
    )
    .expect("the meter accepts 1-64 channels at 8-384 kHz");
    let planes: Vec<&[f32]> = block.channels().collect();
    meter
        .add_frames_planar_f32(&planes)
        .expect("the planes have the meter's channel count");
    let peak = (0..channels as u32)
        .map(|ch| meter.true_peak(ch).expect("the channel exists"))
        .fold(0.0, f64::max);
    20.0 * peak.log10()
}

/// Level in dBFS (RMS, so a full-scale sine reads -3.01 dB) of the component of `samples` at
/// `frequency_hz`, by correlating with a cosine and a sine over the longest whole number of periods.
/// Other tones in the signal barely register when the window spans many periods of their difference.
pub fn tone_rms_db(samples: &[f32], sample_rate_hz: u32, frequency_hz: f64) -> f64 {
    let period = f64::from(sample_rate_hz) / frequency_hz;
    let cycles = (samples.len() as f64 / period).floor().max(1.0);
    let len = ((cycles * period).round() as usize).clamp(1, samples.len().max(1));
    let w = 2.0 * std::f64::consts::PI * frequency_hz / f64::from(sample_rate_hz);
    let (mut re, mut im) = (0.0f64, 0.0f64);
    for (n, &x) in samples[..len.min(samples.len())].iter().enumerate() {
        let phase = w * n as f64;
        re += f64::from(x) * phase.cos();
        im += f64::from(x) * phase.sin();
    }
    let amplitude = 2.0 * (re * re + im * im).sqrt() / len as f64;
    20.0 * (amplitude / std::f64::consts::SQRT_2).max(1e-15).log10()
}
