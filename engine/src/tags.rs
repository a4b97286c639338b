//! Track tags: read from any source lathe decodes, written to the WAV and FLAC masters it makes.
//!
//! - FLAC: a Vorbis comment block (`TITLE`, `ARTIST`, `ALBUM`, `TRACKNUMBER`, `ISRC`), written by
//!   lofty (which moves the audio along in 64 KiB steps to make room: bounded memory).
//! - WAV: a RIFF `LIST`/`INFO` chunk (`INAM`, `IART`, `IPRD`, `ITRK`; RIFF INFO has no ISRC field)
//!   plus an `ID3 ` chunk with an ID3v2.3 tag carrying all five (`TIT2`, `TPE1`, `TALB`, `TRCK`,
//!   `TSRC`). lofty encodes both chunks but would load the whole file to place them, so this module
//!   places them itself: tag chunks after the audio are replaced at the end of the file, tag chunks
//!   before it are turned into `JUNK`, and only the RIFF size is rewritten. The audio is never
//!   moved or read.
//!
//! [`read_tags`] takes the first value of each field from the file's tags, primary tag first
//! (ID3v2 before RIFF INFO in WAV), so that a source's tags can be carried over to its master.

use std::borrow::Cow;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;

use lofty::config::{ParseOptions, ParsingMode, WriteOptions};
use lofty::file::{FileType, TaggedFileExt};
use lofty::iff::wav::RiffInfoList;
use lofty::ogg::tag::VorbisComments;
use lofty::probe::Probe;
use lofty::tag::{Accessor, ItemKey, Tag, TagExt, TagType};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The tags lathe carries from a source to its master.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackTags {
    /// Track title.
    pub title: Option<String>,
    /// Track artist.
    pub artist: Option<String>,
    /// Album title.
    pub album: Option<String>,
    /// Position on the album, from 1.
    pub track_number: Option<u32>,
    /// International Standard Recording Code (`CC-XXX-YY-NNNNN`, usually written without dashes).
    pub isrc: Option<String>,
}

impl TrackTags {
    /// `true` if no field is set.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// The tags as a lofty tag of `tag_type` (fields that are `None` are left out).
    fn to_lofty(&self, tag_type: TagType) -> Tag {
        let mut tag = Tag::new(tag_type);
        if let Some(title) = &self.title {
            tag.set_title(title.clone());
        }
        if let Some(artist) = &self.artist {
            tag.set_artist(artist.clone());
        }
        if let Some(album) = &self.album {
            tag.set_album(album.clone());
        }
        if let Some(track) = self.track_number {
            tag.set_track(track);
        }
        if let Some(isrc) = &self.isrc {
            tag.insert_text(ItemKey::Isrc, isrc.clone());
        }
        tag
    }

    /// Fills the fields still unset from `tag`.
    fn fill_from(&mut self, tag: &Tag) {
        let text = |value: Option<Cow<'_, str>>| {
            value
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        self.title = self.title.take().or_else(|| text(tag.title()));
        self.artist = self.artist.take().or_else(|| text(tag.artist()));
        self.album = self.album.take().or_else(|| text(tag.album()));
        self.track_number = self.track_number.or_else(|| tag.track());
        self.isrc = self
            .isrc
            .take()
            .or_else(|| text(tag.get_string(ItemKey::Isrc).map(Cow::Borrowed)));
    }
}

/// Writes `tags` into `path`, a WAV or FLAC file lathe has just written, replacing any tags it
/// has. The file is fsynced.
///
/// # Errors
/// [`Error::Io`] if the file cannot be opened, read or written; [`Error::Tag`] if it is not WAV
/// or FLAC, is malformed, or the tags cannot be encoded.
pub fn write_tags(path: &Path, tags: &TrackTags) -> Result<()> {
    match file_type(path)? {
        FileType::Flac => write_flac(path, tags),
        FileType::Wav => write_wav(path, tags),
        other => Err(tag_error(
            path,
            format!("tags are written to WAV and FLAC masters only, not {other:?}"),
        )),
    }
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
        tags.fill_from(primary);
    }
    for tag in tagged.tags() {
        tags.fill_from(tag);
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
    let fields = [
        ("TITLE", tags.title.clone()),
        ("ARTIST", tags.artist.clone()),
        ("ALBUM", tags.album.clone()),
        ("TRACKNUMBER", tags.track_number.map(|n| n.to_string())),
        ("ISRC", tags.isrc.clone()),
    ];
    for (key, value) in fields {
        if let Some(value) = value {
            comments.insert(key.to_string(), value);
        }
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
        matches!(&self.id, b"id3 " | b"ID3 " | b"JUNK")
            || (&self.id == b"LIST" && &self.list_type == b"INFO")
    }
}

fn write_wav(path: &Path, tags: &TrackTags) -> Result<()> {
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
    if !tags.is_empty() {
        riff_info(tags)
            .dump_to(&mut tail, write_options())
            .map_err(|e| tag_error(path, format!("RIFF INFO: {}", error_chain(&e))))?;
        let mut id3 = Vec::new();
        tags.to_lofty(TagType::Id3v2)
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
    use crate::encode::{Container, EncodeSpec, Encoder};

    fn sample_tags() -> TrackTags {
        TrackTags {
            title: Some("Für Elise – live, 日本".to_string()),
            artist: Some("Ærlig & Sønner".to_string()),
            album: Some("Lathe Sessions".to_string()),
            track_number: Some(7),
            isrc: Some("GBAYE0601498".to_string()),
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
        let mp3 = dir.path().join("song.mp3");
        ffmpeg(&source, &["-c:a", "libmp3lame"], &mp3);
        let err = write_tags(&mp3, &sample_tags()).unwrap_err();
        assert!(matches!(err, Error::Tag { .. }), "{err:?}");
        assert!(err.to_string().contains("song.mp3"), "{err}");
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
