//! Mastering one track: the multi-pass render that turns a source file into a delivered master.
//!
//! Memory stays bounded whatever the track length: every pass streams in blocks, from the source or
//! from a spool ([`crate::spool`]: raw `f32` on disk beside the output, removed when the render
//! ends), so the decode, resample, restore and chain run once however many passes follow.
//!
//! 1. **Analyse**: decode the source, measure it (the input's QC) and hash its samples; the hash seeds
//!    the dither, so the same source always gives the same master bytes. A source a codec decodes
//!    (anything but PCM read straight from its file) is spooled as it is decoded, so that it is
//!    decoded once; PCM is read again as cheaply as a spool would be.
//! 2. **Chain**: read the source again (the spool, or the PCM file), resample to the output rate,
//!    restore, gain the source to
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

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Instant;

use lathe_model::level::{Level, LevelOverride, TrackFades};
use lathe_model::report::{ChainMeasurement, QcVerdict, SourceSummary, StageReport, TrackReport};

use crate::album::fade::Fade;
use crate::atomic_file::{TempFile, temp_path_for};
use crate::audio::{AudioBlock, BLOCK_FRAMES};
use crate::calibration::LimiterModel;
use crate::chain::BuildChain;
use crate::decode::Decoder;
use crate::encode::{Encoder, WrittenAudio};
use crate::error::{Error, Result};
use crate::loudness::LoudnessMeter;
use crate::master::gain::Gain;
use crate::pass::{Input, Pass, stage_reports};
pub use crate::progress::{Phase, Progress};
use crate::qc::Analyzer;
use crate::restore::detect::DefectDetector;
use crate::restore::{noise_excerpt, plan_in_own_pass};
use crate::sample_hash::SampleHash;
use crate::spool::{Spool, SpoolWriter};
use crate::stage::Stage;
use crate::tags::{read_tags, write_tags};
use lathe_model::analysis::Analysis;
use lathe_model::level_rule::LevelRule;
use lathe_model::plot::{PlotData, TrackPlots};
use lathe_model::profile::Profile;
use lathe_model::restore_plan::RestorePlan;
use lathe_model::tags::TrackTags;

/// The render stops calibrating once the limited loudness is this close to the target.
pub const CALIBRATION_TOLERANCE_LU: f64 = 0.1;
/// Each album track (a track whose level an album plan set) is calibrated to its own target this
/// closely, so that two tracks' difference stays within 0.1 LU of the source's.
pub const ALBUM_CALIBRATION_TOLERANCE_LU: f64 = 0.04;
/// The most calibration passes a track gets.
pub const MAX_CALIBRATION_PASSES: u32 = 6;

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
/// at all. `progress` hears of every block; a [`ControlFlow::Break`] stops the render at the next
/// block with [`Error::Cancelled`], its temporary files removed.
pub fn master_track(
    request: &MasterRequest<'_>,
    progress: &mut dyn FnMut(Progress) -> ControlFlow<()>,
) -> Result<TrackReport> {
    let started = Instant::now();
    // Each phase runs in a span of its own (`tracing`), which an exporter shows under the caller's.
    let analysed = tracing::info_span!("analyse").in_scope(|| analyse(request, progress))?;
    let settings = RenderSettings {
        profile: request.profile,
        output: request.output,
        spec: request.profile.encode_spec(),
        channels: analysed.channels,
        output_rate_hz: analysed.output_rate_hz,
        dither_seed: analysed.dither_seed,
    };
    if analysed.rule == LevelRule::Silence {
        return master_silence(request, &settings, analysed, started, progress);
    }
    let plan = LevelPlan::for_track(request, &analysed);
    let chained = tracing::info_span!("chain")
        .in_scope(|| run_chain(request, &settings, &analysed, &plan, progress))?;
    let Analysed {
        source,
        input_analysis,
        input_plot,
        rule,
        mut warnings,
        source_spool,
        restore_plan,
        ..
    } = analysed;
    // The later passes read the chain's spool.
    drop(source_spool);
    let gain_db = normalisation_gain(request.profile, &plan, rule, &chained, &mut warnings);
    let tail = Tail {
        request,
        settings: &settings,
        output_frames: chained.spool.frames(),
    };
    let calibrated = tracing::info_span!("calibrate")
        .in_scope(|| calibrate(request, &tail, &plan, rule, &chained, gain_db, progress))?;
    let Calibrated {
        passes: calibration_passes,
        master: calibrated_master,
        gain_db,
    } = calibrated;

    // 4. Render, unless the last calibration pass already did at the final gain.
    let rendered = calibrated_master.filter(|(g, _)| *g == gain_db);
    let passes = 2 + calibration_passes + u32::from(rendered.is_none());
    let master = match rendered {
        Some((_, master)) => master,
        None => tracing::info_span!("render").in_scope(|| {
            render_master(
                &settings,
                Pass::spooled(&chained.spool)?,
                tail.stages(gain_db)?,
                Phase::Render,
                progress,
            )
        })?,
    };
    let Chained { spool, reports, .. } = chained;
    drop(spool);
    if rule == LevelRule::UnityGain && plan.fixed_gain_db.is_some_and(|g| g != gain_db) {
        warnings.push(format!(
            "unity gain lowered to {gain_db:.2} dB to keep the true peak under {} dBTP",
            request.profile.loudness.ceiling_dbtp
        ));
    }
    let decisions = Decisions {
        source,
        input_analysis,
        input_plot,
        rule,
        chain_input_gain_db: plan.chain_input_gain_db,
        gain_db,
        target_lufs: plan.target_lufs,
        calibration_passes,
        passes,
        stages: reports,
        warnings,
        restore_plan,
    };
    tracing::info_span!("verify")
        .in_scope(|| deliver(request, &settings, decisions, master, started, progress))
}

/// What the analysis pass found.
struct Analysed {
    source: SourceSummary,
    channels: usize,
    output_rate_hz: u32,
    input_analysis: Analysis,
    /// The source's curves for the plots.
    input_plot: PlotData,
    /// The hash of the source's samples.
    dither_seed: u64,
    rule: LevelRule,
    warnings: Vec<String>,
    /// The source's samples as the analysis decoded them, for the passes after, where a codec
    /// decoded them (PCM is read again as cheaply as a spool).
    source_spool: Option<Spool>,
    /// With `[restore] auto = true`: the defects the analysis found and the restorers they call
    /// for.
    restore_plan: Option<RestorePlan>,
}

impl Analysed {
    /// Where later passes read the source: the analysis's spool of its decode, or the file.
    fn input<'a>(&'a self, request: &MasterRequest<'a>) -> Input<'a> {
        match &self.source_spool {
            Some(spool) => Input::Spooled(spool),
            None => Input::File(request.input),
        }
    }
}

/// Phase 1, analyse: decodes the source, measures it and hashes its samples.
fn analyse(
    request: &MasterRequest<'_>,
    progress: &mut dyn FnMut(Progress) -> ControlFlow<()>,
) -> Result<Analysed> {
    let decoder = Decoder::open(request.input)?;
    let info = decoder.info().clone();
    let channels = info.channel_count;
    let mut input_analyzer = Analyzer::new(channels, info.sample_rate_hz).with_plot();
    let mut hash = SampleHash::new();
    // Automatic restoration measures the defects in this pass, which reads every block anyway.
    let auto_restore = request.profile.restore.as_ref().filter(|r| r.auto);
    let mut detector = auto_restore.map(|_| DefectDetector::new(channels, info.sample_rate_hz));
    // A codec's source is decoded once: this pass spools what it decodes for the passes after.
    let mut spool = if decoder.reads_pcm_directly() {
        None
    } else {
        Some(SpoolWriter::create(
            spool_path_for(request.output, "source"),
            channels,
            info.sample_rate_hz,
            BLOCK_FRAMES,
        )?)
    };
    Pass::decoding(decoder, info.sample_rate_hz)?.run(
        &mut [],
        &mut [],
        Phase::Analyse,
        progress,
        |_| {},
        |block| {
            input_analyzer.add(block);
            hash.add(block);
            if let Some(detector) = detector.as_mut() {
                detector.feed(block);
            }
            spool.as_mut().map_or(Ok(()), |spool| spool.write(block))
        },
    )?;
    let source_spool = spool.map(SpoolWriter::finish).transpose()?;
    let restore_plan = auto_restore
        .zip(detector)
        .map(|(section, detector)| RestorePlan::new(detector.finish(), section));
    let input_analysis = input_analyzer.finish(request.input);
    let input_plot = input_analyzer.plot();
    let rule = match request.level {
        Some(LevelOverride {
            level: Level::Silence,
            ..
        }) => LevelRule::Silence,
        _ => LevelRule::for_source(&input_analysis),
    };
    Ok(Analysed {
        source: SourceSummary {
            container: info.container.clone(),
            codec: info.codec.clone(),
            sample_rate_hz: info.sample_rate_hz,
            channel_count: channels,
            bits_per_sample: info.bits_per_sample,
        },
        channels,
        output_rate_hz: request.profile.output_rate_hz(info.sample_rate_hz),
        input_analysis,
        input_plot,
        dither_seed: hash.value(),
        rule,
        warnings: info.notes,
        source_spool,
        restore_plan,
    })
}

/// Digital silence (or an album's silent track): the source decoded (and resampled) only for its
/// length at the output rate, then muted; the dither leaves exact zeros as they are.
fn master_silence(
    request: &MasterRequest<'_>,
    settings: &RenderSettings<'_>,
    analysed: Analysed,
    started: Instant,
    progress: &mut dyn FnMut(Progress) -> ControlFlow<()>,
) -> Result<TrackReport> {
    let master = render_master(
        settings,
        Pass::over(analysed.input(request), settings.output_rate_hz)?,
        vec![Box::new(Mute)],
        Phase::Render,
        progress,
    )?;
    let decisions = Decisions {
        source: analysed.source,
        input_analysis: analysed.input_analysis,
        input_plot: analysed.input_plot,
        rule: analysed.rule,
        chain_input_gain_db: 0.0,
        gain_db: 0.0,
        target_lufs: None,
        calibration_passes: 0,
        passes: 2,
        stages: Vec::new(),
        warnings: analysed.warnings,
        restore_plan: analysed.restore_plan,
    };
    deliver(request, settings, decisions, master, started, progress)
}

/// How a (not silent) track's level is set: by the profile, or by an album plan's override, as the
/// level rule allows.
struct LevelPlan {
    /// The loudness to reach, LUFS (`None`: no target).
    target_lufs: Option<f64>,
    /// A gain given outright, dB (instead of a target).
    fixed_gain_db: Option<f64>,
    /// The gain before the chain, dB.
    chain_input_gain_db: f64,
}

impl LevelPlan {
    fn for_track(request: &MasterRequest<'_>, analysed: &Analysed) -> Self {
        let profile = request.profile;
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
        let rule = analysed.rule;
        if rule == LevelRule::UnityGain {
            target_lufs = None;
            fixed_gain_db = Some(0.0);
        }
        let input_lufs = rule.level_of(&analysed.input_analysis);
        let chain_input_gain_db = match (rule, request.level, input_lufs) {
            (LevelRule::UnityGain, _, _) | (_, None, None) => 0.0,
            (_, Some(level), _) => level.chain_input_gain_db,
            (_, None, Some(input_lufs)) => profile
                .loudness
                .chain_input_lufs
                .map_or(0.0, |level| level - input_lufs),
        };
        Self {
            target_lufs,
            fixed_gain_db,
            chain_input_gain_db,
        }
    }

    /// The true peak sets the gain when there is no target and caps it when there is no limiter;
    /// with both, calibration through the limiter decides.
    fn needs_peak(&self, profile: &Profile) -> bool {
        profile.limiter.is_none() || self.target_lufs.is_none()
    }
}

/// What the chain pass measured and spooled.
struct Chained {
    /// The chain's output, for the passes after.
    spool: Spool,
    /// The chain output's level as the level rule measures it, LUFS.
    lufs: Option<f64>,
    /// Its true peak, where the gain needs it (no limiter or no target), dBTP.
    peak_dbtp: Option<f64>,
    /// The limiter model fed with the chain's output, where calibration takes its first guess
    /// from it.
    model: Option<LimiterModel>,
    /// What the chain's stages did.
    reports: Vec<StageReport>,
}

/// Phase 2, chain: runs the chain once, measures what it gives and spools it for the passes after.
fn run_chain(
    request: &MasterRequest<'_>,
    settings: &RenderSettings<'_>,
    analysed: &Analysed,
    plan: &LevelPlan,
    progress: &mut dyn FnMut(Progress) -> ControlFlow<()>,
) -> Result<Chained> {
    let (profile, channels, output_rate_hz) =
        (request.profile, settings.channels, settings.output_rate_hz);
    let rule = analysed.rule;
    let needs_peak = plan.needs_peak(profile);
    // With a limiter and a target, a model of the limiter gives calibration its first guess.
    // The model predicts the gated loudness, so it serves only the integrated-loudness rule.
    let mut model = (!needs_peak && rule == LevelRule::IntegratedLoudness)
        .then(|| LimiterModel::new(output_rate_hz));
    let pass = Pass::over(analysed.input(request), output_rate_hz)?;
    let max_block = pass.max_block_frames();
    let mut stages = chain_stages(
        profile,
        analysed.restore_plan.as_ref(),
        analysed.input(request),
        plan.chain_input_gain_db,
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
    let spool = spool.finish()?;
    let chained = meter.figures();
    let lufs = rule.level_lufs(chained.integrated_lufs, meter.ungated_lufs());
    if rule.measures_level() && lufs.is_none() {
        return Err(Error::Decode {
            path: request.input.to_path_buf(),
            reason: "the chain output is silent: check the profile's stages".to_owned(),
        });
    }
    Ok(Chained {
        spool,
        lufs,
        peak_dbtp: needs_peak.then(|| chained.true_peak_dbtp.unwrap_or(f64::NEG_INFINITY)),
        model,
        reports: stage_reports(&stages),
    })
}

/// The normalisation gain after the chain, dB: to the target, or to the ceiling when there is no
/// target, never above `max_gain_db` and, without a limiter, never so high that the true peak
/// passes the ceiling. Says in `warnings` when it falls short of the target.
fn normalisation_gain(
    profile: &Profile,
    plan: &LevelPlan,
    rule: LevelRule,
    chained: &Chained,
    warnings: &mut Vec<String>,
) -> f64 {
    let ceiling = profile.loudness.ceiling_dbtp;
    let (target_lufs, fixed_gain_db) = (plan.target_lufs, plan.fixed_gain_db);
    let mut gain_db = match (
        fixed_gain_db,
        target_lufs.zip(chained.lufs),
        chained.peak_dbtp,
    ) {
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
    if let Some(peak) = chained.peak_dbtp
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
    gain_db
}

/// The stages after the chain: the normalisation gain, the limiter and the fades (all on the
/// spooled chain).
struct Tail<'a> {
    request: &'a MasterRequest<'a>,
    settings: &'a RenderSettings<'a>,
    /// The track's length at the output rate (the fades need it).
    output_frames: u64,
}

impl Tail<'_> {
    /// The tail stages at this gain.
    fn stages(&self, gain_db: f64) -> Result<Vec<Box<dyn Stage>>> {
        let (channels, output_rate_hz) = (self.settings.channels, self.settings.output_rate_hz);
        let mut tail: Vec<Box<dyn Stage>> = vec![Box::new(Gain::new(gain_db))];
        if let Some(limiter) =
            self.request
                .profile
                .build_limiter(channels, output_rate_hz, BLOCK_FRAMES)?
        {
            tail.push(Box::new(limiter));
        }
        if let Some(fades) = self.request.fades {
            tail.push(Box::new(Fade::new(
                &fades,
                self.output_frames,
                output_rate_hz,
            )));
        }
        Ok(tail)
    }
}

/// What calibration did.
struct Calibrated {
    /// Calibration passes run.
    passes: u32,
    /// The master the last pass wrote, with the gain it was written at.
    master: Option<(f64, RenderedMaster)>,
    /// The gain to deliver at, dB.
    gain_db: f64,
}

/// Phase 3, calibrate (with a limiter and a target): each pass renders the master itself (gain, limiter,
/// fades, dither, encoder, output analysis) starting from the limiter model's guess, then secant
/// steps, until the output is within the tolerance of the target. The first pass usually lands
/// within it, and its master is then the one delivered.
fn calibrate(
    request: &MasterRequest<'_>,
    tail: &Tail<'_>,
    plan: &LevelPlan,
    rule: LevelRule,
    chained: &Chained,
    mut gain_db: f64,
    progress: &mut dyn FnMut(Progress) -> ControlFlow<()>,
) -> Result<Calibrated> {
    let profile = request.profile;
    let ceiling = profile.loudness.ceiling_dbtp;
    let mut calibration_passes = 0;
    let mut rendered: Option<(f64, RenderedMaster)> = None;
    if let (Some(target), Some(limiter)) = (plan.target_lufs, &profile.limiter)
        && chained
            .peak_dbtp
            .is_none_or(|peak| peak + gain_db > ceiling - 0.1)
    {
        // An album's tracks keep their differences only if each is calibrated more closely.
        let tolerance_lu = if request.level.is_some() {
            ALBUM_CALIBRATION_TOLERANCE_LU
        } else {
            CALIBRATION_TOLERANCE_LU
        };
        // Start where the limiter model says the target is, with its slope; then secant steps on
        // loudness(gain): a limiter makes the curve flatter than 1 dB per dB, so a plain "add the
        // error" step undershoots when the limiter works hard.
        let mut model_slope = 1.0;
        if let (Some(model), Some(chain_lufs)) = (&chained.model, chained.lufs)
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
        let mut previous: Option<(f64, f64)> = None;
        while calibration_passes < MAX_CALIBRATION_PASSES {
            calibration_passes += 1;
            // The previous pass's master is stale: remove it before writing the next.
            drop(rendered.take());
            let pass = render_master(
                tail.settings,
                Pass::spooled(&chained.spool)?,
                tail.stages(gain_db)?,
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
    Ok(Calibrated {
        passes: calibration_passes,
        master: rendered,
        gain_db,
    })
}

/// What the passes before the master found and decided: the track report's figures other than
/// the master's own.
struct Decisions {
    source: SourceSummary,
    input_analysis: Analysis,
    /// The source's curves for the plots.
    input_plot: PlotData,
    rule: LevelRule,
    chain_input_gain_db: f64,
    gain_db: f64,
    target_lufs: Option<f64>,
    calibration_passes: u32,
    passes: u32,
    /// What the chain's stages did (the master's tail and dither are added).
    stages: Vec<StageReport>,
    warnings: Vec<String>,
    restore_plan: Option<RestorePlan>,
}

/// Verifies, tags and renames the rendered master into place, and reports on it.
fn deliver(
    request: &MasterRequest<'_>,
    settings: &RenderSettings<'_>,
    decisions: Decisions,
    master: RenderedMaster,
    started: Instant,
    progress: &mut dyn FnMut(Progress) -> ControlFlow<()>,
) -> Result<TrackReport> {
    let Decisions {
        source,
        input_analysis,
        input_plot,
        rule,
        chain_input_gain_db,
        gain_db,
        target_lufs,
        calibration_passes,
        passes,
        stages: mut reports,
        mut warnings,
        restore_plan,
    } = decisions;
    let (profile, output_rate_hz) = (settings.profile, settings.output_rate_hz);
    let RenderedMaster {
        temp,
        written,
        analysis: output_analysis,
        plot: output_plot,
        rendered_hash,
        reports: render_reports,
    } = master;
    reports.extend(render_reports);
    warnings.extend(rule.note(&input_analysis, &output_analysis));

    // 5. Verify, tag, rename.
    if progress(Progress {
        phase: Phase::Verify,
        fraction: 0.0,
    })
    .is_break()
    {
        return Err(Error::Cancelled);
    }
    let mut tags = request.tags.clone();
    if let Ok(source_tags) = read_tags(request.input) {
        tags.title = tags.title.or(source_tags.title);
        tags.artist = tags.artist.or(source_tags.artist);
        tags.album = tags.album.or(source_tags.album);
        tags.track_number = tags.track_number.or(source_tags.track_number);
        tags.isrc = tags.isrc.or(source_tags.isrc);
    }
    if tags != TrackTags::default() {
        write_tags(temp.path(), &tags)?;
    }
    // The analysis is of the rendered samples; the file must decode to exactly those samples.
    // FLAC: the encoder decoded every frame as it wrote it and found its samples; the file must
    // still hold those frames and that STREAMINFO after tagging. Otherwise (WAV): decode the file
    // and compare. Either covers what FLAC's MD5 signature would, so the decoder skips it.
    if let Some(rendered_hash) = rendered_hash {
        let mut written_hash = SampleHash::new();
        Pass::decoding(Decoder::open_skipping_md5(temp.path())?, output_rate_hz)?.run(
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
        written.check_file(temp.path()).map_err(|e| match e {
            Error::Encode { reason, .. } => Error::Encode {
                path: request.output.to_path_buf(),
                reason,
            },
            other => other,
        })?;
    }
    let qc = verdict(profile, target_lufs, rule, &output_analysis);
    temp.commit(request.output)?;
    // The master is in place: too late to stop, so a last `Break` changes nothing.
    let _ = progress(Progress {
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
        plots: Some(TrackPlots {
            before: input_plot,
            after: output_plot,
        }),
        restore_plan,
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
    /// The master's curves for the plots.
    plot: PlotData,
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
    progress: &mut dyn FnMut(Progress) -> ControlFlow<()>,
) -> Result<RenderedMaster> {
    let RenderSettings {
        profile,
        output,
        spec,
        channels,
        output_rate_hz,
        dither_seed,
    } = *settings;
    let temp = TempFile::for_output(output);
    let mut encoder = Encoder::create(temp.path(), &spec, channels, output_rate_hz)?;
    encoder.check_frames()?;
    let mut dither: Vec<Box<dyn Stage>> = Vec::new();
    if spec.bit_depth < 32 {
        let quantiser =
            profile.build_quantiser(spec.bit_depth, channels, output_rate_hz, dither_seed)?;
        dither.push(Box::new(quantiser));
    }
    let mut analyzer = Analyzer::new(channels, output_rate_hz).with_plot();
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
        plot: analyzer.plot(),
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

/// The stages every pass after the analysis starts with: the profile's restoration (the automatic
/// plan's where there is one), the gain to the chain's input level, then its tone and dynamics
/// chain.
fn chain_stages(
    profile: &Profile,
    restore_plan: Option<&RestorePlan>,
    input: Input<'_>,
    chain_input_gain_db: f64,
    channels: usize,
    rate_hz: u32,
    max_block: usize,
) -> Result<Vec<Box<dyn Stage>>> {
    let noise_range_s = restore_plan
        .map(|p| &p.config)
        .or(profile.restore.as_ref())
        .and_then(|r| r.denoise.as_ref())
        .and_then(|d| d.noise_range_s());
    // The restorers run block by block inside the chain's pass; their set-up (a denoiser's noise
    // profile, read from the source) is the `restore` span.
    let mut stages = tracing::info_span!("restore").in_scope(|| {
        let noise = noise_excerpt(noise_range_s, input, rate_hz)?;
        profile.build_planned_restore(restore_plan, channels, rate_hz, max_block, noise.as_ref())
    })?;
    stages.push(Box::new(Gain::new(chain_input_gain_db)));
    stages.extend(profile.build_stages(channels, rate_hz, max_block)?);
    Ok(stages)
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
    let decoder = Decoder::open(input)?;
    let info = decoder.info().clone();
    let output_rate_hz = profile.output_rate_hz(info.sample_rate_hz);
    // Automatic restoration plans from the source at its own rate, as the render's analysis does.
    let restore_plan = plan_in_own_pass(
        profile.restore.as_ref(),
        Input::File(input),
        info.sample_rate_hz,
    )?;
    let pass = Pass::decoding(decoder, output_rate_hz)?;
    let mut stages = chain_stages(
        profile,
        restore_plan.as_ref(),
        Input::File(input),
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
        &mut |_| ControlFlow::Continue(()),
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

    /// Writes `seconds` of a 440 Hz tone at -20 dBFS, stereo 16-bit 44.1 kHz, to `path`.
    fn write_tone(path: &Path, seconds: f64) {
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 44_100,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut writer = hound::WavWriter::create(path, spec).unwrap();
        for n in 0..(seconds * 44_100.0) as usize {
            let x = 0.1 * (2.0 * std::f64::consts::PI * 440.0 * n as f64 / 44_100.0).sin();
            for _ in 0..2 {
                writer.write_sample((x * 32767.0).round() as i16).unwrap();
            }
        }
        writer.finalize().unwrap();
    }

    /// Masters `input` into `output` with the streaming preset, calling `progress`.
    fn master_tone(
        input: &Path,
        output: &Path,
        progress: &mut dyn FnMut(Progress) -> ControlFlow<()>,
    ) -> Result<TrackReport> {
        master_track(
            &MasterRequest {
                input,
                output,
                profile: &Profile::load("streaming").unwrap(),
                tags: TrackTags::default(),
                level: None,
                fades: None,
            },
            progress,
        )
    }

    #[test]
    fn a_codecs_source_is_decoded_once_and_masters_as_its_pcm_twin() {
        use crate::decode::counting::frames_read;
        use crate::decode::fixtures::{assert_same_audio, decode_all, ffmpeg, write_wav};
        let dir = tempfile::tempdir().unwrap();
        let wav = dir.path().join("tone.wav");
        write_tone(&wav, 4.0);
        // Vorbis at the output rate; MP3 at half of it, resampled from the spool.
        let codecs: [(&str, &[&str]); 2] = [
            ("tone.ogg", &["-c:a", "libvorbis"]),
            ("tone.mp3", &["-ar", "22050", "-c:a", "libmp3lame"]),
        ];
        for (name, args) in codecs {
            let source = dir.path().join(name);
            ffmpeg(&wav, args, &source);
            let decoded = decode_all(&source, 4096).unwrap();
            // Its twin: the same samples as a float WAV, which is read straight from the file.
            let twin = dir.path().join(format!("{name}.wav"));
            write_wav(&twin, &decoded, 32, true);
            let mut masters = Vec::new();
            for (input, reads) in [(&source, 1), (&twin, 2)] {
                let output = dir.path().join(format!(
                    "{}.flac",
                    input.file_name().unwrap().to_string_lossy()
                ));
                let before = frames_read();
                master_tone(input, &output, &mut |_| ControlFlow::Continue(())).unwrap();
                assert_eq!(
                    frames_read() - before,
                    reads * decoded.frames() as u64,
                    "{}: the source is read {reads} time(s)",
                    input.display()
                );
                masters.push(decode_all(&output, 4096).unwrap());
            }
            assert_same_audio(&masters[0], &masters[1], 0.0);
        }
    }

    #[test]
    fn the_report_carries_the_curves_before_and_after() {
        let sources = tempfile::tempdir().unwrap();
        let input = sources.path().join("tone.wav");
        write_tone(&input, 6.0);
        let out = tempfile::tempdir().unwrap();
        let report = master_tone(&input, &out.path().join("tone.flac"), &mut |_| {
            ControlFlow::Continue(())
        })
        .unwrap();
        let plots = report.plots.expect("the curves");
        for (which, plot, analysis) in [
            ("before", &plots.before, &report.input_analysis),
            ("after", &plots.after, &report.output_analysis),
        ] {
            assert_eq!(plot.short_term_lufs.len(), 6, "{which}: a point a second");
            // From 3 s on, a steady tone's short-term loudness is its integrated loudness.
            let lufs = analysis.integrated_lufs.unwrap();
            assert!(
                (plot.short_term_lufs[5] - lufs).abs() < 0.1,
                "{which}: {:?} vs {lufs}",
                plot.short_term_lufs
            );
            assert_eq!(plot.spectrum_db.len(), lathe_model::plot::SPECTRUM_BANDS);
            let loudest = (0..plot.spectrum_db.len())
                .max_by(|&a, &b| plot.spectrum_db[a].total_cmp(&plot.spectrum_db[b]))
                .unwrap();
            let centre = lathe_model::plot::band_centre_hz(loudest);
            assert!(
                (350.0..550.0).contains(&centre),
                "{which}: the 440 Hz tone in band {loudest} ({centre:.0} Hz)"
            );
        }
    }

    /// With `[restore] auto = true` the report carries what the analysis detected and a decision
    /// per restorer; the stages that ran are the plan's. Without it, no plan.
    #[test]
    fn an_auto_restore_profile_reports_its_defects_and_decisions() {
        use lathe_model::stage_config::restore::RestoreConfig;
        let sources = tempfile::tempdir().unwrap();
        let input = sources.path().join("tone.wav");
        write_tone(&input, 3.0);
        let mut profile = Profile::load("streaming").unwrap();
        profile.restore = Some(RestoreConfig {
            auto: true,
            ..RestoreConfig::default()
        });
        let out = tempfile::tempdir().unwrap();
        let master = |profile: &Profile, name: &str| {
            master_track(
                &MasterRequest {
                    input: &input,
                    output: &out.path().join(name),
                    profile,
                    tags: TrackTags::default(),
                    level: None,
                    fades: None,
                },
                &mut |_| ControlFlow::Continue(()),
            )
            .unwrap()
        };
        let report = master(&profile, "auto.flac");
        let plan = report.restore_plan.expect("a restore plan");
        assert_eq!(plan.decisions.len(), 5);
        assert!((plan.defects.duration_s - 3.0).abs() < 0.01);
        for restorer in plan.restorers() {
            assert!(
                report.stages.iter().any(|s| s.stage == restorer),
                "{restorer} planned but not run"
            );
        }
        let json = serde_json::to_string(&report.stages).unwrap();
        assert!(!json.contains("declick"), "a clean tone is not declicked");
        let plain = master(&Profile::load("streaming").unwrap(), "plain.flac");
        assert!(plain.restore_plan.is_none());
    }

    #[test]
    fn a_break_in_any_phase_cancels_and_leaves_no_file() {
        let sources = tempfile::tempdir().unwrap();
        let input = sources.path().join("tone.wav");
        write_tone(&input, 3.0);
        let mut phases = Vec::new();
        let finished = tempfile::tempdir().unwrap();
        master_tone(&input, &finished.path().join("tone.flac"), &mut |p| {
            if phases.last() != Some(&p.phase) {
                phases.push(p.phase);
            }
            ControlFlow::Continue(())
        })
        .unwrap();
        assert_eq!(
            phases,
            [
                Phase::Analyse,
                Phase::Chain,
                Phase::Calibrate,
                Phase::Verify
            ]
        );
        for phase in phases {
            let out = tempfile::tempdir().unwrap();
            let mut reports = 0;
            let result = master_tone(&input, &out.path().join("tone.flac"), &mut |p| {
                reports += 1;
                if p.phase == phase {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            });
            assert!(
                matches!(result, Err(Error::Cancelled)),
                "{phase:?}: {result:?}"
            );
            assert_eq!(result.unwrap_err().to_string(), "cancelled");
            let left: Vec<_> = std::fs::read_dir(out.path()).unwrap().collect();
            assert!(left.is_empty(), "{phase:?}: {left:?} left behind");
            if phase == Phase::Analyse {
                assert_eq!(reports, 1, "stopped at the first progress report");
            }
        }
    }

    #[test]
    fn the_verdict_names_each_failed_check() {
        let profile = Profile::load("streaming").unwrap();
        let ceiling = profile.loudness.ceiling_dbtp;
        let mut analysis = tone_analysis(-14.0, 3.0);
        let lufs = analysis.integrated_lufs.unwrap();
        let rule = LevelRule::IntegratedLoudness;
        assert!(verdict(&profile, Some(lufs), rule, &analysis).passed);
        // Within the tolerance passes; beyond it fails, naming the level and the target.
        assert!(verdict(&profile, Some(lufs + 0.49), rule, &analysis).passed);
        let missed = verdict(&profile, Some(lufs + 0.6), rule, &analysis);
        assert!(!missed.passed);
        assert_eq!(missed.issues.len(), 1);
        assert!(
            missed.issues[0].contains("misses the"),
            "{:?}",
            missed.issues
        );
        analysis.true_peak_dbtp = Some(ceiling + 0.3);
        analysis.clipped_samples = 7;
        let over = verdict(&profile, Some(lufs), rule, &analysis);
        assert!(!over.passed);
        assert_eq!(
            over.issues,
            [
                format!(
                    "true peak {:.2} dBTP is over the {ceiling} dBTP ceiling",
                    ceiling + 0.3
                ),
                "7 clipped samples".to_owned()
            ]
        );
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
