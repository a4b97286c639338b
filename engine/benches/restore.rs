//! Restoration quality and speed, ours against ffmpeg's nearest filters (`make bench-restore`).
//!
//! For each clean source (an excerpt of every Debian `asc-music` MP3, decoded with the engine's
//! decoder, and a synthetic pop track from `lathe_synth`), each kind of damage is added with a fixed seed:
//!
//! | damage | model |
//! |---|---|
//! | clicks | about 20 a second per channel, 1-40 samples, amplitude 0.1-0.8 |
//! | crackle | about 400 a second per channel, 1-4 samples, amplitude up to 0.08 |
//! | hiss | white noise 25 dB below the music's RMS |
//! | hum | 50 Hz plus 3 harmonics (relative 1, 0.5, 0.3, 0.2), -35 dBFS RMS in all |
//! | clipping | hard clip at half the track's peak |
//!
//! Our restorer runs in memory in 4096-frame blocks on one thread (latency removed); ffmpeg's
//! counterpart runs single-threaded on the same damaged 32-bit float WAV (`adeclick`, `adeclick`
//! tuned for crackle, `afftdn`, a comb of `bandreject` notches, `adeclip`; where a filter has
//! settings worth trying, the best of them is kept). Both are scored by SI-SDR against the clean
//! source after removing any constant delay (a lag search over +-2048 samples), and the
//! improvement over the damaged input is printed with x-realtime per core (ours: the thread's CPU
//! time; ffmpeg: its user + system time from `/usr/bin/time`, or wall time without it). Also printed:
//! SI-SDR of the clean source through declick, decrackle, dehum and declip (false detections).
//!
//! ```sh
//! cargo bench -p lathe-engine --bench restore -- [--seconds 60] [--work DIR] [--only declick]
//!     [--sources N]
//! ```

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use lathe_engine::AudioBlock;
use lathe_engine::decode::Decoder;
use lathe_engine::encode::Encoder;
use lathe_engine::restore::declick::Declicker;
use lathe_engine::restore::declip::Declipper;
use lathe_engine::restore::decrackle::Decrackler;
use lathe_engine::restore::dehum::Dehummer;
use lathe_engine::restore::denoise::Denoiser;
use lathe_engine::stage::Stage;
use lathe_model::stage_config::restore::{
    DeclickConfig, DeclipConfig, DecrackleConfig, DehumConfig, DenoiseConfig,
};
use lathe_model::stage_config::{Container, EncodeSpec};
use lathe_synth::cpu_time::thread_cpu_time;
use lathe_synth::score::si_sdr_db;
use lathe_synth::{Style, TrackRecipe, TrackSynth};

const BLOCK_FRAMES: usize = 4096;
const MUSIC_DIR: &str = "/usr/share/games/asc/music";
/// Excerpts start this far into each MP3 (past the intros).
const EXCERPT_START_S: f64 = 30.0;
const MAX_LAG: usize = 2048;

type BenchResult<T> = Result<T, String>;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Damage {
    Clicks,
    Crackle,
    Hiss,
    Hum,
    Clipping,
}

impl Damage {
    const ALL: [Damage; 5] = [
        Damage::Clicks,
        Damage::Crackle,
        Damage::Hiss,
        Damage::Hum,
        Damage::Clipping,
    ];

    fn restorer(self) -> &'static str {
        match self {
            Damage::Clicks => "declick",
            Damage::Crackle => "decrackle",
            Damage::Hiss => "denoise",
            Damage::Hum => "dehum",
            Damage::Clipping => "declip",
        }
    }

    fn stage(self, channels: usize, rate: u32) -> Box<dyn Stage> {
        let built: Result<Box<dyn Stage>, _> = match self {
            Damage::Clicks => {
                Declicker::new(&DeclickConfig::default(), channels, rate, BLOCK_FRAMES)
                    .map(|s| Box::new(s) as Box<dyn Stage>)
            }
            Damage::Crackle => {
                Decrackler::new(&DecrackleConfig::default(), channels, rate, BLOCK_FRAMES)
                    .map(|s| Box::new(s) as Box<dyn Stage>)
            }
            Damage::Hiss => Denoiser::new(&DenoiseConfig::default(), channels, rate, BLOCK_FRAMES)
                .map(|s| Box::new(s) as Box<dyn Stage>),
            Damage::Hum => Dehummer::new(&DehumConfig::default(), channels, rate, BLOCK_FRAMES)
                .map(|s| Box::new(s) as Box<dyn Stage>),
            Damage::Clipping => {
                Declipper::new(&DeclipConfig::default(), channels, rate, BLOCK_FRAMES)
                    .map(|s| Box::new(s) as Box<dyn Stage>)
            }
        };
        built.expect("default settings are valid")
    }

    /// ffmpeg filter chains to try; the best result is kept.
    fn ffmpeg_filters(self) -> Vec<String> {
        match self {
            Damage::Clicks => vec!["adeclick".into()],
            Damage::Crackle => vec![
                "adeclick=window=20:overlap=75:arorder=4:threshold=3:burst=1".into(),
                "adeclick=window=10:overlap=75:arorder=2:threshold=2:burst=1".into(),
            ],
            Damage::Hiss => vec![
                "afftdn".into(),
                "afftdn=tn=1".into(),
                "afftdn=nr=18:tn=1".into(),
            ],
            Damage::Hum => vec![
                [50, 100, 150, 200]
                    .iter()
                    .map(|f| format!("bandreject=f={f}:width_type=h:w=2"))
                    .collect::<Vec<_>>()
                    .join(","),
            ],
            Damage::Clipping => vec!["adeclip".into()],
        }
    }
}

/// Deterministic uniform numbers in [0, 1).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn rms(block: &AudioBlock) -> f64 {
    let (mut sum, mut n) = (0.0, 0usize);
    for ch in block.channels() {
        sum += ch.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>();
        n += ch.len();
    }
    (sum / n.max(1) as f64).sqrt()
}

/// Adds impulses: about `per_second` a channel, widths 1..=max_width, amplitudes in `amplitude`.
fn add_impulses(
    block: &mut AudioBlock,
    per_second: f64,
    max_width: usize,
    amplitude: (f64, f64),
    rng: &mut Lcg,
) {
    let rate = f64::from(block.sample_rate_hz());
    let mean_gap = rate / per_second;
    for ch in 0..block.channel_count() {
        let samples = block.channel_mut(ch);
        let mut pos = (rng.next() * mean_gap) as usize;
        while pos + max_width < samples.len() {
            let width = 1 + ((rng.next() * max_width as f64) as usize).min(max_width - 1);
            let amp = amplitude.0 + (amplitude.1 - amplitude.0) * rng.next();
            let sign = if rng.next() < 0.5 { -1.0 } else { 1.0 };
            for i in 0..width {
                let shape = (std::f64::consts::PI * (i as f64 + 0.5) / width as f64)
                    .sin()
                    .max(0.3);
                samples[pos + i] += (sign * amp * shape * (0.6 + 0.4 * rng.next())) as f32;
            }
            pos += width + (2.0 * mean_gap * rng.next()) as usize;
        }
    }
}

fn damage(clean: &AudioBlock, kind: Damage, seed: u64) -> AudioBlock {
    let mut out = clean.clone();
    let mut rng = Lcg(seed ^ (kind as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let rate = f64::from(clean.sample_rate_hz());
    match kind {
        Damage::Clicks => add_impulses(&mut out, 20.0, 40, (0.1, 0.8), &mut rng),
        Damage::Crackle => add_impulses(&mut out, 400.0, 4, (0.0, 0.08), &mut rng),
        Damage::Hiss => {
            // Sum of four uniforms: close to Gaussian, unit variance after scaling.
            let level = rms(clean) * 10f64.powf(-25.0 / 20.0);
            for ch in 0..out.channel_count() {
                for x in out.channel_mut(ch) {
                    let u: f64 = (0..4).map(|_| rng.next() - 0.5).sum();
                    *x += (level * u * 3f64.sqrt()) as f32;
                }
            }
        }
        Damage::Hum => {
            let relative = [1.0, 0.5, 0.3, 0.2];
            let power: f64 = relative.iter().map(|a| a * a / 2.0).sum();
            let scale = 10f64.powf(-35.0 / 20.0) / power.sqrt();
            for ch in 0..out.channel_count() {
                for (n, x) in out.channel_mut(ch).iter_mut().enumerate() {
                    let t = n as f64 / rate;
                    let hum: f64 = relative
                        .iter()
                        .enumerate()
                        .map(|(k, a)| {
                            a * (std::f64::consts::TAU * 50.0 * (k + 1) as f64 * t + 0.7 * k as f64)
                                .sin()
                        })
                        .sum();
                    *x += (scale * hum) as f32;
                }
            }
        }
        Damage::Clipping => {
            let peak = clean
                .channels()
                .flat_map(|c| c.iter())
                .fold(0.0f32, |m, x| m.max(x.abs()));
            let level = peak / 2.0;
            for ch in 0..out.channel_count() {
                for x in out.channel_mut(ch) {
                    *x = x.clamp(-level, level);
                }
            }
        }
    }
    out
}

/// Runs a stage over `input` in blocks and removes its latency; returns the output and the CPU
/// (or wall) seconds it took.
fn run_stage(stage: &mut dyn Stage, input: &AudioBlock) -> (AudioBlock, f64) {
    let channels = input.channel_count();
    let latency = stage.latency_frames();
    let mut out = AudioBlock::new(channels, input.frames() + latency, input.sample_rate_hz());
    let mut block = AudioBlock::new(channels, BLOCK_FRAMES, input.sample_rate_hz());
    let mut elapsed = Duration::ZERO;
    let mut pos = 0;
    let total = input.frames() + latency;
    while pos < total {
        let n = BLOCK_FRAMES.min(total - pos);
        block.set_frames(n);
        for ch in 0..channels {
            let dst = block.channel_mut(ch);
            for (i, d) in dst.iter_mut().enumerate() {
                *d = input.channel(ch).get(pos + i).copied().unwrap_or(0.0);
            }
        }
        let (cpu0, wall0) = (thread_cpu_time(), Instant::now());
        stage.process(&mut block);
        elapsed += match (cpu0, thread_cpu_time()) {
            (Some(a), Some(b)) => b.saturating_sub(a),
            _ => wall0.elapsed(),
        };
        out.append(&block);
        pos += n;
    }
    out.discard_front(latency);
    (out, elapsed.as_secs_f64())
}

/// Mean over channels of the SI-SDR of `estimate` against `reference`, at the best lag.
fn aligned_si_sdr(reference: &AudioBlock, estimate: &AudioBlock) -> f64 {
    let lag = best_lag(reference.channel(0), estimate.channel(0));
    let n = reference.frames().min(estimate.frames());
    let mut total = 0.0;
    for ch in 0..reference.channel_count() {
        let (r, e) = (reference.channel(ch), estimate.channel(ch));
        total += if lag >= 0 {
            let lag = lag as usize;
            si_sdr_db(&r[..n - lag], &e[lag..n])
        } else {
            let lag = (-lag) as usize;
            si_sdr_db(&r[lag..n], &e[..n - lag])
        };
    }
    total / reference.channel_count() as f64
}

/// The delay of `estimate` against `reference` (positive: estimate late), from the cross-correlation
/// of a 2-second excerpt.
fn best_lag(reference: &[f32], estimate: &[f32]) -> isize {
    let n = reference.len().min(estimate.len());
    let len = 88_200.min(n.saturating_sub(2 * MAX_LAG));
    if len == 0 {
        return 0;
    }
    let start = (n - len) / 2;
    let mut best = (f64::NEG_INFINITY, 0isize);
    for lag in -(MAX_LAG as isize)..=MAX_LAG as isize {
        let shifted = &estimate[(start as isize + lag) as usize..];
        let sum: f64 = reference[start..start + len]
            .iter()
            .zip(shifted)
            .map(|(&r, &e)| f64::from(r) * f64::from(e))
            .sum();
        if sum > best.0 {
            best = (sum, lag);
        }
    }
    best.1
}

fn write_float_wav(block: &AudioBlock, path: &Path) -> BenchResult<()> {
    let spec = EncodeSpec {
        container: Container::Wav,
        bit_depth: 32,
    };
    let mut encoder = Encoder::create(path, &spec, block.channel_count(), block.sample_rate_hz())
        .map_err(|e| e.to_string())?;
    encoder.write(block).map_err(|e| e.to_string())?;
    encoder.finish().map_err(|e| e.to_string())
}

fn read_audio(path: &Path, skip_s: f64, seconds: f64) -> BenchResult<AudioBlock> {
    let mut decoder = Decoder::open(path).map_err(|e| e.to_string())?;
    let info = decoder.info().clone();
    let rate = f64::from(info.sample_rate_hz);
    let skip = (skip_s * rate) as usize;
    let available = info
        .frames
        .map_or(usize::MAX, |f| f as usize)
        .saturating_sub(skip);
    let keep = ((seconds * rate) as usize).min(available);
    let mut all = AudioBlock::new(info.channel_count, keep, info.sample_rate_hz);
    let mut block = AudioBlock::new(info.channel_count, BLOCK_FRAMES, info.sample_rate_hz);
    let mut seen = 0;
    while decoder.read(&mut block).map_err(|e| e.to_string())? > 0 && all.frames() < keep {
        let frames = block.frames();
        if seen + frames > skip {
            let from = skip.saturating_sub(seen);
            block.discard_front(from);
            block.set_frames(block.frames().min(keep - all.frames()));
            all.append(&block);
        }
        seen += frames;
    }
    Ok(all)
}

fn synthetic(seconds: f64) -> AudioBlock {
    let recipe = TrackRecipe {
        duration_s: seconds,
        ..TrackRecipe::new(Style::Pop, 0x5EED)
    };
    let mut synth = TrackSynth::new(&recipe);
    let frames = recipe.total_frames() as usize;
    let mut channels = vec![vec![0.0; frames]; synth.channel_count()];
    synth.read(&mut channels);
    AudioBlock::from_channels(channels, synth.sample_rate_hz())
}

/// Runs ffmpeg with `filter` on `input`; returns the output and its CPU seconds.
fn ffmpeg(input: &Path, output: &Path, filter: &str) -> BenchResult<(AudioBlock, f64)> {
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
    Ok((read_audio(output, 0.0, 1e5)?, seconds.max(1e-3)))
}

struct Row {
    source: String,
    damage: Damage,
    damaged_db: f64,
    ours_db: f64,
    ours_xrt: f64,
    ffmpeg_db: Option<f64>,
    ffmpeg_xrt: Option<f64>,
    ffmpeg_filter: String,
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("restore bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> BenchResult<()> {
    let mut seconds = 60.0;
    let mut work = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench/restore");
    let mut only: Option<String> = None;
    let mut max_sources = usize::MAX;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seconds" => {
                seconds = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .ok_or("--seconds needs a number")?
            }
            "--work" => work = PathBuf::from(args.next().ok_or("--work needs a folder")?),
            "--only" => only = Some(args.next().ok_or("--only needs a restorer name")?),
            "--sources" => {
                max_sources = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .ok_or("--sources needs a number")?
            }
            "--bench" => {}
            other => return Err(format!("unknown argument {other}")),
        }
    }
    std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;
    let have_ffmpeg = Command::new("ffmpeg").arg("-version").output().is_ok();

    let mut sources: Vec<(String, AudioBlock)> = Vec::new();
    let mut mp3s: Vec<PathBuf> = std::fs::read_dir(MUSIC_DIR)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    mp3s.retain(|p| p.extension().is_some_and(|e| e == "mp3"));
    mp3s.sort();
    for path in &mp3s {
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        sources.push((name, read_audio(path, EXCERPT_START_S, seconds)?));
    }
    if mp3s.is_empty() {
        eprintln!("no asc-music MP3s in {MUSIC_DIR} (apt-get install asc-music); synthetic only");
    }
    sources.push(("synth-pop".into(), synthetic(seconds.min(60.0))));
    sources.truncate(max_sources);
    let kinds: Vec<Damage> = Damage::ALL
        .into_iter()
        .filter(|k| only.as_deref().is_none_or(|o| o == k.restorer()))
        .collect();

    println!(
        "clean input through each restorer (SI-SDR against itself, dB; target >= 40 except denoise):"
    );
    for (name, clean) in &sources {
        let mut line = format!("  {name:<16}");
        for &kind in &kinds {
            let mut stage = kind.stage(clean.channel_count(), clean.sample_rate_hz());
            let (out, _) = run_stage(stage.as_mut(), clean);
            line += &format!(" {} {:.1}", kind.restorer(), aligned_si_sdr(clean, &out));
        }
        println!("{line}");
    }

    let mut rows = Vec::new();
    for (index, (name, clean)) in sources.iter().enumerate() {
        let audio_s = clean.frames() as f64 / f64::from(clean.sample_rate_hz());
        for &kind in &kinds {
            let damaged = damage(clean, kind, 0xDA4A6E + index as u64);
            let damaged_db = aligned_si_sdr(clean, &damaged);
            let mut stage = kind.stage(clean.channel_count(), clean.sample_rate_hz());
            let (out, cpu) = run_stage(stage.as_mut(), &damaged);
            let ours_db = aligned_si_sdr(clean, &out);
            if let Some(report) = stage.report() {
                println!("  {name} {}: {report}", kind.restorer());
            }
            let mut row = Row {
                source: name.clone(),
                damage: kind,
                damaged_db,
                ours_db,
                ours_xrt: audio_s / cpu.max(1e-9),
                ffmpeg_db: None,
                ffmpeg_xrt: None,
                ffmpeg_filter: String::new(),
            };
            if have_ffmpeg {
                let input = work.join(format!("{name}-{}.wav", kind.restorer()));
                write_float_wav(&damaged, &input)?;
                for filter in kind.ffmpeg_filters() {
                    let output = work.join(format!("{name}-{}-ffmpeg.wav", kind.restorer()));
                    let (out, cpu) = ffmpeg(&input, &output, &filter)?;
                    let db = aligned_si_sdr(clean, &out);
                    if row.ffmpeg_db.is_none_or(|best| db > best) {
                        row.ffmpeg_db = Some(db);
                        row.ffmpeg_xrt = Some(audio_s / cpu);
                        row.ffmpeg_filter = filter;
                    }
                }
            }
            rows.push(row);
        }
    }

    println!();
    println!("SI-SDR improvement over the damaged input (dB) and x-realtime per core:");
    println!(
        "{:<16} {:<10} {:>8} {:>8} {:>8} {:>9} {:>9}  ffmpeg filter",
        "source", "restorer", "damaged", "ours", "ffmpeg", "ours xRT", "ffm xRT"
    );
    let opt = |v: Option<f64>, p: usize| v.map_or("-".to_owned(), |v| format!("{v:.p$}"));
    for row in &rows {
        println!(
            "{:<16} {:<10} {:>8.1} {:>+8.1} {:>8} {:>9.0} {:>9}  {}",
            row.source,
            row.damage.restorer(),
            row.damaged_db,
            row.ours_db - row.damaged_db,
            opt(row.ffmpeg_db.map(|d| d - row.damaged_db), 1),
            row.ours_xrt,
            opt(row.ffmpeg_xrt, 0),
            row.ffmpeg_filter
        );
    }
    println!();
    println!("mean over sources:");
    println!(
        "{:<10} {:>8} {:>8} {:>8} {:>9} {:>9}",
        "restorer", "ours dB", "ffm dB", "margin", "ours xRT", "ffm xRT"
    );
    for &kind in &kinds {
        let picked: Vec<&Row> = rows.iter().filter(|r| r.damage == kind).collect();
        let mean = |f: &dyn Fn(&Row) -> Option<f64>| -> Option<f64> {
            let v: Vec<f64> = picked.iter().filter_map(|r| f(r)).collect();
            (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
        };
        let ours = mean(&|r| Some(r.ours_db - r.damaged_db));
        let theirs = mean(&|r| r.ffmpeg_db.map(|d| d - r.damaged_db));
        println!(
            "RESULT restorer={:<10} ours_db={} ffmpeg_db={} margin_db={} ours_xrt={} ffmpeg_xrt={}",
            kind.restorer(),
            opt(ours, 1),
            opt(theirs, 1),
            opt(ours.zip(theirs).map(|(a, b)| a - b), 1),
            opt(mean(&|r| Some(r.ours_xrt)), 0),
            opt(mean(&|r| r.ffmpeg_xrt), 0),
        );
    }
    Ok(())
}
