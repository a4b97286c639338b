//! Sequencing: where each track of an album sits in one continuous programme, and rendering it.
//!
//! The first track starts at frame 0 (a CD's 2-second lead pregap is not part of the image; a
//! vinyl side starts with its first groove). Each later track starts `gap` frames after the previous
//! one ends, or, with a crossfade, `crossfade` frames before it ends. With a `frame_quantum`
//! (588 samples, one CD frame), every track start and every pregap start is moved onto a multiple of
//! it: a gap grows to the next boundary (by less than one quantum), a crossfade to the previous one.
//! With a quantum of 1 every position is exactly the one asked for.

use std::f64::consts::FRAC_PI_2;
use std::path::{Path, PathBuf};

use crate::album::fade::Envelope;
use crate::audio::AudioBlock;
use crate::audio::BLOCK_FRAMES;
use crate::decode::Decoder;
use crate::error::{Error, Result};

/// A track as the sequencer needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct SequenceInput {
    /// Length, frames.
    pub frames: u64,
    /// Silence before it, seconds (ignored for the first track and with a crossfade).
    pub gap_s: f64,
    /// Overlap with the previous track, seconds (0: none).
    pub crossfade_s: f64,
}

/// Where one track sits in the programme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Placement {
    /// First frame of the silence (or crossfade) before the track: a CUE sheet's `INDEX 00`.
    pub pregap_start: u64,
    /// First frame of the track's audio: `INDEX 01`.
    pub start: u64,
    /// Length of the track's audio, frames.
    pub frames: u64,
    /// Frames at the start that overlap the previous track's end.
    pub crossfade_in: u64,
    /// Frames at the end that overlap the next track's start.
    pub crossfade_out: u64,
}

impl Placement {
    /// One past the last frame of the track's audio.
    pub fn end(&self) -> u64 {
        self.start + self.frames
    }
}

/// Places `tracks` at `sample_rate_hz` with every start on a multiple of `frame_quantum`; returns the
/// placements and the programme's length (padded to the quantum).
pub fn plan(
    tracks: &[SequenceInput],
    sample_rate_hz: u32,
    frame_quantum: u64,
) -> (Vec<Placement>, u64) {
    let q = frame_quantum.max(1);
    let rate = f64::from(sample_rate_hz);
    let mut placements: Vec<Placement> = Vec::with_capacity(tracks.len());
    for (i, track) in tracks.iter().enumerate() {
        let placement = match placements.last_mut() {
            None => Placement {
                pregap_start: 0,
                start: 0,
                frames: track.frames,
                crossfade_in: 0,
                crossfade_out: 0,
            },
            Some(previous) if track.crossfade_s > 0.0 => {
                let previous_end = previous.end();
                let wanted = ((track.crossfade_s * rate).round() as u64)
                    .min(track.frames)
                    .min(previous.frames - previous.crossfade_in);
                let start = (previous_end - wanted) / q * q;
                let start = start.max(previous.start + previous.crossfade_in);
                let overlap = previous_end - start;
                previous.crossfade_out = overlap;
                Placement {
                    pregap_start: start,
                    start,
                    frames: track.frames,
                    crossfade_in: overlap.min(track.frames),
                    crossfade_out: 0,
                }
            }
            Some(previous) => {
                let previous_end = previous.end();
                let gap = if i == 0 {
                    0
                } else {
                    (track.gap_s * rate).round() as u64
                };
                let pregap_start = previous_end.div_ceil(q) * q;
                let start = (previous_end + gap).div_ceil(q) * q;
                Placement {
                    pregap_start: if gap == 0 { start } else { pregap_start },
                    start,
                    frames: track.frames,
                    crossfade_in: 0,
                    crossfade_out: 0,
                }
            }
        };
        placements.push(placement);
    }
    let total = placements.last().map_or(0, |p| p.end().div_ceil(q) * q);
    (placements, total)
}

/// The equal-power crossfade gain of frame `k` of an `n`-frame overlap: incoming `sin`, outgoing
/// `cos` of `π/2 · k/n`.
pub fn crossfade_gains(k: u64, n: u64) -> (f64, f64) {
    let angle = FRAC_PI_2 * k as f64 / n as f64;
    (angle.sin(), angle.cos())
}

/// Reads one placed track and mixes it into the programme.
struct PlacedReader {
    placement: Placement,
    envelope: Envelope,
    decoder: Decoder,
    buffer: AudioBlock,
    buffered_from: usize,
    position: u64,
    path: PathBuf,
}

impl PlacedReader {
    fn open(path: &Path, placement: Placement, channels: usize, rate: u32) -> Result<Self> {
        let decoder = Decoder::open(path)?;
        let info = decoder.info();
        if info.sample_rate_hz != rate {
            return Err(Error::Delivery {
                album: path.display().to_string(),
                reason: format!("at {} Hz in a programme at {rate} Hz", info.sample_rate_hz),
            });
        }
        if info.channel_count != 1 && info.channel_count != channels {
            return Err(Error::Delivery {
                album: path.display().to_string(),
                reason: format!(
                    "{} channels in a {channels}-channel programme",
                    info.channel_count
                ),
            });
        }
        Ok(Self {
            buffer: AudioBlock::new(info.channel_count, BLOCK_FRAMES, rate),
            decoder,
            placement,
            envelope: Envelope::flat(placement.frames),
            buffered_from: 0,
            position: 0,
            path: path.to_path_buf(),
        })
    }

    /// The track's gain at its frame `k`: the crossfade envelopes times `envelope`.
    fn gain(&self, k: u64) -> f64 {
        let mut gain = self.envelope.gain(k);
        let p = &self.placement;
        if k < p.crossfade_in {
            gain *= crossfade_gains(k, p.crossfade_in).0;
        }
        let tail_start = p.frames - p.crossfade_out;
        if p.crossfade_out > 0 && k >= tail_start {
            gain *= crossfade_gains(k - tail_start, p.crossfade_out).1;
        }
        gain
    }

    /// Adds the track's frames for programme frames `[at, at + out.frames())` into `out`.
    fn mix_into(&mut self, out: &mut AudioBlock, at: u64) -> Result<()> {
        let p = self.placement;
        let from = at.max(p.start);
        let to = (at + out.frames() as u64).min(p.end());
        let mut frame = from;
        while frame < to {
            if self.buffered_from >= self.buffer.frames() {
                if self.decoder.read(&mut self.buffer)? == 0 {
                    return Err(Error::Delivery {
                        album: self.path.display().to_string(),
                        reason: format!(
                            "ended after {} frames; {} were planned",
                            self.position, p.frames
                        ),
                    });
                }
                self.buffered_from = 0;
            }
            let n = ((to - frame) as usize).min(self.buffer.frames() - self.buffered_from);
            let offset = (frame - at) as usize;
            let mono = self.buffer.channel_count() == 1;
            for c in 0..out.channel_count() {
                let source = &self.buffer.channel(if mono { 0 } else { c })
                    [self.buffered_from..self.buffered_from + n];
                let target = &mut out.channel_mut(c)[offset..offset + n];
                for (i, (t, s)) in target.iter_mut().zip(source).enumerate() {
                    let gain = self.gain(self.position + i as u64);
                    *t = (f64::from(*t) + f64::from(*s) * gain) as f32;
                }
            }
            self.buffered_from += n;
            self.position += n as u64;
            frame += n as u64;
        }
        Ok(())
    }
}

/// Renders the placed tracks as one programme of `total_frames` frames, block by block, into
/// `sink`. Each track file must be at `sample_rate_hz` with 1 or `channel_count` channels (mono is
/// spread to every channel) and hold exactly its placement's frames. At most the tracks sounding at
/// one time are open, so memory does not grow with the album.
///
/// # Errors
/// A track's decode error, a track of the wrong shape or length ([`Error::Delivery`]), or the
/// sink's error.
pub fn render(
    tracks: &[(PathBuf, Placement)],
    total_frames: u64,
    channel_count: usize,
    sample_rate_hz: u32,
    sink: &mut dyn FnMut(&AudioBlock) -> Result<()>,
) -> Result<()> {
    let mut out = AudioBlock::new(channel_count, BLOCK_FRAMES, sample_rate_hz);
    let mut open: Vec<PlacedReader> = Vec::new();
    let mut next = 0;
    let mut at = 0u64;
    while at < total_frames {
        let n = (total_frames - at).min(BLOCK_FRAMES as u64) as usize;
        out.set_frames(n);
        out.fill_silence();
        let block_end = at + n as u64;
        while next < tracks.len() && tracks[next].1.start < block_end {
            let (path, placement) = &tracks[next];
            open.push(PlacedReader::open(
                path,
                *placement,
                channel_count,
                sample_rate_hz,
            )?);
            next += 1;
        }
        for reader in &mut open {
            reader.mix_into(&mut out, at)?;
        }
        open.retain(|r| r.placement.end() > block_end);
        sink(&out)?;
        at = block_end;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::Encoder;
    use lathe_model::stage_config::{Container, EncodeSpec};

    fn input(frames: u64, gap_s: f64, crossfade_s: f64) -> SequenceInput {
        SequenceInput {
            frames,
            gap_s,
            crossfade_s,
        }
    }

    #[test]
    fn gaps_and_crossfades_sit_at_exact_frames() {
        let tracks = [
            input(10_000, 2.0, 0.0),
            input(5000, 0.5, 0.0),
            input(8000, 0.0, 0.1),
            input(3000, 0.0, 0.0),
        ];
        let (p, total) = plan(&tracks, 1000, 1);
        assert_eq!((p[0].start, p[0].end()), (0, 10_000));
        assert_eq!((p[1].pregap_start, p[1].start), (10_000, 10_500));
        assert_eq!(
            (p[2].start, p[2].crossfade_in, p[1].crossfade_out),
            (15_400, 100, 100)
        );
        assert_eq!((p[3].pregap_start, p[3].start), (23_400, 23_400));
        assert_eq!(total, 26_400);
    }

    #[test]
    fn cd_frames_put_every_start_on_588_samples() {
        let tracks = [
            input(44_100 * 5 + 17, 2.0, 0.0),
            input(44_100 * 4 + 3, 2.0, 0.0),
            input(44_100 * 6, 0.0, 1.0),
            input(44_100 * 7 + 300, 0.0, 0.0),
        ];
        let (p, total) = plan(&tracks, 44_100, 588);
        for (i, placement) in p.iter().enumerate() {
            assert_eq!(placement.start % 588, 0, "track {i}");
            assert_eq!(placement.pregap_start % 588, 0, "track {i}");
        }
        let gap = p[1].start - p[0].end();
        assert!((88_200..88_200 + 588).contains(&gap), "{gap}");
        let overlap = p[1].end() - p[2].start;
        assert!((44_100..44_100 + 588).contains(&overlap), "{overlap}");
        assert_eq!(p[2].crossfade_in, overlap);
        assert_eq!(total % 588, 0);
        assert!(total >= p[3].end() && total - p[3].end() < 588);
    }

    fn constant_track(dir: &Path, name: &str, value: f32, frames: usize) -> PathBuf {
        let path = dir.join(name);
        let spec = EncodeSpec {
            container: Container::Wav,
            bit_depth: 32,
        };
        let mut encoder = Encoder::create(&path, &spec, 2, 8000).unwrap();
        encoder
            .write(&AudioBlock::from_channels(
                vec![vec![value; frames], vec![-value; frames]],
                8000,
            ))
            .unwrap();
        encoder.finish().unwrap();
        path
    }

    #[test]
    fn the_rendered_programme_has_silence_and_equal_power_crossfades_where_planned() {
        let dir = tempfile::tempdir().unwrap();
        let a = constant_track(dir.path(), "a.wav", 0.5, 3000);
        let b = constant_track(dir.path(), "b.wav", 0.25, 2000);
        let c = constant_track(dir.path(), "c.wav", 0.125, 5000);
        let (p, total) = plan(
            &[
                input(3000, 2.0, 0.0),
                input(2000, 0.1875, 0.0),
                input(5000, 0.0, 0.05),
            ],
            8000,
            1,
        );
        let tracks = vec![(a, p[0]), (b, p[1]), (c, p[2])];
        {
            let mut left = Vec::new();
            let mut right = Vec::new();
            render(&tracks, total, 2, 8000, &mut |block| {
                left.extend_from_slice(block.channel(0));
                right.extend_from_slice(block.channel(1));
                Ok(())
            })
            .unwrap();
            assert_eq!(left.len() as u64, total);
            assert_eq!(total, 3000 + 1500 + 2000 - 400 + 5000);
            assert!(left.iter().zip(&right).all(|(l, r)| *l == -*r));
            assert_eq!(left[2999], 0.5);
            assert!(left[3000..4500].iter().all(|&x| x == 0.0));
            assert_eq!(left[4500], 0.25);
            // The crossfade runs from frame 6100 to 6500.
            assert_eq!(left[6099], 0.25);
            assert_eq!(left[6100], 0.25);
            for k in [1u64, 100, 200, 399] {
                let (g_in, g_out) = crossfade_gains(k, 400);
                let expected = 0.25 * g_out + 0.125 * g_in;
                assert!((f64::from(left[6100 + k as usize]) - expected).abs() < 1e-6);
                assert!((g_in * g_in + g_out * g_out - 1.0).abs() < 1e-12);
            }
            assert_eq!(left[6500], 0.125);
            assert_eq!(*left.last().unwrap(), 0.125);
        }
    }
}
