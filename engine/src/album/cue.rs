//! Compact Disc paperwork: CD frame arithmetic, the CUE sheet and the Red Book checks.
//!
//! A CD frame (sector) is 588 stereo samples at 44.1 kHz, 1/75 s; positions are written
//! `MM:SS:FF`. The CUE sheet describes one image file: the disc's `CATALOG` (UPC/EAN), CD-TEXT
//! (`TITLE`, `PERFORMER`, `SONGWRITER` at disc and track level), and per track its `ISRC`,
//! `INDEX 00` (start of the pause before it, when it has one) and `INDEX 01` (start of its audio).
//! The first track's 2-second pregap is not in the image (players and plants add it), so its
//! `INDEX 01` is `00:00:00`.

use lathe_model::delivery::outlet::CD_SAMPLE_RATE_HZ;
use serde::Serialize;

use crate::album::sequence::Placement;

/// Samples per CD frame (one sector of 2352 bytes).
pub const CD_FRAME_SAMPLES: u64 = 588;
/// CD frames per second.
pub const CD_FRAMES_PER_SECOND: u64 = 75;
/// The most tracks a CD holds.
pub const MAX_TRACKS: usize = 99;
/// The shortest track, seconds.
pub const MIN_TRACK_S: u64 = 4;
/// The first track's pregap, frames (2 s).
pub const LEAD_PREGAP_FRAMES: u64 = 150;
/// The longest programme in practice, frames: 79:57:74.
pub const MAX_PROGRAMME_FRAMES: u64 = (79 * 60 + 57) * CD_FRAMES_PER_SECOND + 74;

/// `MM:SS:FF` for a position in CD frames.
pub fn msf(frames: u64) -> String {
    let ff = frames % CD_FRAMES_PER_SECOND;
    let seconds = frames / CD_FRAMES_PER_SECOND;
    format!("{:02}:{:02}:{:02}", seconds / 60, seconds % 60, ff)
}

/// One track on the disc.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CdTrack {
    /// Title (CD-TEXT).
    pub title: String,
    /// Performer (CD-TEXT).
    pub performer: String,
    /// Songwriter (CD-TEXT).
    pub songwriter: Option<String>,
    /// ISRC, 12 characters.
    pub isrc: Option<String>,
    /// Where it sits in the image, in samples (starts on CD frames).
    pub placement: Placement,
}

/// A disc: its CD-TEXT, catalogue number and tracks in an image of `total_samples` samples.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CdLayout {
    /// Album title (CD-TEXT).
    pub title: String,
    /// Album performer (CD-TEXT).
    pub performer: String,
    /// UPC/EAN, 13 digits (`CATALOG`).
    pub catalog: Option<String>,
    /// Genre (a `REM GENRE` line).
    pub genre: Option<String>,
    /// Year (a `REM DATE` line).
    pub year: Option<u32>,
    /// The tracks in order.
    pub tracks: Vec<CdTrack>,
    /// Length of the image, samples (a whole number of CD frames).
    pub total_samples: u64,
}

impl CdLayout {
    /// The image length in CD frames.
    pub fn total_frames(&self) -> u64 {
        self.total_samples / CD_FRAME_SAMPLES
    }

    /// Where track `index` ends (the next track's `INDEX 00`, or the image's end), samples.
    pub fn track_end(&self, index: usize) -> u64 {
        self.tracks
            .get(index + 1)
            .map_or(self.total_samples, |t| t.placement.pregap_start)
    }

    /// The Red Book limits this layout breaks, in words (empty: none). Checked: at most 99 tracks;
    /// each at least 4 s from its `INDEX 01` to the next track; the programme, with the first
    /// track's 2-second pregap, at most 79:57:74; every index on a CD frame.
    pub fn red_book_violations(&self) -> Vec<String> {
        let mut violations = Vec::new();
        if self.tracks.len() > MAX_TRACKS {
            violations.push(format!(
                "{} tracks; a CD holds at most {MAX_TRACKS}",
                self.tracks.len()
            ));
        }
        if self.tracks.is_empty() {
            violations.push("no tracks".to_owned());
        }
        for (i, track) in self.tracks.iter().enumerate() {
            let length = self.track_end(i) - track.placement.start;
            if length < MIN_TRACK_S * u64::from(CD_SAMPLE_RATE_HZ) {
                violations.push(format!(
                    "track {} {:?} is {:.2} s long; a CD track is at least {MIN_TRACK_S} s",
                    i + 1,
                    track.title,
                    length as f64 / f64::from(CD_SAMPLE_RATE_HZ)
                ));
            }
            if track.placement.start % CD_FRAME_SAMPLES != 0
                || track.placement.pregap_start % CD_FRAME_SAMPLES != 0
            {
                violations.push(format!(
                    "track {} {:?} does not start on a CD frame",
                    i + 1,
                    track.title
                ));
            }
        }
        let programme = self.total_samples.div_ceil(CD_FRAME_SAMPLES) + LEAD_PREGAP_FRAMES;
        if programme > MAX_PROGRAMME_FRAMES {
            violations.push(format!(
                "the programme is {} long; a CD holds at most {}",
                msf(programme),
                msf(MAX_PROGRAMME_FRAMES)
            ));
        }
        violations
    }

    /// The CUE sheet for the image file `image_name` (a WAV).
    pub fn cue_sheet(&self, image_name: &str) -> String {
        // A CUE string is one line between double quotes: a quote in a title becomes an
        // apostrophe, and a line break or any other control character a space, so no title can
        // end its line and write one of its own.
        let quoted = |s: &str| -> String {
            s.chars()
                .map(|c| match c {
                    '"' => '\'',
                    c if c.is_control() => ' ',
                    c => c,
                })
                .collect()
        };
        let mut cue = String::new();
        let mut line = |text: String| {
            cue.push_str(&text);
            cue.push_str("\r\n");
        };
        line(format!(
            "REM COMMENT \"lathe {}\"",
            env!("CARGO_PKG_VERSION")
        ));
        if let Some(genre) = &self.genre {
            line(format!("REM GENRE \"{}\"", quoted(genre)));
        }
        if let Some(year) = self.year {
            line(format!("REM DATE {year}"));
        }
        if let Some(catalog) = &self.catalog {
            line(format!("CATALOG {catalog}"));
        }
        line(format!("PERFORMER \"{}\"", quoted(&self.performer)));
        line(format!("TITLE \"{}\"", quoted(&self.title)));
        line(format!("FILE \"{}\" WAVE", quoted(image_name)));
        for (i, track) in self.tracks.iter().enumerate() {
            line(format!("  TRACK {:02} AUDIO", i + 1));
            line(format!("    TITLE \"{}\"", quoted(&track.title)));
            line(format!("    PERFORMER \"{}\"", quoted(&track.performer)));
            if let Some(songwriter) = &track.songwriter {
                line(format!("    SONGWRITER \"{}\"", quoted(songwriter)));
            }
            if let Some(isrc) = &track.isrc {
                line(format!("    ISRC {isrc}"));
            }
            let p = &track.placement;
            if p.pregap_start < p.start {
                line(format!(
                    "    INDEX 00 {}",
                    msf(p.pregap_start / CD_FRAME_SAMPLES)
                ));
            }
            line(format!("    INDEX 01 {}", msf(p.start / CD_FRAME_SAMPLES)));
        }
        cue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn track(title: &str, pregap_start: u64, start: u64, frames: u64) -> CdTrack {
        CdTrack {
            title: title.into(),
            performer: "Band".into(),
            songwriter: None,
            isrc: Some("GBXYZ7400001".into()),
            placement: Placement {
                pregap_start,
                start,
                frames,
                crossfade_in: 0,
                crossfade_out: 0,
            },
        }
    }

    fn layout(tracks: Vec<CdTrack>, total_samples: u64) -> CdLayout {
        CdLayout {
            title: "Album".into(),
            performer: "Band".into(),
            catalog: Some("5012345678900".into()),
            genre: None,
            year: None,
            tracks,
            total_samples,
        }
    }

    #[test]
    fn hostile_titles_cannot_write_lines_of_their_own() {
        let s = 44_100;
        let hostile = "Dawn\"\r\nFILE \"evil.wav\" WAVE\n  TRACK 99 AUDIO\u{0}\t";
        let mut album = layout(vec![track(hostile, 0, 0, 10 * s)], 10 * s);
        album.title = hostile.into();
        album.performer = "Band\nCATALOG 0000000000000".into();
        album.genre = Some("Rock\"\nREM X".into());
        let cue = album.cue_sheet("Album.wav");
        let lines: Vec<&str> = cue.split("\r\n").filter(|l| !l.is_empty()).collect();
        let honest = layout(vec![track("Dawn", 0, 0, 10 * s)], 10 * s);
        let mut expected = honest.cue_sheet("Album.wav").split("\r\n").count() - 1;
        expected += 1; // the genre's REM line
        assert_eq!(lines.len(), expected, "{cue}");
        assert_eq!(lines.iter().filter(|l| l.starts_with("FILE ")).count(), 1);
        assert_eq!(
            lines
                .iter()
                .filter(|l| l.trim_start().starts_with("TRACK "))
                .count(),
            1
        );
        assert_eq!(
            lines.iter().filter(|l| l.starts_with("CATALOG ")).count(),
            1
        );
        for line in &lines {
            assert!(!line.chars().any(char::is_control), "{line:?}");
            // Every quoted string is whole: two quotes or none.
            assert!(matches!(line.matches('"').count(), 0 | 2), "{line:?}");
        }
        assert!(
            cue.contains("TITLE \"Dawn'  FILE 'evil.wav' WAVE   TRACK 99 AUDIO  \""),
            "{cue}"
        );
    }

    #[test]
    fn msf_counts_75_frames_a_second() {
        assert_eq!(msf(0), "00:00:00");
        assert_eq!(msf(74), "00:00:74");
        assert_eq!(msf(75), "00:01:00");
        assert_eq!(msf(MAX_PROGRAMME_FRAMES), "79:57:74");
    }

    #[test]
    fn red_book_violations_are_reported() {
        let s = 44_100;
        let ok = layout(
            vec![
                track("A", 0, 0, 10 * s),
                track("B", 10 * s, 10 * s + 2 * s, 10 * s),
            ],
            22 * s,
        );
        assert!(
            ok.red_book_violations().is_empty(),
            "{:?}",
            ok.red_book_violations()
        );
        let short = layout(
            vec![track("A", 0, 0, 10 * s), track("B", 10 * s, 10 * s, 3 * s)],
            13 * s,
        );
        let v = short.red_book_violations();
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].starts_with("track 2 \"B\" is 3.00 s long"), "{v:?}");
        let many = layout(
            (0..100)
                .map(|i| track("T", i * 5 * s, i * 5 * s, 5 * s))
                .collect(),
            500 * s,
        );
        assert!(many.red_book_violations()[0].contains("100 tracks"));
        let long = layout(vec![track("A", 0, 0, 80 * 60 * s)], 80 * 60 * s);
        let v = long.red_book_violations();
        assert!(
            v[0].contains("80:02:00") && v[0].contains("79:57:74"),
            "{v:?}"
        );
        let off = layout(
            vec![
                track("A", 0, 0, 10 * s),
                track("B", 10 * s + 1, 10 * s + 1, 10 * s),
            ],
            21 * s,
        );
        assert!(off.red_book_violations()[0].contains("does not start on a CD frame"));
    }
}
