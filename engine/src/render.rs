//! Mastering one track: the multi-pass render that turns a source file into a delivered master.
//!
//! Memory stays bounded whatever the track length: every pass streams in blocks, from the source or
//! from a spool ([`crate::spool`]: raw `f32` on disk beside the output, removed when the render
//! ends), so the decode, resample, restore and chain run once however many passes follow.
//!
//! 1. **Analyse**: decode the source, measure it (the input's QC) and hash its samples; the hash seeds
//!    the dither, so the same source always gives the same master bytes.
//! 2. **Chain**: decode again, resample to the output rate, restore, gain the source to
//!    `chain_input_lufs`, run the tone and dynamics chain; measure its integrated loudness (and its
//!    true peak where there is no limiter or no target), feed a [`LimiterModel`], and spool it. This
//!    fixes the normalisation gain (to the target, or to the ceiling when there is no target, never
//!    above `max_gain_db` and, without a limiter, never so high that the true peak passes the
//!    ceiling).
//! 3. **Calibrate** (with a limiter and a target): from the chain spool, gain, limiter, fades and
//!    dither into the encoder, as the render would; the output's analysis says how loud the limiter
//!    left it. The first gain is the model's prediction; correct it by secant steps and repeat until
//!    within [`CALIBRATION_TOLERANCE_LU`] (at most [`MAX_CALIBRATION_PASSES`] times). The model
//!    usually lands the first pass within the tolerance, and the master that pass wrote is the one
//!    delivered, so calibrating costs no pass of its own.
//! 4. **Render**: only when no calibration pass wrote the master at the final gain (no limiter or no
//!    target, or the last pass's correction was not tried): the chain spool through gain, limiter,
//!    fades and dither, into the encoder, written under a temporary name and analysed (the
//!    output's QC).
//! 5. **Verify**: check the written (tagged) file holds exactly the rendered samples; then rename
//!    it into place. A FLAC encoder decodes each frame as it writes it and compares it with its
//!    samples ([`Encoder::check_frames`]), so the file need only be read to confirm its frame bytes
//!    and `STREAMINFO` are still those the encoder checked ([`crate::encode::WrittenAudio`]); a
//!    WAV is decoded and compared.
//!
//! A source without an integrated loudness follows [`crate::level_rule`]: one too short to gate
//! takes the same passes with its whole-track loudness in place of the integrated loudness; a
//! near-silent one takes them at unity gain; digital silence (or an album's silent track) skips
//! the chain and calibration: the source is decoded once more, muted and written (no dither).

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::album::fade::Fade;
use crate::audio::AudioBlock;
use crate::calibration::LimiterModel;
use crate::chain::BuildChain;
use crate::decode::Decoder;
use crate::encode::{Encoder, WrittenAudio};
use crate::error::{Error, Result};
use crate::level_rule::LevelRule;
use crate::loudness::{LoudnessMeter, MAX_CHANNELS};
use crate::master::gain::Gain;
use crate::qc::{Analysis, Analyzer};
use crate::resample::Resampler;
use crate::spool::{Spool, SpoolReader, SpoolWriter};
use crate::stage::Stage;
use crate::tags::{read_tags, write_tags};
use lathe_model::profile::Profile;
use lathe_model::tags::TrackTags;

/// Frames decoded per block.
pub const BLOCK_FRAMES: usize = 4096;
/// The render stops calibrating once the limited loudness is this close to the target.
pub const CALIBRATION_TOLERANCE_LU: f64 = 0.1;
/// The most calibration passes a track gets.
pub const MAX_CALIBRATION_PASSES: u32 = 6;

/// The phase a track is in, for progress reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Measuring the source.
    Analyse,
    /// Running the chain to set the gain.
    Chain,
    /// Matching the limited loudness to the target.
    Calibrate,
    /// Writing the master.
    Render,
    /// Re-reading and checking the master.
    Verify,
}

impl Phase {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Analyse => "analyse",
            Self::Chain => "chain",
            Self::Calibrate => "calibrate",
            Self::Render => "render",
            Self::Verify => "verify",
        }
    }
}

/// Progress of one track: the phase and how far through the source it is (0 to 1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// Current phase.
    pub phase: Phase,
    /// Fraction of the source processed in this phase.
    pub fraction: f64,
}

/// What to master.
#[derive(Debug, Clone)]
pub struct MasterRequest<'a> {
    /// The source file (never modified).
    pub input: &'a Path,
    /// Where the master goes; written under a temporary name beside it, then renamed.
    pub output: &'a Path,
    /// How to master it.
    pub profile: &'a Profile,
    /// Tags to write; fields left `None` are taken from the source's own tags where it has them.
    pub tags: TrackTags,
    /// The level set by someone who sees more than this track (an album plan) instead of the
    /// profile's own rule; `None` to follow the profile.
    pub level: Option<LevelOverride>,
    /// Fades applied after the limiter, before dither; `None` for none.
    pub fades: Option<TrackFades>,
}

/// A track's level decided outside the track, e.g. by an album plan
/// ([`crate::album::gain::plan_album`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LevelOverride {
    /// Gain before the tone and dynamics chain, dB (instead of `chain_input_lufs - input`).
    pub chain_input_gain_db: f64,
    /// The level after the chain.
    pub level: Level,
}

/// How the gain after the chain is set.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type", content = "value")]
pub enum Level {
    /// Reach this integrated loudness (through the limiter, calibrated like the profile's target).
    TargetLufs(f64),
    /// Apply exactly this gain, dB (no calibration; the limiter, if any, still guards the ceiling).
    FixedGainDb(f64),
    /// Deliver digital silence of the track's length: an album's silent or near-silent track,
    /// left out of the album's loudness ([`LevelRule::Silence`]).
    Silence,
}

/// Fade-in and fade-out of a track, in seconds of output.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TrackFades {
    /// Fade-in length, seconds.
    pub fade_in_s: f64,
    /// Fade-out length, seconds.
    pub fade_out_s: f64,
    /// Shape of both.
    pub curve: lathe_model::catalog::FadeCurve,
}

impl TrackFades {
    /// The fades of a track, or `None` when both lengths are zero.
    pub fn of(
        fade_in_s: f64,
        fade_out_s: f64,
        curve: lathe_model::catalog::FadeCurve,
    ) -> Option<Self> {
        (fade_in_s > 0.0 || fade_out_s > 0.0).then_some(Self {
            fade_in_s,
            fade_out_s,
            curve,
        })
    }
}

/// What the chain makes of a source, measured by [`measure_chain`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ChainMeasurement {
    /// Integrated loudness after the chain, LUFS (`None` if silent).
    pub integrated_lufs: Option<f64>,
    /// True peak after the chain, dBTP.
    pub true_peak_dbtp: Option<f64>,
    /// Frames at the output rate.
    pub frames: u64,
    /// The output rate, Hz.
    pub sample_rate_hz: u32,
}

/// The source as found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceSummary {
    /// Container format.
    pub container: String,
    /// Codec.
    pub codec: String,
    /// Sample rate, Hz.
    pub sample_rate_hz: u32,
    /// Channels.
    pub channel_count: usize,
    /// Bits per sample, where the format has them.
    pub bits_per_sample: Option<u32>,
}

/// What one stage did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageReport {
    /// Stage name.
    pub stage: String,
    /// The stage's own figures.
    pub report: serde_json::Value,
}

/// The delivery check of a master.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QcVerdict {
    /// True when the master meets the profile's ceiling and target and has no clipped samples.
    pub passed: bool,
    /// Each failed check, in words.
    pub issues: Vec<String>,
}

/// Everything about one mastered track: written beside the master as `<stem>.report.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrackReport {
    /// The source file.
    pub input: PathBuf,
    /// The master file.
    pub output: PathBuf,
    /// Profile name.
    pub profile: String,
    /// lathe version that rendered it.
    pub lathe_version: String,
    /// The source's format.
    pub source: SourceSummary,
    /// Output sample rate, Hz.
    pub output_sample_rate_hz: u32,
    /// Gain applied before the chain, dB.
    pub chain_input_gain_db: f64,
    /// Normalisation gain applied after the chain, dB.
    pub gain_db: f64,
    /// How the level was set: by the integrated loudness, the whole-track loudness (a source too
    /// short to gate), unity gain (near-silent) or as digital silence; a note in `warnings` says
    /// more for all but the first.
    #[serde(default)]
    pub level_rule: LevelRule,
    /// Loudness target, LUFS (`None` where no target applied: none in the profile, unity gain,
    /// silence).
    pub target_lufs: Option<f64>,
    /// Measured output loudness (as the level rule measures it) minus target, LU.
    pub loudness_error_lu: Option<f64>,
    /// How many calibration passes the limiter needed.
    pub calibration_passes: u32,
    /// Passes over the audio in all: the analysis, the chain, the calibration passes and, where no
    /// calibration pass wrote the master at the final gain, the render (the verify read is not
    /// counted).
    pub passes: u32,
    /// Dither seed (hash of the source samples), hexadecimal.
    pub dither_seed: String,
    /// What each stage did during the final render.
    pub stages: Vec<StageReport>,
    /// Analysis of the source.
    pub input_analysis: Analysis,
    /// Analysis of the written master (decoded back from disk).
    pub output_analysis: Analysis,
    /// The delivery check.
    pub qc: QcVerdict,
    /// Things a mastering engineer should know (e.g. the target was out of reach).
    pub warnings: Vec<String>,
    /// Wall-clock seconds for all passes.
    pub elapsed_s: f64,
}

/// FNV-1a over the bit patterns of samples, a 32-bit word at a time, in [`HASH_LANES`] interleaved
/// hashes per channel (sample `n` goes to lane `n % HASH_LANES`, so the result does not depend on
/// how the audio is cut into blocks, and the lanes' multiplications overlap instead of waiting on
/// each other): the track's dither seed, and the check that a written master decodes to exactly the
/// samples rendered.
struct SampleHash {
    lanes: [[u64; HASH_LANES]; MAX_CHANNELS],
    frames: usize,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0100_0000_01b3;
const HASH_LANES: usize = 4;

impl SampleHash {
    fn new() -> Self {
        Self {
            lanes: [[FNV_OFFSET; HASH_LANES]; MAX_CHANNELS],
            frames: 0,
        }
    }

    fn add(&mut self, block: &AudioBlock) {
        // `+ 0.0` turns -0.0 into +0.0: a file stores no sign for zero.
        let step = |hash: &mut u64, x: f32| {
            *hash = (*hash ^ u64::from((x + 0.0).to_bits())).wrapping_mul(FNV_PRIME);
        };
        let phase = self.frames % HASH_LANES;
        for (lanes, channel) in self.lanes.iter_mut().zip(block.channels()) {
            // Up to the next multiple of HASH_LANES one at a time, then whole rounds of lanes.
            let head = ((HASH_LANES - phase) % HASH_LANES).min(channel.len());
            for (i, &x) in channel[..head].iter().enumerate() {
                step(&mut lanes[phase + i], x);
            }
            let mut rounds = channel[head..].chunks_exact(HASH_LANES);
            for round in &mut rounds {
                for (lane, &x) in lanes.iter_mut().zip(round) {
                    step(lane, x);
                }
            }
            for (lane, &x) in lanes.iter_mut().zip(rounds.remainder()) {
                step(lane, x);
            }
        }
        self.frames += block.frames();
    }

    fn value(&self) -> u64 {
        self.lanes
            .iter()
            .flatten()
            .fold(FNV_OFFSET, |h, &c| (h ^ c).wrapping_mul(FNV_PRIME))
    }
}

/// Where a pass reads its audio.
enum Source {
    /// Decoding the source file at the output rate, straight into the pass's work block.
    Decoded(Box<Decoder>),
    /// Decoding the source file into `decoded`, resampled from there to the output rate.
    Resampled {
        decoder: Box<Decoder>,
        resampler: Box<Resampler>,
        decoded: AudioBlock,
    },
    /// A spool an earlier pass wrote, already at the output rate.
    Spooled(SpoolReader),
}

/// One streaming pass: read the source (or a spool), run stages; the output is latency-compensated
/// so it stays sample-aligned with the source.
struct Pass {
    source: Source,
    work: AudioBlock,
    total_frames: Option<u64>,
}

impl Pass {
    fn open(source: &Path, output_rate_hz: u32) -> Result<Self> {
        Self::decoding(Decoder::open(source)?, output_rate_hz)
    }

    /// A pass over what `decoder` reads, resampled to `output_rate_hz` if need be.
    fn decoding(decoder: Decoder, output_rate_hz: u32) -> Result<Self> {
        let info = decoder.info();
        let channels = info.channel_count;
        let total_frames = info.frames;
        if info.sample_rate_hz == output_rate_hz {
            return Ok(Self {
                work: AudioBlock::new(channels, BLOCK_FRAMES, output_rate_hz),
                total_frames,
                source: Source::Decoded(Box::new(decoder)),
            });
        }
        let resampler =
            Resampler::new(channels, info.sample_rate_hz, output_rate_hz, BLOCK_FRAMES)?;
        Ok(Self {
            work: AudioBlock::new(
                channels,
                resampler.max_output_frames().max(BLOCK_FRAMES),
                output_rate_hz,
            ),
            total_frames,
            source: Source::Resampled {
                decoded: AudioBlock::new(channels, BLOCK_FRAMES, info.sample_rate_hz),
                decoder: Box::new(decoder),
                resampler: Box::new(resampler),
            },
        })
    }

    /// A pass over what an earlier pass spooled.
    fn spooled(spool: &Spool) -> Result<Self> {
        Ok(Self {
            work: AudioBlock::new(spool.channel_count(), BLOCK_FRAMES, spool.sample_rate_hz()),
            total_frames: Some(spool.frames()),
            source: Source::Spooled(spool.reader()?),
        })
    }

    /// The largest block the stages will see.
    fn max_block_frames(&self) -> usize {
        self.work.capacity()
    }

    /// Runs `stages` over the source and compensates their latency; then `after` (stages without
    /// latency, e.g. the dither) on the aligned output, which goes to `on_output`. Running `after`
    /// only on aligned frames makes its output the same whether the stages before it ran in this
    /// pass or in an earlier one that spooled their output.
    fn run(
        mut self,
        stages: &mut [Box<dyn Stage>],
        after: &mut [Box<dyn Stage>],
        phase: Phase,
        progress: &mut dyn FnMut(Progress),
        mut on_source: impl FnMut(&AudioBlock),
        mut on_output: impl FnMut(&AudioBlock) -> Result<()>,
    ) -> Result<()> {
        let latency: usize = stages.iter().map(|s| s.latency_frames()).sum();
        let mut to_drop = latency;
        let mut emit = |work: &mut AudioBlock, stages: &mut [Box<dyn Stage>]| -> Result<()> {
            for stage in stages.iter_mut() {
                stage.process(work);
            }
            let drop = to_drop.min(work.frames());
            work.discard_front(drop);
            to_drop -= drop;
            if work.frames() == 0 {
                return Ok(());
            }
            for stage in after.iter_mut() {
                stage.process(work);
            }
            on_output(work)
        };
        let total = self.total_frames.unwrap_or(0).max(1) as f64;
        let mut done = 0u64;
        loop {
            match &mut self.source {
                Source::Decoded(decoder) => {
                    if decoder.read(&mut self.work)? == 0 {
                        break;
                    }
                    on_source(&self.work);
                    done += self.work.frames() as u64;
                }
                Source::Resampled {
                    decoder,
                    resampler,
                    decoded,
                } => {
                    if decoder.read(decoded)? == 0 {
                        break;
                    }
                    on_source(decoded);
                    done += decoded.frames() as u64;
                    resampler.process(decoded, &mut self.work)?;
                }
                Source::Spooled(reader) => {
                    if reader.read(&mut self.work)? == 0 {
                        break;
                    }
                    done += self.work.frames() as u64;
                }
            }
            progress(Progress {
                phase,
                fraction: (done as f64 / total).min(1.0),
            });
            emit(&mut self.work, stages)?;
        }
        if let Source::Resampled { resampler, .. } = &mut self.source {
            resampler.finish(&mut self.work)?;
            emit(&mut self.work, stages)?;
        }
        let mut flush = latency;
        while flush > 0 {
            let n = flush.min(self.work.capacity());
            self.work.set_frames(n);
            self.work.fill_silence();
            emit(&mut self.work, stages)?;
            flush -= n;
        }
        Ok(())
    }
}

/// What each of `stages` did, for the track report.
fn stage_reports(stages: &[Box<dyn Stage>]) -> Vec<StageReport> {
    stages
        .iter()
        .filter_map(|s| {
            s.report().map(|report| StageReport {
                stage: s.name().to_owned(),
                report,
            })
        })
        .collect()
}

/// Turns every sample into digital silence (`+0.0`): the render of a silent track.
struct Mute;

impl Stage for Mute {
    fn name(&self) -> &'static str {
        "mute"
    }

    fn process(&mut self, block: &mut AudioBlock) {
        block.fill_silence();
    }

    fn reset(&mut self) {}
}

/// Deletes a temporary output file unless it was renamed into place.
struct TempFile {
    path: PathBuf,
    keep: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The temporary name a file is written under before it is renamed to `path`.
pub fn temp_path_for(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.partial", std::process::id()))
}

/// Writes `bytes` to `path` atomically (temporary name, then rename).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let temp = TempFile {
        path: temp_path_for(path),
        keep: false,
    };
    std::fs::write(&temp.path, bytes).map_err(|e| Error::io(&temp.path, e))?;
    std::fs::rename(&temp.path, path).map_err(|e| Error::io(path, e))?;
    let mut temp = temp;
    temp.keep = true;
    Ok(())
}

/// The temporary name of a spool `purpose` (e.g. `chain`) of the render of `output`: beside
/// it, under the same convention as [`temp_path_for`].
fn spool_path_for(output: &Path, purpose: &str) -> PathBuf {
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    temp_path_for(&output.with_file_name(format!("{name}.{purpose}")))
}

/// Masters one track. The source is only read; the master appears at `request.output` complete or not
/// at all.
pub fn master_track(
    request: &MasterRequest<'_>,
    progress: &mut dyn FnMut(Progress),
) -> Result<TrackReport> {
    let started = Instant::now();
    let profile = request.profile;
    let info = Decoder::open(request.input)?.info().clone();
    let channels = info.channel_count;
    let output_rate_hz = profile.output_rate_hz(info.sample_rate_hz);
    let mut warnings = info.notes.clone();
    let (mut target_lufs, mut fixed_gain_db) = match request.level {
        Some(LevelOverride {
            level: Level::TargetLufs(target),
            ..
        }) => (Some(target), None),
        Some(LevelOverride {
            level: Level::FixedGainDb(gain),
            ..
        }) => (None, Some(gain)),
        Some(LevelOverride {
            level: Level::Silence,
            ..
        }) => (None, None),
        None => (profile.loudness.target_lufs, None),
    };

    // 1. Analyse the source.
    let mut input_analyzer = Analyzer::new(channels, info.sample_rate_hz);
    let mut hash = SampleHash::new();
    Pass::open(request.input, info.sample_rate_hz)?.run(
        &mut [],
        &mut [],
        Phase::Analyse,
        progress,
        |block| {
            input_analyzer.add(block);
            hash.add(block);
        },
        |_| Ok(()),
    )?;
    let input_analysis = input_analyzer.finish(request.input);
    let dither_seed = hash.value();
    let source = SourceSummary {
        container: info.container.clone(),
        codec: info.codec.clone(),
        sample_rate_hz: info.sample_rate_hz,
        channel_count: channels,
        bits_per_sample: info.bits_per_sample,
    };
    let render_settings = RenderSettings {
        profile,
        output: request.output,
        spec: profile.encode_spec(),
        channels,
        output_rate_hz,
        dither_seed,
    };
    let rule = match request.level {
        Some(LevelOverride {
            level: Level::Silence,
            ..
        }) => LevelRule::Silence,
        _ => LevelRule::for_source(&input_analysis),
    };
    if rule == LevelRule::Silence {
        // The source decoded (and resampled) only for its length at the output rate, then muted;
        // the dither leaves exact zeros as they are.
        let master = render_master(
            &render_settings,
            Pass::open(request.input, output_rate_hz)?,
            vec![Box::new(Mute)],
            Phase::Render,
            progress,
        )?;
        let decisions = Decisions {
            source,
            input_analysis,
            rule,
            chain_input_gain_db: 0.0,
            gain_db: 0.0,
            target_lufs: None,
            calibration_passes: 0,
            passes: 2,
            stages: Vec::new(),
            warnings,
        };
        return deliver(
            request,
            &render_settings,
            decisions,
            master,
            started,
            progress,
        );
    }
    if rule == LevelRule::UnityGain {
        target_lufs = None;
        fixed_gain_db = Some(0.0);
    }
    let input_lufs = rule.level_of(&input_analysis);
    let chain_input_gain_db = match (rule, request.level, input_lufs) {
        (LevelRule::UnityGain, _, _) | (_, None, None) => 0.0,
        (_, Some(level), _) => level.chain_input_gain_db,
        (_, None, Some(input_lufs)) => profile
            .loudness
            .chain_input_lufs
            .map_or(0.0, |level| level - input_lufs),
    };

    // 2. Run the chain once, measure what it gives and spool it for the passes after.
    // The true peak sets the gain when there is no target and caps it when there is no limiter;
    // with both, calibration through the limiter decides.
    let needs_peak = profile.limiter.is_none() || target_lufs.is_none();
    // With a limiter and a target, a model of the limiter gives calibration its first guess.
    // The model predicts the gated loudness, so it serves only the integrated-loudness rule.
    let mut model = (!needs_peak && rule == LevelRule::IntegratedLoudness)
        .then(|| LimiterModel::new(output_rate_hz));
    let (chain_spool, chained, chain_ungated_lufs, reports) = {
        let pass = Pass::open(request.input, output_rate_hz)?;
        let max_block = pass.max_block_frames();
        let mut stages = chain_stages(
            profile,
            request.input,
            chain_input_gain_db,
            channels,
            output_rate_hz,
            max_block,
        )?;
        let mut meter = if needs_peak {
            LoudnessMeter::new(channels, output_rate_hz)
        } else {
            LoudnessMeter::integrated_only(channels, output_rate_hz)
        };
        let mut spool = SpoolWriter::create(
            spool_path_for(request.output, "chain"),
            channels,
            output_rate_hz,
            max_block,
        )?;
        pass.run(
            &mut stages,
            &mut [],
            Phase::Chain,
            progress,
            |_| {},
            |block| {
                match model.as_mut() {
                    Some(model) => model.add(block, &mut meter),
                    None => meter.add(block),
                }
                spool.write(block)
            },
        )?;
        (
            spool.finish()?,
            meter.figures(),
            meter.ungated_lufs(),
            stage_reports(&stages),
        )
    };
    // The fades need the track's length at the output rate.
    let output_frames = chain_spool.frames();
    let chain_lufs = rule.level_lufs(chained.integrated_lufs, chain_ungated_lufs);
    if rule.measures_level() && chain_lufs.is_none() {
        return Err(Error::Decode {
            path: request.input.to_path_buf(),
            reason: "the chain output is silent: check the profile's stages".to_owned(),
        });
    }
    let chain_peak_dbtp = needs_peak.then(|| chained.true_peak_dbtp.unwrap_or(f64::NEG_INFINITY));
    let ceiling = profile.loudness.ceiling_dbtp;
    let mut gain_db = match (fixed_gain_db, target_lufs.zip(chain_lufs), chain_peak_dbtp) {
        (Some(gain), _, _) => gain,
        (None, Some((target, chain_lufs)), _) => target - chain_lufs,
        (None, None, peak) => ceiling - peak.unwrap_or(f64::NEG_INFINITY),
    };
    if fixed_gain_db.is_none() && gain_db > profile.loudness.max_gain_db {
        warnings.push(format!(
            "needs {gain_db:.1} dB of gain, more than max_gain_db ({:.1} dB): the master stays under its target",
            profile.loudness.max_gain_db
        ));
        gain_db = profile.loudness.max_gain_db;
    }
    if let Some(peak) = chain_peak_dbtp
        && (fixed_gain_db.is_none() || rule == LevelRule::UnityGain)
        && profile.limiter.is_none()
        && peak + gain_db > ceiling - PEAK_CAP_MARGIN_DB
    {
        let capped = ceiling - PEAK_CAP_MARGIN_DB - peak;
        if target_lufs.is_some() {
            warnings.push(format!(
                "no limiter: gain capped at {capped:.2} dB (not {gain_db:.2} dB) to keep the true peak under {ceiling} dBTP"
            ));
        }
        gain_db = capped;
    }

    // After the chain: the normalisation gain, the limiter and the fades (all on the spooled chain).
    let tail_stages = |gain_db: f64| -> Result<Vec<Box<dyn Stage>>> {
        let mut tail: Vec<Box<dyn Stage>> = vec![Box::new(Gain::new(gain_db))];
        if let Some(limiter) = profile.build_limiter(channels, output_rate_hz, BLOCK_FRAMES)? {
            tail.push(Box::new(limiter));
        }
        if let Some(fades) = request.fades {
            tail.push(Box::new(Fade::new(&fades, output_frames, output_rate_hz)));
        }
        Ok(tail)
    };

    // 3. Calibrate the gain through the limiter. Each pass renders the master itself (gain,
    // limiter, fades, dither, encoder, output analysis): the first pass usually lands within the
    // tolerance, and its master is then the one delivered.
    let mut calibration_passes = 0;
    let mut rendered: Option<(f64, RenderedMaster)> = None;
    if let (Some(target), Some(limiter)) = (target_lufs, &profile.limiter)
        && chain_peak_dbtp.is_none_or(|peak| peak + gain_db > ceiling - 0.1)
    {
        // An album's tracks keep their differences only if each is calibrated more closely.
        let tolerance_lu = if request.level.is_some() {
            crate::album::gain::ALBUM_CALIBRATION_TOLERANCE_LU
        } else {
            CALIBRATION_TOLERANCE_LU
        };
        // Start where the limiter model says the target is, with its slope; then secant steps on
        // loudness(gain): a limiter makes the curve flatter than 1 dB per dB, so a plain "add the
        // error" step undershoots when the limiter works hard.
        let mut model_slope = 1.0;
        if let (Some(model), Some(chain_lufs)) = (&model, chain_lufs)
            && gain_db < profile.loudness.max_gain_db
        {
            let (predicted_db, slope) =
                model.predict(chain_lufs, target, ceiling, limiter.release_ms);
            gain_db = predicted_db.min(profile.loudness.max_gain_db);
            // The model's slope is a finite difference of its limiting loss: on a track the
            // limiter works very hard it can come out near zero, and a step of error / slope
            // then sends the gain hundreds of dB away. Bound it as the secant steps are bounded.
            model_slope = slope.clamp(0.1, 1.0);
        }
        drop(model);
        let mut previous: Option<(f64, f64)> = None;
        while calibration_passes < MAX_CALIBRATION_PASSES {
            calibration_passes += 1;
            // The previous pass's master is stale: remove it before writing the next.
            drop(rendered.take());
            let pass = render_master(
                &render_settings,
                Pass::spooled(&chain_spool)?,
                tail_stages(gain_db)?,
                Phase::Calibrate,
                progress,
            )?;
            let lufs = rule.level_of(&pass.analysis);
            rendered = Some((gain_db, pass));
            let Some(lufs) = lufs else {
                break;
            };
            let error = target - lufs;
            if error.abs() <= tolerance_lu {
                break;
            }
            let slope = match previous {
                Some((g, l)) if (gain_db - g).abs() > 1e-6 => {
                    ((lufs - l) / (gain_db - g)).clamp(0.1, 1.0)
                }
                _ => model_slope,
            };
            previous = Some((gain_db, lufs));
            gain_db = (gain_db + error / slope).min(profile.loudness.max_gain_db);
        }
    }

    // 4. Render, unless the last calibration pass already did at the final gain.
    if rendered.as_ref().is_some_and(|(g, _)| *g != gain_db) {
        rendered = None;
    }
    let passes = 2 + calibration_passes + u32::from(rendered.is_none());
    let master = match rendered {
        Some((_, master)) => master,
        None => render_master(
            &render_settings,
            Pass::spooled(&chain_spool)?,
            tail_stages(gain_db)?,
            Phase::Render,
            progress,
        )?,
    };
    drop(chain_spool);
    if rule == LevelRule::UnityGain && fixed_gain_db.is_some_and(|g| g != gain_db) {
        warnings.push(format!(
            "unity gain lowered to {gain_db:.2} dB to keep the true peak under {ceiling} dBTP"
        ));
    }
    let decisions = Decisions {
        source,
        input_analysis,
        rule,
        chain_input_gain_db,
        gain_db,
        target_lufs,
        calibration_passes,
        passes,
        stages: reports,
        warnings,
    };
    deliver(
        request,
        &render_settings,
        decisions,
        master,
        started,
        progress,
    )
}

/// What the passes before the master found and decided: the track report's figures other than
/// the master's own.
struct Decisions {
    source: SourceSummary,
    input_analysis: Analysis,
    rule: LevelRule,
    chain_input_gain_db: f64,
    gain_db: f64,
    target_lufs: Option<f64>,
    calibration_passes: u32,
    passes: u32,
    /// What the chain's stages did (the master's tail and dither are added).
    stages: Vec<StageReport>,
    warnings: Vec<String>,
}

/// Verifies, tags and renames the rendered master into place, and reports on it.
fn deliver(
    request: &MasterRequest<'_>,
    settings: &RenderSettings<'_>,
    decisions: Decisions,
    master: RenderedMaster,
    started: Instant,
    progress: &mut dyn FnMut(Progress),
) -> Result<TrackReport> {
    let Decisions {
        source,
        input_analysis,
        rule,
        chain_input_gain_db,
        gain_db,
        target_lufs,
        calibration_passes,
        passes,
        stages: mut reports,
        mut warnings,
    } = decisions;
    let (profile, output_rate_hz) = (settings.profile, settings.output_rate_hz);
    let RenderedMaster {
        temp,
        written,
        analysis: output_analysis,
        rendered_hash,
        reports: render_reports,
    } = master;
    reports.extend(render_reports);
    warnings.extend(rule.note(&input_analysis, &output_analysis));

    // 5. Verify, tag, rename.
    progress(Progress {
        phase: Phase::Verify,
        fraction: 0.0,
    });
    let mut tags = request.tags.clone();
    if let Ok(source_tags) = read_tags(request.input) {
        tags.title = tags.title.or(source_tags.title);
        tags.artist = tags.artist.or(source_tags.artist);
        tags.album = tags.album.or(source_tags.album);
        tags.track_number = tags.track_number.or(source_tags.track_number);
        tags.isrc = tags.isrc.or(source_tags.isrc);
    }
    if tags != TrackTags::default() {
        write_tags(&temp.path, &tags)?;
    }
    // The analysis is of the rendered samples; the file must decode to exactly those samples.
    // FLAC: the encoder decoded every frame as it wrote it and found its samples; the file must
    // still hold those frames and that STREAMINFO after tagging. Otherwise (WAV): decode the file
    // and compare. Either covers what FLAC's MD5 signature would, so the decoder skips it.
    if let Some(rendered_hash) = rendered_hash {
        let mut written_hash = SampleHash::new();
        Pass::decoding(Decoder::open_skipping_md5(&temp.path)?, output_rate_hz)?.run(
            &mut [],
            &mut [],
            Phase::Verify,
            progress,
            |b| written_hash.add(b),
            |_| Ok(()),
        )?;
        if written_hash.value() != rendered_hash.value() {
            return Err(Error::Encode {
                path: request.output.to_path_buf(),
                reason: "the written file does not decode to the rendered samples".to_owned(),
            });
        }
    } else {
        written.check_file(&temp.path).map_err(|e| match e {
            Error::Encode { reason, .. } => Error::Encode {
                path: request.output.to_path_buf(),
                reason,
            },
            other => other,
        })?;
    }
    let qc = verdict(profile, target_lufs, rule, &output_analysis);
    std::fs::rename(&temp.path, request.output).map_err(|e| Error::io(request.output, e))?;
    let mut temp = temp;
    temp.keep = true;
    progress(Progress {
        phase: Phase::Verify,
        fraction: 1.0,
    });

    Ok(TrackReport {
        input: request.input.to_path_buf(),
        output: request.output.to_path_buf(),
        profile: profile.name.clone(),
        lathe_version: env!("CARGO_PKG_VERSION").to_owned(),
        source,
        output_sample_rate_hz: output_rate_hz,
        chain_input_gain_db,
        gain_db,
        level_rule: rule,
        target_lufs,
        loudness_error_lu: target_lufs
            .zip(rule.level_of(&output_analysis))
            .map(|(t, l)| l - t),
        calibration_passes,
        passes,
        dither_seed: format!("{:016x}", settings.dither_seed),
        stages: reports,
        input_analysis,
        output_analysis,
        qc,
        warnings,
        elapsed_s: started.elapsed().as_secs_f64(),
    })
}

/// What every render of one track shares.
struct RenderSettings<'a> {
    profile: &'a Profile,
    output: &'a Path,
    spec: lathe_model::stage_config::EncodeSpec,
    channels: usize,
    output_rate_hz: u32,
    dither_seed: u64,
}

/// A master written under its temporary name (removed if this is dropped), analysed, not yet
/// verified, tagged or renamed.
struct RenderedMaster {
    temp: TempFile,
    written: WrittenAudio,
    analysis: Analysis,
    /// The rendered samples' hash, where the written file will be decoded to verify it.
    rendered_hash: Option<SampleHash>,
    /// What the tail stages and the dither did.
    reports: Vec<StageReport>,
}

/// Renders `source` (the chain spool, or the source itself for silence) through `tail` (gain,
/// limiter, fades; or the mute) and the dither into the encoder, under the output's temporary
/// name, analysing what it writes.
fn render_master(
    settings: &RenderSettings<'_>,
    source: Pass,
    mut tail: Vec<Box<dyn Stage>>,
    phase: Phase,
    progress: &mut dyn FnMut(Progress),
) -> Result<RenderedMaster> {
    let RenderSettings {
        profile,
        output,
        spec,
        channels,
        output_rate_hz,
        dither_seed,
    } = *settings;
    let temp = TempFile {
        path: temp_path_for(output),
        keep: false,
    };
    let mut encoder = Encoder::create(&temp.path, &spec, channels, output_rate_hz)?;
    encoder.check_frames()?;
    let mut dither: Vec<Box<dyn Stage>> = Vec::new();
    if spec.bit_depth < 32 {
        let quantiser =
            profile.build_quantiser(spec.bit_depth, channels, output_rate_hz, dither_seed)?;
        dither.push(Box::new(quantiser));
    }
    let mut analyzer = Analyzer::new(channels, output_rate_hz);
    let mut rendered_hash = (!encoder.checks_frames()).then(SampleHash::new);
    source.run(
        &mut tail,
        &mut dither,
        phase,
        progress,
        |_| {},
        |block| {
            analyzer.add(block);
            if let Some(hash) = rendered_hash.as_mut() {
                hash.add(block);
            }
            encoder.write(block)
        },
    )?;
    let written = encoder.finish_written()?;
    let mut reports = stage_reports(&tail);
    reports.extend(stage_reports(&dither));
    Ok(RenderedMaster {
        temp,
        written,
        analysis: analyzer.finish(output),
        rendered_hash,
        reports,
    })
}

/// Without a limiter, the gain leaves this much room under the ceiling for dither and quantisation.
const PEAK_CAP_MARGIN_DB: f64 = 0.05;

/// Loudness within this of the target passes QC.
pub const QC_LOUDNESS_TOLERANCE_LU: f64 = 0.5;

fn verdict(
    profile: &Profile,
    target_lufs: Option<f64>,
    rule: LevelRule,
    analysis: &Analysis,
) -> QcVerdict {
    let mut issues = Vec::new();
    let ceiling = profile.loudness.ceiling_dbtp;
    if let Some(peak) = analysis.true_peak_dbtp
        && peak > ceiling
    {
        issues.push(format!(
            "true peak {peak:.2} dBTP is over the {ceiling} dBTP ceiling"
        ));
    }
    match (target_lufs, rule.level_of(analysis)) {
        (Some(target), Some(lufs)) if (lufs - target).abs() > QC_LOUDNESS_TOLERANCE_LU => {
            issues.push(format!(
                "{} {lufs:.2} LUFS misses the {target} LUFS target",
                rule.level_name()
            ));
        }
        // A master with a target whose level cannot even be measured has lost its audio.
        (Some(target), None) => issues.push(format!(
            "the master is silent (no {} above the -70 LUFS gate), not at the {target} LUFS target",
            rule.level_name()
        )),
        _ => {}
    }
    if analysis.clipped_samples > 0 {
        issues.push(format!("{} clipped samples", analysis.clipped_samples));
    }
    QcVerdict {
        passed: issues.is_empty(),
        issues,
    }
}

/// The stages every pass after the analysis starts with: the profile's restoration, the gain to the
/// chain's input level, then its tone and dynamics chain.
fn chain_stages(
    profile: &Profile,
    input: &Path,
    chain_input_gain_db: f64,
    channels: usize,
    rate_hz: u32,
    max_block: usize,
) -> Result<Vec<Box<dyn Stage>>> {
    let noise = noise_excerpt(profile, input, rate_hz)?;
    let mut stages = profile.build_restore(channels, rate_hz, max_block, noise.as_ref())?;
    stages.push(Box::new(Gain::new(chain_input_gain_db)));
    stages.extend(profile.build_stages(channels, rate_hz, max_block)?);
    Ok(stages)
}

/// The source's audio over the profile's denoise noise range (`[restore.denoise]` `noise_from_s`
/// to `noise_to_s`, shorter where the track ends first), at `rate_hz`, the rate the restorers run
/// at; `None` when the profile gives no range. Read in a pass of its own.
fn noise_excerpt(profile: &Profile, input: &Path, rate_hz: u32) -> Result<Option<AudioBlock>> {
    let range = profile
        .restore
        .as_ref()
        .and_then(|r| r.denoise.as_ref())
        .and_then(|d| d.noise_range_s());
    let Some((from_s, to_s)) = range else {
        return Ok(None);
    };
    let rate = f64::from(rate_hz);
    let (from, to) = ((from_s * rate) as u64, (to_s * rate) as u64);
    let channels = Decoder::open(input)?.info().channel_count;
    let mut excerpt = AudioBlock::new(channels, (to - from) as usize, rate_hz);
    let pass = Pass::open(input, rate_hz)?;
    let mut scratch = AudioBlock::new(channels, pass.max_block_frames(), rate_hz);
    let mut at = 0u64;
    pass.run(
        &mut [],
        &mut [],
        Phase::Chain,
        &mut |_| {},
        |_| {},
        |block| {
            let end = at + block.frames() as u64;
            if end > from && at < to {
                scratch.set_frames(0);
                scratch.append(block);
                scratch.set_frames((to.min(end) - at) as usize);
                scratch.discard_front(from.saturating_sub(at) as usize);
                excerpt.append(&scratch);
            }
            at = end;
            Ok(())
        },
    )?;
    Ok(Some(excerpt))
}

/// Runs `input` through `profile`'s restoration, the gain `chain_input_gain_db` and its tone and dynamics chain at the
/// profile's output rate, hands every output block to `on_output`, and measures the result: the
/// analysis an album plan needs before it sets each track's level.
///
/// # Errors
/// As [`master_track`]'s decode and chain passes.
pub fn measure_chain(
    input: &Path,
    profile: &Profile,
    chain_input_gain_db: f64,
    on_output: &mut dyn FnMut(&AudioBlock),
) -> Result<ChainMeasurement> {
    let info = Decoder::open(input)?.info().clone();
    let output_rate_hz = profile.output_rate_hz(info.sample_rate_hz);
    let pass = Pass::open(input, output_rate_hz)?;
    let mut stages = chain_stages(
        profile,
        input,
        chain_input_gain_db,
        info.channel_count,
        output_rate_hz,
        pass.max_block_frames(),
    )?;
    let mut meter = LoudnessMeter::new(info.channel_count, output_rate_hz);
    let mut frames = 0u64;
    pass.run(
        &mut stages,
        &mut [],
        Phase::Chain,
        &mut |_| {},
        |_| {},
        |block| {
            frames += block.frames() as u64;
            meter.add(block);
            on_output(block);
            Ok(())
        },
    )?;
    let figures = meter.figures();
    Ok(ChainMeasurement {
        integrated_lufs: figures.integrated_lufs,
        true_peak_dbtp: figures.true_peak_dbtp,
        frames,
        sample_rate_hz: output_rate_hz,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::qc::Analyzer;

    /// The analysis of `seconds` of a 1 kHz tone at `level_db` dBFS, stereo, 44.1 kHz.
    fn tone_analysis(level_db: f64, seconds: f64) -> Analysis {
        let rate = 44_100;
        let frames = (seconds * f64::from(rate)) as usize;
        let amplitude = 10f64.powf(level_db / 20.0);
        let mut block = AudioBlock::new(2, frames, rate);
        block.set_frames(frames);
        for channel in 0..2 {
            for (n, sample) in block.channel_mut(channel).iter_mut().enumerate() {
                let phase = 2.0 * std::f64::consts::PI * 1000.0 * n as f64 / f64::from(rate);
                *sample = (amplitude * phase.sin()) as f32;
            }
        }
        let mut analyzer = Analyzer::new(2, rate);
        analyzer.add(&block);
        analyzer.finish(Path::new("tone.wav"))
    }

    #[test]
    fn a_master_that_lost_its_audio_fails_qc() {
        let profile = Profile::load("streaming").unwrap();
        let heard = tone_analysis(-14.0, 3.0);
        let verdict_heard = verdict(&profile, Some(-14.0), LevelRule::IntegratedLoudness, &heard);
        assert!(verdict_heard.passed, "{:?}", verdict_heard.issues);
        // At -130 dBFS nothing passes the -70 LUFS gate: the master has no loudness at all.
        let lost = tone_analysis(-130.0, 3.0);
        assert_eq!(lost.integrated_lufs, None);
        let verdict_lost = verdict(&profile, Some(-14.0), LevelRule::IntegratedLoudness, &lost);
        assert!(!verdict_lost.passed);
        assert!(
            verdict_lost.issues[0].starts_with("the master is silent"),
            "{:?}",
            verdict_lost.issues
        );
        // Without a target (near-silent sources at unity gain), no level is owed.
        assert!(verdict(&profile, None, LevelRule::UnityGain, &lost).passed);
    }
}
