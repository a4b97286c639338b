//! Lossy deliverables: MP3 (LAME, CBR 320 kbit/s and VBR V0) and Opus in Ogg, and the decoded
//! true-peak check.
//!
//! A lossy codec adds inter-sample peaks: a master at -1 dBTP can decode above it. So after each
//! encode the file is decoded (MP3 by Symphonia, Opus by libopus) and its true peak measured; the
//! master is rendered again with more limiter headroom while it passes the ceiling
//! ([`crate::album::codec_headroom`], whose notes go into the report).
//!
//! Opus is written at 48 kHz (its only rate) with the encoder's look-ahead as pre-skip and the
//! last page's granule position trimming the padding, so the decoded length equals the input's.
//! MP3 starts with a Xing/Info frame carrying the LAME tag (encoder delay and padding), so gapless
//! decoders (Symphonia, ffmpeg, every modern player) return exactly the input's samples: albums
//! play without clicks or gaps between tracks.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::Path;

use mp3lame_encoder::{Bitrate, Builder, DualPcm, FlushGap, MonoPcm, Quality, VbrMode};
use ogg::{PacketWriteEndInfo, PacketWriter};

use crate::audio::AudioBlock;
use crate::audio::BLOCK_FRAMES;
use crate::decode::Decoder;
use crate::error::{Error, Result};
use crate::loudness::{LoudnessFigures, LoudnessMeter};
use lathe_model::delivery::outlet::LossyCodec;

/// The Opus bitrate, bits per second (transparent for stereo music).
pub const OPUS_BITRATE_BPS: i32 = 160_000;
/// Opus frame: 20 ms at 48 kHz.
const OPUS_FRAME: usize = 960;
/// Largest Opus packet.
const OPUS_MAX_PACKET: usize = 4000;
/// The Ogg serial number of lathe's Opus streams (fixed: same input, same bytes).
const OGG_SERIAL: u32 = 0x6c61_7468;

fn codec_error(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::Encode {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Encodes `input` (a PCM master, any format lathe decodes; 48 kHz for Opus) to `output` with
/// `codec`. The file is written as given; temporary names are the caller's business.
///
/// # Errors
/// A decode error of the input; [`Error::Encode`] if the codec refuses the format or fails;
/// [`Error::Io`] on a write failure.
pub fn encode(codec: LossyCodec, input: &Path, output: &Path) -> Result<()> {
    match codec {
        LossyCodec::Mp3Cbr320 | LossyCodec::Mp3V0 => encode_mp3(codec, input, output),
        LossyCodec::Opus => encode_opus(input, output),
    }
}

fn encode_mp3(codec: LossyCodec, input: &Path, output: &Path) -> Result<()> {
    let mut decoder = Decoder::open(input)?;
    let info = decoder.info().clone();
    let err = |e: &dyn std::fmt::Display| codec_error(output, format!("LAME: {e}"));
    let mut builder = Builder::new().ok_or_else(|| err(&"cannot start the encoder"))?;
    builder
        .set_num_channels(info.channel_count.min(2) as u8)
        .map_err(|e| err(&e))?;
    builder
        .set_sample_rate(info.sample_rate_hz)
        .map_err(|e| err(&e))?;
    builder.set_quality(Quality::Best).map_err(|e| err(&e))?;
    builder.set_to_write_vbr_tag(true).map_err(|e| err(&e))?;
    match codec {
        LossyCodec::Mp3V0 => {
            builder.set_vbr_mode(VbrMode::Mtrh).map_err(|e| err(&e))?;
            builder
                .set_vbr_quality(Quality::Best)
                .map_err(|e| err(&e))?;
        }
        _ => {
            builder.set_vbr_mode(VbrMode::Off).map_err(|e| err(&e))?;
            builder.set_brate(Bitrate::Kbps320).map_err(|e| err(&e))?;
        }
    }
    let mut encoder = builder.build().map_err(|e| err(&e))?;
    if info.channel_count > 2 {
        return Err(codec_error(
            output,
            format!("{} channels; MP3 carries 1 or 2", info.channel_count),
        ));
    }
    let file = File::create(output).map_err(|e| Error::io(output, e))?;
    let mut out = BufWriter::new(file);
    let mut block = AudioBlock::new(info.channel_count, BLOCK_FRAMES, info.sample_rate_hz);
    let mut bytes = Vec::with_capacity(mp3lame_encoder::max_required_buffer_size(BLOCK_FRAMES));
    while decoder.read(&mut block)? > 0 {
        bytes.clear();
        let n = block.frames();
        if info.channel_count == 1 {
            encoder
                .encode_to_vec(MonoPcm(&block.channel(0)[..n]), &mut bytes)
                .map_err(|e| err(&e))?;
        } else {
            let input = DualPcm {
                left: &block.channel(0)[..n],
                right: &block.channel(1)[..n],
            };
            encoder
                .encode_to_vec(input, &mut bytes)
                .map_err(|e| err(&e))?;
        }
        out.write_all(&bytes).map_err(|e| Error::io(output, e))?;
    }
    bytes.clear();
    encoder
        .flush_to_vec::<FlushGap>(&mut bytes)
        .map_err(|e| err(&e))?;
    out.write_all(&bytes).map_err(|e| Error::io(output, e))?;
    // LAME's first frame was a placeholder of this size; now that the stream is complete it can
    // be written with the frame count, the delay and the padding.
    bytes.clear();
    bytes.reserve(encoder.lame_tag_size());
    encoder
        .lame_tag_encode_to_vec(&mut bytes)
        .ok_or_else(|| err(&"LAME gave no Xing/LAME tag"))?;
    out.seek(SeekFrom::Start(0))
        .and_then(|_| out.write_all(&bytes))
        .and_then(|()| out.flush())
        .map_err(|e| Error::io(output, e))?;
    out.get_ref().sync_all().map_err(|e| Error::io(output, e))
}

/// The `OpusHead` packet (RFC 7845 §5.1).
fn opus_head(channels: u8, pre_skip: u16, input_rate_hz: u32) -> Vec<u8> {
    let mut head = b"OpusHead".to_vec();
    head.push(1);
    head.push(channels);
    head.extend_from_slice(&pre_skip.to_le_bytes());
    head.extend_from_slice(&input_rate_hz.to_le_bytes());
    head.extend_from_slice(&0i16.to_le_bytes()); // output gain
    head.push(0); // channel mapping family 0: mono or stereo
    head
}

/// An `OpusTags` packet with the vendor string only (tags are written afterwards, by
/// [`crate::tags::write_tags`]).
fn opus_tags() -> Vec<u8> {
    let vendor = format!("lathe {}", env!("CARGO_PKG_VERSION"));
    let mut tags = b"OpusTags".to_vec();
    tags.extend_from_slice(&(vendor.len() as u32).to_le_bytes());
    tags.extend_from_slice(vendor.as_bytes());
    tags.extend_from_slice(&0u32.to_le_bytes());
    tags
}

fn encode_opus(input: &Path, output: &Path) -> Result<()> {
    let mut decoder = Decoder::open(input)?;
    let info = decoder.info().clone();
    let err = |e: &dyn std::fmt::Display| codec_error(output, format!("Opus: {e}"));
    if info.sample_rate_hz != 48_000 {
        return Err(err(&format!(
            "the master is at {} Hz; Opus is made from 48 kHz",
            info.sample_rate_hz
        )));
    }
    let channels = match info.channel_count {
        1 => opus::Channels::Mono,
        2 => opus::Channels::Stereo,
        n => {
            return Err(err(&format!(
                "{n} channels; lathe writes mono or stereo Opus"
            )));
        }
    };
    let count = info.channel_count;
    let mut encoder =
        opus::Encoder::new(48_000, channels, opus::Application::Audio).map_err(|e| err(&e))?;
    encoder
        .set_bitrate(opus::Bitrate::Bits(OPUS_BITRATE_BPS))
        .map_err(|e| err(&e))?;
    encoder.set_vbr(true).map_err(|e| err(&e))?;
    encoder.set_complexity(10).map_err(|e| err(&e))?;
    let pre_skip = encoder.get_lookahead().map_err(|e| err(&e))?.max(0) as u64;

    let file = File::create(output).map_err(|e| Error::io(output, e))?;
    let mut writer = PacketWriter::new(BufWriter::new(file));
    let io = |e: std::io::Error| Error::io(output, e);
    writer
        .write_packet(
            opus_head(count as u8, pre_skip as u16, info.sample_rate_hz),
            OGG_SERIAL,
            PacketWriteEndInfo::EndPage,
            0,
        )
        .map_err(io)?;
    writer
        .write_packet(opus_tags(), OGG_SERIAL, PacketWriteEndInfo::EndPage, 0)
        .map_err(io)?;

    // Interleaved frames waiting to be encoded, then encoded one 20 ms frame at a time. A packet is
    // written once the next one exists, so that the last can close the stream.
    let mut pending: Vec<f32> = Vec::with_capacity((BLOCK_FRAMES + OPUS_FRAME) * count);
    let mut packet = vec![0u8; OPUS_MAX_PACKET];
    let mut held: Option<Vec<u8>> = None;
    let mut frames_in = 0u64;
    let mut frames_encoded = 0u64;
    let mut block = AudioBlock::new(count, BLOCK_FRAMES, 48_000);
    let mut emit = |frame: &[f32],
                    held: &mut Option<Vec<u8>>,
                    frames_encoded: &mut u64,
                    writer: &mut PacketWriter<'_, BufWriter<File>>|
     -> Result<()> {
        let size = encoder
            .encode_float(frame, &mut packet)
            .map_err(|e| err(&e))?;
        if let Some(previous) = held.take() {
            writer
                .write_packet(
                    previous,
                    OGG_SERIAL,
                    PacketWriteEndInfo::NormalPacket,
                    // RFC 7845 §4: a page's granule position counts every frame its packets
                    // decode to, the pre-skip included (only the last page's trims the padding).
                    *frames_encoded,
                )
                .map_err(io)?;
        }
        *frames_encoded += OPUS_FRAME as u64;
        *held = Some(packet[..size].to_vec());
        Ok(())
    };
    loop {
        let n = decoder.read(&mut block)?;
        for i in 0..n {
            for c in 0..count {
                pending.push(block.channel(c)[i]);
            }
        }
        frames_in += n as u64;
        let whole = pending.len() / (OPUS_FRAME * count) * OPUS_FRAME * count;
        for frame in pending[..whole].chunks(OPUS_FRAME * count) {
            emit(frame, &mut held, &mut frames_encoded, &mut writer)?;
        }
        pending.drain(..whole);
        if n == 0 {
            break;
        }
    }
    // Flush: the rest, then enough silence to push the look-ahead out.
    let total_needed = frames_in + pre_skip;
    while frames_encoded < total_needed || !pending.is_empty() {
        pending.resize(OPUS_FRAME * count, 0.0);
        let frame = std::mem::take(&mut pending);
        emit(&frame, &mut held, &mut frames_encoded, &mut writer)?;
    }
    if let Some(last) = held.take() {
        writer
            .write_packet(
                last,
                OGG_SERIAL,
                PacketWriteEndInfo::EndStream,
                pre_skip + frames_in,
            )
            .map_err(io)?;
    }
    let mut out = writer.into_inner();
    out.flush().map_err(io)?;
    out.get_ref().sync_all().map_err(io)
}

/// Loudness and true peak of a lossy file as a listener's decoder gives it, and its length in
/// frames.
///
/// # Errors
/// A decode error.
pub fn decoded_figures(path: &Path) -> Result<(LoudnessFigures, u64)> {
    // lathe's own decoder: gapless MP3 by Symphonia, Opus by libopus at 48 kHz.
    let mut decoder = Decoder::open(path)?;
    let info = decoder.info().clone();
    let mut meter = LoudnessMeter::new(info.channel_count, info.sample_rate_hz);
    let mut block = AudioBlock::new(info.channel_count, BLOCK_FRAMES, info.sample_rate_hz);
    let mut frames = 0u64;
    while decoder.read(&mut block)? > 0 {
        meter.add(&block);
        frames += block.frames() as u64;
    }
    Ok((meter.figures(), frames))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::Encoder;
    use lathe_model::stage_config::{Container, EncodeSpec};

    fn sine_master(dir: &Path, rate: u32, amplitude: f32) -> std::path::PathBuf {
        let path = dir.join(format!("sine-{rate}.wav"));
        let frames = rate as usize * 3;
        let signal: Vec<f32> = (0..frames)
            .map(|i| {
                amplitude * (2.0 * std::f32::consts::PI * 997.0 * i as f32 / rate as f32).sin()
            })
            .collect();
        let spec = EncodeSpec {
            container: Container::Wav,
            bit_depth: 32,
        };
        let mut encoder = Encoder::create(&path, &spec, 2, rate).unwrap();
        encoder
            .write(&AudioBlock::from_channels(
                vec![signal.clone(), signal],
                rate,
            ))
            .unwrap();
        encoder.finish().unwrap();
        path
    }

    #[test]
    fn every_codec_round_trips_a_sine_at_its_level() {
        let dir = tempfile::tempdir().unwrap();
        // A 997 Hz sine at -6 dBFS: true peak -6.0 dBTP, loudness -6 - 3.01 + 0.69 ... per channel.
        let master_441 = sine_master(dir.path(), 44_100, 0.5);
        let master_48 = sine_master(dir.path(), 48_000, 0.5);
        for codec in [LossyCodec::Mp3Cbr320, LossyCodec::Mp3V0, LossyCodec::Opus] {
            let input = if codec == LossyCodec::Opus {
                &master_48
            } else {
                &master_441
            };
            let output = dir
                .path()
                .join(format!("{}.{}", codec.as_str(), codec.extension()));
            encode(codec, input, &output).unwrap();
            let (figures, frames) = decoded_figures(&output).unwrap();
            let peak = figures.true_peak_dbtp.unwrap();
            assert!((peak + 6.02).abs() < 0.3, "{codec:?}: {peak}");
            let source_lufs = crate::qc::analyze_file(input)
                .unwrap()
                .integrated_lufs
                .unwrap();
            let lufs = figures.integrated_lufs.unwrap();
            assert!(
                (lufs - source_lufs).abs() < 0.2,
                "{codec:?}: {lufs} vs {source_lufs}"
            );
            let input_frames = if codec == LossyCodec::Opus {
                3 * 48_000
            } else {
                3 * 44_100
            };
            assert_eq!(
                frames, input_frames,
                "{codec:?} decodes to the input's length"
            );
        }
    }

    /// The lag (in frames, within `max_lag`) at which `decoded` best matches `reference`.
    fn best_lag(reference: &[f32], decoded: &[f32], max_lag: isize) -> isize {
        let score = |lag: isize| -> f64 {
            reference
                .iter()
                .enumerate()
                .filter_map(|(i, &r)| {
                    let j = i as isize + lag;
                    (0..decoded.len() as isize)
                        .contains(&j)
                        .then(|| f64::from(r) * f64::from(decoded[j as usize]))
                })
                .sum()
        };
        (-max_lag..=max_lag)
            .max_by(|&a, &b| score(a).total_cmp(&score(b)))
            .unwrap()
    }

    #[test]
    fn mp3_is_gapless_sample_aligned_and_of_the_input_length() {
        let dir = tempfile::tempdir().unwrap();
        let rate = 44_100;
        // Deterministic noise bursts between silences: any encoder delay left in would show as a lag.
        let mut state = 0x2545_f491_u32;
        let signal: Vec<f32> = (0..rate as usize)
            .map(|i| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                let noise = (state as f32 / u32::MAX as f32 - 0.5) * 0.6;
                if (i / 4410) % 2 == 1 { noise } else { 0.0 }
            })
            .collect();
        let master = dir.path().join("bursts.wav");
        let spec = EncodeSpec {
            container: Container::Wav,
            bit_depth: 32,
        };
        let mut encoder = Encoder::create(&master, &spec, 2, rate).unwrap();
        encoder
            .write(&AudioBlock::from_channels(
                vec![signal.clone(), signal.clone()],
                rate,
            ))
            .unwrap();
        encoder.finish().unwrap();
        for codec in [LossyCodec::Mp3Cbr320, LossyCodec::Mp3V0] {
            let output = dir.path().join(format!("{}.mp3", codec.as_str()));
            encode(codec, &master, &output).unwrap();
            let mut decoder = Decoder::open(&output).unwrap();
            let mut block = AudioBlock::new(2, BLOCK_FRAMES, rate);
            let mut decoded = Vec::new();
            while decoder.read(&mut block).unwrap() > 0 {
                decoded.extend_from_slice(&block.channel(0)[..block.frames()]);
            }
            assert_eq!(decoded.len(), signal.len(), "{codec:?}: decoded length");
            assert_eq!(best_lag(&signal, &decoded, 1200), 0, "{codec:?}: lag");
        }
    }
}
