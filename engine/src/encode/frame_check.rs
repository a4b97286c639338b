//! The FLAC encoder's check of its own output: every frame, as soon as it is made, is decoded by
//! symphonia's FLAC decoder (an implementation independent of the encoder) and compared with the
//! samples it was made from, as `flac --verify` does with libFLAC's.
//!
//! Decoding the frame bytes in memory costs about half of decoding the finished file again (no
//! file to read, no packet parser searching for frame boundaries, no conversion to `f32`), and
//! together with [`super::WrittenAudio::check_file`], which confirms the file on disk still holds
//! exactly those frame bytes, it gives the same guarantee: the file decodes to the samples.

use symphonia::core::audio::{Audio, GenericAudioBufferRef};
use symphonia::core::codecs::audio::well_known::CODEC_ID_FLAC;
use symphonia::core::codecs::audio::{AudioCodecParameters, AudioDecoder, AudioDecoderOptions};
use symphonia::core::packet::PacketRef;
use symphonia::core::units::{Duration, Timestamp};

/// Decodes frames and compares them with their samples.
pub(super) struct FrameCheck {
    decoder: Box<dyn AudioDecoder>,
}

impl FrameCheck {
    /// A check for the stream that `stream_info` (a `STREAMINFO` body) describes.
    pub(super) fn new(stream_info: &[u8]) -> Result<Self, String> {
        let mut params = AudioCodecParameters::new();
        params
            .for_codec(CODEC_ID_FLAC)
            .with_extra_data(Box::from(stream_info));
        let decoder = symphonia::default::get_codecs()
            .make_audio_decoder(&params, &AudioDecoderOptions::default())
            .map_err(|e| format!("cannot start the FLAC decoder that checks frames: {e}"))?;
        Ok(Self { decoder })
    }

    /// Decodes `frame` (one whole FLAC frame) and compares it with the `frames` samples of each of
    /// `channel_count` channels in `samples` (channel `c` from `c * stride`), `bits`-bit integers.
    /// The error says what differs.
    pub(super) fn check(
        &mut self,
        frame: &[u8],
        samples: &[i32],
        stride: usize,
        channel_count: usize,
        frames: usize,
        bits: u32,
    ) -> Result<(), String> {
        let packet = PacketRef::new(0, Timestamp::new(0), Duration::new(frames as u64), frame);
        let decoded = self
            .decoder
            .decode_ref(&packet)
            .map_err(|e| format!("the decoder rejects it ({e})"))?;
        // The decoder gives 32-bit samples: the coded ones shifted to the top.
        let GenericAudioBufferRef::S32(buffer) = decoded else {
            return Err("it decodes to samples that are not 32-bit integers".to_owned());
        };
        if buffer.frames() != frames || buffer.num_planes() != channel_count {
            return Err(format!(
                "it decodes to {} frames of {} channels, not {frames} of {channel_count}",
                buffer.frames(),
                buffer.num_planes()
            ));
        }
        let shift = 32 - bits;
        for channel in 0..channel_count {
            let expected = &samples[channel * stride..channel * stride + frames];
            let same = buffer.plane(channel).is_some_and(|plane| {
                plane.len() == frames
                    && plane
                        .iter()
                        .zip(expected)
                        .fold(true, |all, (&d, &e)| all & (d == e << shift))
            });
            if !same {
                return Err(format!("channel {channel} decodes to other samples"));
            }
        }
        Ok(())
    }
}
