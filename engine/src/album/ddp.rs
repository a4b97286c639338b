//! DDP 2.0 images: what pressing plants ask for.
//!
//! A DDP image is a folder of files:
//!
//! | file | what |
//! |---|---|
//! | `DDPID` | 128 bytes: `DDP 2.00` (level), the UPC/EAN (bytes 8-20), the master ID (bytes 37-84) |
//! | `DDPMS` | one 128-byte map packet (`VVVM`) per stream: audio image, PQ descriptor, CD-TEXT |
//! | `IMAGE.DAT` | the audio: 16-bit little-endian stereo PCM, whole 2352-byte sectors |
//! | `PQDESCR` | one 64-byte packet (`VVVS`) per track index: track, index, absolute time `HHMMSSFF`, control bytes, ISRC, UPC/EAN; the lead-out is track `AA` |
//! | `CDTEXT.BIN` | CD-TEXT packs (18 bytes each, CRC-16 checked): title, performer, songwriter, UPC/ISRC, size information |
//! | `CHECKSUM.MD5` | the MD5 of every other file, `md5sum` format |
//!
//! Map packet fields (bytes): MPV 0-3 `VVVM`, DST 4-5 stream type (`D0` main channel, `S0`
//! subcode), DSP 6-13 start sector, DSL 14-21 length (sectors for the image, bytes otherwise), DSS
//! 22-29 start, SUB 30-37 subcode descriptor (`PQ DESCR`, `CDTEXT`), CDM 38-39 `DA` (CD-DA), SSM
//! 40, SCR 41, PRE1 42-45 pregap, MED 54, TRK 55-56, IDX 57-58, ISRC 59-70, SIZ 71-73 length of
//! DSI, DSI 74-90 the file's name; unused bytes are spaces. Times in `PQDESCR` are absolute disc
//! times: the image starts after the first track's 2-second pregap (`00:02:00`).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use md5::{Digest, Md5};

use crate::album::cue::{CD_FRAME_SAMPLES, CdLayout, LEAD_PREGAP_FRAMES, MAX_TRACKS};
use crate::atomic_file::{TempFile, write_atomically};
use crate::audio::AudioBlock;
use crate::audio::BLOCK_FRAMES;
use crate::decode::Decoder;
use crate::error::{Error, Result};

/// Bytes of one CD sector of audio.
pub const SECTOR_BYTES: u64 = 2352;
/// Size of a `DDPID` or `DDPMS` packet.
pub const MAP_PACKET_BYTES: usize = 128;
/// Size of a `PQDESCR` packet.
pub const PQ_PACKET_BYTES: usize = 64;
/// Size of a CD-TEXT pack.
pub const CD_TEXT_PACK_BYTES: usize = 18;

/// The files of a DDP image, written by [`write_ddp`].
pub const DDP_FILES: [&str; 6] = [
    "DDPID",
    "DDPMS",
    "IMAGE.DAT",
    "PQDESCR",
    "CDTEXT.BIN",
    "CHECKSUM.MD5",
];

fn ascii_field(packet: &mut [u8], at: usize, width: usize, value: &str) {
    let bytes: Vec<u8> = value
        .bytes()
        .map(|b| if b.is_ascii() { b } else { b'?' })
        .collect();
    let n = bytes.len().min(width);
    packet[at..at + n].copy_from_slice(&bytes[..n]);
}

fn number_field(packet: &mut [u8], at: usize, width: usize, value: u64) {
    ascii_field(packet, at, width, &format!("{value:0width$}"));
}

/// The `DDPID` packet.
pub fn ddpid(layout: &CdLayout) -> Vec<u8> {
    let mut packet = vec![b' '; MAP_PACKET_BYTES];
    ascii_field(&mut packet, 0, 8, "DDP 2.00");
    if let Some(upc) = &layout.catalog {
        ascii_field(&mut packet, 8, 13, upc);
    }
    ascii_field(&mut packet, 37, 48, &layout.title);
    packet
}

/// One `DDPMS` map packet.
fn map_packet(stream_type: &str, length: u64, subcode: &str, file: &str) -> Vec<u8> {
    let mut packet = vec![b' '; MAP_PACKET_BYTES];
    ascii_field(&mut packet, 0, 4, "VVVM");
    ascii_field(&mut packet, 4, 2, stream_type);
    number_field(&mut packet, 6, 8, 0);
    number_field(&mut packet, 14, 8, length);
    number_field(&mut packet, 22, 8, 0);
    ascii_field(&mut packet, 30, 8, subcode);
    ascii_field(&mut packet, 38, 2, "DA");
    ascii_field(&mut packet, 40, 1, "0");
    ascii_field(&mut packet, 41, 1, "0");
    number_field(&mut packet, 42, 4, LEAD_PREGAP_FRAMES);
    number_field(&mut packet, 71, 3, file.len() as u64);
    ascii_field(&mut packet, 74, 17, file);
    packet
}

/// The `PQDESCR` stream: indexes 00 and 01 of every track (absolute disc time, 2-second lead
/// pregap included) and the lead-out.
pub fn pq_descriptor(layout: &CdLayout) -> Vec<u8> {
    let upc = layout.catalog.clone().unwrap_or_default();
    let mut stream = Vec::new();
    let mut entry = |track: &str, index: u32, frames: u64, isrc: &str| {
        let mut packet = vec![b' '; PQ_PACKET_BYTES];
        ascii_field(&mut packet, 0, 4, "VVVS");
        ascii_field(&mut packet, 4, 2, track);
        number_field(&mut packet, 6, 2, u64::from(index));
        let seconds = frames / 75;
        number_field(&mut packet, 8, 2, seconds / 3600);
        number_field(&mut packet, 10, 2, seconds / 60 % 60);
        number_field(&mut packet, 12, 2, seconds % 60);
        number_field(&mut packet, 14, 2, frames % 75);
        ascii_field(&mut packet, 16, 2, "00");
        ascii_field(&mut packet, 18, 2, "00");
        ascii_field(&mut packet, 20, 12, isrc);
        ascii_field(&mut packet, 32, 13, &upc);
        stream.extend_from_slice(&packet);
    };
    for (i, track) in layout.tracks.iter().enumerate() {
        let number = format!("{:02}", i + 1);
        let isrc = track.isrc.as_deref().unwrap_or("");
        let p = &track.placement;
        let start = p.start / CD_FRAME_SAMPLES + LEAD_PREGAP_FRAMES;
        let pregap = if i == 0 {
            0
        } else {
            p.pregap_start / CD_FRAME_SAMPLES + LEAD_PREGAP_FRAMES
        };
        if pregap < start {
            entry(&number, 0, pregap, isrc);
        }
        entry(&number, 1, start, isrc);
    }
    entry(
        "AA",
        1,
        layout.total_samples / CD_FRAME_SAMPLES + LEAD_PREGAP_FRAMES,
        "",
    );
    stream
}

/// CRC-16/CCITT (polynomial 0x1021, initial 0), as CD-TEXT packs carry it (inverted).
fn crc16_ccitt(bytes: &[u8]) -> u16 {
    let mut crc = 0u16;
    for &byte in bytes {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// `true` if an 18-byte CD-TEXT pack's CRC is right.
pub fn cd_text_pack_ok(pack: &[u8]) -> bool {
    pack.len() == CD_TEXT_PACK_BYTES
        && !crc16_ccitt(&pack[..16]) == u16::from_be_bytes([pack[16], pack[17]])
}

/// The most packs one CD-TEXT block holds: its sequence numbers and the size information's
/// counts are one byte each.
pub const MAX_CD_TEXT_PACKS: usize = 256;

/// The CD-TEXT packs (block 0, ISO 8859-1, English): album and track titles (0x80), performers
/// (0x81), songwriters (0x82), UPC and ISRCs (0x8E), and the size information (0x8F).
///
/// # Errors
/// The reason, in words, when the disc has more than 99 tracks or its texts need more than
/// [`MAX_CD_TEXT_PACKS`] packs (about 3 KB of text): a block cannot number them.
pub fn cd_text(layout: &CdLayout) -> std::result::Result<Vec<u8>, String> {
    if layout.tracks.len() > MAX_TRACKS {
        return Err(format!(
            "{} tracks; CD-TEXT numbers at most {MAX_TRACKS}",
            layout.tracks.len()
        ));
    }
    let latin1 = |s: &str| -> Vec<u8> {
        s.chars()
            .map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?'))
            .collect()
    };
    let mut packs: Vec<[u8; CD_TEXT_PACK_BYTES]> = Vec::new();
    let mut counts = [0usize; 16];
    let mut kind = |pack_type: u8, texts: Vec<Vec<u8>>, packs: &mut Vec<[u8; 18]>| {
        // The texts of disc (track 0) and tracks 1..n, each NUL-terminated, cut into 12-byte payloads.
        let mut payload: Vec<(u8, u8, u8)> = Vec::new(); // (byte, track, position in its string)
        for (track, text) in texts.iter().enumerate() {
            for (pos, &b) in text.iter().chain(std::iter::once(&0u8)).enumerate() {
                payload.push((b, track as u8, pos.min(15) as u8));
            }
        }
        for chunk in payload.chunks(12) {
            let mut pack = [0u8; CD_TEXT_PACK_BYTES];
            pack[0] = pack_type;
            pack[1] = chunk[0].1;
            pack[2] = packs.len() as u8;
            pack[3] = chunk[0].2;
            for (i, (b, _, _)) in chunk.iter().enumerate() {
                pack[4 + i] = *b;
            }
            let crc = !crc16_ccitt(&pack[..16]);
            pack[16..].copy_from_slice(&crc.to_be_bytes());
            packs.push(pack);
            counts[usize::from(pack_type & 0x0F)] += 1;
        }
    };
    let mut titles = vec![latin1(&layout.title)];
    titles.extend(layout.tracks.iter().map(|t| latin1(&t.title)));
    kind(0x80, titles, &mut packs);
    let mut performers = vec![latin1(&layout.performer)];
    performers.extend(layout.tracks.iter().map(|t| latin1(&t.performer)));
    kind(0x81, performers, &mut packs);
    if layout.tracks.iter().any(|t| t.songwriter.is_some()) {
        let mut writers = vec![Vec::new()];
        writers.extend(
            layout
                .tracks
                .iter()
                .map(|t| latin1(t.songwriter.as_deref().unwrap_or(""))),
        );
        kind(0x82, writers, &mut packs);
    }
    let mut codes = vec![latin1(layout.catalog.as_deref().unwrap_or(""))];
    codes.extend(
        layout
            .tracks
            .iter()
            .map(|t| latin1(t.isrc.as_deref().unwrap_or(""))),
    );
    kind(0x8E, codes, &mut packs);
    // Size information: three packs of 12 bytes.
    counts[0x0F] = 3;
    if packs.len() + 3 > MAX_CD_TEXT_PACKS {
        return Err(format!(
            "the titles, performers, songwriters and codes need {} CD-TEXT packs; a block holds \
             at most {MAX_CD_TEXT_PACKS}: shorten them",
            packs.len() + 3
        ));
    }
    // Within the limit every count and sequence number fits its byte.
    let counts = counts.map(|n| n as u8);
    let last_sequence = (packs.len() + 2) as u8;
    let mut info = Vec::with_capacity(36);
    info.push(0x00); // character code: ISO 8859-1
    info.push(1); // first track
    info.push(layout.tracks.len() as u8); // last track
    info.push(0); // copyright flags
    info.extend_from_slice(&counts);
    info.extend_from_slice(&[last_sequence, 0, 0, 0, 0, 0, 0, 0]);
    info.extend_from_slice(&[0x09, 0, 0, 0, 0, 0, 0, 0]); // block 0: English
    for (i, chunk) in info.chunks(12).enumerate() {
        let mut pack = [0u8; CD_TEXT_PACK_BYTES];
        pack[0] = 0x8F;
        pack[1] = i as u8;
        pack[2] = packs.len() as u8;
        pack[4..16].copy_from_slice(chunk);
        let crc = !crc16_ccitt(&pack[..16]);
        pack[16..].copy_from_slice(&crc.to_be_bytes());
        packs.push(pack);
    }
    Ok(packs.concat())
}

/// Writes a DDP 2.0 image of `layout` into `dir` (created), its audio taken from `image_wav`, the
/// 16-bit 44.1 kHz album image. Every file is written under a temporary name and renamed.
///
/// # Errors
/// [`Error::Io`] on a write failure; a decode error of the image; [`Error::Delivery`] if the image
/// is not 16-bit stereo at 44.1 kHz or not the layout's length, or if the disc's CD-TEXT does not
/// fit one block (see [`cd_text`]).
pub fn write_ddp(dir: &Path, layout: &CdLayout, image_wav: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let wrong = |reason: String| Error::Delivery {
        album: layout.title.clone(),
        reason: format!("DDP image from {}: {reason}", image_wav.display()),
    };
    // The paperwork first: a disc whose CD-TEXT cannot be written gets no image either.
    let text = cd_text(layout).map_err(&wrong)?;
    let mut decoder = Decoder::open(image_wav)?;
    let info = decoder.info().clone();
    if info.sample_rate_hz != 44_100 || info.channel_count != 2 || info.bits_per_sample != Some(16)
    {
        return Err(wrong(format!(
            "{} Hz, {} channels, {:?} bits; a CD image is 44100 Hz, 2 channels, 16 bits",
            info.sample_rate_hz, info.channel_count, info.bits_per_sample
        )));
    }
    let image_path = dir.join("IMAGE.DAT");
    let temp = TempFile::for_output(&image_path);
    let mut md5_image = Md5::new();
    let mut frames = 0u64;
    {
        let file = File::create(temp.path()).map_err(|e| Error::io(temp.path(), e))?;
        let mut out = BufWriter::new(file);
        let mut block = AudioBlock::new(2, BLOCK_FRAMES, 44_100);
        let mut bytes = Vec::with_capacity(BLOCK_FRAMES * 4);
        while decoder.read(&mut block)? > 0 {
            bytes.clear();
            for i in 0..block.frames() {
                for c in 0..2 {
                    let x = (f64::from(block.channel(c)[i]) * 32768.0)
                        .round()
                        .clamp(-32768.0, 32767.0) as i16;
                    bytes.extend_from_slice(&x.to_le_bytes());
                }
            }
            md5_image.update(&bytes);
            out.write_all(&bytes)
                .map_err(|e| Error::io(temp.path(), e))?;
            frames += block.frames() as u64;
        }
        out.flush().map_err(|e| Error::io(temp.path(), e))?;
        out.get_ref()
            .sync_all()
            .map_err(|e| Error::io(temp.path(), e))?;
    }
    if frames != layout.total_samples {
        return Err(wrong(format!(
            "{frames} frames; the layout has {}",
            layout.total_samples
        )));
    }
    temp.commit(&image_path)?;

    let pq = pq_descriptor(layout);
    let sectors = frames * 4 / SECTOR_BYTES;
    let mut map = map_packet("D0", sectors, "", "IMAGE.DAT");
    map.extend(map_packet("S0", pq.len() as u64, "PQ DESCR", "PQDESCR"));
    map.extend(map_packet("S0", text.len() as u64, "CDTEXT", "CDTEXT.BIN"));
    let id = ddpid(layout);
    let hex = |digest: &[u8]| {
        digest
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let mut sums = format!("{}  IMAGE.DAT\n", hex(&md5_image.finalize()));
    for (name, bytes) in [
        ("DDPID", &id),
        ("DDPMS", &map),
        ("PQDESCR", &pq),
        ("CDTEXT.BIN", &text),
    ] {
        write_atomically(&dir.join(name), bytes)?;
        sums.push_str(&format!("{}  {name}\n", hex(&Md5::digest(bytes))));
    }
    write_atomically(&dir.join("CHECKSUM.MD5"), sums.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::album::cue::CdTrack;
    use crate::album::sequence::Placement;

    fn layout() -> CdLayout {
        let s = 44_100;
        let place = |pregap_start, start, frames| Placement {
            pregap_start,
            start,
            frames,
            crossfade_in: 0,
            crossfade_out: 0,
        };
        CdLayout {
            title: "Northern Lights".into(),
            performer: "The Example Band".into(),
            catalog: Some("5012345678900".into()),
            genre: None,
            year: None,
            tracks: vec![
                CdTrack {
                    title: "Dawn".into(),
                    performer: "The Example Band".into(),
                    songwriter: Some("A. Writer".into()),
                    isrc: Some("GBXYZ7400001".into()),
                    placement: place(0, 0, 10 * s),
                },
                CdTrack {
                    title: "Dusk".into(),
                    performer: "The Example Band".into(),
                    songwriter: None,
                    isrc: Some("GBXYZ7400002".into()),
                    placement: place(10 * s, 12 * s, 10 * s),
                },
            ],
            total_samples: 22 * s,
        }
    }

    #[test]
    fn pq_descriptor_has_absolute_times_and_isrcs() {
        let pq = pq_descriptor(&layout());
        let packets: Vec<String> = pq
            .chunks(PQ_PACKET_BYTES)
            .map(|p| String::from_utf8_lossy(&p[..45]).into_owned())
            .collect();
        assert_eq!(packets.len(), 5);
        // Track 1: the 2-second lead pregap, then its audio.
        assert_eq!(&packets[0][..16], "VVVS010000000000");
        assert_eq!(&packets[1][..16], "VVVS010100000200");
        assert_eq!(&packets[1][20..32], "GBXYZ7400001");
        assert_eq!(&packets[1][32..45], "5012345678900");
        // Track 2: pause from 10 s, audio from 12 s, plus the 2-second lead pregap.
        assert_eq!(&packets[2][..16], "VVVS020000001200");
        assert_eq!(&packets[3][..16], "VVVS020100001400");
        assert_eq!(&packets[3][20..32], "GBXYZ7400002");
        assert_eq!(&packets[4][..16], "VVVSAA0100002400");
    }

    #[test]
    fn cd_text_beyond_one_block_is_refused_not_wrapped() {
        // Found by the `cue_ddp` fuzz target: pack 256 was numbered 0 (and in a debug build the
        // pack count of a type overflowed its byte). A compilation of 99 tracks with ordinary
        // titles needs more packs than a block holds.
        let one = layout();
        let mut long = layout();
        long.tracks = (0..99)
            .map(|i| CdTrack {
                title: format!("Track number {i} of the long compilation"),
                ..one.tracks[0].clone()
            })
            .collect();
        let reason = cd_text(&long).expect_err("too many packs");
        assert!(reason.contains("CD-TEXT packs"), "{reason}");
        // The largest disc that fits is written whole, numbered to 255.
        while cd_text(&long).is_err() {
            long.tracks.pop();
        }
        let text = cd_text(&long).expect("fits");
        let packs: Vec<&[u8]> = text.chunks(CD_TEXT_PACK_BYTES).collect();
        assert!(packs.len() > 200 && packs.len() <= MAX_CD_TEXT_PACKS);
        for (i, pack) in packs.iter().enumerate() {
            assert!(cd_text_pack_ok(pack));
            assert_eq!(usize::from(pack[2]), i);
        }
        let mut many = layout();
        many.tracks = vec![one.tracks[0].clone(); 100];
        assert!(
            cd_text(&many)
                .expect_err("100 tracks")
                .contains("100 tracks")
        );
    }

    #[test]
    fn cd_text_packs_carry_valid_crcs_and_the_titles() {
        let text = cd_text(&layout()).expect("CD-TEXT");
        assert_eq!(text.len() % CD_TEXT_PACK_BYTES, 0);
        let packs: Vec<&[u8]> = text.chunks(CD_TEXT_PACK_BYTES).collect();
        assert!(packs.iter().all(|p| cd_text_pack_ok(p)));
        for (i, pack) in packs.iter().enumerate() {
            assert_eq!(usize::from(pack[2]), i, "sequence numbers count up");
        }
        let titles: Vec<u8> = packs
            .iter()
            .filter(|p| p[0] == 0x80)
            .flat_map(|p| p[4..16].to_vec())
            .collect();
        assert!(titles.starts_with(b"Northern Lights\0Dawn\0Dusk\0"));
        let codes: Vec<u8> = packs
            .iter()
            .filter(|p| p[0] == 0x8E)
            .flat_map(|p| p[4..16].to_vec())
            .collect();
        assert!(codes.starts_with(b"5012345678900\0GBXYZ7400001\0GBXYZ7400002\0"));
        assert_eq!(packs.iter().filter(|p| p[0] == 0x8F).count(), 3);
        let mut broken = packs[0].to_vec();
        broken[5] ^= 1;
        assert!(!cd_text_pack_ok(&broken));
    }
}
