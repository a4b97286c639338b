//! Lossy deliverables against the true-peak ceiling, over real music (`make bench-lossy`).
//!
//! Every source (an excerpt of each file named on the list, and the five demo-album tracks, whole)
//! is mastered with the MP3 and Opus outlets' profiles (the job profile, `streaming` unless told,
//! as a float master at 44.1 or 48 kHz) and delivered as MP3 CBR 320, MP3 V0 and Opus through
//! [`render_under_ceiling`], the path `lathe master` takes: render, encode, decode, re-render with
//! more headroom while the decode passes the ceiling. Printed per deliverable: the renders it took,
//! the extra headroom, the decoded true peak and loudness; then per codec: overs (decodes still
//! over the ceiling), the extra headroom's mean, median and worst, the distribution of renders,
//! and what one dB of headroom bought in decoded peak where a deliverable needed a retry.
//!
//! ```sh
//! corpus.sh list asc | cargo bench -p lathe-engine --profile dev --bench lossy_ceiling -- \
//!     --list - [--tracks 45] [--seconds 30] [--profile streaming] [--work DIR] [--no-demo]
//! ```
//!
//! Sources are taken round-robin over the list's folders (so that one big folder does not crowd out
//! the others) until `--tracks` have been measured; a file the decoder refuses is skipped and
//! counted. Excerpts start 30 s in (at the start of a track shorter than 30 s plus the excerpt).
//! The exit status is 1 when any decode is over the ceiling, or when a master meant to reach a
//! loudness target decodes to silence (a render failure, counted apart and left out of the
//! figures).

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use lathe_engine::AudioBlock;
use lathe_engine::album::codec_headroom::{
    CheckedLossyMaster, MAX_LOSSY_RENDERS, render_under_ceiling,
};
use lathe_engine::decode::Decoder;
use lathe_engine::encode::Encoder;
use lathe_engine::render::MasterRequest;
use lathe_model::catalog::Outlet;
use lathe_model::delivery::outlet::{LossyCodec, outlet_profile};
use lathe_model::profile::Profile;
use lathe_model::stage_config::{Container, EncodeSpec};
use lathe_synth::{demo_album, write_wav};

const BLOCK_FRAMES: usize = 4096;
/// Excerpts start this far into a track (past the intros), when it is long enough.
const EXCERPT_START_S: f64 = 30.0;
const CODECS: [LossyCodec; 3] = [LossyCodec::Mp3Cbr320, LossyCodec::Mp3V0, LossyCodec::Opus];

type BenchResult<T> = Result<T, String>;

struct Options {
    list: Option<String>,
    tracks: usize,
    seconds: f64,
    profile: String,
    work: PathBuf,
    demo: bool,
}

fn options() -> BenchResult<Options> {
    let mut options = Options {
        list: None,
        tracks: 45,
        seconds: 30.0,
        profile: "streaming".to_owned(),
        work: PathBuf::from(
            std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "../target".to_owned()),
        )
        .join("bench/lossy"),
        demo: true,
    };
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--list" => options.list = Some(value()?),
            "--tracks" => {
                options.tracks = value()?.parse().map_err(|e| format!("--tracks: {e}"))?;
            }
            "--seconds" => {
                options.seconds = value()?.parse().map_err(|e| format!("--seconds: {e}"))?;
            }
            "--profile" => options.profile = value()?,
            "--work" => options.work = PathBuf::from(value()?),
            "--no-demo" => options.demo = false,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(options)
}

/// The list's paths, round-robin over their folders.
fn candidates(list: Option<&str>) -> BenchResult<Vec<PathBuf>> {
    let lines: Vec<String> = match list {
        None => Vec::new(),
        Some("-") => std::io::stdin()
            .lock()
            .lines()
            .collect::<Result<_, _>>()
            .map_err(|e| format!("stdin: {e}"))?,
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| format!("{path}: {e}"))?
            .lines()
            .map(str::to_owned)
            .collect(),
    };
    let mut folders: BTreeMap<PathBuf, Vec<PathBuf>> = BTreeMap::new();
    for line in lines.iter().map(|l| l.trim()).filter(|l| !l.is_empty()) {
        let path = PathBuf::from(line);
        let folder = path.parent().map(Path::to_path_buf).unwrap_or_default();
        folders.entry(folder).or_default().push(path);
    }
    let longest = folders.values().map(Vec::len).max().unwrap_or(0);
    Ok((0..longest)
        .flat_map(|i| {
            folders
                .values()
                .filter_map(move |files| files.get(i).cloned())
        })
        .collect())
}

/// Writes `seconds` of `source` (from 30 s in when it is long enough) to `output`, 32-bit float.
fn excerpt(source: &Path, output: &Path, seconds: f64) -> BenchResult<()> {
    let fail = |e: lathe_engine::Error| e.to_string();
    let mut decoder = Decoder::open(source).map_err(fail)?;
    let info = decoder.info().clone();
    let rate = f64::from(info.sample_rate_hz);
    let wanted = (seconds * rate) as u64;
    let start = match info.frames {
        Some(frames) if frames >= ((EXCERPT_START_S * rate) as u64 + wanted) => {
            (EXCERPT_START_S * rate) as u64
        }
        _ => 0,
    };
    let spec = EncodeSpec {
        container: Container::Wav,
        bit_depth: 32,
    };
    let mut encoder =
        Encoder::create(output, &spec, info.channel_count, info.sample_rate_hz).map_err(fail)?;
    let mut block = AudioBlock::new(info.channel_count, BLOCK_FRAMES, info.sample_rate_hz);
    let mut position = 0u64;
    let mut written = 0u64;
    while written < wanted {
        let n = decoder.read(&mut block).map_err(fail)? as u64;
        if n == 0 {
            break;
        }
        let from = start.saturating_sub(position).min(n);
        let to = n.min(from + wanted - written);
        position += n;
        if to > from {
            let part = AudioBlock::from_channels(
                (0..info.channel_count)
                    .map(|c| block.channel(c)[from as usize..to as usize].to_vec())
                    .collect(),
                info.sample_rate_hz,
            );
            encoder.write(&part).map_err(fail)?;
            written += to - from;
        }
    }
    encoder.finish().map_err(fail)?;
    if written < (rate as u64) {
        return Err(format!("only {written} frames of audio"));
    }
    Ok(())
}

/// One deliverable's figures.
struct Delivered {
    codec: LossyCodec,
    renders: usize,
    headroom_db: f64,
    decoded_true_peak_dbtp: f64,
    over: bool,
    /// The profile has a loudness target and the decode has no loudness: a silent master.
    silent: bool,
    /// Decoded peak lowered per dB of extra headroom, between the first and the last render.
    peak_drop_per_headroom_db: Option<f64>,
    loudness_error_lu: Option<f64>,
}

fn deliver(
    source: &Path,
    codec: LossyCodec,
    job_profile: &Profile,
    work: &Path,
) -> BenchResult<Delivered> {
    let outlet = if codec == LossyCodec::Opus {
        Outlet::Opus
    } else {
        Outlet::Mp3
    };
    let profile = outlet_profile(outlet, job_profile).map_err(|e| e.to_string())?;
    let ceiling = profile.loudness.ceiling_dbtp;
    let master = work.join("master.wav");
    let encoded = work.join(format!("encoded.{}", codec.extension()));
    let request = MasterRequest {
        input: source,
        output: &master,
        profile: &profile,
        tags: Default::default(),
        level: None,
        fades: None,
    };
    let checked: CheckedLossyMaster = render_under_ceiling(codec, &request, &encoded, &mut |_| {
        std::ops::ControlFlow::Continue(())
    })
    .map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(&master);
    let _ = std::fs::remove_file(&encoded);
    let peak = checked.decoded_true_peak_dbtp();
    let headroom_db = checked.headroom_db(ceiling);
    let first = checked.tries.first().map(|t| t.decoded_true_peak_dbtp);
    Ok(Delivered {
        codec,
        renders: checked.tries.len(),
        headroom_db,
        decoded_true_peak_dbtp: peak,
        over: peak > ceiling,
        silent: checked.report.target_lufs.is_some() && checked.figures.integrated_lufs.is_none(),
        peak_drop_per_headroom_db: first
            .filter(|_| headroom_db > 0.0)
            .map(|first| (first - peak) / headroom_db),
        loudness_error_lu: checked
            .report
            .target_lufs
            .zip(checked.figures.integrated_lufs)
            .map(|(target, lufs)| lufs - target),
    })
}

fn median(sorted: &[f64]) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

fn summary(results: &[(String, Delivered)], ceiling: f64) {
    println!("\n=== summary (ceiling {ceiling} dBTP)");
    println!(
        "{:<9} {:>6} {:>5} {:>24} {:>16} {:>12} {:>20}",
        "codec",
        "tracks",
        "overs",
        "headroom mean/med/worst",
        "renders 1/2/3/4/5",
        "|LU err| max",
        "dB peak per dB room"
    );
    for codec in CODECS {
        let of_codec: Vec<&Delivered> = results
            .iter()
            .map(|(_, d)| d)
            .filter(|d| d.codec == codec)
            .collect();
        let mut headroom: Vec<f64> = of_codec.iter().map(|d| d.headroom_db).collect();
        headroom.sort_by(f64::total_cmp);
        let mean = headroom.iter().sum::<f64>() / headroom.len().max(1) as f64;
        let renders: Vec<usize> = (1..=MAX_LOSSY_RENDERS as usize)
            .map(|n| of_codec.iter().filter(|d| d.renders == n).count())
            .collect();
        let worst_loudness = of_codec
            .iter()
            .filter_map(|d| d.loudness_error_lu)
            .map(f64::abs)
            .fold(0.0, f64::max);
        let mut drops: Vec<f64> = of_codec
            .iter()
            .filter_map(|d| d.peak_drop_per_headroom_db)
            .collect();
        drops.sort_by(f64::total_cmp);
        let drop = if drops.is_empty() {
            "-".to_owned()
        } else {
            format!(
                "{:.2}..{:.2} med {:.2}",
                drops[0],
                drops[drops.len() - 1],
                median(&drops)
            )
        };
        println!(
            "{:<9} {:>6} {:>5} {:>24} {:>16} {:>12.2} {:>20}",
            codec.as_str(),
            of_codec.len(),
            of_codec.iter().filter(|d| d.over).count(),
            format!(
                "{mean:.2} / {:.2} / {:.2}",
                median(&headroom),
                headroom.last().copied().unwrap_or(f64::NAN)
            ),
            renders
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join("/"),
            worst_loudness,
            drop
        );
    }
}

fn run() -> BenchResult<bool> {
    let options = options()?;
    let job_profile = Profile::load(&options.profile).map_err(|e| e.to_string())?;
    let ceiling = job_profile.loudness.ceiling_dbtp;
    let sources_dir = options.work.join("sources");
    std::fs::create_dir_all(&sources_dir).map_err(|e| format!("{}: {e}", sources_dir.display()))?;
    let mut sources: Vec<(String, PathBuf)> = Vec::new();
    if options.demo {
        for (name, recipe) in demo_album(44_100) {
            let path = sources_dir.join(format!("demo-{name}.wav"));
            write_wav(&recipe, &path, 32).map_err(|e| e.to_string())?;
            sources.push((format!("demo/{name}"), path));
        }
    }
    let mut refused: Vec<String> = Vec::new();
    let mut taken = 0;
    for (i, candidate) in candidates(options.list.as_deref())?.iter().enumerate() {
        if taken == options.tracks {
            break;
        }
        let path = sources_dir.join(format!("corpus-{i:03}.wav"));
        match excerpt(candidate, &path, options.seconds) {
            Ok(()) => {
                // The last folders and the file's stem: `asc/music/frontiers`.
                let mut parts: Vec<String> = candidate
                    .with_extension("")
                    .iter()
                    .rev()
                    .take(3)
                    .map(|p| p.to_string_lossy().into_owned())
                    .collect();
                parts.reverse();
                sources.push((parts.join("/"), path));
                taken += 1;
            }
            Err(reason) => refused.push(format!("{}: {reason}", candidate.display())),
        }
    }
    println!(
        "{} sources ({taken} corpus excerpts of {} s, {} demo tracks), profile {}, ceiling {ceiling} dBTP; {} refused",
        sources.len(),
        options.seconds,
        sources.len() - taken,
        job_profile.name,
        refused.len()
    );
    for line in &refused {
        println!("  refused: {line}");
    }
    println!(
        "\n{:<44} {:<8} {:>7} {:>9} {:>9} {:>7}",
        "source", "codec", "renders", "headroom", "dBTP", "LU err"
    );
    let mut results = Vec::new();
    for (name, path) in &sources {
        for codec in CODECS {
            match deliver(path, codec, &job_profile, &options.work) {
                Ok(d) => {
                    println!(
                        "{:<44} {:<8} {:>7} {:>9.2} {:>9.2} {:>7} {}",
                        name.chars().take(44).collect::<String>(),
                        codec.as_str(),
                        d.renders,
                        d.headroom_db,
                        d.decoded_true_peak_dbtp,
                        d.loudness_error_lu
                            .map_or("-".to_owned(), |e| format!("{e:+.2}")),
                        if d.over {
                            "OVER"
                        } else if d.silent {
                            "SILENT (the render missed its target: left out of the summary)"
                        } else {
                            ""
                        }
                    );
                    results.push((name.clone(), d));
                }
                Err(reason) => return Err(format!("{name} ({}): {reason}", codec.as_str())),
            }
        }
    }
    let silent = results.iter().filter(|(_, d)| d.silent).count();
    results.retain(|(_, d)| !d.silent);
    summary(&results, ceiling);
    if silent > 0 {
        println!(
            "{silent} deliverables decode to silence: their masters are silent (a render failure, not a codec's)"
        );
    }
    Ok(silent == 0 && results.iter().all(|(_, d)| !d.over))
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!(
                "lossy_ceiling: some deliverables are over the ceiling or silent (see above)"
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("lossy_ceiling: {e}");
            ExitCode::FAILURE
        }
    }
}
