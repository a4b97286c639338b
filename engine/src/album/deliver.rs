//! Delivering a catalogue: every requested outlet of every album and loose track, checked, with a
//! delivery manifest and a report per album.
//!
//! ```text
//! OUT/delivery.json                     every file: MD5, SHA-256, duration, loudness, true peak, QC
//! OUT/<album>/report.html               plots and tables for a person
//! OUT/<album>/streaming/01 Dawn.flac    24-bit FLAC per track (+ the platforms' normalisation preview)
//! OUT/<album>/broadcast/01 Dawn.wav     R128 WAV per track with a BWF bext chunk
//! OUT/<album>/hires/01 Dawn.flac        96 kHz 24-bit FLAC per track
//! OUT/<album>/mp3-320/01 Dawn.mp3       LAME CBR 320 (and mp3-v0/ for V0), checked after decoding
//! OUT/<album>/opus/01 Dawn.opus         Opus, checked after decoding
//! OUT/<album>/cd/<album>.wav + .cue     44.1 kHz 16-bit album image, CUE sheet with CD-TEXT
//! OUT/<album>/cd/ddp/                   DDP 2.0 image for the plant
//! OUT/<album>/vinyl/Side A.wav          24-bit WAV per side
//! OUT/tracks/<outlet>/...               loose tracks: one master per track for every outlet (CD:
//!                                       16-bit WAV single; vinyl: 24-bit WAV, one side each)
//! ```
//!
//! The work is the task graph of `lathe_model::delivery` (measure, render, assemble), run by the farm
//! (embedded for `lathe master MANIFEST`, or real); this module holds the manifest's types and the
//! pieces the graph's tasks share. Every master is rendered
//! by [`crate::render::master_track`] with the outlet's profile; albums in `album` loudness mode get
//! one level for the whole album ([`crate::album::gain`]). Continuous renders (CD image, vinyl
//! sides) are made from 32-bit float masters of each track, sequenced with their gaps and
//! crossfades ([`crate::album::sequence`]) and dithered once. Intermediate files live in
//! `OUT/.lathe-work` and are removed at the end. A failing task is recorded in the manifest's
//! `failures` (with the tasks that needed it) and the rest carries on.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use md5::{Digest, Md5};
use serde::Serialize;
use sha2::Sha256;

use crate::album::cue::{CD_FRAME_SAMPLES, CdLayout, CdTrack};
use crate::album::sequence::{self, Placement, SequenceInput};
use crate::album::vinyl;
use crate::atomic_file::TempFile;
use crate::audio::AudioBlock;
use crate::audio::BLOCK_FRAMES;
use crate::decode::Decoder;
use crate::encode::Encoder;
use crate::error::{Error, Result};
use crate::master::dither::Quantiser;
use crate::qc::Analyzer;
use crate::stage::Stage;
use crate::tags::{BroadcastExtension, write_tags};
use lathe_model::catalog::{LoudnessMode, Outlet, VinylFormat};
use lathe_model::delivery::outlet::CD_SAMPLE_RATE_HZ;
use lathe_model::platforms::PlaybackPreview;
use lathe_model::profile::Profile;
use lathe_model::report::{QcVerdict, TrackReport};
use lathe_model::stage_config::DitherMode;
use lathe_model::stage_config::{Container, EncodeSpec};
use lathe_model::tags::TrackTags;

/// One delivered file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeliveredFile {
    /// Path relative to the delivery folder.
    pub path: PathBuf,
    /// The album it belongs to (`None`: a loose track).
    pub album: Option<String>,
    /// The outlet.
    pub outlet: Outlet,
    /// What the file is (`track`, `album_image`, `cue_sheet`, `ddp`, `side` in the manifest).
    pub kind: lathe_model::delivery::outcome::OutcomeKind,
    /// Size, bytes.
    pub bytes: u64,
    /// MD5, hexadecimal.
    pub md5: String,
    /// SHA-256, hexadecimal.
    pub sha256: String,
    /// Duration, seconds (audio files).
    pub duration_s: Option<f64>,
    /// Integrated loudness as decoded, LUFS.
    pub integrated_lufs: Option<f64>,
    /// True peak as decoded, dBTP.
    pub true_peak_dbtp: Option<f64>,
    /// The delivery check.
    pub qc: QcVerdict,
    /// The streaming platforms' normalisation (streaming outlet).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub platforms: Vec<PlaybackPreview>,
    /// What the engineer should know about this file.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// One album's summary in the manifest.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlbumSummary {
    /// Title.
    pub title: String,
    /// Album or track levelling.
    pub loudness: LoudnessMode,
    /// The HTML report, relative to the delivery folder.
    pub report: PathBuf,
    /// Warnings and notes (album gain capped, Red Book problems, side lengths, headroom).
    pub notes: Vec<String>,
}

/// `delivery.json`: everything delivered.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeliveryManifest {
    /// lathe's version.
    pub lathe_version: String,
    /// The job's name.
    pub job: String,
    /// The outlets asked for.
    pub outlets: Vec<Outlet>,
    /// The albums.
    pub albums: Vec<AlbumSummary>,
    /// Every file.
    pub files: Vec<DeliveredFile>,
    /// Outlets or tracks that failed, one line each.
    pub failures: Vec<String>,
}

impl DeliveryManifest {
    /// `true` when nothing failed and every file passed QC.
    pub fn all_passed(&self) -> bool {
        self.failures.is_empty() && self.files.iter().all(|f| f.qc.passed)
    }
}

/// MD5 and SHA-256 of a file, hexadecimal, read in blocks.
///
/// # Errors
/// [`Error::Io`] if it cannot be read.
pub fn file_digests(path: &Path) -> Result<(u64, String, String)> {
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut md5 = Md5::new();
    let mut sha = Sha256::new();
    let mut buffer = vec![0u8; 1 << 16];
    let mut bytes = 0u64;
    loop {
        let n = file.read(&mut buffer).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        md5.update(&buffer[..n]);
        sha.update(&buffer[..n]);
        bytes += n as u64;
    }
    let hex = |d: &[u8]| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
    Ok((bytes, hex(&md5.finalize()), hex(&sha.finalize())))
}

/// A loose track delivered as a CD or vinyl single: the format's limits, as QC issues. A CD single
/// is checked as the one-track disc it would be, by the album path's Red Book check.
pub(crate) fn single_format_issues(outlet: Outlet, title: &str, duration_s: f64) -> Vec<String> {
    match outlet {
        Outlet::Cd => {
            let input = SequenceInput {
                frames: (duration_s * f64::from(CD_SAMPLE_RATE_HZ)).round() as u64,
                gap_s: 0.0,
                crossfade_s: 0.0,
            };
            let (placements, total_samples) =
                sequence::plan(&[input], CD_SAMPLE_RATE_HZ, CD_FRAME_SAMPLES);
            let disc = CdLayout {
                title: title.to_owned(),
                performer: String::new(),
                catalog: None,
                genre: None,
                year: None,
                tracks: placements
                    .into_iter()
                    .map(|placement| CdTrack {
                        title: title.to_owned(),
                        performer: String::new(),
                        songwriter: None,
                        isrc: None,
                        placement,
                    })
                    .collect(),
                total_samples,
            };
            disc.red_book_violations()
                .into_iter()
                .map(|v| format!("Red Book: {v}"))
                .collect()
        }
        Outlet::Vinyl => vinyl::side_length_warning("A", duration_s, VinylFormat::default())
            .into_iter()
            .collect(),
        _ => Vec::new(),
    }
}

pub(crate) fn profile_dither(profile: &Profile) -> DitherMode {
    match profile.output.dither {
        DitherMode::None => DitherMode::Tpdf,
        other => other,
    }
}

pub(crate) fn master_frames(path: &Path) -> Result<u64> {
    Decoder::open(path)?
        .info()
        .frames
        .ok_or_else(|| Error::Delivery {
            album: path.display().to_string(),
            reason: "the master's length is unknown".into(),
        })
}

/// The dither seed of a continuous programme: the tracks' own seeds combined.
pub(crate) fn album_seed(masters: &[TrackReport]) -> u64 {
    masters.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, r| {
        let seed = u64::from_str_radix(&r.dither_seed, 16).unwrap_or(0);
        (h ^ seed).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A continuous programme (CD image, vinyl side): its placed float masters and how it is written.
#[derive(Clone, Copy)]
pub(crate) struct Programme<'a> {
    pub(crate) tracks: &'a [(PathBuf, Placement)],
    pub(crate) total_frames: u64,
    pub(crate) sample_rate_hz: u32,
    /// WAV bit depth, 16 or 24.
    pub(crate) bit_depth: u32,
    pub(crate) dither: DitherMode,
    pub(crate) seed: u64,
}

/// Sequences a programme's tracks, dithers them to its depth and writes `path` (temporary name,
/// then renamed), tagged with `tags`; returns the analysis of the written samples.
pub(crate) fn render_programme(
    programme: &Programme<'_>,
    path: &Path,
    tags: &TrackTags,
) -> Result<lathe_model::analysis::Analysis> {
    let Programme {
        tracks,
        total_frames: total,
        sample_rate_hz: rate,
        bit_depth,
        dither,
        seed,
    } = *programme;
    let spec = EncodeSpec {
        container: Container::Wav,
        bit_depth,
    };
    let channels = 2;
    let temp = TempFile::for_output(path);
    let mut encoder = Encoder::create(temp.path(), &spec, channels, rate)?;
    let mut quantiser =
        Quantiser::new(dither, spec.bit_depth, channels, rate, seed).map_err(|e| {
            Error::Delivery {
                album: path.display().to_string(),
                reason: format!("dither: {}: {}", e.key, e.reason),
            }
        })?;
    let mut analyzer = Analyzer::new(channels, rate);
    let mut scratch = AudioBlock::new(channels, BLOCK_FRAMES, rate);
    let result = sequence::render(tracks, total, channels, rate, &mut |block| {
        let n = block.frames();
        scratch.set_frames(n);
        for c in 0..channels {
            scratch.channel_mut(c)[..n].copy_from_slice(&block.channel(c)[..n]);
        }
        quantiser.process(&mut scratch);
        analyzer.add(&scratch);
        encoder.write(&scratch)
    });
    result?;
    encoder.finish()?;
    write_tags(temp.path(), tags)?;
    temp.commit(path)?;
    Ok(analyzer.finish(path))
}

/// The `bext` chunk of a per-track WAV deliverable.
pub(crate) fn bext_for(
    tags: &TrackTags,
    report: &TrackReport,
    profile: &Profile,
) -> BroadcastExtension {
    let a = &report.output_analysis;
    BroadcastExtension {
        description: tags.title.clone().unwrap_or_default(),
        originator: format!("lathe {}", env!("CARGO_PKG_VERSION")),
        originator_reference: tags.isrc.clone().unwrap_or_default(),
        loudness_value_lufs: a.integrated_lufs,
        loudness_range_lu: a.loudness_range_lu,
        max_true_peak_dbtp: a.true_peak_dbtp,
        max_momentary_lufs: a.max_momentary_lufs,
        max_short_term_lufs: a.max_short_term_lufs,
        coding_history: format!(
            "A=PCM,F={},W={},M={},T=lathe {}\r\n",
            report.output_sample_rate_hz,
            profile.output.bit_depth,
            if a.channels == 1 { "mono" } else { "stereo" },
            profile.name
        ),
        ..BroadcastExtension::default()
    }
}
