//! The FLAC encoder's check of its own output: every frame, as soon as it is made, is read back by
//! a FLAC frame reader of its own (written from the format's specification, not from the
//! encoder's writer) and compared with the samples it was made from, as `flac --verify` does with
//! libFLAC's decoder.
//!
//! # Reading without reconstructing
//! A decoder rebuilds each sample from its residual and the samples before it
//! (`y[t] = e[t] + (Σ c[j] y[t-1-j] >> shift)`), one at a time. The check knows the samples the
//! frame must give, so it computes from them the residual every `t` must carry,
//! `x[t] - (Σ c[j] x[t-1-j] >> shift)`, all at once (vectorised), and compares it with the residual
//! read from the bits. If the warm-up samples are `x`'s and every residual read equals that
//! residual, then by induction over `t` a decoder rebuilds exactly `x`: the same guarantee as
//! decoding and comparing, without the decoder's serial dependency.
//!
//! Stereo decorrelation is checked the same way: the check derives side (`L - R`) and mid
//! (`(L + R) >> 1`) from the samples and compares the subframes with them; a decoder's
//! `L = ((mid << 1 | side & 1) + side) >> 1`, `R = L - side` (and the left/side and right/side
//! forms) then gives back `L` and `R` exactly, since `L + R` and `L - R` have the same parity.
//!
//! Everything a decoder reads is checked: the frame header (sync code, block size, sample rate,
//! channel assignment, sample size, frame number, CRC-8), every subframe's type, wasted bits,
//! warm-up, predictor and Rice-coded residual, the zero padding, and that the frame ends with
//! exactly its two CRC-16 bytes. The CRC-16 itself is not recomputed (a decoder that checks it
//! would reject the frame, not decode other samples; `flac -t` checks it in the tests).
//!
//! Together with [`super::WrittenAudio::check_file`], which confirms the file on disk still holds
//! exactly those frame bytes, it gives the guarantee that the file decodes to the samples.

use super::flac_format::{HEADER_RATES, crc8};

/// Bytes of zeros after a frame in the reader's copy: the reader loads up to 15 bytes ahead of
/// what it has read.
const READ_PADDING: usize = 16;

/// Reads frames and compares them with their samples, with reused buffers.
pub(super) struct FrameCheck {
    sample_rate_hz: u32,
    /// The number the next frame must state.
    frame_number: u64,
    /// The frame's bytes followed by [`READ_PADDING`] zeros.
    bytes: Vec<u8>,
    /// Side and mid of a stereo frame's samples.
    side: Vec<i32>,
    mid: Vec<i32>,
    /// The subframe's samples with its wasted bits shifted out.
    shifted: Vec<i32>,
    /// The same as `f64`, for the LPC prediction.
    shifted_f64: Vec<f64>,
    /// The residual every sample must carry, zigzag-folded.
    folded: Vec<u64>,
}

/// Which signal of a frame a subframe holds, for messages.
#[derive(Debug, Clone, Copy)]
enum Signal {
    Channel(usize),
    Left,
    Right,
    Side,
    Mid,
}

impl std::fmt::Display for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Channel(c) => write!(f, "channel {c}"),
            Self::Left => f.write_str("the left channel"),
            Self::Right => f.write_str("the right channel"),
            Self::Side => f.write_str("the side signal"),
            Self::Mid => f.write_str("the mid signal"),
        }
    }
}

impl FrameCheck {
    /// A check for the stream that `stream_info` (a `STREAMINFO` body) describes.
    pub(super) fn new(stream_info: &[u8]) -> Result<Self, String> {
        let rate = stream_info
            .get(10..13)
            .map(|b| (u32::from(b[0]) << 12) | (u32::from(b[1]) << 4) | (u32::from(b[2]) >> 4))
            .ok_or("the STREAMINFO given to the frame check is too short")?;
        Ok(Self {
            sample_rate_hz: rate,
            frame_number: 0,
            bytes: Vec::new(),
            side: Vec::new(),
            mid: Vec::new(),
            shifted: Vec::new(),
            shifted_f64: Vec::new(),
            folded: Vec::new(),
        })
    }

    /// Reads `frame` (one whole FLAC frame, the next of a fixed-blocksize stream: the first is
    /// number 0) and compares it with the `frames` samples of each of `channel_count` channels in
    /// `samples` (channel `c` from `c * stride`), `bits`-bit integers. The error says what
    /// differs.
    pub(super) fn check(
        &mut self,
        frame: &[u8],
        samples: &[i32],
        stride: usize,
        channel_count: usize,
        frames: usize,
        bits: u32,
    ) -> Result<(), String> {
        self.bytes.clear();
        self.bytes.extend_from_slice(frame);
        self.bytes.resize(frame.len() + READ_PADDING, 0);
        let header = Header::read(frame)?;
        let number = self.frame_number;
        self.frame_number += 1;
        if header.frames != frames {
            return Err(format!(
                "its header states {} frames, not {frames}",
                header.frames
            ));
        }
        if header.number != number {
            return Err(format!(
                "its header states frame number {}, not {number}",
                header.number
            ));
        }
        if header.bits.is_some_and(|b| b != bits) {
            return Err(format!(
                "its header states samples of other than {bits} bits"
            ));
        }
        if header
            .sample_rate_hz
            .is_some_and(|r| r != self.sample_rate_hz)
        {
            return Err(format!(
                "its header states another sample rate than {} Hz",
                self.sample_rate_hz
            ));
        }
        let channel = |c: usize| &samples[c * stride..c * stride + frames];
        let Self {
            bytes,
            side,
            mid,
            shifted,
            shifted_f64,
            folded,
            ..
        } = self;
        let mut reader = BitReader::new(bytes, header.len);
        let mut subframe = |signal: &[i32], bits: u32, name: Signal| {
            check_subframe(&mut reader, signal, bits, shifted, shifted_f64, folded)
                .map_err(|reason| format!("{name} {reason}"))
        };
        match header.assignment {
            code @ 0..=7 => {
                if usize::from(code) + 1 != channel_count {
                    return Err(format!(
                        "its header states {} channels, not {channel_count}",
                        code + 1
                    ));
                }
                for c in 0..channel_count {
                    subframe(channel(c), bits, Signal::Channel(c))?;
                }
            }
            code @ 8..=10 => {
                if channel_count != 2 {
                    return Err(format!(
                        "its header states stereo decorrelation for {channel_count} channels"
                    ));
                }
                let (left, right) = (channel(0), channel(1));
                side.clear();
                side.extend(left.iter().zip(right).map(|(&l, &r)| l - r));
                match code {
                    8 => {
                        subframe(left, bits, Signal::Left)?;
                        subframe(side, bits + 1, Signal::Side)?;
                    }
                    9 => {
                        subframe(side, bits + 1, Signal::Side)?;
                        subframe(right, bits, Signal::Right)?;
                    }
                    _ => {
                        mid.clear();
                        mid.extend(left.iter().zip(right).map(|(&l, &r)| (l + r) >> 1));
                        subframe(mid, bits, Signal::Mid)?;
                        subframe(side, bits + 1, Signal::Side)?;
                    }
                }
            }
            code => return Err(format!("its header has reserved channel assignment {code}")),
        }
        // Zero padding to the byte, then exactly the two CRC-16 bytes.
        let position = reader.position();
        let padding = (8 - position % 8) % 8;
        if reader.read(padding as u32)? != 0 {
            return Err("its padding after the last subframe is not zeros".to_owned());
        }
        if (position + padding) / 8 + 2 != frame.len() {
            return Err(format!(
                "its subframes end at byte {}, not two bytes before its end ({})",
                (position + padding) / 8,
                frame.len()
            ));
        }
        Ok(())
    }
}

/// What a frame header states (`None`: "as in STREAMINFO").
struct Header {
    frames: usize,
    sample_rate_hz: Option<u32>,
    assignment: u8,
    bits: Option<u32>,
    number: u64,
    /// Length of the header in bytes, CRC-8 included.
    len: usize,
}

impl Header {
    fn read(frame: &[u8]) -> Result<Self, String> {
        let too_short = || "it is too short for its header".to_owned();
        let byte = |i: usize| frame.get(i).copied().ok_or_else(too_short);
        // 14-bit sync code, a reserved 0 bit, and the fixed-blocksize strategy bit 0.
        if byte(0)? != 0xFF || byte(1)? != 0xF8 {
            return Err("it does not start with a fixed-blocksize frame sync code".to_owned());
        }
        let (size_code, rate_code) = (byte(2)? >> 4, byte(2)? & 0x0F);
        let (assignment, size_bits_code) = (byte(3)? >> 4, (byte(3)? >> 1) & 0x07);
        if byte(3)? & 1 != 0 {
            return Err("its header's reserved bit is set".to_owned());
        }
        // The frame number, in the UTF-8-like coding: the count of leading ones of the first
        // byte is the length (none: one byte), the rest of it and six bits of each continuation
        // byte the value.
        let first = byte(4)?;
        let len = first.leading_ones() as usize;
        let mut at = 5;
        let mut number = match len {
            0 => u64::from(first),
            2..=7 => u64::from(first & (0x7F >> len)),
            _ => return Err("its header's frame number is not validly coded".to_owned()),
        };
        for _ in 1..len.max(1) {
            let b = byte(at)?;
            if b & 0xC0 != 0x80 {
                return Err("its header's frame number is not validly coded".to_owned());
            }
            number = (number << 6) | u64::from(b & 0x3F);
            at += 1;
        }
        let mut extra = |bytes: usize| -> Result<u32, String> {
            let mut value = 0;
            for _ in 0..bytes {
                value = (value << 8) | u32::from(byte(at)?);
                at += 1;
            }
            Ok(value)
        };
        let frames = match size_code {
            1 => 192,
            2..=5 => 576 << (size_code - 2),
            6 => extra(1)? as usize + 1,
            7 => extra(2)? as usize + 1,
            8..=15 => 256 << (size_code - 8),
            _ => return Err("its header's block size code is reserved".to_owned()),
        };
        let sample_rate_hz = match rate_code {
            0 => None,
            1..=11 => HEADER_RATES
                .iter()
                .find(|(code, _)| *code == rate_code)
                .map(|&(_, rate)| rate),
            12 => Some(extra(1)? * 1000),
            13 => Some(extra(2)?),
            14 => Some(extra(2)? * 10),
            _ => return Err("its header's sample rate code is invalid".to_owned()),
        };
        let bits = match size_bits_code {
            0 => None,
            1 => Some(8),
            2 => Some(12),
            4 => Some(16),
            5 => Some(20),
            6 => Some(24),
            7 => Some(32),
            _ => return Err("its header's sample size code is reserved".to_owned()),
        };
        if crc8(&frame[..at]) != byte(at)? {
            return Err("its header's CRC-8 is wrong".to_owned());
        }
        Ok(Self {
            frames,
            sample_rate_hz,
            assignment,
            bits,
            number,
            len: at + 1,
        })
    }
}

/// Reads the subframe at `reader` and compares it with `signal`, whose samples are `bits` wide;
/// `shifted`, `shifted_f64` and `folded` are scratch buffers. The error completes a sentence
/// naming the signal.
fn check_subframe(
    reader: &mut BitReader<'_>,
    signal: &[i32],
    bits: u32,
    shifted: &mut Vec<i32>,
    shifted_f64: &mut Vec<f64>,
    folded: &mut Vec<u64>,
) -> Result<(), String> {
    let differs = || "decodes to other samples".to_owned();
    let type_byte = reader.read(8)?;
    if type_byte & 0x80 != 0 {
        return Err("has its subframe's padding bit set".to_owned());
    }
    let kind = type_byte >> 1;
    let wasted = if type_byte & 1 == 1 {
        reader.unary()? + 1
    } else {
        0
    };
    if wasted >= u64::from(bits) {
        return Err(format!("states {wasted} wasted bits of {bits}"));
    }
    let wasted = wasted as u32;
    let bits = bits - wasted;
    // The subframe codes the samples shifted right by the wasted bits; a decoder shifts them
    // back, so the samples must have those bits zero.
    let low = (1i32 << wasted) - 1;
    if signal.iter().fold(0, |any, &x| any | x) & low != 0 {
        return Err(differs());
    }
    shifted.clear();
    shifted.extend(signal.iter().map(|&x| x >> wasted));
    let x: &[i32] = shifted;
    let n = x.len();
    let (order, lpc) = match kind {
        0 => {
            let value = reader.read_signed(bits)?;
            return if x.iter().all(|&s| s == value) {
                Ok(())
            } else {
                Err(differs())
            };
        }
        1 => {
            let mut same = true;
            for &s in x {
                same &= reader.read_signed(bits)? == s;
            }
            return if same { Ok(()) } else { Err(differs()) };
        }
        8..=12 => (kind as usize - 8, false),
        32..=63 => (kind as usize - 31, true),
        _ => return Err(format!("has reserved subframe type {kind}")),
    };
    if order > n {
        return Err(format!("has a predictor of order {order} for {n} samples"));
    }
    let mut same = true;
    for &s in &x[..order] {
        same &= reader.read_signed(bits)? == s;
    }
    folded.clear();
    folded.resize(n, 0);
    if lpc {
        let precision = reader.read(4)? + 1;
        if precision == 16 {
            return Err("has the invalid LPC precision code 15".to_owned());
        }
        let shift = reader.read_signed(5)?;
        let Ok(shift) = u32::try_from(shift) else {
            return Err(format!("has a negative LPC shift ({shift})"));
        };
        let mut coefficients = [0i64; 32];
        for c in &mut coefficients[..order] {
            *c = i64::from(reader.read_signed(precision)?);
        }
        lpc_folded_residual(
            x,
            &coefficients[..order],
            shift,
            bits + precision,
            shifted_f64,
            folded,
        );
    } else {
        fixed_folded_residual(x, order, folded);
    }
    // Every residual must fit FLAC's 32-bit signed range, or no decoder reads it back.
    if folded.iter().fold(0, |any, &u| any | u) >> 32 != 0 {
        return Err("needs a residual outside 32 bits".to_owned());
    }
    same &= read_residual(reader, folded, order)?;
    if same { Ok(()) } else { Err(differs()) }
}

/// The residual of fixed predictor `order` (0 to 4) over `x` into `folded`, zigzag-folded, from
/// `x[order]` on (FLAC's fixed predictors are the successive differences).
fn fixed_folded_residual(x: &[i32], order: usize, folded: &mut [u64]) {
    let out = &mut folded[order..];
    match order {
        0 => fold_into(out, x.iter().map(|&a| i64::from(a))),
        1 => fold_into(out, x.windows(2).map(|w| i64::from(w[1]) - i64::from(w[0]))),
        2 => fold_into(
            out,
            x.windows(3)
                .map(|w| i64::from(w[2]) - 2 * i64::from(w[1]) + i64::from(w[0])),
        ),
        3 => fold_into(
            out,
            x.windows(4).map(|w| {
                i64::from(w[3]) - 3 * i64::from(w[2]) + 3 * i64::from(w[1]) - i64::from(w[0])
            }),
        ),
        _ => fold_into(
            out,
            x.windows(5).map(|w| {
                i64::from(w[4]) - 4 * i64::from(w[3]) + 6 * i64::from(w[2]) - 4 * i64::from(w[1])
                    + i64::from(w[0])
            }),
        ),
    }
}

/// Writes the zigzag-folded `residuals` (`0, -1, 1, -2, ...` to `0, 1, 2, 3, ...`) into `out`.
#[inline(always)]
fn fold_into(out: &mut [u64], residuals: impl Iterator<Item = i64>) {
    for (o, e) in out.iter_mut().zip(residuals) {
        *o = ((e << 1) ^ (e >> 63)) as u64;
    }
}

/// The LPC residual `x[t] - ((Σ c[j] x[t-1-j]) >> shift)` over `x` into `folded`, zigzag-folded,
/// from `x[order]` on; `width` is the sample width plus the coefficient precision.
///
/// The sum is an integer; where it is below 2^53 in magnitude for any samples (a sample of
/// `width - precision` bits times a coefficient of `precision` bits, times at most 32 taps) every
/// product and partial sum is exact in `f64`, which vectorises, and the sum converts to `i64`
/// exactly; otherwise it is summed in `i64`, and the floor division is an arithmetic shift.
fn lpc_folded_residual(
    x: &[i32],
    coefficients: &[i64],
    shift: u32,
    width: u32,
    x_f64: &mut Vec<f64>,
    folded: &mut [u64],
) {
    let order = coefficients.len();
    let out = &mut folded[order..];
    if width + 5 > 53 {
        fold_into(
            out,
            x.windows(order + 1).map(|w| {
                let sum: i64 = coefficients
                    .iter()
                    .zip(w[..order].iter().rev())
                    .map(|(&c, &s)| c * i64::from(s))
                    .sum();
                i64::from(w[order]) - (sum >> shift)
            }),
        );
        return;
    }
    x_f64.clear();
    x_f64.extend(x.iter().map(|&s| f64::from(s)));
    match order {
        1 => lpc_with::<1>(x_f64, coefficients, shift, out),
        2 => lpc_with::<2>(x_f64, coefficients, shift, out),
        3 => lpc_with::<3>(x_f64, coefficients, shift, out),
        4 => lpc_with::<4>(x_f64, coefficients, shift, out),
        5 => lpc_with::<5>(x_f64, coefficients, shift, out),
        6 => lpc_with::<6>(x_f64, coefficients, shift, out),
        7 => lpc_with::<7>(x_f64, coefficients, shift, out),
        8 => lpc_with::<8>(x_f64, coefficients, shift, out),
        9 => lpc_with::<9>(x_f64, coefficients, shift, out),
        10 => lpc_with::<10>(x_f64, coefficients, shift, out),
        11 => lpc_with::<11>(x_f64, coefficients, shift, out),
        12 => lpc_with::<12>(x_f64, coefficients, shift, out),
        _ => {
            let mut c = [0.0; 32];
            for (c, &q) in c.iter_mut().zip(coefficients) {
                *c = q as f64;
            }
            fold_into(
                out,
                x.windows(order + 1)
                    .zip(x_f64.windows(order + 1))
                    .map(|(w, wf)| {
                        let mut sum = 0.0;
                        for j in 0..order {
                            sum += c[j] * wf[order - 1 - j];
                        }
                        i64::from(w[order]) - ((sum as i64) >> shift)
                    }),
            );
        }
    }
}

/// [`lpc_folded_residual`] for `N` coefficients, in `f64` throughout (which vectorises), unrolled.
///
/// The sum is exact (see [`lpc_folded_residual`]), and so is its scaling by `2^-shift`. Adding
/// and subtracting 1.5 * 2^52 rounds a number below 2^51 in magnitude to the nearest integer,
/// exactly; the floor steps down where that rounded up. The residual and its folding are
/// integers below 2^50, exact too, and a non-negative integer below 2^52 plus 2^52 holds it in
/// its mantissa bits.
fn lpc_with<const N: usize>(x: &[f64], coefficients: &[i64], shift: u32, out: &mut [u64]) {
    const ROUND: f64 = 6_755_399_441_055_744.0;
    const MANTISSA: f64 = 4_503_599_627_370_496.0;
    let mut c = [0.0; N];
    for (c, &q) in c.iter_mut().zip(coefficients) {
        *c = q as f64;
    }
    let scale = 1.0 / f64::from(1u32 << shift);
    for (o, w) in out.iter_mut().zip(x.windows(N + 1)) {
        let mut sum = 0.0;
        for j in 0..N {
            sum += c[j] * w[N - 1 - j];
        }
        let y = sum * scale;
        let nearest = (y + ROUND) - ROUND;
        let floor = nearest - if nearest > y { 1.0 } else { 0.0 };
        let e = w[N] - floor;
        let folded = if e >= 0.0 { 2.0 * e } else { -2.0 * e - 1.0 };
        *o = (folded + MANTISSA).to_bits() & ((1 << 52) - 1);
    }
}

/// Reads a partitioned Rice-coded residual and compares it with `folded` (zigzag-folded, the
/// first `warm_up` not coded); whether every value is the same.
fn read_residual(
    reader: &mut BitReader<'_>,
    folded: &[u64],
    warm_up: usize,
) -> Result<bool, String> {
    let param_bits = match reader.read(2)? {
        0 => 4,
        1 => 5,
        _ => return Err("has a reserved residual coding method".to_owned()),
    };
    let escape = (1 << param_bits) - 1;
    let partition_order = reader.read(4)?;
    let n = folded.len();
    let parts = 1usize << partition_order;
    let len = n >> partition_order;
    if len << partition_order != n || len < warm_up {
        return Err(format!(
            "has {parts} residual partitions, which {n} samples with {warm_up} warm-up do not fit"
        ));
    }
    let mut differs = 0;
    for k in 0..parts {
        let start = if k == 0 { warm_up } else { k * len };
        let expected = &folded[start..(k + 1) * len];
        let param = reader.read(param_bits)?;
        if param == escape {
            let width = reader.read(5)?;
            for &u in expected {
                let e = i64::from(reader.read_signed(width)?);
                differs |= ((e << 1) ^ (e >> 63)) as u64 ^ u;
            }
        } else {
            differs |= reader.compare_rice(expected, param)?;
        }
    }
    Ok(differs == 0)
}

/// An MSB-first bit reader over a frame followed by [`READ_PADDING`] zero bytes: a 64-bit buffer
/// refilled without branches (whole bytes, to 56 to 63 bits), leading zeros for unary codes.
struct BitReader<'a> {
    bytes: &'a [u8],
    /// The next byte to load.
    next: usize,
    /// The bits not yet read, from the top; `avail` of them are counted.
    acc: u64,
    avail: u32,
}

impl<'a> BitReader<'a> {
    /// A reader of `bytes` from byte `start`.
    fn new(bytes: &'a [u8], start: usize) -> Self {
        Self {
            bytes,
            next: start,
            acc: 0,
            avail: 0,
        }
    }

    /// Bits read so far, from the start of `bytes`.
    fn position(&self) -> usize {
        self.next * 8 - self.avail as usize
    }

    /// Tops the buffer up to at least 56 bits; an error past the end of the frame.
    #[inline(always)]
    fn refill(&mut self) -> Result<(), String> {
        let Some(chunk) = self.bytes.get(self.next..self.next + 8) else {
            return Err("runs past the end of the frame".to_owned());
        };
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        // The bits below `avail` already held are the same stream bits as those loaded again.
        self.acc |= u64::from_be_bytes(word) >> self.avail;
        self.next += (63 - self.avail as usize) >> 3;
        self.avail |= 56;
        Ok(())
    }

    /// Drops `bits` (at most `avail`, below 64) from the buffer.
    #[inline(always)]
    fn consume(&mut self, bits: u32) {
        self.acc <<= bits;
        self.avail -= bits;
    }

    /// The next `bits` bits (at most 32) as an unsigned number.
    #[inline(always)]
    fn read(&mut self, bits: u32) -> Result<u32, String> {
        self.refill()?;
        let value = ((self.acc >> 1) >> (63 - bits)) as u32;
        self.consume(bits);
        Ok(value)
    }

    /// The next `bits` bits (at most 32) as a two's complement number.
    fn read_signed(&mut self, bits: u32) -> Result<i32, String> {
        let value = u64::from(self.read(bits)?);
        if bits == 0 {
            return Ok(0);
        }
        // Sign-extend from `bits`.
        let unused = 64 - bits;
        Ok((((value << unused) as i64) >> unused) as i32)
    }

    /// A unary number: the count of zeros before the next one (which is read too).
    fn unary(&mut self) -> Result<u64, String> {
        let mut zeros = 0u64;
        loop {
            self.refill()?;
            let z = self.acc.leading_zeros().min(self.avail);
            if z < self.avail {
                self.consume(z + 1);
                return Ok(zeros + u64::from(z));
            }
            self.consume(z);
            zeros += u64::from(z);
        }
    }

    /// Moves to bit `position` of `bytes`.
    fn seek(&mut self, position: usize) -> Result<(), String> {
        self.next = position / 8;
        self.acc = 0;
        self.avail = 0;
        self.refill()?;
        self.consume((position % 8) as u32);
        Ok(())
    }

    /// Reads `expected.len()` values Rice-coded with parameter `param` (at most 30) and returns a
    /// nonzero number if any differs from its `expected` value (each below 2^32).
    ///
    /// The value expected next fixes the length of its code (`u >> param` zeros, a one, `param`
    /// bits), so where every code starts follows from the expected values alone: each field is
    /// loaded at its own position and compared with the code of its value, independently of the
    /// others (no load waits for the one before, as in a decoder). If every field holds its code,
    /// a decoder reading from the first reads exactly the expected values, one after another.
    fn compare_rice(&mut self, expected: &[u64], param: u32) -> Result<u64, String> {
        let mut position = self.position();
        let mut differs = 0;
        let mut rest = expected;
        loop {
            let (compared, after, differences) =
                compare_rice_fields(self.bytes, rest, param, position)?;
            differs |= differences;
            position = after;
            let Some((&u, tail)) = rest[compared..].split_first() else {
                break;
            };
            // A code longer than one load holds (rare): read it.
            self.seek(position)?;
            let zeros = self.unary()?;
            let value = (zeros << param) | u64::from(self.read(param)?);
            differs |= value ^ u;
            position = self.position();
            rest = tail;
        }
        self.seek(position)?;
        Ok(differs)
    }
}

/// The loop of [`BitReader::compare_rice`] from bit `position` of `bytes`, up to the first code
/// longer than 56 bits: how many values it compared, the position after them, and a nonzero
/// number if any differed. (Apart from the reader, so that the position stays in a register.)
fn compare_rice_fields(
    bytes: &[u8],
    expected: &[u64],
    param: u32,
    mut position: usize,
) -> Result<(usize, usize, u64), String> {
    let mut differs = 0;
    let low_mask = (1u64 << param) - 1;
    for (i, &u) in expected.iter().enumerate() {
        let quotient = u >> param;
        if quotient + 1 + u64::from(param) > 56 {
            return Ok((i, position, differs));
        }
        let len = quotient as u32 + 1 + param;
        let at = position / 8;
        let Some(chunk) = bytes.get(at..at + 8) else {
            return Err("runs past the end of the frame".to_owned());
        };
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        // At least 57 bits from `position` on, of which the code's `len` at the top.
        let field = (u64::from_be_bytes(word) << (position % 8)) >> (64 - len);
        differs |= field ^ ((1 << param) | (u & low_mask));
        position += len as usize;
    }
    Ok((expected.len(), position, differs))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The residual in `f64` equals the one summed in `i64` (the definition), for the widest
    /// samples and coefficients the encoder writes, every order it uses and every shift.
    #[test]
    fn lpc_residual_in_f64_equals_the_integer_definition() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut random = move |bits: u32| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> (64 - bits)) as i64 - (1 << (bits - 1))) as i32
        };
        let (bits, precision) = (25, 15);
        let full = 1 << (bits - 1);
        let mut x_f64 = Vec::new();
        for order in 1..=12 {
            for shift in 0..=15 {
                let x: Vec<i32> = (0..400)
                    .map(|t| match t % 7 {
                        0 => full - 1,
                        1 => -full,
                        _ => random(bits),
                    })
                    .collect();
                let coefficients: Vec<i64> =
                    (0..order).map(|_| i64::from(random(precision))).collect();
                let mut fast = vec![0; x.len()];
                let mut definition = vec![0; x.len()];
                lpc_folded_residual(
                    &x,
                    &coefficients,
                    shift,
                    bits + precision,
                    &mut x_f64,
                    &mut fast,
                );
                lpc_folded_residual(&x, &coefficients, shift, 64, &mut x_f64, &mut definition);
                assert_eq!(fast, definition, "order {order}, shift {shift}");
            }
        }
    }
}
