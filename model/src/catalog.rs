//! The catalogue manifest: one TOML file describing a job of albums and loose tracks.
//!
//! `lathe master MANIFEST.toml` (and, later, the farm's `submit`) reads it with [`Catalogue::load`];
//! a plain folder of audio is the same thing with loose tracks only ([`Catalogue::from_folder`]).
//!
//! ```toml
//! [job]
//! name = "Back catalogue 1974-1979"
//! priority = 5                     # higher runs first (the farm); default 0
//! profile = "streaming"            # preset or profile file for the streaming-class outlets
//! outlets = ["streaming", "cd"]    # streaming | cd | vinyl | broadcast | hires | mp3 | opus
//!
//! [[album]]
//! title = "Northern Lights"
//! artist = "The Example Band"
//! album_artist = "The Example Band" # default: artist
//! upc = "5012345678900"             # UPC-A (12 digits) or EAN-13, check digit verified
//! year = 1974
//! genre = "Rock"
//! label = "Example Records"
//! copyright = "1974 Example Records"
//! loudness = "album"                # album: one level for the album | track: each track to target
//! vinyl_format = "12in33"           # 12in33 | 12in45 | 7in45: side-length limits
//!
//! [[album.track]]
//! file = "northern-lights/01-dawn.flac"   # relative to this file, may not leave its folder
//! title = "Dawn"
//! artist = "..."                    # default: the album's artist
//! isrc = "GB-XYZ-74-00001"          # dashes optional; stored as GBXYZ7400001
//! composer = "A. Writer"
//! gap_s = 2.0                       # silence before this track (default 2.0; 0 allowed)
//! crossfade_s = 0.0                 # equal-power overlap with the previous track (no gap then)
//! fade_in_s = 0.0
//! fade_out_s = 3.0
//! fade_curve = "sine"               # linear | sine | exponential
//! profile = "my-ballad.toml"        # this track's profile instead of the job's
//! side = "A"                        # vinyl side
//!
//! [[track]]                         # a loose track, not part of an album
//! file = "singles/b-side.wav"
//! title = "B-side"
//! ```
//!
//! Every key is checked (`deny_unknown_fields`); every error names the manifest, the album and track
//! at fault and the reason.

use std::fmt;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// File extensions that count as audio when a folder is read as a catalogue.
pub const AUDIO_EXTENSIONS: [&str; 16] = [
    "wav", "wave", "rf64", "aif", "aiff", "aifc", "flac", "mp3", "ogg", "oga", "opus", "m4a",
    "mp4", "aac", "w64", "wv",
];

/// The default gap before an album track, seconds.
pub const DEFAULT_GAP_S: f64 = 2.0;

/// A parsed, validated catalogue job: paths resolved, ISRCs and UPCs checked. It serialises (JSON,
/// TOML) with its resolved paths, for a coordinator to store or send; [`Catalogue::load`] is the
/// only way in from a user's file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Catalogue {
    /// The manifest file, or the folder read as loose tracks.
    pub origin: PathBuf,
    /// The folder every track path lies in.
    pub root: PathBuf,
    /// Job-wide settings.
    pub job: JobSettings,
    /// Albums, in manifest order.
    pub albums: Vec<Album>,
    /// Loose tracks, in manifest (or folder) order.
    pub tracks: Vec<LooseTrack>,
}

/// The `[job]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSettings {
    /// Name shown in reports.
    #[serde(default)]
    pub name: String,
    /// Scheduling priority on the farm: higher runs first.
    #[serde(default)]
    pub priority: i32,
    /// Preset name or profile file (relative to the manifest) for the streaming-class outlets
    /// (streaming, mp3, opus); the CD, vinyl, broadcast and hi-res outlets use their own presets.
    #[serde(default = "default_profile")]
    pub profile: String,
    /// The deliverables to render.
    #[serde(default = "default_outlets")]
    pub outlets: Vec<Outlet>,
}

impl Default for JobSettings {
    fn default() -> Self {
        Self {
            name: String::new(),
            priority: 0,
            profile: default_profile(),
            outlets: default_outlets(),
        }
    }
}

fn default_profile() -> String {
    "streaming".to_owned()
}

fn default_outlets() -> Vec<Outlet> {
    vec![Outlet::Streaming]
}

/// A deliverable kind: each is rendered with its own profile into its own folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outlet {
    /// 24-bit FLAC per track at the source rate, with the platforms' normalisation preview.
    Streaming,
    /// 44.1 kHz 16-bit album image, CUE sheet and DDP 2.0 image.
    Cd,
    /// One 24-bit WAV per side, no brickwall limiting.
    Vinyl,
    /// EBU R128 WAV per track: -23 LUFS, -1 dBTP, 48 kHz.
    Broadcast,
    /// 96 kHz 24-bit FLAC per track.
    Hires,
    /// MP3 per track, LAME CBR 320 kbit/s and VBR V0.
    Mp3,
    /// Opus in Ogg per track, 48 kHz.
    Opus,
}

impl Outlet {
    /// Every outlet, in delivery order.
    pub const ALL: [Outlet; 7] = [
        Outlet::Streaming,
        Outlet::Cd,
        Outlet::Vinyl,
        Outlet::Broadcast,
        Outlet::Hires,
        Outlet::Mp3,
        Outlet::Opus,
    ];

    /// Lower-case name, also the delivery folder's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Streaming => "streaming",
            Self::Cd => "cd",
            Self::Vinyl => "vinyl",
            Self::Broadcast => "broadcast",
            Self::Hires => "hires",
            Self::Mp3 => "mp3",
            Self::Opus => "opus",
        }
    }
}

impl fmt::Display for Outlet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How an album is levelled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoudnessMode {
    /// One level for the whole album: its integrated loudness meets the target and the differences
    /// between tracks are kept.
    #[default]
    Album,
    /// Each track to the target on its own.
    Track,
}

/// The shape of a fade.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FadeCurve {
    /// Gain rises in a straight line.
    Linear,
    /// Quarter sine (equal power): gentle at the ends.
    #[default]
    Sine,
    /// Gain in dB rises in a straight line from -60 dB (sounds even to the ear).
    Exponential,
}

/// A vinyl record format, for side-length checks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum VinylFormat {
    /// 12" at 33 1/3 rpm: about 22 minutes a side at good level.
    #[default]
    #[serde(rename = "12in33")]
    TwelveInch33,
    /// 12" at 45 rpm: about 15 minutes a side.
    #[serde(rename = "12in45")]
    TwelveInch45,
    /// 7" at 45 rpm: about 7 minutes a side.
    #[serde(rename = "7in45")]
    SevenInch45,
}

impl VinylFormat {
    /// The longest side, seconds, before level and bass must be given up.
    pub fn max_side_s(self) -> f64 {
        match self {
            Self::TwelveInch33 => 22.0 * 60.0,
            Self::TwelveInch45 => 15.0 * 60.0,
            Self::SevenInch45 => 7.0 * 60.0,
        }
    }
}

/// One `[[album]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Album {
    /// Album title.
    pub title: String,
    /// Album artist as credited on the tracks (each track may override it).
    pub artist: String,
    /// Album artist tag; default `artist`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub album_artist: Option<String>,
    /// UPC-A or EAN-13, normalised to 13 digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upc: Option<String>,
    /// Release year.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub year: Option<u32>,
    /// Genre.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub genre: Option<String>,
    /// Record label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Copyright line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copyright: Option<String>,
    /// Album or track levelling.
    #[serde(default)]
    pub loudness: LoudnessMode,
    /// Record format for the vinyl outlet's side checks.
    #[serde(default)]
    pub vinyl_format: VinylFormat,
    /// The tracks in running order.
    #[serde(rename = "track")]
    pub tracks: Vec<AlbumTrack>,
}

impl Album {
    /// The album artist tag (`album_artist`, else `artist`).
    pub fn album_artist(&self) -> &str {
        self.album_artist.as_deref().unwrap_or(&self.artist)
    }
}

/// One `[[album.track]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlbumTrack {
    /// The source: absolute, or relative to the manifest's folder; after loading, absolute.
    pub file: PathBuf,
    /// Track title.
    pub title: String,
    /// Track artist; default the album's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artist: Option<String>,
    /// ISRC, normalised to 12 characters without dashes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isrc: Option<String>,
    /// Composer (songwriter in CD-TEXT).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub composer: Option<String>,
    /// Silence before the track, seconds (default [`DEFAULT_GAP_S`]; must be 0 with a crossfade).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gap_s: Option<f64>,
    /// Equal-power crossfade from the previous track, seconds (0: none).
    #[serde(default)]
    pub crossfade_s: f64,
    /// Fade-in length, seconds.
    #[serde(default)]
    pub fade_in_s: f64,
    /// Fade-out length, seconds.
    #[serde(default)]
    pub fade_out_s: f64,
    /// Curve of both fades.
    #[serde(default)]
    pub fade_curve: FadeCurve,
    /// Profile for this track instead of the job's (streaming-class outlets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// Vinyl side (`A`, `B`, ...); tracks without one go on side A.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub side: Option<String>,
    /// Disc number (default 1).
    #[serde(default = "default_disc")]
    pub disc: u32,
}

fn default_disc() -> u32 {
    1
}

impl AlbumTrack {
    /// The gap before the track in seconds: 0 with a crossfade, else `gap_s` or the default.
    pub fn effective_gap_s(&self) -> f64 {
        if self.crossfade_s > 0.0 {
            0.0
        } else {
            self.gap_s.unwrap_or(DEFAULT_GAP_S)
        }
    }

    /// The vinyl side, `A` when none is given.
    pub fn side(&self) -> &str {
        self.side.as_deref().unwrap_or("A")
    }
}

/// One loose `[[track]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LooseTrack {
    /// The source: absolute, or relative to the manifest's folder; after loading, absolute.
    pub file: PathBuf,
    /// Title; default taken from the source's tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Artist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artist: Option<String>,
    /// ISRC, normalised to 12 characters without dashes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isrc: Option<String>,
    /// Composer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub composer: Option<String>,
    /// Fade-in length, seconds.
    #[serde(default)]
    pub fade_in_s: f64,
    /// Fade-out length, seconds.
    #[serde(default)]
    pub fade_out_s: f64,
    /// Curve of both fades.
    #[serde(default)]
    pub fade_curve: FadeCurve,
    /// Profile for this track instead of the job's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
}

/// The manifest as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    #[serde(default)]
    job: JobSettings,
    #[serde(default)]
    album: Vec<Album>,
    #[serde(default)]
    track: Vec<LooseTrack>,
}

impl Catalogue {
    /// Reads and validates a manifest file.
    ///
    /// # Errors
    /// [`Error::Io`] if it cannot be read; [`Error::Catalogue`] naming the manifest, the album and
    /// track, and the reason for a TOML error, an unknown key, a path that names no file,
    /// a bad ISRC or UPC/EAN, or a gap, fade or crossfade out of range.
    pub fn load(path: &Path) -> Result<Self> {
        let source = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let root = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let root = std::path::absolute(&root).map_err(|e| Error::io(&root, e))?;
        Self::from_toml(&source, path, &root)
    }

    /// Parses and validates manifest text; `origin` names it in errors and track paths resolve
    /// against `root`.
    ///
    /// # Errors
    /// As [`Catalogue::load`].
    pub fn from_toml(source: &str, origin: &Path, root: &Path) -> Result<Self> {
        let manifest: Manifest = toml::from_str(source).map_err(|e| {
            let item = match e.span() {
                Some(span) => format!("line {}", source[..span.start].matches('\n').count() + 1),
                None => "toml".to_owned(),
            };
            catalogue_error(origin, item, e.message().trim())
        })?;
        let mut catalogue = Catalogue {
            origin: origin.to_path_buf(),
            root: root.to_path_buf(),
            job: manifest.job,
            albums: manifest.album,
            tracks: manifest.track,
        };
        catalogue.validate()?;
        Ok(catalogue)
    }

    /// A folder of audio as a catalogue of loose tracks (searched recursively, sorted, hidden files
    /// skipped), with the default job settings.
    ///
    /// # Errors
    /// [`Error::Io`] if the folder cannot be read.
    pub fn from_folder(dir: &Path) -> Result<Self> {
        let root = std::path::absolute(dir).map_err(|e| Error::io(dir, e))?;
        let files = find_audio_files(&root)?;
        Ok(Catalogue {
            origin: dir.to_path_buf(),
            root,
            job: JobSettings::default(),
            albums: Vec::new(),
            tracks: files
                .into_iter()
                .map(|file| LooseTrack {
                    file,
                    title: None,
                    artist: None,
                    isrc: None,
                    composer: None,
                    fade_in_s: 0.0,
                    fade_out_s: 0.0,
                    fade_curve: FadeCurve::default(),
                    profile: None,
                })
                .collect(),
        })
    }

    /// Number of tracks, albums' and loose.
    pub fn track_count(&self) -> usize {
        self.albums.iter().map(|a| a.tracks.len()).sum::<usize>() + self.tracks.len()
    }

    /// The profile a track uses (its own, else the job's), resolved: a preset name stays as it is,
    /// a `.toml` file is taken relative to the manifest.
    pub fn profile_for(&self, track_profile: Option<&str>) -> String {
        let name = track_profile.unwrap_or(&self.job.profile);
        if name.ends_with(".toml") && Path::new(name).is_relative() {
            self.root.join(name).to_string_lossy().into_owned()
        } else {
            name.to_owned()
        }
    }

    fn validate(&mut self) -> Result<()> {
        let origin = self.origin.clone();
        let err = |item: String, reason: String| catalogue_error(&origin, item, reason);
        if self.job.outlets.is_empty() {
            return Err(err("job.outlets".into(), "no outlet to render".into()));
        }
        let mut seen = Vec::new();
        for outlet in &self.job.outlets {
            if seen.contains(outlet) {
                return Err(err(
                    "job.outlets".into(),
                    format!("{outlet} is listed twice"),
                ));
            }
            seen.push(*outlet);
        }
        if self.albums.is_empty() && self.tracks.is_empty() {
            return Err(err(
                "manifest".into(),
                "no [[album]] and no [[track]]".into(),
            ));
        }
        let root = self.root.clone();
        for (a, album) in self.albums.iter_mut().enumerate() {
            let album_item = format!("album[{}] {:?}", a + 1, album.title);
            if album.tracks.is_empty() {
                return Err(err(album_item, "has no tracks".into()));
            }
            if let Some(upc) = &album.upc {
                album.upc = Some(
                    normalise_upc(upc).map_err(|r| err(album_item.clone(), format!("upc: {r}")))?,
                );
            }
            for (t, track) in album.tracks.iter_mut().enumerate() {
                let item = format!("{album_item} track {} {:?}", t + 1, track.title);
                let bad = |reason: String| err(item.clone(), reason);
                track.file = resolve_source(&root, &track.file).map_err(&bad)?;
                if let Some(isrc) = &track.isrc {
                    track.isrc = Some(normalise_isrc(isrc).map_err(|r| bad(format!("isrc: {r}")))?);
                }
                let gap = track.gap_s.unwrap_or(0.0);
                check_seconds("gap_s", gap, 0.0, 60.0).map_err(&bad)?;
                check_seconds("crossfade_s", track.crossfade_s, 0.0, 30.0).map_err(&bad)?;
                check_seconds("fade_in_s", track.fade_in_s, 0.0, 60.0).map_err(&bad)?;
                check_seconds("fade_out_s", track.fade_out_s, 0.0, 60.0).map_err(&bad)?;
                if track.crossfade_s > 0.0 && gap > 0.0 {
                    return Err(bad(format!(
                        "gap_s = {gap} with crossfade_s = {}: a crossfaded track has no gap; set gap_s = 0 or drop it",
                        track.crossfade_s
                    )));
                }
                if track.crossfade_s > 0.0 && t == 0 {
                    return Err(bad(
                        "crossfade_s on the first track: there is no previous track to fade from"
                            .into(),
                    ));
                }
                if track.disc == 0 {
                    return Err(bad("disc: 0 is out of range; discs count from 1".into()));
                }
                check_profile(&root, track.profile.as_deref()).map_err(&bad)?;
            }
        }
        for (t, track) in self.tracks.iter_mut().enumerate() {
            let item = format!(
                "track[{}] {:?}",
                t + 1,
                track
                    .title
                    .as_deref()
                    .unwrap_or_else(|| track_name(&track.file))
            );
            let bad = |reason: String| err(item.clone(), reason);
            track.file = resolve_source(&root, &track.file).map_err(&bad)?;
            if let Some(isrc) = &track.isrc {
                track.isrc = Some(normalise_isrc(isrc).map_err(|r| bad(format!("isrc: {r}")))?);
            }
            check_seconds("fade_in_s", track.fade_in_s, 0.0, 60.0).map_err(&bad)?;
            check_seconds("fade_out_s", track.fade_out_s, 0.0, 60.0).map_err(&bad)?;
            check_profile(&root, track.profile.as_deref()).map_err(&bad)?;
        }
        Ok(())
    }
}

/// A track's own profile must load: a preset name, or a profile file beside the manifest.
fn check_profile(root: &Path, profile: Option<&str>) -> Result<(), String> {
    let Some(name) = profile else {
        return Ok(());
    };
    let resolved = if name.ends_with(".toml") && Path::new(name).is_relative() {
        root.join(name).to_string_lossy().into_owned()
    } else {
        name.to_owned()
    };
    crate::profile::Profile::load(&resolved)
        .map(|_| ())
        .map_err(|e| format!("profile: {e}"))
}

fn track_name(path: &Path) -> &str {
    path.file_name().and_then(|n| n.to_str()).unwrap_or("")
}

fn catalogue_error(origin: &Path, item: impl Into<String>, reason: impl Into<String>) -> Error {
    Error::Catalogue {
        manifest: origin.to_path_buf(),
        item: item.into(),
        reason: reason.into(),
    }
}

fn check_seconds(key: &str, value: f64, min: f64, max: f64) -> Result<(), String> {
    if value.is_finite() && (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(format!(
            "{key}: {value} is out of range; allowed {min} s to {max} s"
        ))
    }
}

/// Where a track's `file` is: an absolute path as it is, a relative one joined to the manifest's
/// folder `root`. Sources may live anywhere the user can read (a label's manifest sits in a
/// project folder and its sources on an archive volume; `..` and symbolic links are followed):
/// the manifest is the user's own file, read with the user's own rights, and sources are only
/// ever read. Outputs are named from titles and confined under the output folder elsewhere.
fn resolve_source(root: &Path, file: &Path) -> Result<PathBuf, String> {
    if !file.components().any(|c| matches!(c, Component::Normal(_))) {
        return Err(format!("file {:?} names no file", file.display()));
    }
    Ok(if file.is_absolute() {
        file.to_path_buf()
    } else {
        root.join(file)
    })
}

/// The audio files below `dir` (by extension, see [`AUDIO_EXTENSIONS`]): searched recursively,
/// sorted by path, hidden files and folders skipped.
///
/// # Errors
/// [`Error::Io`] if a folder cannot be read.
pub fn find_audio_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    walk(dir, &mut found)?;
    Ok(found)
}

fn walk(dir: &Path, found: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()
        .map_err(|e| Error::io(dir, e))?;
    entries.sort();
    for path in entries {
        let hidden = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if hidden {
            continue;
        }
        if path.is_dir() {
            walk(&path, found)?;
        } else if path.extension().is_some_and(|e| {
            AUDIO_EXTENSIONS.contains(&e.to_string_lossy().to_ascii_lowercase().as_str())
        }) {
            found.push(path);
        }
    }
    Ok(())
}

/// Checks an ISRC (`CC-XXX-YY-NNNNN`: country code of two letters, registrant code of three letters
/// or digits, two-digit year, five-digit designation; dashes optional) and returns it as the twelve
/// characters written in tags and CUE sheets, upper case.
///
/// # Errors
/// The reason, in words.
pub fn normalise_isrc(isrc: &str) -> Result<String, String> {
    let compact: String = isrc
        .chars()
        .filter(|c| *c != '-')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let chars: Vec<char> = compact.chars().collect();
    if chars.len() != 12 {
        return Err(format!(
            "{isrc:?} has {} characters without dashes; an ISRC has 12 (CC-XXX-YY-NNNNN)",
            chars.len()
        ));
    }
    if !chars[..2].iter().all(char::is_ascii_uppercase) {
        return Err(format!(
            "{isrc:?}: the country code (first 2 characters) must be letters"
        ));
    }
    if !chars[2..5].iter().all(char::is_ascii_alphanumeric) {
        return Err(format!(
            "{isrc:?}: the registrant code (characters 3-5) must be letters or digits"
        ));
    }
    if !chars[5..].iter().all(char::is_ascii_digit) {
        return Err(format!(
            "{isrc:?}: the year and designation (last 7 characters) must be digits"
        ));
    }
    Ok(compact)
}

/// Checks a UPC-A (12 digits) or EAN-13 (13 digits) code's check digit and returns it as 13 digits
/// (UPC-A with a leading 0), the form a CUE sheet's `CATALOG` takes.
///
/// # Errors
/// The reason, in words (wrong length, not digits, or the check digit expected).
pub fn normalise_upc(upc: &str) -> Result<String, String> {
    let digits: String = upc.chars().filter(|c| !c.is_whitespace()).collect();
    if !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!("{upc:?} must be digits only"));
    }
    let ean = match digits.len() {
        12 => format!("0{digits}"),
        13 => digits,
        n => {
            return Err(format!(
                "{upc:?} has {n} digits; a UPC-A has 12, an EAN-13 has 13"
            ));
        }
    };
    let values: Vec<u32> = ean.chars().filter_map(|c| c.to_digit(10)).collect();
    let sum: u32 = values[..12]
        .iter()
        .enumerate()
        .map(|(i, d)| if i % 2 == 0 { *d } else { 3 * d })
        .sum();
    let check = (10 - sum % 10) % 10;
    if values[12] != check {
        return Err(format!(
            "{upc:?} has check digit {}, expected {check}",
            values[12]
        ));
    }
    Ok(ean)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Catalogue> {
        Catalogue::from_toml(text, Path::new("job.toml"), Path::new("/music"))
    }

    const ALBUM: &str = r#"
        [job]
        name = "Back catalogue"
        priority = 5
        outlets = ["streaming", "cd", "mp3"]

        [[album]]
        title = "Northern Lights"
        artist = "The Example Band"
        upc = "036000291452"
        year = 1974
        loudness = "album"

        [[album.track]]
        file = "nl/01-dawn.flac"
        title = "Dawn"
        isrc = "GB-XYZ-74-00001"
        fade_out_s = 3.0

        [[album.track]]
        file = "nl/02-dusk.flac"
        title = "Dusk"
        crossfade_s = 1.5
        side = "B"

        [[album.track]]
        file = "./nl/../nl/03-night.flac"
        title = "Night"
        gap_s = 0.0

        [[track]]
        file = "singles/b-side.wav"
        title = "B-side"
        profile = "vinyl"
    "#;

    #[test]
    fn a_manifest_parses_with_defaults_and_normalised_codes() {
        let c = parse(ALBUM).unwrap();
        assert_eq!(c.job.priority, 5);
        assert_eq!(c.job.outlets, [Outlet::Streaming, Outlet::Cd, Outlet::Mp3]);
        let album = &c.albums[0];
        assert_eq!(album.upc.as_deref(), Some("0036000291452"));
        assert_eq!(album.loudness, LoudnessMode::Album);
        assert_eq!(album.tracks[0].isrc.as_deref(), Some("GBXYZ7400001"));
        assert_eq!(album.tracks[0].effective_gap_s(), 2.0);
        assert_eq!(album.tracks[1].effective_gap_s(), 0.0);
        assert_eq!(album.tracks[2].effective_gap_s(), 0.0);
        assert_eq!(album.tracks[0].fade_out_s, 3.0);
        assert_eq!(album.tracks[1].side(), "B");
        assert_eq!(album.tracks[0].side(), "A");
        assert_eq!(album.tracks[0].file, Path::new("/music/nl/01-dawn.flac"));
        assert_eq!(c.tracks[0].file, Path::new("/music/singles/b-side.wav"));
        assert_eq!(c.track_count(), 4);
        assert_eq!(c.profile_for(Some("mine.toml")), "/music/mine.toml");
        assert_eq!(c.profile_for(None), "streaming");
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<Catalogue>(&json).unwrap(), c);
    }

    #[test]
    fn bad_isrc_names_the_track() {
        let text = ALBUM.replace("GB-XYZ-74-00001", "GBXYZ740001");
        let err = parse(&text).unwrap_err().to_string();
        assert_eq!(
            err,
            "job.toml: album[1] \"Northern Lights\" track 1 \"Dawn\": isrc: \"GBXYZ740001\" has 11 characters without dashes; an ISRC has 12 (CC-XXX-YY-NNNNN)"
        );
        let text = ALBUM.replace("GB-XYZ-74-00001", "G1XYZ7400001");
        let err = parse(&text).unwrap_err().to_string();
        assert!(
            err.contains("track 1 \"Dawn\"") && err.contains("country code"),
            "{err}"
        );
        let text = ALBUM.replace("GB-XYZ-74-00001", "GBXYZ74O0001");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("must be digits"), "{err}");
    }

    #[test]
    fn bad_upc_check_digit_names_the_album() {
        let text = ALBUM.replace("036000291452", "036000291453");
        let err = parse(&text).unwrap_err().to_string();
        assert_eq!(
            err,
            "job.toml: album[1] \"Northern Lights\": upc: \"036000291453\" has check digit 3, expected 2"
        );
        assert_eq!(normalise_upc("5012345678900").unwrap(), "5012345678900");
        assert_eq!(normalise_upc("4006381333931").unwrap(), "4006381333931");
        assert!(normalise_upc("4006381333932").is_err());
        assert!(normalise_upc("12345").is_err());
    }

    #[test]
    fn sources_may_live_outside_the_manifest_folder() {
        for (given, resolved) in [
            ("../archive/x.wav", "/music/../archive/x.wav"),
            ("nl/../../x.wav", "/music/nl/../../x.wav"),
            ("/mnt/archive/1974/x.wav", "/mnt/archive/1974/x.wav"),
        ] {
            let text = ALBUM.replace("nl/01-dawn.flac", given);
            let catalogue = parse(&text).unwrap();
            assert_eq!(catalogue.albums[0].tracks[0].file, Path::new(resolved));
        }
        for empty in ["", ".", "/", "./.."] {
            let text = ALBUM.replace("nl/01-dawn.flac", empty);
            let err = parse(&text).unwrap_err().to_string();
            assert!(
                err.contains("track 1 \"Dawn\"") && err.contains("names no file"),
                "{empty:?}: {err}"
            );
        }
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let text = ALBUM.replace("fade_out_s = 3.0", "fade_out = 3.0");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("unknown field `fade_out`"), "{err}");
        assert!(err.starts_with("job.toml: line "), "{err}");
        let text = ALBUM.replace("crossfade_s = 1.5", "crossfade_s = 1.5\ngap_s = 2.0");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("track 2 \"Dusk\": gap_s = 2"), "{err}");
        let text = ALBUM.replace("fade_out_s = 3.0", "fade_out_s = -1.0");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("fade_out_s: -1 is out of range"), "{err}");
        let text = ALBUM.replace("\"streaming\", \"cd\"", "\"streaming\", \"tape\"");
        assert!(parse(&text).unwrap_err().to_string().contains("tape"));
        let text = ALBUM.replace("profile = \"vinyl\"", "profile = \"spotify\"");
        let err = parse(&text).unwrap_err().to_string();
        assert!(
            err.starts_with(
                "job.toml: track[1] \"B-side\": profile: profile spotify: name: no such preset"
            ),
            "{err}"
        );
    }

    #[test]
    fn a_folder_is_loose_tracks_in_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("b")).unwrap();
        for name in ["b/2.flac", "a.wav", "notes.txt", ".hidden.wav", "c.MP3"] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        let c = Catalogue::from_folder(dir.path()).unwrap();
        let names: Vec<_> = c
            .tracks
            .iter()
            .map(|t| t.file.strip_prefix(&c.root).unwrap().to_path_buf())
            .collect();
        assert_eq!(
            names,
            [
                PathBuf::from("a.wav"),
                PathBuf::from("b/2.flac"),
                PathBuf::from("c.MP3")
            ]
        );
        assert_eq!(c.job.outlets, [Outlet::Streaming]);
    }
}
