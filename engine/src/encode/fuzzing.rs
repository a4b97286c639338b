//! The encoder's inner checks for the fuzz targets in `fuzz/` (the `fuzzing` feature): not part of
//! the engine's API, which reaches them only through [`super::Encoder::check_frames`].

use super::flac_format::STREAMINFO_LEN;
use super::frame_check::FrameCheck;

/// Runs the encoder's FLAC frame check (`encode/frame_check.rs`) on `frame`, read as the first
/// frame of a fixed-blocksize stream at `sample_rate_hz`, against its `frames` samples of each of
/// `channel_count` channels in `samples` (channel `c` from `c * frames`), `bits`-bit integers.
/// The error says what differs.
///
/// The caller keeps the encoder's side of the contract, as [`super::Encoder`] does: 1 to 8
/// channels, 1 to 65536 frames, `samples` holding them all, `bits` of 8 to 24 and every sample
/// within `bits` bits. The frame itself may be anything.
///
/// # Errors
/// The check's reason, in words.
pub fn check_flac_frame(
    sample_rate_hz: u32,
    frame: &[u8],
    samples: &[i32],
    channel_count: usize,
    frames: usize,
    bits: u32,
) -> Result<(), String> {
    // The check reads only the sample rate (bytes 10 to 12, 20 bits) of the STREAMINFO.
    let mut stream_info = [0u8; STREAMINFO_LEN];
    let rate = sample_rate_hz & 0xF_FFFF;
    stream_info[10] = (rate >> 12) as u8;
    stream_info[11] = (rate >> 4) as u8;
    stream_info[12] = ((rate & 0x0F) << 4) as u8;
    FrameCheck::new(&stream_info)?.check(frame, samples, frames, channel_count, frames, bits)
}
