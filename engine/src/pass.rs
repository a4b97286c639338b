//! One streaming pass over a track: read the source file (decoded, and resampled to the rate the
//! stages run at) or a spool an earlier pass wrote, in blocks of [`BLOCK_FRAMES`]; run stages; hand
//! on the output, latency-compensated so that it stays sample-aligned with the source. Every block
//! is reported to a progress callback, which may stop the pass ([`Error::Cancelled`]).

use std::ops::ControlFlow;
use std::path::Path;

use crate::audio::{AudioBlock, BLOCK_FRAMES};
use crate::decode::Decoder;
use crate::error::{Error, Result};
use crate::progress::{Phase, Progress};
use crate::resample::Resampler;
use crate::spool::{Spool, SpoolReader};
use crate::stage::Stage;
use lathe_model::report::StageReport;

/// A track's source audio as passes read it: the file, decoded by each pass, or a spool of an
/// earlier pass's decode (at the source's rate), read back bit for bit.
#[derive(Clone, Copy)]
pub(crate) enum Input<'a> {
    /// The source file.
    File(&'a Path),
    /// Its decoded samples, spooled.
    Spooled(&'a Spool),
}

/// What a pass reads blocks from, before any resampling.
enum Reader {
    /// Decoding the source file.
    Decoder(Box<Decoder>),
    /// A spool an earlier pass wrote.
    Spool(SpoolReader),
}

impl Reader {
    /// Fills `block` to its capacity (less at the end); 0 at the end. Decoder and spool fill
    /// every block whole, so the same audio comes in the same blocks from either.
    fn read(&mut self, block: &mut AudioBlock) -> Result<usize> {
        match self {
            Self::Decoder(decoder) => decoder.read(block),
            Self::Spool(reader) => reader.read(block),
        }
    }
}

/// Where a pass reads its audio.
enum Source {
    /// Reading at the rate the stages run at, straight into the pass's work block.
    Direct(Reader),
    /// Reading into `decoded`, resampled from there to the rate the stages run at.
    Resampled {
        reader: Reader,
        resampler: Box<Resampler>,
        decoded: AudioBlock,
    },
}

/// One streaming pass: read the source (or a spool), run stages; the output is latency-compensated
/// so it stays sample-aligned with the source.
pub(crate) struct Pass {
    source: Source,
    work: AudioBlock,
    total_frames: Option<u64>,
}

impl Pass {
    pub(crate) fn open(source: &Path, output_rate_hz: u32) -> Result<Self> {
        Self::decoding(Decoder::open(source)?, output_rate_hz)
    }

    /// A pass over `input` (the file or a spool of its decode), resampled to `output_rate_hz` if
    /// need be.
    pub(crate) fn over(input: Input<'_>, output_rate_hz: u32) -> Result<Self> {
        match input {
            Input::File(path) => Self::open(path, output_rate_hz),
            Input::Spooled(spool) => Self::reading(
                Reader::Spool(spool.reader()?),
                spool.channel_count(),
                spool.sample_rate_hz(),
                Some(spool.frames()),
                output_rate_hz,
            ),
        }
    }

    /// A pass over `source` at its own sample rate.
    pub(crate) fn open_at_source_rate(source: &Path) -> Result<Self> {
        let decoder = Decoder::open(source)?;
        let rate_hz = decoder.info().sample_rate_hz;
        Self::decoding(decoder, rate_hz)
    }

    /// A pass over what `decoder` reads, resampled to `output_rate_hz` if need be.
    pub(crate) fn decoding(decoder: Decoder, output_rate_hz: u32) -> Result<Self> {
        let info = decoder.info();
        let (channels, rate_hz, frames) = (info.channel_count, info.sample_rate_hz, info.frames);
        Self::reading(
            Reader::Decoder(Box::new(decoder)),
            channels,
            rate_hz,
            frames,
            output_rate_hz,
        )
    }

    fn reading(
        reader: Reader,
        channels: usize,
        rate_hz: u32,
        total_frames: Option<u64>,
        output_rate_hz: u32,
    ) -> Result<Self> {
        if rate_hz == output_rate_hz {
            return Ok(Self {
                work: AudioBlock::new(channels, BLOCK_FRAMES, output_rate_hz),
                total_frames,
                source: Source::Direct(reader),
            });
        }
        let resampler = Resampler::new(channels, rate_hz, output_rate_hz, BLOCK_FRAMES)?;
        Ok(Self {
            work: AudioBlock::new(
                channels,
                resampler.max_output_frames().max(BLOCK_FRAMES),
                output_rate_hz,
            ),
            total_frames,
            source: Source::Resampled {
                decoded: AudioBlock::new(channels, BLOCK_FRAMES, rate_hz),
                reader,
                resampler: Box::new(resampler),
            },
        })
    }

    /// A pass over what an earlier pass spooled, at the spool's rate.
    pub(crate) fn spooled(spool: &Spool) -> Result<Self> {
        Self::over(Input::Spooled(spool), spool.sample_rate_hz())
    }

    /// Channels of the audio the stages see.
    pub(crate) fn channel_count(&self) -> usize {
        self.work.channel_count()
    }

    /// The rate the stages run at, Hz.
    pub(crate) fn sample_rate_hz(&self) -> u32 {
        self.work.sample_rate_hz()
    }

    /// The largest block the stages will see.
    pub(crate) fn max_block_frames(&self) -> usize {
        self.work.capacity()
    }

    /// Runs `stages` over the source and compensates their latency; then `after` (stages without
    /// latency, e.g. the dither) on the aligned output, which goes to `on_output`. Running `after`
    /// only on aligned frames makes its output the same whether the stages before it ran in this
    /// pass or in an earlier one that spooled their output.
    pub(crate) fn run(
        mut self,
        stages: &mut [Box<dyn Stage>],
        after: &mut [Box<dyn Stage>],
        phase: Phase,
        progress: &mut dyn FnMut(Progress) -> ControlFlow<()>,
        mut on_source: impl FnMut(&AudioBlock),
        mut on_output: impl FnMut(&AudioBlock) -> Result<()>,
    ) -> Result<()> {
        let latency: usize = stages.iter().map(|s| s.latency_frames()).sum();
        let mut to_drop = latency;
        let mut emit = |work: &mut AudioBlock, stages: &mut [Box<dyn Stage>]| -> Result<()> {
            for stage in stages.iter_mut() {
                stage.process(work);
            }
            let drop = to_drop.min(work.frames());
            work.discard_front(drop);
            to_drop -= drop;
            if work.frames() == 0 {
                return Ok(());
            }
            for stage in after.iter_mut() {
                stage.process(work);
            }
            on_output(work)
        };
        let total = self.total_frames.unwrap_or(0).max(1) as f64;
        let mut done = 0u64;
        loop {
            match &mut self.source {
                Source::Direct(reader) => {
                    if reader.read(&mut self.work)? == 0 {
                        break;
                    }
                    on_source(&self.work);
                    done += self.work.frames() as u64;
                }
                Source::Resampled {
                    reader,
                    resampler,
                    decoded,
                } => {
                    if reader.read(decoded)? == 0 {
                        break;
                    }
                    on_source(decoded);
                    done += decoded.frames() as u64;
                    resampler.process(decoded, &mut self.work)?;
                }
            }
            if progress(Progress {
                phase,
                fraction: (done as f64 / total).min(1.0),
            })
            .is_break()
            {
                return Err(Error::Cancelled);
            }
            emit(&mut self.work, stages)?;
        }
        if let Source::Resampled { resampler, .. } = &mut self.source {
            resampler.finish(&mut self.work)?;
            emit(&mut self.work, stages)?;
        }
        let mut flush = latency;
        while flush > 0 {
            let n = flush.min(self.work.capacity());
            self.work.set_frames(n);
            self.work.fill_silence();
            emit(&mut self.work, stages)?;
            flush -= n;
        }
        Ok(())
    }
}

/// What each of `stages` did, for the track report.
pub(crate) fn stage_reports(stages: &[Box<dyn Stage>]) -> Vec<StageReport> {
    stages
        .iter()
        .filter_map(|s| {
            s.report().map(|report| StageReport {
                stage: s.name().to_owned(),
                report,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::spool::SpoolWriter;

    /// Delays its input by a fixed number of frames, and says so.
    struct Delay {
        line: Vec<Vec<f32>>,
    }

    impl Delay {
        fn new(channels: usize, frames: usize) -> Self {
            Self {
                line: vec![vec![0.0; frames]; channels],
            }
        }
    }

    impl Stage for Delay {
        fn name(&self) -> &'static str {
            "delay"
        }

        fn process(&mut self, block: &mut AudioBlock) {
            let n = block.frames();
            for (line, channel) in self.line.iter_mut().zip(block.channels_mut()) {
                line.extend_from_slice(&channel[..n]);
                channel[..n].copy_from_slice(&line[..n]);
                line.drain(..n);
            }
        }

        fn latency_frames(&self) -> usize {
            self.line[0].len()
        }

        fn reset(&mut self) {}
    }

    /// A spool of `frames` stereo frames of a ramp (each sample distinct).
    fn ramp_spool(dir: &Path, frames: usize) -> (Spool, Vec<Vec<f32>>) {
        let samples: Vec<Vec<f32>> = (0..2)
            .map(|c| (0..frames).map(|n| (n * 2 + c) as f32 * 1e-6).collect())
            .collect();
        let mut writer = SpoolWriter::create(dir.join("ramp.spool"), 2, 48_000, 1000).unwrap();
        for start in (0..frames).step_by(1000) {
            let end = (start + 1000).min(frames);
            let part = samples.iter().map(|c| c[start..end].to_vec()).collect();
            writer
                .write(&AudioBlock::from_channels(part, 48_000))
                .unwrap();
        }
        (writer.finish().unwrap(), samples)
    }

    #[test]
    fn latency_compensation_keeps_the_output_sample_aligned() {
        let dir = tempfile::tempdir().unwrap();
        // Longer than a block, not a multiple of it; delays longer than a block too.
        let frames = 2 * BLOCK_FRAMES + 123;
        let (spool, samples) = ramp_spool(dir.path(), frames);
        for delays in [vec![], vec![1], vec![100, 5000], vec![BLOCK_FRAMES, 7]] {
            let mut stages: Vec<Box<dyn Stage>> = delays
                .iter()
                .map(|&d| Box::new(Delay::new(2, d)) as Box<dyn Stage>)
                .collect();
            let mut out = vec![Vec::new(), Vec::new()];
            Pass::spooled(&spool)
                .unwrap()
                .run(
                    &mut stages,
                    &mut [],
                    Phase::Chain,
                    &mut |_| ControlFlow::Continue(()),
                    |_| {},
                    |block| {
                        for (all, part) in out.iter_mut().zip(block.channels()) {
                            all.extend_from_slice(part);
                        }
                        Ok(())
                    },
                )
                .unwrap();
            assert_eq!(out, samples, "delays {delays:?}");
        }
    }

    #[test]
    fn a_break_stops_the_pass_at_that_block() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = ramp_spool(dir.path(), 3 * BLOCK_FRAMES);
        let (mut reports, mut blocks) = (Vec::new(), 0);
        let result = Pass::spooled(&spool).unwrap().run(
            &mut [],
            &mut [],
            Phase::Render,
            &mut |p| {
                reports.push(p);
                if reports.len() == 2 {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            },
            |_| {},
            |_| {
                blocks += 1;
                Ok(())
            },
        );
        assert!(matches!(result, Err(Error::Cancelled)), "{result:?}");
        assert_eq!(
            blocks, 1,
            "the block whose report said Break is not processed"
        );
        assert_eq!(
            reports,
            [
                Progress {
                    phase: Phase::Render,
                    fraction: 1.0 / 3.0
                },
                Progress {
                    phase: Phase::Render,
                    fraction: 2.0 / 3.0
                }
            ]
        );
    }
}
