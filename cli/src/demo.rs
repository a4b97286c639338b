//! `lathe demo`: a rough album, generated, then mastered.

use std::path::Path;

use anyhow::Context;
use lathe_model::profile::Profile;
use lathe_synth::{demo_album, write_wav};

use crate::master::master_inputs;
use crate::{EXIT_USAGE, Streams};

/// Writes the demo album to `DIR/source` as 32-bit float WAV (so its over-loud peaks survive) and
/// masters it into `DIR/masters`.
pub fn run(
    dir: &Path,
    profile: &str,
    jobs: Option<usize>,
    streams: &mut Streams<'_>,
) -> anyhow::Result<i32> {
    let profile = match Profile::load(profile) {
        Ok(profile) => profile,
        Err(error) => {
            writeln!(streams.err, "lathe: {error}")?;
            return Ok(EXIT_USAGE);
        }
    };
    let source = dir.join("source");
    std::fs::create_dir_all(&source)
        .with_context(|| format!("cannot create {}", source.display()))?;
    writeln!(
        streams.out,
        "Generating a rough demo album in {}",
        source.display()
    )?;
    for (name, recipe) in demo_album(44_100) {
        let path = source.join(format!("{name}.wav"));
        write_wav(&recipe, &path, 32)?;
        writeln!(
            streams.out,
            "  {} ({:.0} s)",
            path.display(),
            recipe.duration_s
        )?;
    }
    let masters = dir.join("masters");
    writeln!(
        streams.out,
        "Mastering with profile {} into {}",
        profile.name,
        masters.display()
    )?;
    match master_inputs(&[source], &profile, &masters, jobs, streams)? {
        Ok(status) => Ok(status),
        Err(usage) => {
            writeln!(streams.err, "lathe: {}", usage.0)?;
            Ok(EXIT_USAGE)
        }
    }
}
