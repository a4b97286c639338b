//! Shared helpers for lathe's cross-crate tests: run the CLI in-process, write test signals.

pub mod farm;

use std::path::Path;

/// What a `lathe` invocation printed and returned.
#[derive(Debug)]
pub struct Outcome {
    /// Exit status.
    pub status: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Runs `lathe` with `args` in-process (the same code path as the binary).
pub fn lathe(args: &[&str]) -> Outcome {
    let mut out = Vec::new();
    let mut err = Vec::new();
    let status = lathe_cli::run(
        std::iter::once("lathe").chain(args.iter().copied()),
        &mut lathe_cli::Streams {
            out: &mut out,
            err: &mut err,
        },
    );
    Outcome {
        status,
        stdout: String::from_utf8_lossy(&out).into_owned(),
        stderr: String::from_utf8_lossy(&err).into_owned(),
    }
}

/// `lathe analyze --json` on `files`, parsed; panics unless it succeeded.
pub fn analyze(files: &[&Path]) -> Vec<serde_json::Value> {
    let mut args = vec!["analyze", "--json"];
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    args.extend(names.iter().map(String::as_str));
    let outcome = lathe(&args);
    assert_eq!(outcome.status, 0, "analyze failed: {}", outcome.stderr);
    serde_json::from_str::<Vec<serde_json::Value>>(&outcome.stdout)
        .expect("analyze --json prints a JSON array")
}

/// A 32-bit float WAV of planar channels.
pub fn write_float_wav(path: &Path, channels: &[Vec<f32>], sample_rate_hz: u32) {
    let spec = hound::WavSpec {
        channels: channels.len() as u16,
        sample_rate: sample_rate_hz,
        bits_per_sample: 32,
        sample_format: hound::SampleFormat::Float,
    };
    let mut writer = hound::WavWriter::create(path, spec).expect("create wav");
    for frame in 0..channels[0].len() {
        for channel in channels {
            writer.write_sample(channel[frame]).expect("write sample");
        }
    }
    writer.finalize().expect("finalize wav");
}

/// A sine made of consecutive segments of (peak level in dBFS, seconds), phase-continuous.
pub fn sine_segments(
    frequency_hz: f64,
    sample_rate_hz: u32,
    segments: &[(f64, f64)],
    phase_rad: f64,
) -> Vec<f32> {
    let mut samples = Vec::new();
    let mut n = 0u64;
    for &(level_dbfs, seconds) in segments {
        let amplitude = 10f64.powf(level_dbfs / 20.0);
        let count = (seconds * f64::from(sample_rate_hz)).round() as u64;
        for _ in 0..count {
            let t = n as f64 / f64::from(sample_rate_hz);
            samples.push(
                (amplitude * (2.0 * std::f64::consts::PI * frequency_hz * t + phase_rad).sin())
                    as f32,
            );
            n += 1;
        }
    }
    samples
}

/// SHA-like fingerprint of a file's bytes for "unchanged" checks (FNV-1a 64 is enough here).
pub fn fingerprint(path: &Path) -> u64 {
    let bytes = std::fs::read(path).expect("read file");
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
