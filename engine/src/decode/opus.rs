//! Opus, decoded by libopus (the `opus` crate) behind Symphonia's [`AudioDecoder`] trait.
//!
//! Symphonia's Ogg reader maps an Opus stream (RFC 7845) but has no Opus decoder: its codec
//! parameters carry the `OpusHead` packet as extra data, its packets are timed in 48 kHz frames
//! counted from the first decoded frame (the pre-skip included), and the last packet's `trim_end`
//! cuts the padding after the last page's granule position. [`OpusDecoder`] decodes each packet
//! with libopus at 48 kHz, applies the header's output gain (libopus's own gain control, in the
//! same Q7.8 dB), and drops the pre-skip from the start, so the decoded length equals the length
//! of what was encoded.
//!
//! Channel mapping family 0 (mono or stereo), and family 1 when it holds one plain stream, decode
//! with libopus's single-stream decoder. Surround (family 1 with several streams) needs libopus's
//! multistream decoder, which the `opus` crate does not expose: such a file is refused as
//! [`Error::Unsupported`] by [`check_channel_mapping`].

use std::path::Path;
use std::sync::Mutex;

use symphonia::core::audio::{
    AsGenericAudioBufferRef, AudioBuffer, AudioMut, AudioSpec, Channels, GenericAudioBufferRef,
    Position,
};
use symphonia::core::codecs::CodecInfo;
use symphonia::core::codecs::audio::well_known::CODEC_ID_OPUS;
use symphonia::core::codecs::audio::{
    AudioCodecParameters, AudioDecoder, AudioDecoderOptions, FinalizeResult,
};
use symphonia::core::codecs::registry::{RegisterableAudioDecoder, SupportedAudioCodec};
use symphonia::core::errors::{Error as SymphoniaError, Result as SymphoniaResult};
use symphonia::core::packet::PacketRef;

use super::unsupported;
use crate::error::Result;

/// Opus always decodes at 48 kHz.
const OPUS_RATE_HZ: u32 = 48_000;
/// The longest Opus packet: 120 ms at 48 kHz.
const MAX_PACKET_FRAMES: usize = 5_760;
/// The fields of an `OpusHead` packet this decoder reads end at this byte (RFC 7845 §5.1).
const OPUS_HEAD_MIN_BYTES: usize = 19;

/// What the decoder needs of an `OpusHead` packet (RFC 7845 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct OpusHead {
    channel_count: u8,
    /// 48 kHz frames to drop from the start of the decoded audio.
    pre_skip_frames: u16,
    /// Gain to apply to the decoded audio, Q7.8 dB.
    output_gain_q8_db: i16,
    channel_mapping_family: u8,
    /// For mapping families other than 0: how many Opus streams each packet holds.
    stream_count: u8,
}

impl OpusHead {
    /// Parses the packet; `None` if it is not an `OpusHead` or is cut short.
    fn parse(packet: &[u8]) -> Option<Self> {
        if packet.len() < OPUS_HEAD_MIN_BYTES || !packet.starts_with(b"OpusHead") {
            return None;
        }
        let channel_mapping_family = packet[18];
        let stream_count = if channel_mapping_family == 0 {
            1
        } else {
            *packet.get(19)?
        };
        Some(Self {
            channel_count: packet[9],
            pre_skip_frames: u16::from_le_bytes([packet[10], packet[11]]),
            output_gain_q8_db: i16::from_le_bytes([packet[16], packet[17]]),
            channel_mapping_family,
            stream_count,
        })
    }

    /// The single-stream layout of libopus's plain decoder, if the packets are of that kind.
    fn single_stream_channels(&self) -> Option<opus::Channels> {
        let single_stream = self.channel_mapping_family == 0 || self.stream_count == 1;
        match self.channel_count {
            1 if single_stream => Some(opus::Channels::Mono),
            2 if single_stream => Some(opus::Channels::Stereo),
            _ => None,
        }
    }
}

/// Refuses an Opus stream this decoder cannot decode, naming its channel mapping; any other
/// codec passes.
///
/// # Errors
/// [`crate::Error::Unsupported`] for an Opus stream without a readable `OpusHead`, or one whose
/// packets hold several streams (surround).
pub(super) fn check_channel_mapping(path: &Path, params: &AudioCodecParameters) -> Result<()> {
    if params.codec != CODEC_ID_OPUS {
        return Ok(());
    }
    let Some(head) = params.extra_data.as_deref().and_then(OpusHead::parse) else {
        return Err(unsupported(path, "Opus stream without a readable OpusHead"));
    };
    if head.single_stream_channels().is_some() {
        return Ok(());
    }
    Err(unsupported(
        path,
        &format!(
            "Opus channel mapping family {} with {} channels in {} streams: lathe decodes mono \
             and stereo Opus (libopus's multistream decoder for surround is not available)",
            head.channel_mapping_family, head.channel_count, head.stream_count
        ),
    ))
}

/// An Opus decoder for Symphonia's codec registry (see the module docs).
pub(super) struct OpusDecoder {
    params: AudioCodecParameters,
    /// libopus's decoder is `Send` but not `Sync`, which Symphonia's trait asks for: the mutex
    /// gives that, and is never locked (`&mut self` reaches the decoder through `get_mut`).
    decoder: Mutex<opus::Decoder>,
    channel_count: usize,
    /// Trim the pre-skip and the padding the packets announce.
    gapless: bool,
    /// Frames of the pre-skip not yet dropped.
    pre_skip_left: usize,
    /// No packet decoded yet: the first one's timestamp says whether the stream starts early.
    at_start: bool,
    /// One packet's decoded samples, interleaved as libopus writes them.
    interleaved: Vec<f32>,
    /// The current packet's trimmed frames, one plane per channel.
    buffer: AudioBuffer<f32>,
}

impl OpusDecoder {
    const CODECS: &'static [SupportedAudioCodec] = &[SupportedAudioCodec {
        id: CODEC_ID_OPUS,
        info: CodecInfo {
            short_name: "opus",
            long_name: "Opus (libopus)",
            profiles: &[],
        },
    }];

    fn try_new(
        params: &AudioCodecParameters,
        options: &AudioDecoderOptions,
    ) -> SymphoniaResult<Self> {
        let head = params
            .extra_data
            .as_deref()
            .and_then(OpusHead::parse)
            .ok_or(SymphoniaError::DecodeError("opus: no valid OpusHead"))?;
        let layout = head
            .single_stream_channels()
            .ok_or(SymphoniaError::Unsupported(
                "opus: surround (several streams a packet) needs libopus's multistream decoder",
            ))?;
        let libopus = |e: opus::Error| SymphoniaError::DecodeError(e.description());
        let mut decoder = opus::Decoder::new(OPUS_RATE_HZ, layout).map_err(libopus)?;
        decoder
            .set_gain(i32::from(head.output_gain_q8_db))
            .map_err(libopus)?;
        let channel_count = usize::from(head.channel_count);
        let channels = params.channels.clone().unwrap_or(match channel_count {
            1 => Channels::Positioned(Position::FRONT_LEFT),
            _ => Channels::Positioned(Position::FRONT_LEFT | Position::FRONT_RIGHT),
        });
        Ok(Self {
            params: params.clone(),
            decoder: Mutex::new(decoder),
            channel_count,
            gapless: options.gapless,
            pre_skip_left: usize::from(head.pre_skip_frames),
            at_start: true,
            interleaved: vec![0.0; MAX_PACKET_FRAMES * channel_count],
            buffer: AudioBuffer::new(AudioSpec::new(OPUS_RATE_HZ, channels), MAX_PACKET_FRAMES),
        })
    }

    fn decode_packet(&mut self, packet: &PacketRef<'_>) -> SymphoniaResult<()> {
        self.buffer.clear();
        if packet.data.is_empty() {
            // libopus would conceal a lost packet; in a file, an empty packet is damage.
            return Err(SymphoniaError::DecodeError("opus: empty packet"));
        }
        let frames = self
            .decoder
            .get_mut()
            .map_err(|_| SymphoniaError::DecodeError("opus: the decoder failed before"))?
            .decode_float(packet.data, &mut self.interleaved, false)
            .map_err(|e| SymphoniaError::DecodeError(e.description()))?;
        self.buffer.render_uninit(Some(frames));
        for ch in 0..self.channel_count {
            let plane = self
                .buffer
                .plane_mut(ch)
                .ok_or(SymphoniaError::DecodeError("opus: missing audio plane"))?;
            let samples = self.interleaved[..frames * self.channel_count]
                .iter()
                .skip(ch)
                .step_by(self.channel_count);
            for (out, &sample) in plane.iter_mut().zip(samples) {
                *out = sample;
            }
        }
        if self.at_start {
            // A first page whose granule position is less than the frames it decodes to starts
            // before the stream's time zero (RFC 7845 §4.5): those frames go too.
            self.at_start = false;
            let early_frames = usize::try_from(0i64.saturating_sub(packet.pts.get())).unwrap_or(0);
            self.pre_skip_left += early_frames;
        }
        if self.gapless {
            let pre_skip = self.pre_skip_left.min(frames);
            self.pre_skip_left -= pre_skip;
            let trim_start = pre_skip.max(packet.trim_start.get() as usize);
            self.buffer.trim(trim_start, packet.trim_end.get() as usize);
        }
        Ok(())
    }
}

impl AudioDecoder for OpusDecoder {
    /// Clears libopus's state (for a seek; lathe never seeks). The pre-skip is not dropped again.
    fn reset(&mut self) {
        // Only fails for a freed decoder, which this one cannot be.
        if let Ok(decoder) = self.decoder.get_mut() {
            let _ = decoder.reset_state();
        }
        self.buffer.clear();
    }

    fn codec_info(&self) -> &CodecInfo {
        &Self::CODECS[0].info
    }

    fn codec_params(&self) -> &AudioCodecParameters {
        &self.params
    }

    fn decode_ref(&mut self, packet: &PacketRef<'_>) -> SymphoniaResult<GenericAudioBufferRef<'_>> {
        match self.decode_packet(packet) {
            Ok(()) => Ok(self.buffer.as_generic_audio_buffer_ref()),
            Err(e) => {
                self.buffer.clear();
                Err(e)
            }
        }
    }

    fn finalize(&mut self) -> FinalizeResult {
        FinalizeResult::default()
    }

    fn last_decoded(&self) -> GenericAudioBufferRef<'_> {
        self.buffer.as_generic_audio_buffer_ref()
    }
}

impl RegisterableAudioDecoder for OpusDecoder {
    fn try_registry_new(
        params: &AudioCodecParameters,
        options: &AudioDecoderOptions,
    ) -> SymphoniaResult<Box<dyn AudioDecoder>> {
        Ok(Box::new(Self::try_new(params, options)?))
    }

    fn supported_codecs() -> &'static [SupportedAudioCodec] {
        Self::CODECS
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::process::Command;

    use super::*;
    use crate::audio::AudioBlock;
    use crate::decode::Decoder;
    use crate::decode::fixtures::{decode_all, ffmpeg, grid_signal, write_wav};
    use crate::decode::ogg::fixtures::{page_spans, rewrite_crc};
    use crate::error::Error;

    /// A 16-bit WAV of `grid_signal(channels, frames)` at 48 kHz, as Opus made by `encoder`
    /// (`opusenc` or ffmpeg's libopus).
    fn opus_fixture(dir: &Path, encoder: &str, channels: usize, frames: usize) -> PathBuf {
        let wav = dir.join(format!("source-{channels}-{frames}.wav"));
        if !wav.exists() {
            write_wav(&wav, &grid_signal(channels, frames, 48_000, 16), 16, false);
        }
        let opus = dir.join(format!("{encoder}-{channels}-{frames}.opus"));
        if encoder == "opusenc" {
            let status = Command::new("opusenc")
                .arg("--quiet")
                .arg(&wav)
                .arg(&opus)
                .status()
                .unwrap();
            assert!(status.success());
        } else {
            ffmpeg(&wav, &["-c:a", "libopus"], &opus);
        }
        opus
    }

    /// What ffmpeg decodes from `path` with `decoder` (`libopus` or its native `opus`), in
    /// floating point (ffmpeg's libopus decoder otherwise rounds to 16 bits), one vector per
    /// channel.
    fn ffmpeg_decode(path: &Path, decoder: &str, channels: usize) -> Vec<Vec<f32>> {
        let output = Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error"])
            .args(["-request_sample_fmt", "flt", "-c:a", decoder, "-i"])
            .arg(path)
            .args(["-f", "f32le", "-"])
            .output()
            .unwrap();
        assert!(output.status.success(), "ffmpeg decodes {}", path.display());
        let samples: Vec<f32> = output
            .stdout
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        (0..channels)
            .map(|ch| samples.iter().skip(ch).step_by(channels).copied().collect())
            .collect()
    }

    /// Signal-to-noise ratio of `decoded` against `reference`, dB, over all channels.
    fn snr_db(decoded: &AudioBlock, reference: &[Vec<f32>]) -> f64 {
        let (mut signal, mut noise) = (0.0f64, 0.0f64);
        for (ch, expected) in reference.iter().enumerate() {
            for (&a, &b) in decoded.channel(ch).iter().zip(expected) {
                signal += f64::from(b) * f64::from(b);
                noise += (f64::from(a) - f64::from(b)).powi(2);
            }
        }
        10.0 * (signal / noise.max(f64::MIN_POSITIVE)).log10()
    }

    #[test]
    fn opusenc_and_ffmpeg_files_decode_to_the_source_length_as_ffmpeg_does() {
        let dir = tempfile::tempdir().unwrap();
        for channels in [1, 2] {
            // Not a multiple of any Opus frame size.
            let frames = 2 * 48_000 + 12_345;
            for encoder in ["opusenc", "ffmpeg"] {
                let what = format!("{encoder}, {channels} channels");
                let path = opus_fixture(dir.path(), encoder, channels, frames);
                let decoder = Decoder::open(&path).unwrap_or_else(|e| panic!("{what}: {e}"));
                let info = decoder.info();
                assert_eq!(
                    (info.container.as_str(), info.codec.as_str()),
                    ("ogg", "opus"),
                    "{what}"
                );
                assert_eq!(
                    (info.sample_rate_hz, info.channel_count),
                    (48_000, channels),
                    "{what}"
                );
                assert_eq!(info.frames, Some(frames as u64), "{what}");
                assert!(info.notes.is_empty(), "{what}: {:?}", info.notes);
                let decoded = decode_all(&path, 4096).unwrap();
                assert_eq!(decoded.frames(), frames, "{what}");
                for capacity in [1, 1000] {
                    assert_eq!(decode_all(&path, capacity).unwrap(), decoded, "{what}");
                }
                // ffmpeg with libopus (Debian's 1.3.1; lathe links 1.6.1) and with its own
                // decoder: not bit-exact, about 140 dB apart, far above any misalignment or
                // missing gain.
                for ffmpeg_decoder in ["libopus", "opus"] {
                    let reference = ffmpeg_decode(&path, ffmpeg_decoder, channels);
                    assert_eq!(reference[0].len(), frames, "{what}, {ffmpeg_decoder}");
                    let snr = snr_db(&decoded, &reference);
                    eprintln!("{what}: SNR against ffmpeg's {ffmpeg_decoder}: {snr:.1} dB");
                    assert!(snr > 100.0, "{what}, {ffmpeg_decoder}: SNR {snr:.1} dB");
                }
            }
        }
    }

    #[test]
    fn lathes_own_opus_deliverables_decode_to_their_exact_length() {
        use crate::album::lossy::encode;
        use lathe_model::delivery::outlet::LossyCodec;

        let dir = tempfile::tempdir().unwrap();
        // Several pages: every page's granule position must count the pre-skip once.
        let frames = 3 * 48_000 + 777;
        let wav = dir.path().join("master.wav");
        let signal = grid_signal(2, frames, 48_000, 0);
        write_wav(&wav, &signal, 32, true);
        let opus = dir.path().join("master.opus");
        encode(LossyCodec::Opus, &wav, &opus).unwrap();
        let decoded = decode_all(&opus, 4096).unwrap();
        assert_eq!(decoded.frames(), frames);
        assert_eq!(
            ffmpeg_decode(&opus, "libopus", 2)[0].len(),
            frames,
            "ffmpeg"
        );
        let master: Vec<Vec<f32>> = (0..2).map(|ch| signal.channel(ch).to_vec()).collect();
        let snr = snr_db(&decoded, &master);
        assert!(snr > 10.0, "SNR {snr:.1} dB against the master");
    }

    /// Rewrites the output gain in the `OpusHead` page of `bytes`.
    fn set_output_gain(bytes: &mut [u8], gain_q8_db: i16) {
        let head = page_spans(bytes)[0].clone();
        let page = &mut bytes[head];
        let at = page.windows(8).position(|w| w == b"OpusHead").unwrap();
        page[at + 16..at + 18].copy_from_slice(&gain_q8_db.to_le_bytes());
        rewrite_crc(page);
    }

    #[test]
    fn the_header_output_gain_is_applied() {
        let dir = tempfile::tempdir().unwrap();
        let path = opus_fixture(dir.path(), "opusenc", 2, 48_000);
        let plain = decode_all(&path, 4096).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        // -6.02 dB: half the amplitude.
        set_output_gain(&mut bytes, -1541);
        let quieter = dir.path().join("quieter.opus");
        std::fs::write(&quieter, &bytes).unwrap();
        let decoded = decode_all(&quieter, 4096).unwrap();
        assert_eq!(decoded.frames(), plain.frames());
        let gain = 10f64.powf(-1541.0 / (20.0 * 256.0)) as f32;
        for ch in 0..2 {
            let worst = decoded
                .channel(ch)
                .iter()
                .zip(plain.channel(ch))
                .map(|(&a, &b)| (a - b * gain).abs())
                .fold(0.0f32, f32::max);
            assert!(worst < 1e-5, "channel {ch}: off by {worst}");
        }
    }

    #[test]
    fn an_invalid_opus_packet_is_a_decode_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = opus_fixture(dir.path(), "opusenc", 2, 3 * 48_000);
        let mut bytes = std::fs::read(&path).unwrap();
        let pages = page_spans(&bytes);
        // The first packet of the third audio page, which starts on that page.
        let span = pages[4].clone();
        let page = &mut bytes[span];
        assert_eq!(page[5] & 0x01, 0, "the page starts with a whole packet");
        let packet = 27 + usize::from(page[26]);
        // A code 3 packet (RFC 6716 §3.2.5) that holds no frames: invalid.
        page[packet] |= 0x03;
        page[packet + 1] = 0;
        rewrite_crc(page);
        let damaged = dir.path().join("damaged.opus");
        std::fs::write(&damaged, &bytes).unwrap();
        let err = decode_all(&damaged, 4096).unwrap_err();
        assert!(matches!(err, Error::Decode { .. }), "{err:?}");
        assert!(err.to_string().contains("bad packet after frame "), "{err}");
        assert!(err.to_string().contains("damaged.opus"), "{err}");
    }

    #[test]
    fn surround_opus_is_refused_naming_its_mapping() {
        let dir = tempfile::tempdir().unwrap();
        let wav = dir.path().join("surround.wav");
        write_wav(&wav, &grid_signal(6, 48_000, 48_000, 16), 16, false);
        let path = dir.path().join("surround.opus");
        ffmpeg(&wav, &["-c:a", "libopus"], &path);
        let err = Decoder::open(&path).unwrap_err();
        assert!(matches!(err, Error::Unsupported { .. }), "{err:?}");
        let message = err.to_string();
        assert!(
            message.contains("Opus channel mapping family 1 with 6 channels in 4 streams"),
            "{message}"
        );
        assert!(message.contains("surround.opus"), "{message}");
    }

    fn head(channels: u8, family: u8, streams: u8) -> Vec<u8> {
        let mut packet = b"OpusHead".to_vec();
        packet.extend_from_slice(&[1, channels]);
        packet.extend_from_slice(&312u16.to_le_bytes());
        packet.extend_from_slice(&44_100u32.to_le_bytes());
        packet.extend_from_slice(&(-256i16).to_le_bytes());
        packet.push(family);
        if family != 0 {
            packet.extend_from_slice(&[streams, channels - streams]);
            packet.extend(0..channels);
        }
        packet
    }

    #[test]
    fn opus_head_fields_are_read() {
        let parsed = OpusHead::parse(&head(2, 0, 1)).unwrap();
        assert_eq!(
            parsed,
            OpusHead {
                channel_count: 2,
                pre_skip_frames: 312,
                output_gain_q8_db: -256,
                channel_mapping_family: 0,
                stream_count: 1,
            }
        );
        assert_eq!(OpusHead::parse(&head(2, 0, 1)[..18]), None);
        assert_eq!(OpusHead::parse(b"OpusTags and some more bytes"), None);
    }

    #[test]
    fn only_single_stream_mappings_decode() {
        for (channels, family, streams, decodes) in [
            (1, 0, 1, true),
            (2, 0, 1, true),
            (2, 1, 1, true),
            (2, 1, 2, false),
            (6, 1, 4, false),
        ] {
            let parsed = OpusHead::parse(&head(channels, family, streams)).unwrap();
            assert_eq!(
                parsed.single_stream_channels().is_some(),
                decodes,
                "{channels} channels, family {family}, {streams} streams"
            );
        }
    }
}
