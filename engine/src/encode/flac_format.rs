//! The fixed parts of the FLAC format (RFC 9639) that the encoder, the frame check and the
//! written-file check share: the `STREAMINFO` length, the frame header's sample-rate codes and
//! the header checksum.

/// Length of the `STREAMINFO` body in bytes.
pub(super) const STREAMINFO_LEN: usize = 34;

/// The sample rates a frame header states by its 4-bit code alone, with their codes (the encoder
/// writes them, the frame check reads them).
pub(super) const HEADER_RATES: [(u8, u32); 11] = [
    (0b0001, 88_200),
    (0b0010, 176_400),
    (0b0011, 192_000),
    (0b0100, 8_000),
    (0b0101, 16_000),
    (0b0110, 22_050),
    (0b0111, 24_000),
    (0b1000, 32_000),
    (0b1001, 44_100),
    (0b1010, 48_000),
    (0b1011, 96_000),
];

/// FLAC's header CRC-8: polynomial 0x07, initial value 0.
pub(super) fn crc8(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |mut crc, &b| {
        crc ^= b;
        for _ in 0..8 {
            crc = if crc & 0x80 != 0 {
                (crc << 1) ^ 0x07
            } else {
                crc << 1
            };
        }
        crc
    })
}
