//! The profile parser: bytes as TOML text through `Profile::from_toml`. A profile that parses and
//! validates must write back to TOML that parses to the same profile, and must build: its stages,
//! restorers, limiter and dither at a common and an extreme shape (building checks the values that
//! depend on the sample rate, such as a frequency above Nyquist, and may refuse them).
#![no_main]

use lathe_engine::chain::BuildChain;
use lathe_model::profile::Profile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(profile) = Profile::from_toml(text, "fuzz.toml") else {
        return;
    };
    let written = profile.to_toml();
    let again = Profile::from_toml(&written, "written.toml").unwrap_or_else(|e| {
        panic!("a valid profile writes TOML that does not parse: {e}\n{written}")
    });
    assert_eq!(profile, again, "{written}");
    for (channels, rate_hz) in [(2, 44_100), (1, 8_000), (8, 384_000)] {
        let _ = profile.build_stages(channels, rate_hz, 512);
        let _ = profile.build_restore(channels, rate_hz, 512, None);
        let _ = profile.build_limiter(channels, rate_hz, 512);
        let _ = profile.build_quantiser(profile.output.bit_depth, channels, rate_hz, 1);
    }
});
