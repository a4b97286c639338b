//! The excerpts the restoration bench damages: clean stretches of the development corpus's real
//! recordings (`../shared/corpus.sh`), a fixed number from each group, tuned and held-out groups
//! told apart.

use std::path::{Path, PathBuf};
use std::process::Command;

use lathe_engine::AudioBlock;
use lathe_engine::decode::Decoder;

/// The corpus groups, in the order the bench reads them, and whether the restorers' and the
/// detectors' thresholds were tuned on them (`true`) or they are held out (`false`).
pub const GROUPS: [(&str, bool); 6] = [
    ("asc", true),
    ("singularity", true),
    ("hyperrogue", true),
    ("blupi", false),
    ("warzone", false),
    ("nexuiz", false),
];

/// Excerpts start this far into each track (past intros, into the body of the music).
const START_FRACTION: f64 = 0.3;
/// Blocks the decoder fills.
const BLOCK_FRAMES: usize = 4096;

/// One clean excerpt of a corpus track.
pub struct Excerpt {
    /// Whether thresholds were tuned on its group.
    pub tuned: bool,
    /// A short name: the group and the track's file stem.
    pub name: String,
    /// The audio.
    pub audio: AudioBlock,
}

/// Where `corpus.sh` is: `CORPUS_SH`, or the shared folder beside the repository.
fn corpus_script() -> PathBuf {
    std::env::var_os("CORPUS_SH").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus.sh"),
        PathBuf::from,
    )
}

/// The tracks of `group`, as `corpus.sh list GROUP` prints them (empty when it cannot).
fn tracks(group: &str) -> Vec<PathBuf> {
    let Ok(output) = Command::new("bash")
        .arg(corpus_script())
        .args(["list", group])
        .output()
    else {
        return Vec::new();
    };
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(PathBuf::from)
        .collect()
}

/// Up to `per_group` excerpts of `seconds` from each group named in `groups`: tracks spread evenly
/// over the group's list, each excerpt starting 30% into its track. Tracks that do not decode or
/// are too short are skipped (and said so on stderr).
pub fn excerpts(groups: &[&str], per_group: usize, seconds: f64) -> Vec<Excerpt> {
    let mut out = Vec::new();
    for &(group, tuned) in GROUPS.iter().filter(|(g, _)| groups.contains(g)) {
        let all = tracks(group);
        let (mut taken, mut short) = (0, 0);
        // Every track in a spread order (0, n/2, n/4, 3n/4, ...) until enough decode.
        for path in spread(&all) {
            if taken == per_group {
                break;
            }
            match read_excerpt(path, seconds) {
                Ok(audio) => {
                    let stem = path
                        .file_stem()
                        .map(|s| s.to_string_lossy().replace(' ', "_"))
                        .unwrap_or_default();
                    out.push(Excerpt {
                        tuned,
                        name: format!("{group}/{stem}"),
                        audio,
                    });
                    taken += 1;
                }
                Err(Unusable::Short) => short += 1,
                Err(Unusable::Unreadable(e)) => eprintln!("  skipped {}: {e}", path.display()),
            }
        }
        if short > 0 {
            eprintln!(
                "  {group}: skipped {short} tracks shorter than {:.0} s",
                1.5 * seconds
            );
        }
        if all.is_empty() {
            eprintln!("  no tracks in corpus group {group} (../shared/corpus.sh install)");
        }
    }
    out
}

/// `items` in an order that spreads the first few taken over the whole list.
fn spread<T>(items: &[T]) -> Vec<&T> {
    let n = items.len();
    let mut order: Vec<usize> = (0..n).collect();
    // Sort by the bit-reversed index over the next power of two: 0, n/2, n/4, 3n/4, ...
    let bits = n.next_power_of_two().trailing_zeros();
    order.sort_by_key(|&i| {
        if bits == 0 {
            0
        } else {
            (i as u64).reverse_bits() >> (64 - bits)
        }
    });
    order.into_iter().map(|i| &items[i]).collect()
}

/// Why a track gives no excerpt.
enum Unusable {
    /// Shorter than one and a half excerpts (sound effects).
    Short,
    /// It does not decode, or its length is unknown.
    Unreadable(String),
}

/// `seconds` of `path` starting 30% into it, at its own rate.
fn read_excerpt(path: &Path, seconds: f64) -> Result<AudioBlock, Unusable> {
    let mut decoder = Decoder::open(path).map_err(|e| Unusable::Unreadable(e.to_string()))?;
    let info = decoder.info().clone();
    let rate = f64::from(info.sample_rate_hz);
    let total = info
        .frames
        .ok_or_else(|| Unusable::Unreadable("its length is unknown".to_owned()))?
        as usize;
    let keep = (seconds * rate) as usize;
    if total < keep + keep / 2 {
        return Err(Unusable::Short);
    }
    let skip = ((total as f64 * START_FRACTION) as usize).min(total - keep);
    read_span(&mut decoder, skip, keep).map_err(Unusable::Unreadable)
}

/// Frames `skip..skip + keep` of a decoder's output, as one block.
pub fn read_span(decoder: &mut Decoder, skip: usize, keep: usize) -> Result<AudioBlock, String> {
    let info = decoder.info().clone();
    let mut all = AudioBlock::new(info.channel_count, keep, info.sample_rate_hz);
    let mut block = AudioBlock::new(info.channel_count, BLOCK_FRAMES, info.sample_rate_hz);
    let mut seen = 0;
    while all.frames() < keep && decoder.read(&mut block).map_err(|e| e.to_string())? > 0 {
        let frames = block.frames();
        if seen + frames > skip {
            block.discard_front(skip.saturating_sub(seen));
            block.set_frames(block.frames().min(keep - all.frames()));
            all.append(&block);
        }
        seen += frames;
    }
    if all.frames() < keep {
        return Err("ended early".to_owned());
    }
    Ok(all)
}
