//! The CD paperwork writers (`engine/src/album/cue.rs`, `ddp.rs`): a disc of any titles and any
//! track layout the manifest admits (ISRCs and UPC/EAN as `normalise_isrc` / `normalise_upc` pass
//! them, gaps of 0 to 60 s, crossfades of 0 to 30 s on tracks after the first and without a gap),
//! sequenced as `assemble_cd` does, then the CUE sheet, the PQ descriptor, CD-TEXT and DDPID are
//! written and read back by the small readers below, which check what each must say.
#![no_main]

use arbitrary::Arbitrary;
use lathe_engine::album::cue::{CD_FRAME_SAMPLES, CdLayout, CdTrack, LEAD_PREGAP_FRAMES, msf};
use lathe_engine::album::ddp::{
    CD_TEXT_PACK_BYTES, MAP_PACKET_BYTES, PQ_PACKET_BYTES, cd_text, cd_text_pack_ok, ddpid,
    pq_descriptor,
};
use lathe_engine::album::sequence::{SequenceInput, plan};
use lathe_model::catalog::{normalise_isrc, normalise_upc};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Disc {
    title: String,
    performer: String,
    upc: Option<String>,
    genre: Option<String>,
    year: Option<u32>,
    tracks: Vec<Track>,
}

#[derive(Debug, Arbitrary)]
struct Track {
    title: String,
    performer: String,
    songwriter: Option<String>,
    isrc: Option<String>,
    /// Length, frames (at least one: a source without audio does not decode).
    frames: u32,
    /// Gap before it, tenths of a second (0 to 60 s).
    gap_ds: u16,
    /// Crossfade, tenths of a second (0 to 30 s).
    crossfade_ds: u16,
}

/// A CUE string as the writer quotes it: `"` becomes `'`, a control character a space.
fn quoted(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '"' => '\'',
            c if c.is_control() => ' ',
            c => c,
        })
        .collect()
}

/// What the CUE reader found for one track.
#[derive(Debug, Default, PartialEq)]
struct CueTrack {
    number: String,
    title: Option<String>,
    performer: Option<String>,
    songwriter: Option<String>,
    isrc: Option<String>,
    index_00: Option<String>,
    index_01: Option<String>,
}

/// The text between a line's two quotes.
fn between_quotes(line: &str) -> String {
    let open = line.find('"').expect("a quoted field");
    let close = line.rfind('"').expect("a quoted field");
    assert!(close > open, "{line:?}");
    line[open + 1..close].to_owned()
}

/// Reads a CUE sheet line by line: every line ends in CR LF, holds no control character and at
/// most one quoted string; returns the FILE lines and the tracks.
fn read_cue(cue: &str) -> (Vec<String>, Vec<String>, Vec<CueTrack>) {
    assert!(cue.ends_with("\r\n"), "{cue:?}");
    let mut files = Vec::new();
    let mut disc = Vec::new();
    let mut tracks: Vec<CueTrack> = Vec::new();
    for line in cue[..cue.len() - 2].split("\r\n") {
        assert!(!line.chars().any(char::is_control), "{line:?}");
        assert!(matches!(line.matches('"').count(), 0 | 2), "{line:?}");
        let (keyword, rest) = line
            .trim_start()
            .split_once(' ')
            .expect("keyword and value");
        let in_track = line.starts_with("    ");
        match (keyword, tracks.last_mut()) {
            ("TRACK", _) => {
                assert!(
                    line.starts_with("  TRACK ") && rest.ends_with(" AUDIO"),
                    "{line:?}"
                );
                tracks.push(CueTrack {
                    number: rest.trim_end_matches(" AUDIO").to_owned(),
                    ..CueTrack::default()
                });
            }
            ("FILE", None) => files.push(line.to_owned()),
            ("TITLE", Some(t)) if in_track => t.title = Some(between_quotes(line)),
            ("PERFORMER", Some(t)) if in_track => t.performer = Some(between_quotes(line)),
            ("SONGWRITER", Some(t)) if in_track => t.songwriter = Some(between_quotes(line)),
            ("ISRC", Some(t)) if in_track => t.isrc = Some(rest.to_owned()),
            ("INDEX", Some(t)) if in_track => match rest.split_once(' ') {
                Some(("00", at)) => t.index_00 = Some(at.to_owned()),
                Some(("01", at)) => t.index_01 = Some(at.to_owned()),
                _ => panic!("{line:?}"),
            },
            (_, None) if !line.starts_with(' ') => disc.push(line.to_owned()),
            _ => panic!("a line out of place: {line:?}"),
        }
    }
    (files, disc, tracks)
}

/// Whether CD-TEXT's packs of one type read back as `texts`: the payloads joined and split at
/// each NUL give the texts in order, then only the zeros that fill the last pack.
fn cd_text_reads_back(packs: &[&[u8]], pack_type: u8, texts: &[Vec<u8>]) -> bool {
    let payload: Vec<u8> = packs
        .iter()
        .filter(|p| p[0] == pack_type)
        .flat_map(|p| p[4..16].to_vec())
        .collect();
    let strings: Vec<&[u8]> = payload.split(|&b| b == 0).collect();
    strings.len() > texts.len()
        && strings[..texts.len()] == texts.iter().map(Vec::as_slice).collect::<Vec<_>>()[..]
        && strings[texts.len()..].iter().all(|s| s.is_empty())
}

fn latin1(s: &str) -> Vec<u8> {
    s.chars()
        .map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?'))
        .collect()
}

fuzz_target!(|disc: Disc| {
    let inputs: Vec<SequenceInput> = disc
        .tracks
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let crossfade_s = if i == 0 {
                0.0
            } else {
                f64::from(t.crossfade_ds % 301) / 10.0
            };
            SequenceInput {
                frames: u64::from(t.frames.max(1)),
                gap_s: if crossfade_s > 0.0 {
                    0.0
                } else {
                    f64::from(t.gap_ds % 601) / 10.0
                },
                crossfade_s,
            }
        })
        .collect();
    let (placements, total_samples) = plan(&inputs, 44_100, CD_FRAME_SAMPLES);
    let layout = CdLayout {
        title: disc.title,
        performer: disc.performer,
        catalog: disc.upc.and_then(|upc| normalise_upc(&upc).ok()),
        genre: disc.genre,
        year: disc.year,
        tracks: disc
            .tracks
            .into_iter()
            .zip(&placements)
            .map(|(t, p)| CdTrack {
                title: t.title,
                performer: t.performer,
                songwriter: t.songwriter,
                isrc: t.isrc.and_then(|isrc| normalise_isrc(&isrc).ok()),
                placement: *p,
            })
            .collect(),
        total_samples,
    };
    let violations = layout.red_book_violations();

    // The CUE sheet: one FILE, the disc's fields, then every track with what it must say.
    let cue = layout.cue_sheet("Album.wav");
    let (files, disc_lines, tracks) = read_cue(&cue);
    assert_eq!(files, ["FILE \"Album.wav\" WAVE"]);
    assert!(disc_lines.contains(&format!("TITLE \"{}\"", quoted(&layout.title))));
    assert!(disc_lines.contains(&format!("PERFORMER \"{}\"", quoted(&layout.performer))));
    if let Some(catalog) = &layout.catalog {
        assert!(disc_lines.contains(&format!("CATALOG {catalog}")));
    }
    assert_eq!(tracks.len(), layout.tracks.len());
    for (i, (read, track)) in tracks.iter().zip(&layout.tracks).enumerate() {
        let p = &track.placement;
        let expected = CueTrack {
            number: format!("{:02}", i + 1),
            title: Some(quoted(&track.title)),
            performer: Some(quoted(&track.performer)),
            songwriter: track.songwriter.as_deref().map(quoted),
            isrc: track.isrc.clone(),
            index_00: (p.pregap_start < p.start).then(|| msf(p.pregap_start / CD_FRAME_SAMPLES)),
            index_01: Some(msf(p.start / CD_FRAME_SAMPLES)),
        };
        assert_eq!(read, &expected);
    }

    // DDPID: one packet, the level, the UPC/EAN.
    let id = ddpid(&layout);
    assert_eq!(id.len(), MAP_PACKET_BYTES);
    assert!(id.starts_with(b"DDP 2.00"));
    if let Some(catalog) = &layout.catalog {
        assert_eq!(&id[8..21], catalog.as_bytes());
    }

    // PQ descriptor: indexes 00 (where there is a pause) and 01 of every track, then the
    // lead-out, at absolute times, in order.
    let pq = pq_descriptor(&layout);
    assert_eq!(pq.len() % PQ_PACKET_BYTES, 0);
    let packets: Vec<&[u8]> = pq.chunks(PQ_PACKET_BYTES).collect();
    assert!(
        packets
            .iter()
            .all(|p| p.starts_with(b"VVVS") && p.is_ascii())
    );
    let lead_out = packets.last().expect("the lead-out");
    assert_eq!(&lead_out[4..8], b"AA01");
    let fits = violations.iter().all(|v| !v.contains("the programme"));
    if fits {
        // On a CD-sized programme every time is read back as written.
        let time = |p: &[u8]| -> u64 {
            let field = |a: usize| -> u64 {
                std::str::from_utf8(&p[a..a + 2])
                    .expect("ASCII")
                    .parse()
                    .expect("two digits")
            };
            ((field(8) * 60 + field(10)) * 60 + field(12)) * 75 + field(14)
        };
        assert_eq!(
            time(lead_out),
            total_samples / CD_FRAME_SAMPLES + LEAD_PREGAP_FRAMES
        );
        let mut previous = 0;
        for packet in &packets {
            assert!(time(packet) >= previous, "PQ times go back: {packets:?}");
            previous = time(packet);
        }
    }

    // CD-TEXT: whole packs with good CRCs, numbered in order, the texts read back.
    let text = match cd_text(&layout) {
        Ok(text) => text,
        Err(reason) => {
            // Refused only past a block's 256 packs (of at most 4 text types and 3 of size
            // information) or 99 tracks.
            let bytes: usize = [&layout.title, &layout.performer]
                .into_iter()
                .chain(layout.tracks.iter().flat_map(|t| [&t.title, &t.performer]))
                .chain(layout.tracks.iter().filter_map(|t| t.songwriter.as_ref()))
                .chain(layout.catalog.iter())
                .chain(layout.tracks.iter().filter_map(|t| t.isrc.as_ref()))
                .map(|s| s.chars().count() + 1)
                .sum::<usize>()
                + 2 * layout.tracks.len()
                + 2;
            assert!(
                layout.tracks.len() > 99 || bytes > 12 * (256 - 3 - 4),
                "CD-TEXT refused for {bytes} bytes of text: {reason}"
            );
            return;
        }
    };
    assert_eq!(text.len() % CD_TEXT_PACK_BYTES, 0);
    let packs: Vec<&[u8]> = text.chunks(CD_TEXT_PACK_BYTES).collect();
    for (i, pack) in packs.iter().enumerate() {
        assert!(cd_text_pack_ok(pack), "pack {i}");
        assert_eq!(usize::from(pack[2]), i, "pack {i}'s sequence number");
    }
    let mut titles = vec![latin1(&layout.title)];
    titles.extend(layout.tracks.iter().map(|t| latin1(&t.title)));
    let mut performers = vec![latin1(&layout.performer)];
    performers.extend(layout.tracks.iter().map(|t| latin1(&t.performer)));
    // A NUL inside a text ends it early for every reader; compare the texts without one.
    let nul_free = |texts: &[Vec<u8>]| texts.iter().all(|t| !t.contains(&0));
    if nul_free(&titles) {
        assert!(cd_text_reads_back(&packs, 0x80, &titles), "{titles:?}");
    }
    if nul_free(&performers) {
        assert!(
            cd_text_reads_back(&packs, 0x81, &performers),
            "{performers:?}"
        );
    }
});
