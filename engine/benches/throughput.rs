//! Speed of lathe's engine, per core: x-realtime (audio seconds per second of one thread) for
//! decoding, encoding, resampling, each mastering stage, the meters, and the whole `streaming` chain.
//!
//! `make bench` runs this through `engine/benches/run.sh`, which adds peak-RSS figures for
//! `lathe master` and an ffmpeg comparison. It can also be run on its own:
//!
//! ```sh
//! cargo bench -p lathe-engine --bench throughput -- generate FILE.wav --minutes 5 --rate 44100 [--bits 24]
//! cargo bench -p lathe-engine --bench throughput -- stages FILE.wav [--runs 3] [--work DIR]
//! cargo bench -p lathe-engine --bench throughput        # stages on a generated 5-minute track
//! ```
//!
//! `stages` decodes the file once into memory (5 minutes of stereo `f32` is about 106 MB) and times
//! every component on that audio in 4096-frame blocks, one thread, best of `--runs`. Decoders and
//! encoders are timed on files, and the whole chain with `render::master_track`, all passes, as
//! `lathe master` runs it. Every figure is printed twice: in a table, and as one grep-able line
//! `RESULT name=<component> audio_s=<s> seconds=<s> xrt=<x> cpu_seconds=<s> cpu_xrt=<x> [...]`.
//!
//! Two clocks, because benchmarks often share their machine:
//! - `seconds`/`xrt`: wall time of the component's own calls (copying each block out of memory is
//!   not timed). Other processes on the machine inflate it.
//! - `cpu_seconds`/`cpu_xrt`: the time the thread actually ran (Linux `/proc/thread-self/schedstat`),
//!   less the cost of the in-memory harness itself, measured the same way. This is "x-realtime per
//!   core" even when other work shares the cores; absent where the kernel does not report it.
//!
//! Nothing here asserts a time: this is a measurement, not a test, and `cargo test` never runs it
//! (`harness = false` benches only run under `cargo bench`).

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use lathe_engine::AudioBlock;
use lathe_engine::chain::{BuildChain, BuildStage};
use lathe_engine::decode::Decoder;
use lathe_engine::encode::Encoder;
use lathe_engine::loudness::LoudnessMeter;
use lathe_engine::master::dither::Quantiser;
use lathe_engine::master::gain::Gain;
use lathe_engine::qc::Analyzer;
use lathe_engine::render::{MasterRequest, master_track};
use lathe_engine::resample::Resampler;
use lathe_engine::stage::Stage;
use lathe_model::profile::{Profile, StageConfig};
use lathe_model::report::TrackReport;
use lathe_model::stage_config::DitherMode;
use lathe_model::stage_config::{Container, EncodeSpec};
use lathe_model::tags::TrackTags;
use lathe_synth::cpu_time::thread_cpu_time;
use lathe_synth::{Style, TrackRecipe, write_wav};

/// Frames per block, as `render` uses.
const BLOCK_FRAMES: usize = 4096;

/// Runs per component; the best is reported.
const DEFAULT_RUNS: usize = 3;

/// Seed of the generated track (any fixed value: the same file on every machine).
const TRACK_SEED: u64 = 0x1A7E_BE9C;

/// The stages a profile can hold, with the settings of the README's example profile: a three-band
/// EQ, an RMS compressor, a three-band multiband compressor and stereo width with mono bass. Parsed
/// like a user's profile, so the bench follows the profile format rather than the structs.
const REPRESENTATIVE_PROFILE: &str = r#"
name = "bench-representative"

[output]
format = "flac"
bit_depth = 24

[[stage]]
type = "highpass"
frequency_hz = 20.0
order = 4

[[stage]]
type = "eq"
bands = [
  { type = "low_shelf", frequency_hz = 90.0, gain_db = 1.0 },
  { type = "peaking", frequency_hz = 3500.0, gain_db = -1.5, q = 1.2 },
  { type = "high_shelf", frequency_hz = 12000.0, gain_db = 0.5 },
]

[[stage]]
type = "compressor"
threshold_db = -20.0
ratio = 2.0
knee_db = 6.0
attack_ms = 30.0
release_ms = 250.0
detector = "rms"

[[stage]]
type = "multiband"
crossovers_hz = [150.0, 4000.0]
bands = [
  { threshold_db = -22.0, ratio = 2.0 },
  { threshold_db = -22.0, ratio = 1.8 },
  { threshold_db = -26.0, ratio = 1.8 },
]

[[stage]]
type = "stereo"
width = 1.1
mono_bass_hz = 120.0

[loudness]
chain_input_lufs = -18.0
target_lufs = -14.0
ceiling_dbtp = -1.0

[limiter]
lookahead_ms = 5.0
release_ms = 150.0
"#;

/// Errors of this tool are messages for the person running it; there is nothing to match on.
type BenchResult<T> = Result<T, String>;

fn main() -> ExitCode {
    // `cargo bench` appends `--bench` to the arguments of every bench binary.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("throughput: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> BenchResult<()> {
    let (command, rest) = match args.split_first() {
        Some((first, rest)) if first == "generate" || first == "stages" => (first.as_str(), rest),
        Some((first, _)) if first == "-h" || first == "--help" || first == "help" => {
            println!("{}", usage());
            return Ok(());
        }
        _ => ("stages", args),
    };
    let options = Options::parse(rest)?;
    match command {
        "generate" => generate(&options),
        _ => stages(&options),
    }
}

fn usage() -> &'static str {
    "usage: throughput generate FILE.wav --minutes M --rate HZ [--bits 16|24|32] [--channels 1|2]\n\
     \x20      throughput [stages] [FILE] [--runs N] [--work DIR] [--only GROUP,...]\n\
     GROUPs: codecs, resampler, meters, stages, chain (default: all).\n\
     Without FILE, `stages` generates (once) a 5-minute 44.1 kHz stereo track under target/bench."
}

/// Command-line options shared by the subcommands.
#[derive(Debug)]
struct Options {
    path: Option<PathBuf>,
    minutes: f64,
    rate_hz: u32,
    bits: u32,
    channels: usize,
    runs: usize,
    work: Option<PathBuf>,
    /// The groups of components to time (`--only`); `None` for all.
    only: Option<Vec<String>>,
}

impl Options {
    fn parse(args: &[String]) -> BenchResult<Self> {
        let mut options = Self {
            path: None,
            minutes: 5.0,
            rate_hz: 44_100,
            bits: 24,
            channels: 2,
            runs: DEFAULT_RUNS,
            work: None,
            only: None,
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let mut value = |name: &str| {
                args.next()
                    .cloned()
                    .ok_or_else(|| format!("{name} needs a value\n{}", usage()))
            };
            match arg.as_str() {
                "--minutes" => options.minutes = parse_number(&value(arg)?, arg)?,
                "--rate" => options.rate_hz = parse_number(&value(arg)?, arg)?,
                "--bits" => options.bits = parse_number(&value(arg)?, arg)?,
                "--channels" => options.channels = parse_number(&value(arg)?, arg)?,
                "--runs" => options.runs = parse_number::<usize>(&value(arg)?, arg)?.max(1),
                "--work" => options.work = Some(PathBuf::from(value(arg)?)),
                "--only" => {
                    let groups = value(arg)?.split(',').map(str::to_owned).collect();
                    options.only = Some(groups);
                }
                other if other.starts_with('-') => {
                    return Err(format!("unknown option {other}\n{}", usage()));
                }
                other if options.path.is_none() => options.path = Some(PathBuf::from(other)),
                other => return Err(format!("unexpected argument {other}\n{}", usage())),
            }
        }
        Ok(options)
    }
}

fn parse_number<T: std::str::FromStr>(text: &str, option: &str) -> BenchResult<T> {
    text.parse()
        .map_err(|_| format!("{option}: `{text}` is not a valid number"))
}

/// The workspace's `target/bench`, where a default track is generated.
fn default_work_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench")
}

// ------------------------------------------------------------------------------------------------
// generate
// ------------------------------------------------------------------------------------------------

fn generate(options: &Options) -> BenchResult<()> {
    let path = options
        .path
        .clone()
        .ok_or_else(|| format!("generate needs a file\n{}", usage()))?;
    let seconds = generate_track(&path, options)?;
    println!("wrote {} ({seconds:.1} s)", path.display());
    Ok(())
}

/// Writes a Pop track at the style's level (-16 dBFS RMS) to `path` (via a temporary name, so an
/// interrupted run never leaves a file that looks complete); returns the elapsed seconds.
fn generate_track(path: &Path, options: &Options) -> BenchResult<f64> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let recipe = TrackRecipe {
        duration_s: options.minutes * 60.0,
        sample_rate_hz: options.rate_hz,
        channel_count: options.channels,
        ..TrackRecipe::new(Style::Pop, TRACK_SEED)
    };
    let partial = path.with_extension("wav.partial");
    let cpu_before = thread_cpu_time();
    let started = Instant::now();
    write_wav(&recipe, &partial, options.bits).map_err(|e| e.to_string())?;
    std::fs::rename(&partial, path).map_err(|e| format!("{}: {e}", path.display()))?;
    let timing = Timing {
        wall: started.elapsed().as_secs_f64(),
        cpu: cpu_before
            .zip(thread_cpu_time())
            .map(|(b, a)| (a - b).as_secs_f64()),
    };
    Measurement::new("generate", "generate", recipe.duration_s, timing)
        .with("rate_hz", options.rate_hz)
        .with("bits", options.bits)
        .print_result();
    Ok(timing.wall)
}

// ------------------------------------------------------------------------------------------------
// stages
// ------------------------------------------------------------------------------------------------

/// One timed component.
struct Measurement {
    /// Grep-able name (`stage_eq`).
    name: String,
    /// Human description for the table.
    label: String,
    /// Audio processed, seconds.
    audio_s: f64,
    /// Best wall time on one thread, seconds.
    seconds: f64,
    /// Best on-CPU time of the thread, seconds, where the kernel reports it.
    cpu_seconds: Option<f64>,
    /// Further `key=value` figures.
    extra: Vec<(&'static str, String)>,
}

impl Measurement {
    fn new(
        name: impl Into<String>,
        label: impl Into<String>,
        audio_s: f64,
        timing: Timing,
    ) -> Self {
        Self {
            name: name.into(),
            label: label.into(),
            audio_s,
            seconds: timing.wall,
            cpu_seconds: timing.cpu,
            extra: Vec::new(),
        }
    }

    fn with(mut self, key: &'static str, value: impl ToString) -> Self {
        self.extra.push((key, value.to_string()));
        self
    }

    fn xrt(&self) -> f64 {
        self.audio_s / self.seconds.max(1e-9)
    }

    fn cpu_xrt(&self) -> Option<f64> {
        self.cpu_seconds.map(|s| self.audio_s / s.max(1e-9))
    }

    fn print_result(&self) {
        let mut line = format!(
            "RESULT name={} audio_s={:.3} seconds={:.4} xrt={:.1}",
            self.name,
            self.audio_s,
            self.seconds,
            self.xrt()
        );
        if let (Some(seconds), Some(xrt)) = (self.cpu_seconds, self.cpu_xrt()) {
            line.push_str(&format!(" cpu_seconds={seconds:.4} cpu_xrt={xrt:.1}"));
        }
        for (key, value) in &self.extra {
            line.push_str(&format!(" {key}={value}"));
        }
        println!("{line}");
    }
}

/// A decoded track held in memory.
struct Track {
    channels: Vec<Vec<f32>>,
    rate_hz: u32,
}

impl Track {
    fn frames(&self) -> usize {
        self.channels.first().map_or(0, Vec::len)
    }

    fn seconds(&self) -> f64 {
        self.frames() as f64 / f64::from(self.rate_hz)
    }

    fn block(&self) -> AudioBlock {
        AudioBlock::new(self.channels.len(), BLOCK_FRAMES, self.rate_hz)
    }

    /// Start frames of the 4096-frame blocks.
    fn block_starts(&self) -> impl Iterator<Item = usize> + use<> {
        (0..self.frames()).step_by(BLOCK_FRAMES)
    }

    /// Copies the block at `start` into `block`, scaled by `gain`.
    fn load(&self, start: usize, gain: f32, block: &mut AudioBlock) {
        let n = BLOCK_FRAMES.min(self.frames() - start);
        block.set_frames(n);
        for (channel, source) in self.channels.iter().enumerate() {
            let source = &source[start..start + n];
            let target = block.channel_mut(channel);
            if gain == 1.0 {
                target.copy_from_slice(source);
            } else {
                for (t, &s) in target.iter_mut().zip(source) {
                    *t = s * gain;
                }
            }
        }
    }
}

/// Where the files `stages` makes go, and how many runs each component gets.
struct Bench {
    runs: usize,
    work: PathBuf,
    stem: String,
    results: Vec<Measurement>,
    /// Components that could not be measured, and why.
    failures: Vec<(String, String)>,
}

impl Bench {
    fn record(&mut self, measurement: Measurement) {
        measurement.print_result();
        self.results.push(measurement);
    }

    /// Notes a component that failed; the others are still measured.
    fn fail(&mut self, name: &str, error: String) {
        println!("RESULT name={name} error={error:?}");
        self.failures.push((name.to_owned(), error));
    }

    fn work_file(&self, suffix: &str) -> PathBuf {
        self.work.join(format!("{}.{suffix}", self.stem))
    }

    /// The best of `runs` calls of `once`, which returns the wall time it measured itself; the
    /// thread's on-CPU time is taken around the whole call.
    fn best_of(&self, once: impl FnMut() -> BenchResult<Duration>) -> BenchResult<Timing> {
        self.best_of_reading(None, once)
    }

    /// [`Bench::best_of`] for a component that reads `file`: the file is read through once, untimed,
    /// before every run, so that every run (and ffmpeg's, which `run.sh` warms the same way) finds
    /// it in the page cache. Virtual machines that page out idle memory within seconds (this one's
    /// DAMON `pageout` scheme does) otherwise make some runs wait on the disk.
    fn best_of_reading(
        &self,
        file: Option<&Path>,
        mut once: impl FnMut() -> BenchResult<Duration>,
    ) -> BenchResult<Timing> {
        let mut best = Timing {
            wall: f64::INFINITY,
            cpu: None,
        };
        for _ in 0..self.runs {
            if let Some(file) = file {
                read_through(file)?;
            }
            let before = thread_cpu_time();
            let wall = once()?;
            let cpu = before
                .zip(thread_cpu_time())
                .map(|(b, a)| (a - b).as_secs_f64());
            best.wall = best.wall.min(wall.as_secs_f64());
            best.cpu = match (best.cpu, cpu) {
                (Some(best), Some(cpu)) => Some(best.min(cpu)),
                (best, cpu) => cpu.or(best),
            };
        }
        Ok(best)
    }

    /// [`Bench::best_of`] for a loop over the track in memory with the input scaled by `gain`: the
    /// CPU time of the same loop without the component is subtracted.
    fn best_of_in_memory(
        &self,
        track: &Track,
        gain: f32,
        once: impl FnMut() -> BenchResult<Duration>,
    ) -> BenchResult<Timing> {
        let mut timing = self.best_of(once)?;
        let harness = self.best_of(|| {
            let mut block = track.block();
            for start in track.block_starts() {
                track.load(start, gain, &mut block);
                black_box(&block);
            }
            Ok(Duration::ZERO)
        })?;
        timing.cpu = timing
            .cpu
            .zip(harness.cpu)
            .map(|(cpu, harness)| (cpu - harness).max(1e-6));
        Ok(timing)
    }
}

/// The best times of a component, seconds.
#[derive(Debug, Clone, Copy)]
struct Timing {
    /// Wall time of the component's own calls.
    wall: f64,
    /// On-CPU time of the thread, where the kernel reports it.
    cpu: Option<f64>,
}

fn stages(options: &Options) -> BenchResult<()> {
    let path = match &options.path {
        Some(path) => path.clone(),
        None => {
            let path = default_work_dir().join("pop-5min-44k.wav");
            if !path.exists() {
                eprintln!("generating {}", path.display());
                generate_track(&path, options)?;
            }
            path
        }
    };
    let work = match &options.work {
        Some(dir) => dir.clone(),
        None => path
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
            .join("stages"),
    };
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let stem = path
        .file_stem()
        .map_or_else(|| "track".to_owned(), |s| s.to_string_lossy().into_owned());
    let mut bench = Bench {
        runs: options.runs,
        work,
        stem,
        results: Vec::new(),
        failures: Vec::new(),
    };

    let track = load_track(&path)?;
    println!(
        "# {}: {:.1} s, {} channels, {} Hz; 4096-frame blocks, one thread, best of {} runs",
        path.display(),
        track.seconds(),
        track.channels.len(),
        track.rate_hz,
        bench.runs
    );

    let wants = |group: &str| {
        options
            .only
            .as_ref()
            .is_none_or(|groups| groups.iter().any(|g| g == group))
    };
    // A component that fails (the engine is work in progress) is reported, and the rest go on.
    if wants("codecs")
        && let Err(error) = bench_codecs(&mut bench, &path, &track)
    {
        bench.fail("codecs", error);
    }
    if wants("resampler")
        && let Err(error) = bench_resampler(&mut bench, &track)
    {
        bench.fail("resampler", error);
    }
    // The stages need the source's loudness to see it at a realistic level (the meters always run).
    let source_lufs = bench_meters(&mut bench, &track)?;
    if wants("stages") {
        bench_stages(&mut bench, &track, source_lufs)?;
    }
    if wants("chain") {
        bench_chain(&mut bench, &path, &track, source_lufs)?;
    }

    print_table(&bench.results, &bench.failures);
    match bench.failures.len() {
        0 => Ok(()),
        n => Err(format!(
            "{n} component(s) could not be measured (see above)"
        )),
    }
}

/// Decodes `path` into memory.
fn load_track(path: &Path) -> BenchResult<Track> {
    let mut decoder = Decoder::open(path).map_err(|e| e.to_string())?;
    let info = decoder.info().clone();
    let mut block = AudioBlock::new(info.channel_count, BLOCK_FRAMES, info.sample_rate_hz);
    let capacity = info.frames.unwrap_or(0) as usize;
    let mut channels = vec![Vec::with_capacity(capacity); info.channel_count];
    while decoder.read(&mut block).map_err(|e| e.to_string())? > 0 {
        for (target, source) in channels.iter_mut().zip(block.channels()) {
            target.extend_from_slice(source);
        }
    }
    Ok(Track {
        channels,
        rate_hz: block.sample_rate_hz(),
    })
}

/// Decodes `path` to the end; returns the elapsed time and the frames decoded.
fn time_decode(path: &Path) -> BenchResult<(Duration, u64)> {
    let started = Instant::now();
    let mut decoder = Decoder::open(path).map_err(|e| e.to_string())?;
    let info = decoder.info();
    let mut block = AudioBlock::new(info.channel_count, BLOCK_FRAMES, info.sample_rate_hz);
    let mut frames = 0u64;
    loop {
        let n = decoder.read(&mut block).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        frames += n as u64;
        black_box(&block);
    }
    Ok((started.elapsed(), frames))
}

fn bench_codecs(bench: &mut Bench, path: &Path, track: &Track) -> BenchResult<()> {
    let container = Decoder::open(path)
        .map_err(|e| e.to_string())?
        .info()
        .codec
        .clone();
    let timing = bench.best_of_reading(Some(path), || time_decode(path).map(|(d, _)| d))?;
    bench.record(Measurement::new(
        "decode_wav",
        format!("decode WAV ({container})"),
        track.seconds(),
        timing,
    ));

    // FLAC: encode a 24-bit copy with lathe's own encoder (timed), then decode it (timed).
    let flac = bench.work_file("flac");
    let spec = EncodeSpec {
        container: Container::Flac,
        bit_depth: 24,
    };
    let timing = bench.best_of_in_memory(track, 1.0, || {
        let mut block = track.block();
        let started = Instant::now();
        let mut encoder = Encoder::create(&flac, &spec, track.channels.len(), track.rate_hz)
            .map_err(|e| e.to_string())?;
        for start in track.block_starts() {
            track.load(start, 1.0, &mut block);
            encoder.write(&block).map_err(|e| e.to_string())?;
        }
        encoder.finish().map_err(|e| e.to_string())?;
        Ok(started.elapsed())
    })?;
    let flac_bytes = std::fs::metadata(&flac).map_or(0, |m| m.len());
    let wav_bytes = std::fs::metadata(path).map_or(0, |m| m.len());
    bench.record(
        Measurement::new(
            "encode_flac24",
            "encode FLAC 24-bit (incl. fsync)",
            track.seconds(),
            timing,
        )
        .with(
            "ratio_to_wav",
            format!("{:.3}", flac_bytes as f64 / wav_bytes.max(1) as f64),
        ),
    );
    let timing = bench.best_of_reading(Some(&flac), || time_decode(&flac).map(|(d, _)| d))?;
    bench.record(Measurement::new(
        "decode_flac",
        "decode FLAC 24-bit (MD5 verified)",
        track.seconds(),
        timing,
    ));

    // MP3: only where ffmpeg can make the copy.
    let mp3 = bench.work_file("mp3");
    let made = Command::new("ffmpeg")
        .args([
            "-y",
            "-hide_banner",
            "-loglevel",
            "error",
            "-threads",
            "1",
            "-i",
        ])
        .arg(path)
        .args(["-c:a", "libmp3lame", "-b:a", "320k"])
        .arg(&mp3)
        .stdin(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if made {
        let mut frames = 0;
        let timing = bench.best_of_reading(Some(&mp3), || {
            let (elapsed, n) = time_decode(&mp3)?;
            frames = n;
            Ok(elapsed)
        })?;
        bench.record(Measurement::new(
            "decode_mp3",
            "decode MP3 320k (made by ffmpeg)",
            frames as f64 / f64::from(track.rate_hz),
            timing,
        ));
    } else {
        println!("# MP3 decode skipped: ffmpeg with libmp3lame is not available");
    }
    Ok(())
}

fn bench_resampler(bench: &mut Bench, track: &Track) -> BenchResult<()> {
    let to_hz = if track.rate_hz == 48_000 {
        44_100
    } else {
        48_000
    };
    let channels = track.channels.len();
    let timing = bench.best_of_in_memory(track, 1.0, || {
        let mut resampler = Resampler::new(channels, track.rate_hz, to_hz, BLOCK_FRAMES)
            .map_err(|e| e.to_string())?;
        let mut input = track.block();
        let mut output = AudioBlock::new(channels, resampler.max_output_frames(), to_hz);
        let mut elapsed = Duration::ZERO;
        for start in track.block_starts() {
            track.load(start, 1.0, &mut input);
            let started = Instant::now();
            resampler
                .process(&input, &mut output)
                .map_err(|e| e.to_string())?;
            elapsed += started.elapsed();
            black_box(&output);
        }
        let started = Instant::now();
        resampler.finish(&mut output).map_err(|e| e.to_string())?;
        Ok(elapsed + started.elapsed())
    })?;
    bench.record(Measurement::new(
        format!("resample_{}_{}", track.rate_hz, to_hz),
        format!("resample {} -> {} Hz", track.rate_hz, to_hz),
        track.seconds(),
        timing,
    ));
    Ok(())
}

/// Times the loudness meter and the QC analyser; returns the track's integrated loudness.
fn bench_meters(bench: &mut Bench, track: &Track) -> BenchResult<f64> {
    let (channels, rate) = (track.channels.len(), track.rate_hz);
    let mut lufs = None;
    let timing = bench.best_of_in_memory(track, 1.0, || {
        let mut meter = LoudnessMeter::new(channels, rate);
        let mut block = track.block();
        let mut elapsed = Duration::ZERO;
        for start in track.block_starts() {
            track.load(start, 1.0, &mut block);
            let started = Instant::now();
            meter.add(&block);
            elapsed += started.elapsed();
        }
        let started = Instant::now();
        lufs = meter.figures().integrated_lufs;
        Ok(elapsed + started.elapsed())
    })?;
    let lufs = lufs.ok_or("the track is silent")?;
    bench.record(
        Measurement::new(
            "loudness_meter",
            "loudness meter (BS.1770 + 4x true peak)",
            track.seconds(),
            timing,
        )
        .with("integrated_lufs", format!("{lufs:.2}")),
    );
    let timing = bench.best_of_in_memory(track, 1.0, || {
        let mut analyzer = Analyzer::new(channels, rate);
        let mut block = track.block();
        let mut elapsed = Duration::ZERO;
        for start in track.block_starts() {
            track.load(start, 1.0, &mut block);
            let started = Instant::now();
            analyzer.add(&block);
            elapsed += started.elapsed();
        }
        let started = Instant::now();
        black_box(analyzer.finish(Path::new("")));
        Ok(elapsed + started.elapsed())
    })?;
    bench.record(Measurement::new(
        "qc_analyzer",
        "QC analyzer (meter + peaks, DC, phase)",
        track.seconds(),
        timing,
    ));
    Ok(lufs)
}

/// Builds a fresh stage for each run.
type StageFactory<'a> = Box<dyn Fn() -> BenchResult<Box<dyn Stage>> + 'a>;

/// Times `process` of fresh stages over the whole track, its input scaled by `gain`.
fn time_stage(
    bench: &Bench,
    track: &Track,
    gain: f32,
    make: &StageFactory<'_>,
) -> BenchResult<Timing> {
    bench.best_of_in_memory(track, gain, || {
        let mut stage = make()?;
        let mut block = track.block();
        let mut elapsed = Duration::ZERO;
        for start in track.block_starts() {
            track.load(start, gain, &mut block);
            let started = Instant::now();
            stage.process(&mut block);
            elapsed += started.elapsed();
            black_box(&block);
        }
        Ok(elapsed)
    })
}

fn db_to_gain(db: f64) -> f32 {
    10f64.powf(db / 20.0) as f32
}

fn bench_stages(bench: &mut Bench, track: &Track, source_lufs: f64) -> BenchResult<()> {
    let (channels, rate) = (track.channels.len(), track.rate_hz);
    let streaming = Profile::preset("streaming").map_err(|e| e.to_string())?;
    let representative = Profile::from_toml(REPRESENTATIVE_PROFILE, "bench-representative")
        .map_err(|e| e.to_string())?;
    // The tone and dynamics stages see the source at the chain input level, as in a master; the
    // limiter sees it at the target level, where it works on the peaks.
    let chain_gain = db_to_gain(streaming.loudness.chain_input_lufs.unwrap_or(-18.0) - source_lufs);
    let target_gain = db_to_gain(streaming.loudness.target_lufs.unwrap_or(-14.0) - source_lufs);

    let mut cases: Vec<(String, String, f32, StageFactory<'_>)> = Vec::new();
    for (profile, tag, origin) in [
        (&streaming, "streaming", "streaming"),
        (&representative, "readme", "README example"),
    ] {
        for (index, config) in profile.stages.iter().enumerate() {
            let make: StageFactory<'_> = Box::new(move || {
                config
                    .build(channels, rate, BLOCK_FRAMES)
                    .map_err(|e| format!("stage[{index}].{}: {}", e.key, e.reason))
            });
            let name = make()?.name();
            let settings = stage_settings(config);
            cases.push((
                format!("stage_{name}_{tag}"),
                format!("{name} ({origin}: {settings})"),
                chain_gain,
                make,
            ));
        }
    }
    let limiter_profile = &streaming;
    cases.push((
        "stage_limiter".to_owned(),
        format!(
            "limiter (streaming: {} dBTP, 4x, input at {} LUFS)",
            limiter_profile.loudness.ceiling_dbtp,
            limiter_profile.loudness.target_lufs.unwrap_or(-14.0)
        ),
        target_gain,
        Box::new(move || {
            limiter_profile
                .build_limiter(channels, rate, BLOCK_FRAMES)
                .map_err(|e| e.to_string())?
                .map(|l| Box::new(l) as Box<dyn Stage>)
                .ok_or_else(|| "the streaming preset has no limiter".to_owned())
        }),
    ));
    cases.push((
        "stage_gain".to_owned(),
        "gain (+4 dB)".to_owned(),
        chain_gain,
        Box::new(|| Ok(Box::new(Gain::new(4.0)) as Box<dyn Stage>)),
    ));
    for (mode, bits, name) in [
        (DitherMode::Shaped, 16, "stage_dither16_shaped"),
        (DitherMode::Tpdf, 24, "stage_dither24_tpdf"),
    ] {
        cases.push((
            name.to_owned(),
            format!("dither ({bits}-bit, {mode:?})"),
            target_gain,
            Box::new(move || {
                Quantiser::new(mode, bits, channels, rate, TRACK_SEED)
                    .map(|q| Box::new(q) as Box<dyn Stage>)
                    .map_err(|e| format!("{}: {}", e.key, e.reason))
            }),
        ));
    }

    for (name, label, gain, make) in &cases {
        match time_stage(bench, track, *gain, make) {
            Ok(timing) => bench.record(Measurement::new(
                name.clone(),
                label.clone(),
                track.seconds(),
                timing,
            )),
            Err(error) => bench.fail(name, error),
        }
    }
    Ok(())
}

/// A short description of a stage's settings.
fn stage_settings(config: &StageConfig) -> String {
    match config {
        StageConfig::Highpass(c) => format!("{} Hz, order {}", c.frequency_hz, c.order),
        StageConfig::Eq(c) => format!("{} bands", c.bands.len()),
        StageConfig::Compressor(c) => {
            format!("{} dB, {}:1, {:?}", c.threshold_db, c.ratio, c.detector)
        }
        StageConfig::Multiband(c) => format!("{} bands", c.bands.len()),
        StageConfig::Stereo(c) => match c.mono_bass_hz {
            Some(hz) => format!("width {}, mono bass {hz} Hz", c.width),
            None => format!("width {}", c.width),
        },
        StageConfig::Deesser(c) => format!("{} Hz, {} dB", c.frequency_hz, c.threshold_db),
    }
}

fn bench_chain(bench: &mut Bench, path: &Path, track: &Track, source_lufs: f64) -> BenchResult<()> {
    let profile = Profile::preset("streaming").map_err(|e| e.to_string())?;
    let (channels, rate) = (track.channels.len(), track.rate_hz);

    // The whole thing, as `lathe master` runs it.
    let output = bench.work_file("master.flac");
    let mut report = None;
    let timing = bench.best_of_reading(Some(path), || {
        let request = MasterRequest {
            input: path,
            output: &output,
            profile: &profile,
            tags: TrackTags::default(),
            level: None,
            fades: None,
        };
        let started = Instant::now();
        let result = master_track(&request, &mut |_| std::ops::ControlFlow::Continue(()))
            .map_err(|e| e.to_string())?;
        let elapsed = started.elapsed();
        report = Some(result);
        Ok(elapsed)
    });
    let _ = std::fs::remove_file(&output);
    let report = match (timing, report) {
        (Ok(timing), Some(report)) => {
            record_chain(bench, track, timing, &report);
            Some(report)
        }
        (Err(error), _) => {
            bench.fail("streaming_chain", error);
            None
        }
        (Ok(_), None) => None,
    };
    // Without a master's figures, the in-memory pass assumes the target is 4 dB above the chain
    // input level (a typical normalisation gain for this material).
    let normalisation_gain_db = report.as_ref().map_or_else(
        || {
            profile.loudness.target_lufs.unwrap_or(-14.0)
                - profile.loudness.chain_input_lufs.unwrap_or(-18.0)
        },
        |r| r.gain_db,
    );
    // One render pass of the streaming chain on audio in memory, with the gain the master got: what
    // the DSP of each pass costs, without decoding.
    let chain_gain_db = profile.loudness.chain_input_lufs.unwrap_or(-18.0) - source_lufs;
    let timing = bench.best_of_in_memory(track, 1.0, || {
        let mut stages: Vec<Box<dyn Stage>> = vec![Box::new(Gain::new(chain_gain_db))];
        stages.extend(
            profile
                .build_stages(channels, rate, BLOCK_FRAMES)
                .map_err(|e| e.to_string())?,
        );
        stages.push(Box::new(Gain::new(normalisation_gain_db)));
        if let Some(limiter) = profile
            .build_limiter(channels, rate, BLOCK_FRAMES)
            .map_err(|e| e.to_string())?
        {
            stages.push(Box::new(limiter));
        }
        let quantiser = Quantiser::new(
            profile.output.dither,
            profile.output.bit_depth,
            channels,
            rate,
            TRACK_SEED,
        )
        .map_err(|e| format!("{}: {}", e.key, e.reason))?;
        stages.push(Box::new(quantiser));
        let mut block = track.block();
        let mut elapsed = Duration::ZERO;
        for start in track.block_starts() {
            track.load(start, 1.0, &mut block);
            let started = Instant::now();
            for stage in &mut stages {
                stage.process(&mut block);
            }
            elapsed += started.elapsed();
            black_box(&block);
        }
        Ok(elapsed)
    })?;
    bench.record(Measurement::new(
        "streaming_render_dsp",
        "streaming DSP, one pass in memory",
        track.seconds(),
        timing,
    ));

    Ok(())
}

/// Reads `file` to the end and drops what it read (see [`Bench::best_of_reading`]).
fn read_through(file: &Path) -> BenchResult<()> {
    let mut reader = std::fs::File::open(file).map_err(|e| format!("{}: {e}", file.display()))?;
    std::io::copy(&mut reader, &mut std::io::sink())
        .map_err(|e| format!("{}: {e}", file.display()))?;
    Ok(())
}

/// Records the whole-chain figure from a master's report.
fn record_chain(bench: &mut Bench, track: &Track, timing: Timing, report: &TrackReport) {
    // Analyse, chain, each calibration pass and render each stream the whole track once: the
    // first two decode the source, calibration and render read spools. The FLAC master is
    // verified as it is encoded (each frame decoded in memory) and by one read of its bytes, not
    // by a pass of its own.
    let passes = report.passes;
    let audio_s = track.seconds();
    let per_pass = |seconds: f64| format!("{:.1}", audio_s * f64::from(passes) / seconds);
    let figure = |value: Option<f64>| value.map_or("none".to_owned(), |v| format!("{v:.2}"));
    let mut measurement = Measurement::new(
        "streaming_chain",
        format!("streaming chain, master_track ({passes} passes)"),
        audio_s,
        timing,
    )
    .with("passes", passes)
    .with("calibration_passes", report.calibration_passes)
    .with("per_pass_xrt", per_pass(timing.wall));
    if let Some(cpu) = timing.cpu {
        measurement = measurement.with("per_pass_cpu_xrt", per_pass(cpu));
    }
    bench.record(
        measurement
            .with("gain_db", format!("{:.2}", report.gain_db))
            .with("out_lufs", figure(report.output_analysis.integrated_lufs))
            .with("out_dbtp", figure(report.output_analysis.true_peak_dbtp)),
    );
}

fn print_table(results: &[Measurement], failures: &[(String, String)]) {
    println!();
    println!(
        "{:<54} {:>7} {:>8} {:>9} {:>8} {:>9}",
        "component", "audio s", "wall s", "xRT wall", "CPU s", "xRT CPU"
    );
    println!("{}", "-".repeat(100));
    for m in results {
        let (cpu_seconds, cpu_xrt) = match (m.cpu_seconds, m.cpu_xrt()) {
            (Some(s), Some(x)) => (format!("{s:.3}"), format!("{x:.1}")),
            _ => ("n/a".to_owned(), "n/a".to_owned()),
        };
        println!(
            "{:<54} {:>7.1} {:>8.3} {:>9.1} {:>8} {:>9}",
            m.label,
            m.audio_s,
            m.seconds,
            m.xrt(),
            cpu_seconds,
            cpu_xrt
        );
    }
    for (name, error) in failures {
        println!("{name:<54} FAILED: {error}");
    }
    println!(
        "(xRT = audio seconds per second of one thread; CPU = time the thread ran, which other \
         work on the machine does not inflate)"
    );
}
