//! The tags lathe carries from a source to its master (the engine reads and writes them).

use serde::{Deserialize, Serialize};

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
    /// Album artist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub album_artist: Option<String>,
    /// Number of tracks on the album.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_total: Option<u32>,
    /// Disc number, from 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disc_number: Option<u32>,
    /// Release year.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub year: Option<u32>,
    /// Genre.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub genre: Option<String>,
    /// Composer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub composer: Option<String>,
    /// The album's UPC/EAN (13 digits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upc: Option<String>,
    /// Copyright line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copyright: Option<String>,
    /// Record label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

impl TrackTags {
    /// `true` if no field is set.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// The Vorbis comments (FLAC, Opus) for these tags, in a fixed order.
    pub fn vorbis_comments(&self) -> Vec<(&'static str, String)> {
        let number = |n: Option<u32>| n.map(|n| n.to_string());
        [
            ("TITLE", self.title.clone()),
            ("ARTIST", self.artist.clone()),
            ("ALBUM", self.album.clone()),
            ("ALBUMARTIST", self.album_artist.clone()),
            ("TRACKNUMBER", number(self.track_number)),
            ("TRACKTOTAL", number(self.track_total)),
            ("DISCNUMBER", number(self.disc_number)),
            ("DATE", number(self.year)),
            ("GENRE", self.genre.clone()),
            ("COMPOSER", self.composer.clone()),
            ("ISRC", self.isrc.clone()),
            ("BARCODE", self.upc.clone()),
            ("COPYRIGHT", self.copyright.clone()),
            ("LABEL", self.label.clone()),
        ]
        .into_iter()
        .filter_map(|(key, value)| value.map(|v| (key, v)))
        .collect()
    }
}
