//! The page-by-page check of an Ogg file, run before Symphonia decodes it.
//!
//! Symphonia resynchronises silently after a damaged page, dropping its audio; lathe refuses the
//! file instead. Every page is checked: capture pattern, CRC, consecutive sequence numbers per
//! logical stream, and an end-of-stream flag on the last page of each stream.
//!
//! An end-of-stream flag on a page that is *not* the last of its stream is not damage: some
//! encoders set it on more than one page, and libvorbis, libopus and ffmpeg decode such a stream
//! to its real end without a word. So does Symphonia (its Ogg reader reads pages until the file
//! ends, whatever their flags), and so does lathe, leaving a note that says so. Symphonia's frame
//! count, though, comes from the first flagged page it finds near the end of the file; the check
//! gives the real one, from the granule position of each stream's last page.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, ErrorKind, Read};
use std::path::Path;

use symphonia::core::codecs::audio::well_known::CODEC_ID_OPUS;
use symphonia::core::formats::Track;

use super::{decode_error, read_full};
use crate::error::{Error, Result};

/// The end-of-stream bit of an Ogg page's header-type byte.
const END_OF_STREAM_FLAG: u8 = 0x04;
/// The granule position of a page on which no packet ends.
const NO_GRANULE_POSITION: u64 = u64::MAX;

/// What the check found in a sound file: its notes, and where each stream ends.
#[derive(Debug)]
pub(super) struct PageCheck {
    /// Notes for [`super::SourceInfo::notes`]: one for each logical stream that goes on after a
    /// page flagged as its end.
    pub(super) notes: Vec<String>,
    /// The granule position of each logical stream's last page that has one, by serial number.
    end_granule_positions: HashMap<u32, u64>,
}

impl PageCheck {
    /// The frames `track` decodes to, from the granule position of its last page (counted from
    /// zero, as Symphonia counts them; an Opus granule position counts the pre-skip too).
    pub(super) fn frames(&self, track: &Track) -> Option<u64> {
        let end = *self.end_granule_positions.get(&track.id)?;
        let is_opus = track
            .codec_params
            .as_ref()
            .and_then(|p| p.audio())
            .is_some_and(|p| p.codec == CODEC_ID_OPUS);
        let pre_skip = if is_opus { track.delay.unwrap_or(0) } else { 0 };
        Some(end.saturating_sub(u64::from(pre_skip)))
    }
}

/// One logical stream, as the check has seen it so far.
#[derive(Debug)]
struct LogicalStream {
    /// The sequence number the next page must have.
    next_sequence: u32,
    /// The last page seen has the end-of-stream flag.
    ended: bool,
    /// Pages flagged end-of-stream that later pages followed, and where the first of them starts.
    early_ends: u32,
    first_early_end_byte: u64,
    /// The granule position of the last page that has one.
    end_granule_position: Option<u64>,
}

/// Checks every page of the Ogg file at `path` (see the module docs).
///
/// Reads the file once more (streaming, one page at a time); cheap next to decoding.
///
/// # Errors
/// [`Error::Decode`] naming the page's byte offset for a damaged, missing or cut page, or a stream
/// that stops without its end-of-stream page; [`Error::Io`] for a read failure.
pub(super) fn verify_pages(path: &Path) -> Result<PageCheck> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let mut header = [0u8; 27];
    let mut body = vec![0u8; 255 * 255];
    let mut segments = [0u8; 255];
    // By serial number, in the order the streams start (for notes in a stable order).
    let mut streams: HashMap<u32, LogicalStream> = HashMap::new();
    let mut serials_in_order = Vec::new();
    let mut offset: u64 = 0;
    loop {
        match read_full(&mut reader, &mut header) {
            Ok(0) => break,
            Ok(27) => {}
            Ok(_) => {
                return Err(damage(
                    path,
                    offset,
                    "truncated: the file ends inside a page header",
                ));
            }
            Err(e) => return Err(Error::io(path, e)),
        }
        if &header[0..4] != b"OggS" || header[4] != 0 {
            return Err(damage(
                path,
                offset,
                "corrupt: no Ogg page where one should start",
            ));
        }
        let flags = header[5];
        let granule_position = u64::from_le_bytes([
            header[6], header[7], header[8], header[9], header[10], header[11], header[12],
            header[13],
        ]);
        let serial = u32::from_le_bytes([header[14], header[15], header[16], header[17]]);
        let sequence = u32::from_le_bytes([header[18], header[19], header[20], header[21]]);
        let stored_crc = u32::from_le_bytes([header[22], header[23], header[24], header[25]]);
        let segment_count = usize::from(header[26]);
        let table = &mut segments[..segment_count];
        reader
            .read_exact(table)
            .map_err(|e| read_error(path, offset, e))?;
        let body_len: usize = table.iter().map(|&b| usize::from(b)).sum();
        reader
            .read_exact(&mut body[..body_len])
            .map_err(|e| read_error(path, offset, e))?;

        header[22..26].fill(0);
        let crc = crc32(crc32(crc32(0, &header), table), &body[..body_len]);
        if crc != stored_crc {
            return Err(damage(path, offset, "corrupt: page checksum mismatch"));
        }
        let stream = streams.entry(serial).or_insert_with(|| {
            serials_in_order.push(serial);
            LogicalStream {
                next_sequence: sequence,
                ended: false,
                early_ends: 0,
                first_early_end_byte: 0,
                end_granule_position: None,
            }
        });
        if sequence != stream.next_sequence {
            return Err(damage(
                path,
                offset,
                &format!(
                    "corrupt: pages {} to {} are missing",
                    stream.next_sequence,
                    sequence.wrapping_sub(1)
                ),
            ));
        }
        if stream.ended {
            // The page before was flagged as the end, yet the stream goes on.
            stream.early_ends += 1;
        }
        stream.next_sequence = sequence.wrapping_add(1);
        if granule_position != NO_GRANULE_POSITION {
            stream.end_granule_position = Some(granule_position);
        }
        stream.ended = flags & END_OF_STREAM_FLAG != 0;
        if stream.ended && stream.early_ends == 0 {
            // Where an early end would start, if pages follow this one.
            stream.first_early_end_byte = offset;
        }
        offset += (27 + segment_count + body_len) as u64;
    }
    if streams.values().any(|stream| !stream.ended) {
        return Err(decode_error(
            path,
            "truncated: the Ogg stream stops without its end-of-stream page",
        ));
    }
    let notes = serials_in_order
        .iter()
        .filter_map(|serial| streams.get(serial))
        .filter(|stream| stream.early_ends > 0)
        .map(|stream| {
            let pages = match stream.early_ends {
                1 => "a page".to_string(),
                n => format!("{n} pages"),
            };
            format!(
                "the Ogg stream marks {pages} before its last as its end (the first at byte {}); \
                 decoded to its real end, as other players do",
                stream.first_early_end_byte
            )
        })
        .collect();
    let end_granule_positions = streams
        .iter()
        .filter_map(|(&serial, stream)| Some((serial, stream.end_granule_position?)))
        .collect();
    Ok(PageCheck {
        notes,
        end_granule_positions,
    })
}

fn read_error(path: &Path, offset: u64, error: std::io::Error) -> Error {
    if error.kind() == ErrorKind::UnexpectedEof {
        damage(path, offset, "truncated: the file ends inside a page")
    } else {
        Error::io(path, error)
    }
}

fn damage(path: &Path, offset: u64, what: &str) -> Error {
    decode_error(path, &format!("{what} (Ogg page at byte {offset})"))
}

/// Ogg's CRC-32: polynomial 0x04c11db7, MSB first, initial value 0, no final XOR.
pub(super) fn crc32(mut crc: u32, bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut r = (i as u32) << 24;
            let mut bit = 0;
            while bit < 8 {
                r = if r & 0x8000_0000 != 0 {
                    (r << 1) ^ 0x04c1_1db7
                } else {
                    r << 1
                };
                bit += 1;
            }
            table[i] = r;
            i += 1;
        }
        table
    };
    for &b in bytes {
        crc = (crc << 8) ^ TABLE[((crc >> 24) as u8 ^ b) as usize];
    }
    crc
}

/// Test fixtures: where an Ogg file's pages lie, and a page's checksum rewritten after an edit.
#[cfg(test)]
pub(super) mod fixtures {
    use std::ops::Range;

    /// The byte range of every page of an Ogg file.
    pub(in crate::decode) fn page_spans(bytes: &[u8]) -> Vec<Range<usize>> {
        let mut spans = Vec::new();
        let mut start = 0;
        while start < bytes.len() {
            assert_eq!(&bytes[start..start + 4], b"OggS", "a page at byte {start}");
            let segment_count = usize::from(bytes[start + 26]);
            let table = &bytes[start + 27..start + 27 + segment_count];
            let body_len: usize = table.iter().map(|&b| usize::from(b)).sum();
            let end = start + 27 + segment_count + body_len;
            spans.push(start..end);
            start = end;
        }
        spans
    }

    /// Recomputes the checksum of `page` (one whole page) after its bytes were changed.
    pub(in crate::decode) fn rewrite_crc(page: &mut [u8]) {
        page[22..26].fill(0);
        let crc = super::crc32(0, page);
        page[22..26].copy_from_slice(&crc.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::process::Command;

    use super::fixtures::{page_spans, rewrite_crc};
    use super::*;
    use crate::audio::AudioBlock;
    use crate::decode::Decoder;
    use crate::decode::fixtures::{decode_all, ffmpeg, grid_signal, write_wav};

    /// The frames ffmpeg decodes from `path` (its own demuxer and decoder), per channel.
    fn ffmpeg_frames(path: &Path, channels: usize) -> usize {
        let output = Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-i"])
            .arg(path)
            .args(["-f", "f32le", "-"])
            .output()
            .unwrap();
        assert!(output.status.success(), "ffmpeg decodes {}", path.display());
        output.stdout.len() / 4 / channels
    }

    /// A 3 s stereo Ogg Vorbis file made by ffmpeg from a 16-bit grid signal.
    fn vorbis_fixture(dir: &Path) -> PathBuf {
        let wav = dir.join("vorbis-source.wav");
        write_wav(
            &wav,
            &grid_signal(2, 3 * 44_100 + 17, 44_100, 16),
            16,
            false,
        );
        let ogg = dir.join("clean.ogg");
        ffmpeg(&wav, &["-c:a", "libvorbis"], &ogg);
        ogg
    }

    /// Sets the end-of-stream flag on the page `index` of `bytes` and rewrites its checksum.
    fn flag_end_of_stream(bytes: &mut [u8], index: usize) {
        let span = page_spans(bytes)[index].clone();
        let page = &mut bytes[span];
        page[5] |= END_OF_STREAM_FLAG;
        rewrite_crc(page);
    }

    #[test]
    fn an_early_end_of_stream_flag_decodes_to_the_real_end_with_a_note() {
        let dir = tempfile::tempdir().unwrap();
        let clean = vorbis_fixture(dir.path());
        let mut bytes = std::fs::read(&clean).unwrap();
        let pages = page_spans(&bytes);
        // Two header pages (identification; comment and setup), then at least three of audio.
        assert!(pages.len() >= 5, "{} pages", pages.len());
        let middle = pages.len() / 2 + 1;
        flag_end_of_stream(&mut bytes, middle);
        let flagged = dir.path().join("flagged.ogg");
        std::fs::write(&flagged, &bytes).unwrap();

        let reference = decode_all(&clean, 4096).unwrap();
        let decoded = decode_all(&flagged, 4096).unwrap();
        assert_eq!(decoded.frames(), ffmpeg_frames(&flagged, 2));
        assert_eq!(decoded.frames(), ffmpeg_frames(&clean, 2));
        let shape = |b: &AudioBlock| (b.channel_count(), b.frames(), b.sample_rate_hz());
        assert_eq!(shape(&decoded), shape(&reference));
        for ch in 0..2 {
            assert_eq!(decoded.channel(ch), reference.channel(ch), "channel {ch}");
        }

        assert_eq!(
            Decoder::open(&clean).unwrap().info().notes,
            Vec::<String>::new()
        );
        let info = Decoder::open(&flagged).unwrap().info().clone();
        assert_eq!(
            info.notes,
            vec![format!(
                "the Ogg stream marks a page before its last as its end (the first at byte {}); \
                 decoded to its real end, as other players do",
                pages[middle].start
            )]
        );
        assert_eq!(
            info.frames,
            Decoder::open(&clean).unwrap().info().frames,
            "the frame count comes from the last page"
        );
    }

    #[test]
    fn the_note_reaches_the_track_report() {
        use crate::render::{MasterRequest, master_track};
        use lathe_model::profile::Profile;

        let dir = tempfile::tempdir().unwrap();
        let clean = vorbis_fixture(dir.path());
        let mut bytes = std::fs::read(&clean).unwrap();
        flag_end_of_stream(&mut bytes, 2);
        let flagged = dir.path().join("flagged.ogg");
        std::fs::write(&flagged, &bytes).unwrap();
        let note = Decoder::open(&flagged).unwrap().info().notes[0].clone();
        let report = master_track(
            &MasterRequest {
                input: &flagged,
                output: &dir.path().join("master.flac"),
                profile: &Profile::preset("streaming").unwrap(),
                tags: Default::default(),
                level: None,
                fades: None,
            },
            &mut |_| std::ops::ControlFlow::Continue(()),
        )
        .unwrap();
        assert!(report.warnings.contains(&note), "{:?}", report.warnings);
    }

    #[test]
    fn early_end_of_stream_flags_keep_the_other_page_checks() {
        let dir = tempfile::tempdir().unwrap();
        let clean = vorbis_fixture(dir.path());
        let mut bytes = std::fs::read(&clean).unwrap();
        let pages = page_spans(&bytes);
        assert_eq!(pages.len(), 5, "two header pages, three of audio");
        flag_end_of_stream(&mut bytes, 2);
        let path = dir.path().join("damaged.ogg");
        // Cut after the flagged page's successor: the stream stops without its end.
        std::fs::write(&path, &bytes[..pages[3].end]).unwrap();
        let err = Decoder::open(&path).unwrap_err();
        assert!(
            err.to_string()
                .contains("truncated: the Ogg stream stops without its end-of-stream page"),
            "{err}"
        );
        // The page after the flagged one missing.
        let mut cut = bytes[..pages[2].end].to_vec();
        cut.extend_from_slice(&bytes[pages[3].end..]);
        std::fs::write(&path, &cut).unwrap();
        let err = Decoder::open(&path).unwrap_err();
        assert!(
            err.to_string()
                .contains("corrupt: pages 3 to 3 are missing"),
            "{err}"
        );
        // The page after the flagged one damaged.
        let mut damaged = bytes.clone();
        damaged[pages[3].start + 40] ^= 0x5a;
        std::fs::write(&path, &damaged).unwrap();
        let err = Decoder::open(&path).unwrap_err();
        assert!(
            err.to_string().contains("corrupt: page checksum mismatch"),
            "{err}"
        );
        // Intact, with two early ends: one note, and the whole stream.
        flag_end_of_stream(&mut bytes, 3);
        std::fs::write(&path, &bytes).unwrap();
        let notes = Decoder::open(&path).unwrap().info().notes.clone();
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(
            notes[0].starts_with(&format!(
                "the Ogg stream marks 2 pages before its last as its end (the first at byte {})",
                pages[2].start
            )),
            "{notes:?}"
        );
        assert_eq!(
            decode_all(&path, 4096).unwrap(),
            decode_all(&clean, 4096).unwrap()
        );
    }

    #[test]
    fn flac_in_ogg_from_flac_and_ffmpeg_decodes_bit_exact() {
        let dir = tempfile::tempdir().unwrap();
        for bits in [16, 24] {
            let frames = 2 * 44_100 + 1_234;
            let signal = grid_signal(2, frames, 44_100, bits);
            let wav = dir.path().join(format!("source-{bits}.wav"));
            write_wav(&wav, &signal, bits as u16, false);
            let from_flac = dir.path().join(format!("flac-{bits}.oga"));
            let status = Command::new("flac")
                .args(["-s", "-f", "--ogg", "-o"])
                .arg(&from_flac)
                .arg(&wav)
                .status()
                .unwrap();
            assert!(status.success());
            let from_ffmpeg = dir.path().join(format!("ffmpeg-{bits}.ogg"));
            ffmpeg(&wav, &["-c:a", "flac", "-f", "ogg"], &from_ffmpeg);
            for path in [&from_flac, &from_ffmpeg] {
                let what = format!("{bits} bits, {}", path.display());
                let decoder = Decoder::open(path).unwrap_or_else(|e| panic!("{what}: {e}"));
                let info = decoder.info();
                assert_eq!(
                    (info.container.as_str(), info.codec.as_str()),
                    ("ogg", "flac"),
                    "{what}"
                );
                assert_eq!(info.frames, Some(frames as u64), "{what}");
                assert_eq!(info.bits_per_sample, Some(bits), "{what}");
                let decoded = decode_all(path, 4096).unwrap_or_else(|e| panic!("{what}: {e}"));
                assert_eq!(decoded.frames(), frames, "{what}");
                for ch in 0..2 {
                    assert_eq!(
                        decoded.channel(ch),
                        signal.channel(ch),
                        "{what}: channel {ch}"
                    );
                }
            }
        }
    }

    #[test]
    fn truncated_flac_in_ogg_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let wav = dir.path().join("source.wav");
        write_wav(&wav, &grid_signal(2, 3 * 44_100, 44_100, 16), 16, false);
        let oga = dir.path().join("take.oga");
        ffmpeg(&wav, &["-c:a", "flac", "-f", "ogg"], &oga);
        let bytes = std::fs::read(&oga).unwrap();
        let pages = page_spans(&bytes);
        // Cut at a page boundary, so that every page left is whole and intact.
        std::fs::write(&oga, &bytes[..pages[pages.len() - 2].end]).unwrap();
        let err = decode_all(&oga, 4096).unwrap_err();
        assert!(err.to_string().contains("truncated: "), "{err}");
    }
}
