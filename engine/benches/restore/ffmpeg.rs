//! ffmpeg's counterpart of each restorer, run single-threaded on the same damaged excerpt: the
//! settings worth trying for each family (the best result of them is kept) and the runner.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use lathe_engine::AudioBlock;
use lathe_engine::decode::Decoder;

use crate::corpus::read_span;
use crate::restorer::Restorer;

/// ffmpeg filter chains to try against `restorer` on audio at `rate_hz`; the best is kept.
pub fn filters(restorer: Restorer, rate_hz: u32) -> Vec<String> {
    match restorer {
        Restorer::Declick => vec![
            "adeclick".into(),
            "adeclick=window=55:overlap=75:arorder=2:threshold=2:burst=2".into(),
        ],
        Restorer::Decrackle => vec![
            "adeclick=window=20:overlap=75:arorder=4:threshold=3:burst=1".into(),
            "adeclick=window=10:overlap=75:arorder=2:threshold=2:burst=1".into(),
        ],
        Restorer::Denoise => vec![
            "afftdn".into(),
            "afftdn=tn=1".into(),
            "afftdn=nr=18:tn=1".into(),
        ],
        Restorer::Dehum => vec![notch_comb(50.0, rate_hz), notch_comb(60.0, rate_hz)],
        Restorer::Declip => vec!["adeclip".into(), "adeclip=threshold=5:hsize=2000".into()],
    }
}

/// The three-filter chain for mixed damage (clicks, hiss and 50 Hz hum together).
pub fn mixed_chain(rate_hz: u32) -> Vec<String> {
    let comb = notch_comb(50.0, rate_hz);
    vec![
        format!("adeclick,{comb},afftdn"),
        format!("adeclick,{comb},afftdn=tn=1"),
    ]
}

/// Narrow notches at the mains frequency and its harmonics below a quarter of the rate, up to 8.
fn notch_comb(mains_hz: f64, rate_hz: u32) -> String {
    (1..=8)
        .map(|k| k as f64 * mains_hz)
        .filter(|f| *f < f64::from(rate_hz) / 4.0)
        .map(|f| format!("bandreject=f={f}:width_type=h:w=2"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Runs ffmpeg with `filter` from `input` to `output` (32-bit float WAV); returns the output and
/// ffmpeg's CPU seconds (user + system from `/usr/bin/time`, or wall time without it).
pub fn run(input: &Path, output: &Path, filter: &str) -> Result<(AudioBlock, f64), String> {
    let timed = Path::new("/usr/bin/time").exists();
    let times = output.with_extension("time");
    let mut command = if timed {
        let mut c = Command::new("/usr/bin/time");
        c.args(["-f", "%U %S", "-o"]).arg(&times).arg("ffmpeg");
        c
    } else {
        Command::new("ffmpeg")
    };
    command
        .args([
            "-v",
            "error",
            "-y",
            "-threads",
            "1",
            "-filter_threads",
            "1",
            "-i",
        ])
        .arg(input)
        .args(["-af", filter, "-c:a", "pcm_f32le"])
        .arg(output);
    let started = Instant::now();
    let status = command.status().map_err(|e| format!("ffmpeg: {e}"))?;
    let wall = started.elapsed().as_secs_f64();
    if !status.success() {
        return Err(format!("ffmpeg -af {filter} failed"));
    }
    let seconds = if timed {
        let text = std::fs::read_to_string(&times).map_err(|e| e.to_string())?;
        text.split_whitespace()
            .filter_map(|v| v.parse::<f64>().ok())
            .sum()
    } else {
        wall
    };
    let mut decoder = Decoder::open(output).map_err(|e| e.to_string())?;
    let frames = decoder.info().frames.unwrap_or(0) as usize;
    let audio = read_span(&mut decoder, 0, frames)?;
    let _ = std::fs::remove_file(output);
    let _ = std::fs::remove_file(&times);
    Ok((audio, seconds.max(1e-3)))
}

/// Whether ffmpeg can be run.
pub fn available() -> bool {
    Command::new("ffmpeg").arg("-version").output().is_ok()
}
