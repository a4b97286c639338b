//! The cheap plan step a scheduler runs just before handing a task out: what a task takes from the
//! outcomes of the tasks it needs (the album's level plan, the chain-input gain, the masters'
//! reports).

use crate::album_level::{album_input, plan_from_measurements};
use crate::delivery::outcome::TaskOutcome;
use crate::delivery::plan::{LevelSource, Work};
use crate::error::{Error, Result};

/// The outcome of each `needs` task holding a `T`, in order.
fn gather<'a, T>(
    needs: &[&'a TaskOutcome],
    field: impl Fn(&'a TaskOutcome) -> Option<&'a T>,
) -> Vec<&'a T> {
    needs.iter().filter_map(|o| field(o)).collect()
}

/// Fills in what `work` takes from the outcomes of its `needs` (in the order of `needs`): the
/// album's level plan, the chain-input gain, the masters' reports.
///
/// # Errors
/// [`Error::Delivery`] when the outcomes do not hold what the plan needs (e.g. a silent album).
pub fn resolve(work: &Work, needs: &[&TaskOutcome]) -> Result<Work> {
    let mut resolved = work.clone();
    let sources = gather(needs, |o| o.source.as_ref());
    match &mut resolved {
        Work::Measure(_) => {}
        Work::MeasureChain(chain) => {
            let (_, gain_db) = album_input(&sources, &chain.profile);
            chain.chain_input_gain_db = Some(gain_db);
        }
        Work::Render(render) => {
            if let LevelSource::Album {
                album,
                track,
                profile,
                level,
                warnings,
            } = &mut render.level
            {
                let chains = gather(needs, |o| o.chain.as_ref());
                let plan = plan_from_measurements(album, profile, &sources, &chains)?;
                let planned = plan.tracks.get(*track).ok_or_else(|| Error::Delivery {
                    album: album.clone(),
                    reason: format!("the plan has no track {}", *track + 1),
                })?;
                *level = Some(planned.level);
                *warnings = plan
                    .warnings
                    .iter()
                    .map(|w| format!("{}: {w}", profile.name))
                    .collect();
            }
        }
        Work::Assemble(assemble) => {
            assemble.masters = gather(needs, |o| o.report.as_ref())
                .into_iter()
                .cloned()
                .collect();
        }
    }
    Ok(resolved)
}
