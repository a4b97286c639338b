//! Restoration quality and speed on real recordings, ours against ffmpeg's nearest filters
//! (`make bench-restore`).
//!
//! The excerpts are clean stretches (30 s from 30% into each track) of the development corpus
//! (`../shared/corpus.sh`), up to `--per-group` from each of its six groups. The restorers' and
//! detectors' thresholds were tuned on the groups asc, singularity and hyperrogue; blupi, warzone
//! and nexuiz are held out, and every summary gives the two apart.
//!
//! Each excerpt is damaged by every model of `lathe_synth::damage::MODELS` (three click shapes,
//! crackle, three colours of hiss, four hum families, hard and soft clipping), its parameters drawn
//! from the model's ranges with a seed of its own. The restorer that answers the model runs in
//! memory in 4096-frame blocks on one thread (latency removed); ffmpeg's counterpart runs
//! single-threaded on the same damaged 32-bit float WAV (`adeclick`, `adeclick` tuned for crackle,
//! `afftdn`, a comb of `bandreject` notches, `adeclip`; the best of a few settings is kept). Both
//! are scored by SI-SDR against the clean excerpt (ffmpeg's output after removing any constant
//! delay), and the improvement over the damaged input is summarised per model and per restorer as
//! a distribution: median, 10th percentile and worst pair, with the margin over ffmpeg pair by
//! pair and x-realtime per core (ours: the thread's CPU time; ffmpeg: user + system time from
//! `/usr/bin/time`). Every clean excerpt also goes through every restorer (SI-SDR against itself:
//! false repairs), and through the mixed damage of clicks, hiss and hum together.
//!
//! Automatic restoration (`[restore] auto = true`: the defect detector, then only the restorers
//! whose defect it finds) runs on every damaged excerpt, on the mixed damage and on every clean
//! excerpt: whether it triggered the right restorer, its gain against the restorer chosen by hand,
//! and on clean input how many excerpts it leaves alone (`--no-auto` skips it).
//!
//! Every pair's numbers go to `WORK/pairs.tsv`.
//!
//! ```sh
//! cargo bench -p lathe-engine --bench restore -- [--seconds 30] [--per-group 8] [--threads 2]
//!     [--groups asc,blupi] [--only declick] [--models clicks-hann,hum-50] [--no-ffmpeg]
//!     [--no-auto] [--work DIR]
//! ```

mod auto;
mod corpus;
mod ffmpeg;
mod restorer;
mod score;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use lathe_engine::AudioBlock;
use lathe_engine::encode::Encoder;
use lathe_model::stage_config::{Container, EncodeSpec};
use lathe_synth::damage::{Damage, MODELS, model};

use corpus::Excerpt;
use restorer::{Restorer, run_stage};
use score::{Distribution, aligned_si_sdr, si_sdr};

type BenchResult<T> = Result<T, String>;

/// CPU times are at least this (a restorer that finds nothing to do may take less than the
/// clock's resolution), seconds.
const MIN_CPU_S: f64 = 1e-3;

/// The damage models of the mixed test, applied in this order.
const MIXED: [&str; 3] = ["clicks-hann", "hum-50", "hiss-white"];

/// What the bench was asked to do.
struct Options {
    seconds: f64,
    per_group: usize,
    threads: usize,
    groups: Vec<String>,
    models: Vec<&'static str>,
    restorers: Vec<Restorer>,
    ffmpeg: bool,
    auto: bool,
    work: PathBuf,
}

fn options() -> BenchResult<Options> {
    let mut options = Options {
        seconds: 30.0,
        per_group: 8,
        threads: 2,
        groups: corpus::GROUPS
            .iter()
            .map(|(g, _)| (*g).to_owned())
            .collect(),
        models: MODELS.iter().map(|(name, _)| *name).collect(),
        restorers: Restorer::ALL.to_vec(),
        ffmpeg: true,
        auto: true,
        work: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench/restore"),
    };
    let mut args = std::env::args().skip(1);
    let number = |value: Option<String>, flag: &str| -> BenchResult<f64> {
        value
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("{flag} needs a number"))
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seconds" => options.seconds = number(args.next(), "--seconds")?,
            "--per-group" => options.per_group = number(args.next(), "--per-group")? as usize,
            "--threads" => options.threads = (number(args.next(), "--threads")? as usize).max(1),
            "--groups" => {
                let list = args.next().ok_or("--groups needs a list")?;
                options.groups = list.split(',').map(str::to_owned).collect();
            }
            "--models" => {
                let list = args.next().ok_or("--models needs a list")?;
                options.models = MODELS
                    .iter()
                    .map(|(name, _)| *name)
                    .filter(|name| list.split(',').any(|m| m == *name))
                    .collect();
            }
            "--only" => {
                let name = args.next().ok_or("--only needs a restorer name")?;
                options.restorers.retain(|r| r.name() == name);
                if options.restorers.is_empty() {
                    return Err(format!("no restorer is called {name}"));
                }
            }
            "--no-ffmpeg" => options.ffmpeg = false,
            "--no-auto" => options.auto = false,
            "--work" => options.work = PathBuf::from(args.next().ok_or("--work needs a folder")?),
            "--bench" => {}
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let restorers = options.restorers.clone();
    options
        .models
        .retain(|m| restorers.contains(&Restorer::for_model(m)));
    Ok(options)
}

/// One unit of work: an excerpt through a restorer, clean, damaged by a model, or damaged by the
/// mixed models.
enum Job {
    Clean { excerpt: usize, restorer: Restorer },
    CleanAuto { excerpt: usize },
    Damaged { excerpt: usize, model: &'static str },
    Mixed { excerpt: usize },
}

/// What a job measured.
enum Outcome {
    Clean {
        excerpt: usize,
        restorer: Restorer,
        si_sdr_db: f64,
    },
    CleanAuto {
        excerpt: usize,
        triggered: Vec<String>,
        si_sdr_db: f64,
    },
    Pair(Pair),
}

/// One (excerpt, damage) pair: the damaged input's score, ours and ffmpeg's.
struct Pair {
    excerpt: usize,
    /// The model's name, or `mixed`.
    model: &'static str,
    damage: String,
    damaged_db: f64,
    ours_db: f64,
    ours_xrt: f64,
    ffmpeg: Option<(f64, f64, String)>,
    /// Automatic restoration: its SI-SDR, the restorers it ran, and its x-realtime per core
    /// (detection included).
    auto: Option<(f64, Vec<String>, f64)>,
}

impl Pair {
    fn ours_gain(&self) -> f64 {
        self.ours_db - self.damaged_db
    }

    fn ffmpeg_gain(&self) -> Option<f64> {
        self.ffmpeg.as_ref().map(|(db, _, _)| db - self.damaged_db)
    }

    fn auto_gain(&self) -> Option<f64> {
        self.auto.as_ref().map(|(db, _, _)| db - self.damaged_db)
    }
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
    let options = options()?;
    std::fs::create_dir_all(&options.work).map_err(|e| e.to_string())?;
    let ffmpeg = options.ffmpeg && ffmpeg::available();
    let groups: Vec<&str> = options.groups.iter().map(String::as_str).collect();
    eprintln!("reading excerpts...");
    let excerpts = corpus::excerpts(&groups, options.per_group, options.seconds);
    if excerpts.is_empty() {
        return Err("no corpus excerpts (run ../shared/corpus.sh install)".to_owned());
    }
    let mut jobs = Vec::new();
    for excerpt in 0..excerpts.len() {
        for &restorer in &options.restorers {
            jobs.push(Job::Clean { excerpt, restorer });
        }
        if options.auto {
            jobs.push(Job::CleanAuto { excerpt });
        }
        for &model in &options.models {
            jobs.push(Job::Damaged { excerpt, model });
        }
        if options.restorers.len() == Restorer::ALL.len() {
            jobs.push(Job::Mixed { excerpt });
        }
    }
    eprintln!(
        "{} excerpts of {:.0} s, {} jobs on {} threads{}",
        excerpts.len(),
        options.seconds,
        jobs.len(),
        options.threads,
        if ffmpeg { "" } else { " (no ffmpeg)" }
    );
    let outcomes = run_jobs(&jobs, &excerpts, &options, ffmpeg)?;
    let mut pairs = Vec::new();
    let mut clean = Vec::new();
    let mut clean_auto = Vec::new();
    for outcome in outcomes {
        match outcome {
            Outcome::Pair(pair) => pairs.push(pair),
            Outcome::CleanAuto {
                excerpt,
                triggered,
                si_sdr_db,
            } => clean_auto.push((excerpt, triggered, si_sdr_db)),
            Outcome::Clean {
                excerpt,
                restorer,
                si_sdr_db,
            } => clean.push((excerpt, restorer, si_sdr_db)),
        }
    }
    write_pairs(&options, &excerpts, &pairs)?;
    print!("{}", summary(&excerpts, &pairs, &clean, &options));
    if options.auto {
        print!("{}", auto_summary(&excerpts, &pairs, &clean_auto, &options));
    }
    Ok(())
}

/// Runs the jobs on `options.threads` threads; outcomes in job order.
fn run_jobs(
    jobs: &[Job],
    excerpts: &[Excerpt],
    options: &Options,
    ffmpeg: bool,
) -> BenchResult<Vec<Outcome>> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(usize, BenchResult<Outcome>)>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..options.threads {
            scope.spawn(|| {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some(job) = jobs.get(index) else { break };
                    let outcome = run_job(job, index, excerpts, options, ffmpeg);
                    if index % 50 == 49 {
                        eprintln!("  {} of {} jobs", index + 1, jobs.len());
                    }
                    results
                        .lock()
                        .expect("no thread panics")
                        .push((index, outcome));
                }
            });
        }
    });
    let mut results = results.into_inner().expect("no thread panics");
    results.sort_by_key(|(index, _)| *index);
    results.into_iter().map(|(_, outcome)| outcome).collect()
}

fn run_job(
    job: &Job,
    index: usize,
    excerpts: &[Excerpt],
    options: &Options,
    ffmpeg: bool,
) -> BenchResult<Outcome> {
    match *job {
        Job::Clean { excerpt, restorer } => {
            let clean = &excerpts[excerpt].audio;
            let mut stage = restorer.stage(clean.channel_count(), clean.sample_rate_hz());
            let (out, _) = run_stage(stage.as_mut(), clean);
            Ok(Outcome::Clean {
                excerpt,
                restorer,
                si_sdr_db: si_sdr(clean, &out),
            })
        }
        Job::CleanAuto { excerpt } => {
            let clean = &excerpts[excerpt].audio;
            let run = auto::run(clean);
            Ok(Outcome::CleanAuto {
                excerpt,
                si_sdr_db: si_sdr(clean, &run.output),
                triggered: run.triggered,
            })
        }
        Job::Damaged {
            excerpt,
            model: name,
        } => {
            let clean = &excerpts[excerpt].audio;
            let seed = pair_seed(excerpt, name);
            let damage = model(name).expect("a known model").draw(seed);
            let damaged = damaged(clean, &[damage], seed);
            let restorer = Restorer::for_model(name);
            let mut stage = restorer.stage(clean.channel_count(), clean.sample_rate_hz());
            let (out, cpu) = run_stage(stage.as_mut(), &damaged);
            let filters = ffmpeg::filters(restorer, clean.sample_rate_hz());
            let auto = options.auto.then(|| auto_scores(clean, &damaged));
            Ok(Outcome::Pair(Pair {
                auto,
                excerpt,
                model: name,
                damage: damage.to_string(),
                damaged_db: si_sdr(clean, &damaged),
                ours_db: si_sdr(clean, &out),
                ours_xrt: seconds(clean) / cpu.max(MIN_CPU_S),
                ffmpeg: if ffmpeg {
                    best_ffmpeg(clean, &damaged, &filters, index, options)?
                } else {
                    None
                },
            }))
        }
        Job::Mixed { excerpt } => {
            let clean = &excerpts[excerpt].audio;
            let seed = pair_seed(excerpt, "mixed");
            let damages: Vec<Damage> = MIXED
                .iter()
                .map(|name| model(name).expect("a known model").draw(seed))
                .collect();
            let damaged = damaged(clean, &damages, seed);
            // Ours: the three restorers the damage calls for, in the pipeline's order.
            let (channels, rate) = (clean.channel_count(), clean.sample_rate_hz());
            let mut out = damaged.clone();
            let mut cpu = 0.0;
            for restorer in [Restorer::Declick, Restorer::Dehum, Restorer::Denoise] {
                let mut stage = restorer.stage(channels, rate);
                let (next, seconds) = run_stage(stage.as_mut(), &out);
                out = next;
                cpu += seconds;
            }
            let auto = options.auto.then(|| auto_scores(clean, &damaged));
            Ok(Outcome::Pair(Pair {
                auto,
                excerpt,
                model: "mixed",
                damage: damages
                    .iter()
                    .map(Damage::to_string)
                    .collect::<Vec<_>>()
                    .join(" + "),
                damaged_db: si_sdr(clean, &damaged),
                ours_db: si_sdr(clean, &out),
                ours_xrt: seconds(clean) / cpu.max(MIN_CPU_S),
                ffmpeg: if ffmpeg {
                    best_ffmpeg(clean, &damaged, &ffmpeg::mixed_chain(rate), index, options)?
                } else {
                    None
                },
            }))
        }
    }
}

/// Automatic restoration of `damaged`: its SI-SDR against `clean`, the restorers it ran, its
/// x-realtime per core.
fn auto_scores(clean: &AudioBlock, damaged: &AudioBlock) -> (f64, Vec<String>, f64) {
    let run = auto::run(damaged);
    let xrt = seconds(clean) / run.cpu_s.max(MIN_CPU_S);
    (si_sdr(clean, &run.output), run.triggered, xrt)
}

/// The seed of the pair (excerpt, model): the model's parameters and its randomness.
fn pair_seed(excerpt: usize, model: &str) -> u64 {
    model
        .bytes()
        .fold(0x5EED_u64 + excerpt as u64 * 7919, |h, b| {
            h.wrapping_mul(0x100_0000_01B3) ^ u64::from(b)
        })
}

/// `clean` with `damages` applied in order.
fn damaged(clean: &AudioBlock, damages: &[Damage], seed: u64) -> AudioBlock {
    let mut channels: Vec<Vec<f32>> = clean.channels().map(<[f32]>::to_vec).collect();
    for (i, damage) in damages.iter().enumerate() {
        damage.apply(&mut channels, clean.sample_rate_hz(), seed ^ (i as u64 + 1));
    }
    AudioBlock::from_channels(channels, clean.sample_rate_hz())
}

fn seconds(audio: &AudioBlock) -> f64 {
    audio.frames() as f64 / f64::from(audio.sample_rate_hz())
}

/// The best of `filters` on `damaged`: (SI-SDR, x-realtime, filter).
fn best_ffmpeg(
    clean: &AudioBlock,
    damaged: &AudioBlock,
    filters: &[String],
    index: usize,
    options: &Options,
) -> BenchResult<Option<(f64, f64, String)>> {
    let input = options.work.join(format!("{index}-damaged.wav"));
    let output = options.work.join(format!("{index}-ffmpeg.wav"));
    write_float_wav(damaged, &input)?;
    let mut best: Option<(f64, f64, String)> = None;
    for filter in filters {
        let (out, cpu) = ffmpeg::run(&input, &output, filter)?;
        let db = aligned_si_sdr(clean, &out);
        if best.as_ref().is_none_or(|(b, _, _)| db > *b) {
            best = Some((db, seconds(clean) / cpu, filter.clone()));
        }
    }
    let _ = std::fs::remove_file(&input);
    Ok(best)
}

fn write_float_wav(block: &AudioBlock, path: &std::path::Path) -> BenchResult<()> {
    let spec = EncodeSpec {
        container: Container::Wav,
        bit_depth: 32,
    };
    let mut encoder = Encoder::create(path, &spec, block.channel_count(), block.sample_rate_hz())
        .map_err(|e| e.to_string())?;
    encoder.write(block).map_err(|e| e.to_string())?;
    encoder.finish().map_err(|e| e.to_string())
}

/// Every pair's numbers, one a line, to `WORK/pairs.tsv`.
fn write_pairs(options: &Options, excerpts: &[Excerpt], pairs: &[Pair]) -> BenchResult<()> {
    let mut text = String::from(
        "excerpt\ttuned\tmodel\tdamage\tdamaged_db\tours_gain_db\tffmpeg_gain_db\tours_xrt\tffmpeg_xrt\tffmpeg_filter\n",
    );
    for pair in pairs {
        let excerpt = &excerpts[pair.excerpt];
        let (ffmpeg_gain, ffmpeg_xrt, filter) = match &pair.ffmpeg {
            Some((_, xrt, filter)) => (
                format!("{:.2}", pair.ffmpeg_gain().unwrap_or(f64::NAN)),
                format!("{xrt:.1}"),
                filter.as_str(),
            ),
            None => ("-".to_owned(), "-".to_owned(), "-"),
        };
        let _ = writeln!(
            text,
            "{}\t{}\t{}\t{}\t{:.2}\t{:.2}\t{}\t{:.1}\t{}\t{}",
            excerpt.name,
            excerpt.tuned,
            pair.model,
            pair.damage,
            pair.damaged_db,
            pair.ours_gain(),
            ffmpeg_gain,
            pair.ours_xrt,
            ffmpeg_xrt,
            filter
        );
    }
    let path = options.work.join("pairs.tsv");
    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Which excerpts a summary line covers.
#[derive(Clone, Copy)]
enum Split {
    Tuned,
    HeldOut,
    All,
}

impl Split {
    const ALL: [Split; 3] = [Split::Tuned, Split::HeldOut, Split::All];

    fn name(self) -> &'static str {
        match self {
            Split::Tuned => "tuned",
            Split::HeldOut => "held-out",
            Split::All => "all",
        }
    }

    fn covers(self, excerpt: &Excerpt) -> bool {
        match self {
            Split::Tuned => excerpt.tuned,
            Split::HeldOut => !excerpt.tuned,
            Split::All => true,
        }
    }
}

/// The printed summary: per model, per restorer against its target, clean input, mixed damage.
fn summary(
    excerpts: &[Excerpt],
    pairs: &[Pair],
    clean: &[(usize, Restorer, f64)],
    options: &Options,
) -> String {
    let mut out = String::new();
    let tuned = excerpts.iter().filter(|e| e.tuned).count();
    let _ = writeln!(
        out,
        "\n{} excerpts ({} from tuned groups asc, singularity, hyperrogue; {} held out: blupi, \
         warzone, nexuiz)",
        excerpts.len(),
        tuned,
        excerpts.len() - tuned
    );
    let label = |pair: &Pair| format!("{} {}", excerpts[pair.excerpt].name, pair.model);
    let fmt = |d: &Option<Distribution>| {
        d.as_ref().map_or("-".to_owned(), |d| {
            format!("{:+6.1} {:+6.1} {:+6.1}", d.median, d.p10, d.worst)
        })
    };

    let _ = writeln!(
        out,
        "\nSI-SDR improvement per model, dB (median, 10th percentile, worst), ours and ffmpeg's \
         best, and our margin over ffmpeg pair by pair:"
    );
    let _ = writeln!(
        out,
        "{:<13} {:<8} {:>3}  {:^20}  {:^20}  {:^20}  {:>5}",
        "model", "groups", "n", "ours", "ffmpeg", "margin", "below"
    );
    let mut models: Vec<&'static str> = options.models.clone();
    models.push("mixed");
    for model in &models {
        for split in Split::ALL {
            let picked: Vec<&Pair> = pairs
                .iter()
                .filter(|p| p.model == *model && split.covers(&excerpts[p.excerpt]))
                .collect();
            if picked.is_empty() {
                continue;
            }
            let ours: Vec<(f64, String)> =
                picked.iter().map(|p| (p.ours_gain(), label(p))).collect();
            let theirs: Vec<(f64, String)> = picked
                .iter()
                .filter_map(|p| p.ffmpeg_gain().map(|g| (g, label(p))))
                .collect();
            let margins: Vec<(f64, String)> = picked
                .iter()
                .filter_map(|p| p.ffmpeg_gain().map(|g| (p.ours_gain() - g, label(p))))
                .collect();
            let below = margins.iter().filter(|(m, _)| *m < 0.0).count();
            let _ = writeln!(
                out,
                "{:<13} {:<8} {:>3}  {:>20}  {:>20}  {:>20}  {:>5}",
                model,
                split.name(),
                picked.len(),
                fmt(&Distribution::of(&ours)),
                fmt(&Distribution::of(&theirs)),
                fmt(&Distribution::of(&margins)),
                if margins.is_empty() {
                    "-".to_owned()
                } else {
                    below.to_string()
                }
            );
        }
    }

    let _ = writeln!(
        out,
        "\nper restorer, every model it answers, against the issue's targets:"
    );
    for &restorer in &options.restorers {
        let clean_scores: Vec<(f64, String)> = clean
            .iter()
            .filter(|(_, r, _)| *r == restorer)
            .map(|(e, _, db)| (*db, excerpts[*e].name.clone()))
            .collect();
        let clean_dist = Distribution::of(&clean_scores);
        for split in Split::ALL {
            let picked: Vec<&Pair> = pairs
                .iter()
                .filter(|p| {
                    p.model != "mixed"
                        && Restorer::for_model(p.model) == restorer
                        && split.covers(&excerpts[p.excerpt])
                })
                .collect();
            let ours: Vec<(f64, String)> =
                picked.iter().map(|p| (p.ours_gain(), label(p))).collect();
            let margins: Vec<(f64, String)> = picked
                .iter()
                .filter_map(|p| p.ffmpeg_gain().map(|g| (p.ours_gain() - g, label(p))))
                .collect();
            let below = margins.iter().filter(|(m, _)| *m < 0.0).count();
            let xrt = |f: &dyn Fn(&Pair) -> Option<f64>| {
                let v: Vec<(f64, String)> = picked
                    .iter()
                    .filter_map(|p| f(p).map(|x| (x, String::new())))
                    .collect();
                Distribution::of(&v).map(|d| d.median)
            };
            let ours_xrt = xrt(&|p| Some(p.ours_xrt));
            let ffmpeg_xrt = xrt(&|p| p.ffmpeg.as_ref().map(|f| f.1));
            let (Some(gain), margin) = (Distribution::of(&ours), Distribution::of(&margins)) else {
                continue;
            };
            let opt = |v: Option<f64>, p: usize| v.map_or("-".to_owned(), |v| format!("{v:.p$}"));
            let _ = writeln!(
                out,
                "RESULT restorer={} groups={} pairs={} gain_median_db={:.1} gain_p10_db={:.1} \
                 gain_worst_db={:.1} margin_median_db={} margin_p10_db={} margin_worst_db={} \
                 below_ffmpeg={} ours_xrt={} ffmpeg_xrt={} worst=\"{}\"",
                restorer.name(),
                split.name(),
                gain.count,
                gain.median,
                gain.p10,
                gain.worst,
                opt(margin.as_ref().map(|m| m.median), 1),
                opt(margin.as_ref().map(|m| m.p10), 1),
                opt(margin.as_ref().map(|m| m.worst), 1),
                if margins.is_empty() {
                    "-".to_owned()
                } else {
                    below.to_string()
                },
                opt(ours_xrt, 0),
                opt(ffmpeg_xrt, 0),
                margin
                    .as_ref()
                    .map_or(gain.worst_label.clone(), |m| m.worst_label.clone()),
            );
        }
        if let Some(d) = clean_dist {
            let _ = writeln!(
                out,
                "CLEAN restorer={} excerpts={} si_sdr_median_db={:.1} si_sdr_p10_db={:.1} \
                 si_sdr_worst_db={:.1} worst=\"{}\"",
                restorer.name(),
                d.count,
                d.median,
                d.p10,
                d.worst,
                d.worst_label
            );
        }
    }
    out
}

/// Automatic restoration: the right restorer triggered, its gain against the restorer chosen by
/// hand, the mixed damage against ffmpeg's three filters, and clean excerpts left alone.
fn auto_summary(
    excerpts: &[Excerpt],
    pairs: &[Pair],
    clean_auto: &[(usize, Vec<String>, f64)],
    options: &Options,
) -> String {
    let mut out = String::new();
    let label = |pair: &Pair| format!("{} {}", excerpts[pair.excerpt].name, pair.model);
    let _ = writeln!(
        out,
        "\nautomatic restoration per model: the right restorer triggered (of n), gain dB \
         (median, 10th percentile, worst), and auto less the restorer chosen by hand:"
    );
    let mut models: Vec<&'static str> = options.models.clone();
    models.push("mixed");
    for model in &models {
        for split in Split::ALL {
            let picked: Vec<&Pair> = pairs
                .iter()
                .filter(|p| p.model == *model && p.auto.is_some())
                .filter(|p| split.covers(&excerpts[p.excerpt]))
                .collect();
            if picked.is_empty() {
                continue;
            }
            let wanted: Vec<&str> = if *model == "mixed" {
                vec!["declick", "dehum", "denoise"]
            } else {
                vec![Restorer::for_model(model).name()]
            };
            let right = picked
                .iter()
                .filter(|p| {
                    p.auto.as_ref().is_some_and(|(_, triggered, _)| {
                        wanted.iter().all(|w| triggered.iter().any(|t| t == w))
                    })
                })
                .count();
            let gains: Vec<(f64, String)> = picked
                .iter()
                .filter_map(|p| p.auto_gain().map(|g| (g, label(p))))
                .collect();
            let versus_manual: Vec<(f64, String)> = picked
                .iter()
                .filter_map(|p| p.auto_gain().map(|g| (g - p.ours_gain(), label(p))))
                .collect();
            let versus_ffmpeg: Vec<(f64, String)> = picked
                .iter()
                .filter_map(|p| {
                    p.auto_gain()
                        .zip(p.ffmpeg_gain())
                        .map(|(a, f)| (a - f, label(p)))
                })
                .collect();
            let (Some(gain), Some(manual)) =
                (Distribution::of(&gains), Distribution::of(&versus_manual))
            else {
                continue;
            };
            let speeds: Vec<(f64, String)> = picked
                .iter()
                .filter_map(|p| p.auto.as_ref().map(|(_, _, xrt)| (*xrt, String::new())))
                .collect();
            let xrt = Distribution::of(&speeds).map_or(0.0, |d| d.median);
            let ffmpeg = Distribution::of(&versus_ffmpeg).map_or("-".to_owned(), |d| {
                format!("{:.1} worst {:.1}", d.median, d.worst)
            });
            let _ = writeln!(
                out,
                "AUTO model={model} groups={} right={right}/{} gain_median_db={:.1} \
                 gain_p10_db={:.1} gain_worst_db={:.1} vs_manual_median_db={:.1} \
                 vs_manual_worst_db={:.1} vs_ffmpeg_db=\"{ffmpeg}\" xrt={xrt:.0} worst=\"{}\"",
                split.name(),
                picked.len(),
                gain.median,
                gain.p10,
                gain.worst,
                manual.median,
                manual.worst,
                manual.worst_label,
            );
        }
    }
    for split in Split::ALL {
        let picked: Vec<&(usize, Vec<String>, f64)> = clean_auto
            .iter()
            .filter(|(e, _, _)| split.covers(&excerpts[*e]))
            .collect();
        if picked.is_empty() {
            continue;
        }
        let untouched = picked.iter().filter(|(_, t, _)| t.is_empty()).count();
        let mut counts = std::collections::BTreeMap::<&str, usize>::new();
        for (_, triggered, _) in &picked {
            for t in triggered {
                *counts.entry(t.as_str()).or_default() += 1;
            }
        }
        let scores: Vec<(f64, String)> = picked
            .iter()
            .map(|(e, _, db)| (*db, excerpts[*e].name.clone()))
            .collect();
        let worst = Distribution::of(&scores).expect("not empty");
        let _ = writeln!(
            out,
            "AUTO-CLEAN groups={} nothing_triggered={untouched}/{} ({:.0}%) triggered={:?} \
             si_sdr_worst_db={:.1} worst=\"{}\"",
            split.name(),
            picked.len(),
            100.0 * untouched as f64 / picked.len() as f64,
            counts,
            worst.worst,
            worst.worst_label
        );
    }
    out
}
