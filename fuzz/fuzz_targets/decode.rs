//! The decoders through `Decoder::open` (WAV, AIFF, RF64/BW64/Wave64, FLAC, MP3, Ogg Vorbis/Opus/
//! FLAC, MP4/ALAC/AAC, WavPack): the input is written to a file, opened and read to its end. Any
//! error is a fine answer to a damaged file; a panic, an abort, a hang or unbounded memory is a bug.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use lathe_engine::AudioBlock;
use lathe_engine::decode::Decoder;
use libfuzzer_sys::fuzz_target;

/// The file each input is written to: one per fuzzing process, in a folder removed at exit
/// (libFuzzer's `exit` skips destructors, so the folder sits in the system's temporary folder).
fn input_path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("lathe-fuzz-decode-")
            .tempdir()
            .expect("a temporary folder")
            .keep();
        dir.join("input")
    })
}

fuzz_target!(|data: &[u8]| {
    let path = input_path();
    std::fs::write(path, data).expect("the input written");
    let Ok(mut decoder) = Decoder::open(path) else {
        return;
    };
    let info = decoder.info().clone();
    let mut block = AudioBlock::new(info.channel_count, 4096, info.sample_rate_hz);
    while let Ok(frames) = decoder.read(&mut block) {
        if frames == 0 {
            break;
        }
        // The decoder refuses NaN and infinity: what it hands out is finite.
        assert!(
            block
                .channels()
                .all(|c| c[..frames].iter().all(|x| x.is_finite()))
        );
    }
});
