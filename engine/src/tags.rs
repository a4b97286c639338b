//! Track tags: read from any source lathe decodes, written to every deliverable it makes.
//!
//! - FLAC: a Vorbis comment block (`TITLE`, `ARTIST`, `ALBUM`, `ALBUMARTIST`, `TRACKNUMBER`,
//!   `TRACKTOTAL`, `DISCNUMBER`, `DATE`, `GENRE`, `COMPOSER`, `ISRC`, `BARCODE` (the UPC/EAN),
//!   `COPYRIGHT`, `LABEL`), written by lofty (which moves the audio along in 64 KiB steps to make
//!   room: bounded memory).
//! - WAV: a RIFF `LIST`/`INFO` chunk (`INAM`, `IART`, `IPRD`, `ITRK`, `ICRD`, `IGNR`, `IMUS`,
//!   `ICOP`; RIFF INFO has no ISRC field) plus an `ID3 ` chunk with an ID3v2.3 tag carrying every
//!   field (`TIT2`, `TPE1`, `TALB`, `TPE2`, `TRCK`, `TPOS`, `TYER`, `TCON`, `TCOM`, `TSRC`,
//!   `TXXX:BARCODE`, `TCOP`, `TPUB`), and optionally a BWF `bext` chunk
//!   ([`BroadcastExtension`], EBU Tech 3285 v2, with the loudness fields). lofty encodes the tag
//!   chunks but would load the whole file to place them, so this module places them itself: tag
//!   chunks after the audio are replaced at the end of the file, tag chunks before it are turned
//!   into `JUNK`, and only the RIFF size is rewritten. The audio is never moved or read.
//! - MP3: an ID3v2.3 tag; Opus: Vorbis comments in the `OpusTags` packet (both by lofty).
//!
//! [`read_tags`] takes the first value of each field from the file's tags, primary tag first
//! (ID3v2 before RIFF INFO in WAV), so that a source's tags can be carried over to its master.

use std::borrow::Cow;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;

use lofty::TextEncoding;
use lofty::config::{ParseOptions, ParsingMode, WriteOptions};
use lofty::file::{FileType, TaggedFileExt};
use lofty::id3::v2::{ExtendedTextFrame, Frame, FrameId, Id3v2Tag, TextInformationFrame};
use lofty::iff::wav::RiffInfoList;
use lofty::ogg::tag::VorbisComments;
use lofty::probe::Probe;
use lofty::tag::{Accessor, ItemKey, Tag, TagExt};
use serde::{Deserialize, Serialize};

use lathe_model::tags::TrackTags;

use crate::error::{Error, Result};

/// A BWF `bext` chunk (EBU Tech 3285 version 2): who made the file and its loudness.
///
/// Text fields longer than their slots (Description 256 bytes, Originator 32, OriginatorReference
/// 32) are cut; the loudness values are stored in hundredths as the standard asks, 0x7FFF when
/// unknown. Dates are whatever the caller gives (lathe gives none by default, so that the same input
/// makes the same bytes).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BroadcastExtension {
    /// Free description (256 bytes).
    pub description: String,
    /// The organisation or tool that made the file (32 bytes).
    pub originator: String,
    /// Its reference for the file (32 bytes).
    pub originator_reference: String,
    /// `yyyy-mm-dd`, or empty.
    pub origination_date: String,
    /// `hh:mm:ss`, or empty.
    pub origination_time: String,
    /// First sample's position since midnight, samples.
    pub time_reference: u64,
    /// Integrated loudness, LUFS.
    pub loudness_value_lufs: Option<f64>,
    /// Loudness range, LU.
    pub loudness_range_lu: Option<f64>,
    /// Highest true peak, dBTP.
    pub max_true_peak_dbtp: Option<f64>,
    /// Highest momentary loudness, LUFS.
    pub max_momentary_lufs: Option<f64>,
    /// Highest short-term loudness, LUFS.
    pub max_short_term_lufs: Option<f64>,
    /// Coding history (`A=PCM,F=44100,W=24,M=stereo,T=lathe` lines).
    pub coding_history: String,
}

/// Size of the fixed part of a `bext` chunk, before the coding history.
pub const BEXT_FIXED_BYTES: usize = 602;

impl BroadcastExtension {
    /// The chunk body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(BEXT_FIXED_BYTES + self.coding_history.len() + 2);
        let text = |body: &mut Vec<u8>, value: &str, width: usize| {
            let bytes = value.as_bytes();
            let n = bytes.len().min(width);
            body.extend_from_slice(&bytes[..n]);
            body.resize(body.len() + width - n, 0);
        };
        text(&mut body, &self.description, 256);
        text(&mut body, &self.originator, 32);
        text(&mut body, &self.originator_reference, 32);
        text(&mut body, &self.origination_date, 10);
        text(&mut body, &self.origination_time, 8);
        body.extend_from_slice(&self.time_reference.to_le_bytes());
        body.extend_from_slice(&2u16.to_le_bytes());
        body.resize(body.len() + 64, 0); // UMID
        for value in [
            self.loudness_value_lufs,
            self.loudness_range_lu,
            self.max_true_peak_dbtp,
            self.max_momentary_lufs,
            self.max_short_term_lufs,
        ] {
            let hundredths = value.filter(|v| v.is_finite()).map_or(0x7FFF, |v| {
                (v * 100.0).round().clamp(-32768.0, 32766.0) as i16
            });
            body.extend_from_slice(&hundredths.to_le_bytes());
        }
        body.resize(BEXT_FIXED_BYTES, 0); // reserved
        body.extend_from_slice(self.coding_history.as_bytes());
        body
    }

    /// Parses a chunk body written by [`BroadcastExtension::to_bytes`] (or any v0-v2 `bext`).
    pub fn from_bytes(body: &[u8]) -> Option<Self> {
        if body.len() < BEXT_FIXED_BYTES {
            return None;
        }
        let text = |range: std::ops::Range<usize>| {
            let bytes = &body[range];
            let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
            String::from_utf8_lossy(&bytes[..end]).into_owned()
        };
        let level = |at: usize| {
            let v = i16::from_le_bytes([body[at], body[at + 1]]);
            (v != 0x7FFF).then_some(f64::from(v) / 100.0)
        };
        let mut time = [0u8; 8];
        time.copy_from_slice(&body[338..346]);
        let history = &body[BEXT_FIXED_BYTES..];
        let end = history
            .iter()
            .position(|b| *b == 0)
            .unwrap_or(history.len());
        Some(Self {
            description: text(0..256),
            originator: text(256..288),
            originator_reference: text(288..320),
            origination_date: text(320..330),
            origination_time: text(330..338),
            time_reference: u64::from_le_bytes(time),
            loudness_value_lufs: level(412),
            loudness_range_lu: level(414),
            max_true_peak_dbtp: level(416),
            max_momentary_lufs: level(418),
            max_short_term_lufs: level(420),
            coding_history: String::from_utf8_lossy(&history[..end]).into_owned(),
        })
    }
}

/// Reads the `bext` chunk of a WAV file, if it has one.
///
/// # Errors
/// [`Error::Io`] if the file cannot be read; [`Error::Tag`] if it is not a RIFF WAVE file.
pub fn read_bext(path: &Path) -> Result<Option<BroadcastExtension>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if bytes.len() < 12 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err(tag_error(path, "not a RIFF WAVE file"));
    }
    let mut offset = 12usize;
    while offset + 8 <= bytes.len() {
        let size = u32::from_le_bytes([
            bytes[offset + 4],
            bytes[offset + 5],
            bytes[offset + 6],
            bytes[offset + 7],
        ]) as usize;
        let end = (offset + 8 + size).min(bytes.len());
        if &bytes[offset..offset + 4] == b"bext" {
            return Ok(BroadcastExtension::from_bytes(&bytes[offset + 8..end]));
        }
        offset = offset + 8 + size + (size & 1);
    }
    Ok(None)
}

/// `tags` as an ID3v2 tag, its frames in a fixed order (lofty's generic conversion orders
/// them by hash, which would make the bytes differ from run to run). `v23` picks UTF-16 text,
/// which ID3v2.3 needs, over UTF-8.
fn to_id3v2(tags: &TrackTags, v23: bool) -> Id3v2Tag {
    let encoding = if v23 {
        TextEncoding::UTF16
    } else {
        TextEncoding::UTF8
    };
    let pair = |n: Option<u32>, total: Option<u32>| match (n, total) {
        (Some(n), Some(t)) => Some(format!("{n}/{t}")),
        (Some(n), None) => Some(n.to_string()),
        _ => None,
    };
    let mut tag = Id3v2Tag::new();
    let frames = [
        ("TIT2", tags.title.clone()),
        ("TPE1", tags.artist.clone()),
        ("TALB", tags.album.clone()),
        ("TPE2", tags.album_artist.clone()),
        ("TRCK", pair(tags.track_number, tags.track_total)),
        ("TPOS", tags.disc_number.map(|n| n.to_string())),
        ("TDRC", tags.year.map(|n| n.to_string())),
        ("TCON", tags.genre.clone()),
        ("TCOM", tags.composer.clone()),
        ("TSRC", tags.isrc.clone()),
        ("TCOP", tags.copyright.clone()),
        ("TPUB", tags.label.clone()),
    ];
    for (id, value) in frames {
        if let Some(value) = value {
            tag.insert(Frame::Text(TextInformationFrame::new(
                FrameId::Valid(Cow::Borrowed(id)),
                encoding,
                value,
            )));
        }
    }
    if let Some(upc) = &tags.upc {
        tag.insert(Frame::UserText(ExtendedTextFrame::new(
            encoding,
            "BARCODE",
            upc.clone(),
        )));
    }
    tag
}

/// Fills the fields of `tags` still unset from `tag`.
fn fill_from(tags: &mut TrackTags, tag: &Tag) {
    let text = |value: Option<Cow<'_, str>>| {
        value
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    tags.title = tags.title.take().or_else(|| text(tag.title()));
    tags.artist = tags.artist.take().or_else(|| text(tag.artist()));
    tags.album = tags.album.take().or_else(|| text(tag.album()));
    tags.track_number = tags.track_number.or_else(|| tag.track());
    tags.isrc = tags
        .isrc
        .take()
        .or_else(|| text(tag.get_string(ItemKey::Isrc).map(Cow::Borrowed)));
    let item = |key: ItemKey| text(tag.get_string(key).map(Cow::Borrowed));
    tags.album_artist = tags
        .album_artist
        .take()
        .or_else(|| item(ItemKey::AlbumArtist));
    tags.track_total = tags.track_total.or_else(|| tag.track_total());
    tags.disc_number = tags.disc_number.or_else(|| tag.disk());
    tags.year = tags.year.or_else(|| {
        item(ItemKey::RecordingDate)
            .or_else(|| item(ItemKey::Year))
            .and_then(|d| d.get(..4).and_then(|y| y.parse().ok()))
    });
    tags.genre = tags.genre.take().or_else(|| text(tag.genre()));
    tags.composer = tags.composer.take().or_else(|| item(ItemKey::Composer));
    tags.upc = tags.upc.take().or_else(|| item(ItemKey::Barcode));
    tags.copyright = tags
        .copyright
        .take()
        .or_else(|| item(ItemKey::CopyrightMessage));
    // ID3v2 has one frame (TPUB) for publisher and label; lofty reads it as the publisher.
    tags.label = tags
        .label
        .take()
        .or_else(|| item(ItemKey::Label))
        .or_else(|| item(ItemKey::Publisher));
}

/// Writes `tags` into `path`, a WAV or FLAC file lathe has just written, replacing any tags it
/// has. The file is fsynced.
///
/// # Errors
/// [`Error::Io`] if the file cannot be opened, read or written; [`Error::Tag`] if it is not WAV
/// or FLAC, is malformed, or the tags cannot be encoded.
pub fn write_tags(path: &Path, tags: &TrackTags) -> Result<()> {
    write_tags_with_bext(path, tags, None)
}

/// [`write_tags`], and for WAV also a BWF `bext` chunk when `bext` is given. MP3 files get an
/// ID3v2.3 tag and Opus files Vorbis comments (written by lofty, which rewrites the file: these
/// are small).
///
/// # Errors
/// As [`write_tags`]; a `bext` for a file that is not WAV is an [`Error::Tag`].
pub fn write_tags_with_bext(
    path: &Path,
    tags: &TrackTags,
    bext: Option<&BroadcastExtension>,
) -> Result<()> {
    let kind = file_type(path)?;
    if bext.is_some() && kind != FileType::Wav {
        return Err(tag_error(path, "a bext chunk belongs in a WAV file only"));
    }
    match kind {
        FileType::Flac => write_flac(path, tags),
        FileType::Wav => write_wav(path, tags, bext),
        FileType::Mpeg => write_with_lofty(path, to_id3v2(tags, false)),
        FileType::Opus => {
            let mut comments = VorbisComments::new();
            comments.set_vendor(format!("lathe {}", env!("CARGO_PKG_VERSION")));
            for (key, value) in tags.vorbis_comments() {
                comments.insert(key.to_string(), value);
            }
            comments
                .save_to_path(path, write_options())
                .map_err(|e| tag_error(path, error_chain(&e)))?;
            sync(path)
        }
        other => Err(tag_error(
            path,
            format!("tags are written to WAV, FLAC, MP3 and Opus deliverables only, not {other:?}"),
        )),
    }
}

/// MP3 tags are ID3v2.4 with UTF-8 text: ID3v2.3's UTF-16 byte-order marks (`FF FE`) look like
/// an MPEG frame sync, and Symphonia's probe then takes the tag for audio.
fn write_with_lofty(path: &Path, tag: Id3v2Tag) -> Result<()> {
    tag.save_to_path(path, WriteOptions::new().use_id3v23(false))
        .map_err(|e| tag_error(path, error_chain(&e)))?;
    sync(path)
}

fn sync(path: &Path) -> Result<()> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    file.sync_all().map_err(|e| Error::io(path, e))
}

/// Reads the title, artist, album, track number and ISRC of any file lathe decodes (WAV, AIFF,
/// FLAC, MP3, Ogg Vorbis, M4A). Missing fields are `None`; a file without tags gives
/// [`TrackTags::default`].
///
/// # Errors
/// [`Error::Io`] if the file cannot be read; [`Error::Unsupported`] if it is not a format lofty
/// knows; [`Error::Decode`] if its tags are unreadable.
pub fn read_tags(path: &Path) -> Result<TrackTags> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let options = ParseOptions::new()
        .read_properties(false)
        .read_cover_art(false)
        .parsing_mode(ParsingMode::BestAttempt);
    let tagged = Probe::new(BufReader::new(file))
        .options(options)
        .guess_file_type()
        .map_err(|e| Error::io(path, e))?
        .read()
        .map_err(|e| {
            if e.is_unknown_format() {
                Error::Unsupported {
                    path: path.to_path_buf(),
                    reason: "no audio format with tags recognised".to_string(),
                }
            } else {
                Error::Decode {
                    path: path.to_path_buf(),
                    reason: format!("unreadable tags: {}", error_chain(&e)),
                }
            }
        })?;
    let mut tags = TrackTags::default();
    if let Some(primary) = tagged.primary_tag() {
        fill_from(&mut tags, primary);
    }
    for tag in tagged.tags() {
        fill_from(&mut tags, tag);
    }
    Ok(tags)
}

/// The container, from the file's content.
fn file_type(path: &Path) -> Result<FileType> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    Probe::new(BufReader::new(file))
        .guess_file_type()
        .map_err(|e| Error::io(path, e))?
        .file_type()
        .ok_or_else(|| tag_error(path, "not a WAV or FLAC file"))
}

fn write_options() -> WriteOptions {
    WriteOptions::new().use_id3v23(true)
}

fn write_flac(path: &Path, tags: &TrackTags) -> Result<()> {
    let mut comments = VorbisComments::new();
    comments.set_vendor(format!("lathe {}", env!("CARGO_PKG_VERSION")));
    for (key, value) in tags.vorbis_comments() {
        comments.insert(key.to_string(), value);
    }
    comments
        .save_to_path(path, write_options())
        .map_err(|e| tag_error(path, error_chain(&e)))?;
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    file.sync_all().map_err(|e| Error::io(path, e))
}

/// A RIFF chunk: its id and where its header starts.
#[derive(Debug, Clone, Copy)]
struct Chunk {
    id: [u8; 4],
    /// `INFO` for `LIST` chunks, else zeros.
    list_type: [u8; 4],
    offset: u64,
}

impl Chunk {
    /// Chunks that only hold tags (and padding): safe to drop or blank.
    fn is_tag(&self) -> bool {
        matches!(&self.id, b"id3 " | b"ID3 " | b"JUNK" | b"bext")
            || (&self.id == b"LIST" && &self.list_type == b"INFO")
    }
}

fn write_wav(path: &Path, tags: &TrackTags, bext: Option<&BroadcastExtension>) -> Result<()> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    let io = |e| Error::io(path, e);
    let file_len = file.metadata().map_err(io)?.len();
    let mut header = [0u8; 12];
    file.read_exact(&mut header).map_err(io)?;
    if &header[0..4] != b"RIFF" || &header[8..12] != b"WAVE" {
        return Err(tag_error(path, "not a RIFF WAVE file"));
    }

    // Walk the chunk headers (the audio is skipped, never read).
    let mut chunks = Vec::new();
    let mut offset = 12u64;
    let mut end_of_audio = 12u64;
    while offset + 8 <= file_len {
        file.seek(SeekFrom::Start(offset)).map_err(io)?;
        let mut head = [0u8; 12];
        file.read_exact(&mut head[..8]).map_err(io)?;
        let id = [head[0], head[1], head[2], head[3]];
        let size = u64::from(u32::from_le_bytes([head[4], head[5], head[6], head[7]]));
        let end = offset + 8 + size + (size & 1);
        if offset + 8 + size > file_len {
            return Err(tag_error(
                path,
                format!(
                    "malformed WAV: chunk {:?} at byte {offset} runs past the end of the file",
                    String::from_utf8_lossy(&id)
                ),
            ));
        }
        let mut list_type = [0u8; 4];
        if &id == b"LIST" && size >= 4 {
            file.read_exact(&mut list_type).map_err(io)?;
        }
        let chunk = Chunk {
            id,
            list_type,
            offset,
        };
        if !chunk.is_tag() {
            // (A last odd-sized chunk may lack its pad byte; writing past it restores one.)
            end_of_audio = end;
        }
        chunks.push(chunk);
        offset = end;
    }

    // Old tag chunks among the audio chunks become padding; those after it are overwritten.
    for chunk in chunks
        .iter()
        .filter(|c| c.is_tag() && c.offset < end_of_audio)
    {
        if &chunk.id != b"JUNK" {
            file.seek(SeekFrom::Start(chunk.offset)).map_err(io)?;
            file.write_all(b"JUNK").map_err(io)?;
        }
    }

    let mut tail = Vec::new();
    if let Some(bext) = bext {
        let body = bext.to_bytes();
        let len = u32::try_from(body.len()).map_err(|_| tag_error(path, "bext too large"))?;
        tail.extend_from_slice(b"bext");
        tail.extend_from_slice(&len.to_le_bytes());
        tail.extend_from_slice(&body);
        if body.len() % 2 == 1 {
            tail.push(0);
        }
    }
    if !tags.is_empty() {
        riff_info(tags)
            .dump_to(&mut tail, write_options())
            .map_err(|e| tag_error(path, format!("RIFF INFO: {}", error_chain(&e))))?;
        let mut id3 = Vec::new();
        to_id3v2(tags, true)
            .dump_to(&mut id3, write_options())
            .map_err(|e| tag_error(path, format!("ID3v2: {}", error_chain(&e))))?;
        let id3_len =
            u32::try_from(id3.len()).map_err(|_| tag_error(path, "ID3v2 tag too large"))?;
        tail.extend_from_slice(b"ID3 ");
        tail.extend_from_slice(&id3_len.to_le_bytes());
        tail.extend_from_slice(&id3);
        if id3.len() % 2 == 1 {
            tail.push(0);
        }
    }
    let new_len = end_of_audio + tail.len() as u64;
    let riff_size = u32::try_from(new_len - 8)
        .map_err(|_| tag_error(path, "the tagged WAV would exceed the 4 GiB RIFF limit"))?;
    file.seek(SeekFrom::Start(end_of_audio)).map_err(io)?;
    file.write_all(&tail).map_err(io)?;
    file.set_len(new_len).map_err(io)?;
    file.seek(SeekFrom::Start(4)).map_err(io)?;
    file.write_all(&riff_size.to_le_bytes()).map_err(io)?;
    file.flush().map_err(io)?;
    file.sync_all().map_err(io)
}

/// The RIFF INFO list, built by hand for its keys: lofty's generic mapping writes the track
/// number as `IPRT`, lathe writes `ITRK` (both are read back).
fn riff_info(tags: &TrackTags) -> RiffInfoList {
    let mut list = RiffInfoList::new();
    let fields = [
        ("INAM", tags.title.clone()),
        ("IART", tags.artist.clone()),
        ("IPRD", tags.album.clone()),
        ("ITRK", tags.track_number.map(|n| n.to_string())),
        ("ICRD", tags.year.map(|n| n.to_string())),
        ("IGNR", tags.genre.clone()),
        ("IMUS", tags.composer.clone()),
        ("ICOP", tags.copyright.clone()),
    ];
    for (key, value) in fields {
        if let Some(value) = value {
            list.insert(key.to_string(), value);
        }
    }
    list
}

/// An error and its sources on one line ("a: b: c").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

fn tag_error(path: &Path, reason: impl Into<String>) -> Error {
    Error::Tag {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::audio::AudioBlock;
    use crate::decode::fixtures::{decode_all, ffmpeg, grid_signal, write_wav};
    use crate::encode::Encoder;
    use lathe_model::stage_config::{Container, EncodeSpec};

    fn sample_tags() -> TrackTags {
        TrackTags {
            title: Some("Für Elise – live, 日本".to_string()),
            artist: Some("Ærlig & Sønner".to_string()),
            album: Some("Lathe Sessions".to_string()),
            track_number: Some(7),
            isrc: Some("GBAYE0601498".to_string()),
            ..TrackTags::default()
        }
    }

    fn full_tags() -> TrackTags {
        TrackTags {
            album_artist: Some("Various Ærtists".into()),
            track_total: Some(12),
            disc_number: Some(2),
            year: Some(1974),
            genre: Some("Jazz".into()),
            composer: Some("Dave Brubeck".into()),
            upc: Some("5012345678900".into()),
            copyright: Some("1974 Example Records".into()),
            label: Some("Example Records".into()),
            ..sample_tags()
        }
    }

    fn master(dir: &Path, container: Container, bit_depth: u32) -> (PathBuf, AudioBlock) {
        let signal = grid_signal(2, 30_000, 44_100, bit_depth);
        let path = dir.join(format!("master-{bit_depth}.{}", container.extension()));
        let spec = EncodeSpec {
            container,
            bit_depth,
        };
        let mut encoder = Encoder::create(&path, &spec, 2, 44_100).unwrap();
        encoder.write(&signal).unwrap();
        encoder.finish().unwrap();
        (path, signal)
    }

    #[test]
    fn tags_round_trip_and_leave_the_audio_untouched() {
        let dir = tempfile::tempdir().unwrap();
        for container in [Container::Flac, Container::Wav] {
            for bits in [16, 24] {
                let (path, _) = master(dir.path(), container, bits);
                let before = decode_all(&path, 4096).unwrap();
                assert_eq!(read_tags(&path).unwrap(), TrackTags::default());
                write_tags(&path, &sample_tags()).unwrap();
                assert_eq!(
                    read_tags(&path).unwrap(),
                    sample_tags(),
                    "{}",
                    path.display()
                );
                assert_eq!(
                    decode_all(&path, 4096).unwrap(),
                    before,
                    "{}",
                    path.display()
                );
                if container == Container::Flac {
                    let status = std::process::Command::new("flac")
                        .args(["-t", "-s"])
                        .arg(&path)
                        .status()
                        .unwrap();
                    assert!(status.success(), "flac -t after tagging");
                }
            }
        }
    }

    #[test]
    fn every_field_round_trips_through_flac_wav_mp3_and_opus() {
        let dir = tempfile::tempdir().unwrap();
        let mut paths = vec![
            master(dir.path(), Container::Flac, 24).0,
            master(dir.path(), Container::Wav, 24).0,
        ];
        let source = dir.path().join("plain.wav");
        write_wav(&source, &grid_signal(2, 48_000, 48_000, 16), 16, false);
        for (name, codec) in [("s.mp3", "libmp3lame"), ("s.opus", "libopus")] {
            let path = dir.path().join(name);
            ffmpeg(&source, &["-c:a", codec], &path);
            paths.push(path);
        }
        for path in &paths {
            write_tags(path, &full_tags()).unwrap();
            assert_eq!(read_tags(path).unwrap(), full_tags(), "{}", path.display());
        }
    }

    #[test]
    fn bext_round_trips_with_loudness_in_hundredths() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = master(dir.path(), Container::Wav, 24);
        let bext = BroadcastExtension {
            description: "Dawn".into(),
            originator: "lathe".into(),
            originator_reference: "GBXYZ7400001".into(),
            loudness_value_lufs: Some(-14.02),
            loudness_range_lu: Some(6.5),
            max_true_peak_dbtp: Some(-1.04),
            coding_history: "A=PCM,F=44100,W=24,M=stereo,T=lathe\r\n".into(),
            ..BroadcastExtension::default()
        };
        write_tags_with_bext(&path, &sample_tags(), Some(&bext)).unwrap();
        assert_eq!(read_bext(&path).unwrap(), Some(bext.clone()));
        assert_eq!(read_tags(&path).unwrap(), sample_tags());
        let bytes = std::fs::read(&path).unwrap();
        let at = bytes.windows(4).position(|w| w == b"bext").unwrap() + 8;
        // LoudnessValue at byte 412 of the body: -1402 hundredths.
        assert_eq!(
            i16::from_le_bytes([bytes[at + 412], bytes[at + 413]]),
            -1402
        );
        assert_eq!(u16::from_le_bytes([bytes[at + 346], bytes[at + 347]]), 2);
        // Re-writing replaces rather than adds.
        write_tags_with_bext(&path, &sample_tags(), Some(&bext)).unwrap();
        assert_eq!(bytes.len() as u64, std::fs::metadata(&path).unwrap().len());
        assert_eq!(hound::WavReader::open(&path).unwrap().duration(), 30_000);
    }

    #[test]
    fn wav_carries_riff_info_and_an_id3_chunk_with_the_isrc() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = master(dir.path(), Container::Wav, 24);
        write_tags(&path, &sample_tags()).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let has = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
        for id in [
            &b"LIST"[..],
            b"INFO",
            b"INAM",
            b"IART",
            b"IPRD",
            b"ITRK",
            b"ID3 ",
            b"TSRC",
            b"TIT2",
            b"TRCK",
        ] {
            assert!(has(id), "missing {}", String::from_utf8_lossy(id));
        }
        let riff_size = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as usize;
        assert_eq!(riff_size + 8, bytes.len());
        // hound (a strict reader) still reads the same audio.
        let reader = hound::WavReader::open(&path).unwrap();
        assert_eq!(reader.duration(), 30_000);
    }

    #[test]
    fn retagging_replaces_instead_of_adding() {
        let dir = tempfile::tempdir().unwrap();
        for container in [Container::Flac, Container::Wav] {
            let (path, _) = master(dir.path(), container, 16);
            write_tags(&path, &sample_tags()).unwrap();
            let first = std::fs::metadata(&path).unwrap().len();
            write_tags(&path, &sample_tags()).unwrap();
            assert_eq!(
                std::fs::metadata(&path).unwrap().len(),
                first,
                "{container}"
            );
            let fewer = TrackTags {
                title: Some("Only a title".into()),
                ..TrackTags::default()
            };
            write_tags(&path, &fewer).unwrap();
            assert_eq!(read_tags(&path).unwrap(), fewer, "{container}");
            write_tags(&path, &TrackTags::default()).unwrap();
            assert_eq!(
                read_tags(&path).unwrap(),
                TrackTags::default(),
                "{container}"
            );
        }
    }

    #[test]
    fn tag_chunks_before_the_audio_are_blanked_and_replaced() {
        // ffmpeg puts its LIST/INFO chunk before the data chunk.
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("plain.wav");
        write_wav(&source, &grid_signal(2, 10_000, 48_000, 16), 16, false);
        let path = dir.path().join("ffmpeg-tagged.wav");
        ffmpeg(
            &source,
            &["-c:a", "pcm_s16le", "-metadata", "title=Old title"],
            &path,
        );
        assert_eq!(
            read_tags(&path).unwrap().title.as_deref(),
            Some("Old title")
        );
        let before = decode_all(&path, 4096).unwrap();
        write_tags(&path, &sample_tags()).unwrap();
        assert_eq!(read_tags(&path).unwrap(), sample_tags());
        assert_eq!(decode_all(&path, 4096).unwrap(), before);
        // The old chunk survives as JUNK padding; only the new LIST chunk remains.
        let bytes = std::fs::read(&path).unwrap();
        let count = |needle: &[u8]| bytes.windows(4).filter(|w| *w == needle).count();
        assert_eq!(count(b"LIST"), 1);
        assert!(count(b"JUNK") >= 1);
    }

    #[test]
    fn source_tags_are_read_from_lossy_and_lossless_formats() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("plain.wav");
        write_wav(&source, &grid_signal(2, 44_100, 44_100, 16), 16, false);
        let metadata = [
            "-metadata",
            "title=Take Five",
            "-metadata",
            "artist=Quartet",
            "-metadata",
            "album=Time Out",
            "-metadata",
            "track=3",
        ];
        for (name, codec) in [
            ("s.mp3", "libmp3lame"),
            ("s.m4a", "aac"),
            ("s.ogg", "libvorbis"),
            ("s.flac", "flac"),
        ] {
            let path = dir.path().join(name);
            let mut args = vec!["-c:a", codec];
            args.extend_from_slice(&metadata);
            ffmpeg(&source, &args, &path);
            let tags = read_tags(&path).unwrap();
            assert_eq!(tags.title.as_deref(), Some("Take Five"), "{name}");
            assert_eq!(tags.artist.as_deref(), Some("Quartet"), "{name}");
            assert_eq!(tags.album.as_deref(), Some("Time Out"), "{name}");
            assert_eq!(tags.track_number, Some(3), "{name}");
        }
    }

    #[test]
    fn bad_targets_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("gone.flac");
        assert!(matches!(
            write_tags(&missing, &sample_tags()),
            Err(Error::Io { .. })
        ));
        assert!(matches!(read_tags(&missing), Err(Error::Io { .. })));
        let source = dir.path().join("plain.wav");
        write_wav(&source, &grid_signal(2, 4410, 44_100, 16), 16, false);
        let m4a = dir.path().join("song.m4a");
        ffmpeg(&source, &["-c:a", "aac"], &m4a);
        let err = write_tags(&m4a, &sample_tags()).unwrap_err();
        assert!(matches!(err, Error::Tag { .. }), "{err:?}");
        assert!(err.to_string().contains("song.m4a"), "{err}");
        let text = dir.path().join("notes.txt");
        std::fs::write(&text, "not audio at all").unwrap();
        let err = read_tags(&text).unwrap_err();
        assert!(matches!(err, Error::Unsupported { .. }), "{err:?}");
        assert!(write_tags(&text, &sample_tags()).is_err());
    }

    #[test]
    fn tags_read_and_write_as_toml() {
        let text = "title = \"A\"\ntrack_number = 2\nisrc = \"USRC17607839\"\n";
        let tags: TrackTags = toml::from_str(text).unwrap();
        assert_eq!(tags.track_number, Some(2));
        assert_eq!(
            toml::from_str::<TrackTags>(&toml::to_string(&tags).unwrap()).unwrap(),
            tags
        );
    }
}
