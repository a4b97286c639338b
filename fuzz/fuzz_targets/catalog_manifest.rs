//! The catalogue manifest parser: bytes as TOML text through `Catalogue::from_toml`, and a
//! catalogue that validates through the delivery planner (`DeliveryPlan::of`), as `lathe master
//! MANIFEST.toml` and `lathe submit` use it. Errors are fine; a panic is a bug. Track files
//! resolve against an empty folder; a track's profile may name a preset.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use lathe_model::catalog::{Catalogue, normalise_isrc, normalise_upc};
use lathe_model::delivery::plan::DeliveryPlan;
use libfuzzer_sys::fuzz_target;

fn root() -> &'static PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        tempfile::Builder::new()
            .prefix("lathe-fuzz-catalog-")
            .tempdir()
            .expect("a temporary folder")
            .keep()
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(catalogue) = Catalogue::from_toml(text, Path::new("fuzz.toml"), root()) else {
        return;
    };
    // Validation leaves codes in their normal form: normalising again changes nothing.
    for album in &catalogue.albums {
        if let Some(upc) = &album.upc {
            assert_eq!(normalise_upc(upc).as_ref(), Ok(upc));
        }
        for track in &album.tracks {
            if let Some(isrc) = &track.isrc {
                assert_eq!(normalise_isrc(isrc).as_ref(), Ok(isrc));
            }
        }
    }
    for rate_hz in [Some(44_100), None, Some(384_000)] {
        let _ = DeliveryPlan::of(&catalogue, &|_: &Path| rate_hz);
    }
});
