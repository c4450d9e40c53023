//! Unsigned LEB128 varints as the log format uses them: at most 10 bytes for a
//! u64, and only the canonical (shortest) encoding of each value is accepted,
//! so every value has exactly one byte representation.

use crate::error::VarintProblem;

/// The longest encoding of a u64.
pub const MAX_VARINT_LEN: usize = 10;

/// Number of bytes `value` takes when encoded.
pub fn encoded_len(value: u64) -> usize {
    // One byte per started group of 7 significant bits; zero still takes one byte.
    let bits = 64 - (value | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Encodes `value` into `out`, returning the number of bytes used.
pub fn encode(mut value: u64, out: &mut [u8; MAX_VARINT_LEN]) -> usize {
    let mut n = 0;
    loop {
        let low = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out[n] = low;
            return n + 1;
        }
        out[n] = low | 0x80;
        n += 1;
    }
}

/// Appends the encoding of `value` to `out`.
pub fn push(value: u64, out: &mut Vec<u8>) {
    let mut tmp = [0u8; MAX_VARINT_LEN];
    let n = encode(value, &mut tmp);
    out.extend_from_slice(&tmp[..n]);
}

/// Decodes a varint at the start of `buf`.
///
/// `Ok(None)` means `buf` ends before the varint does (more bytes could
/// complete it); `Ok(Some((value, len)))` is a complete canonical varint.
/// Errors are final: no further bytes could make the encoding valid.
pub fn decode(buf: &[u8]) -> Result<Option<(u64, usize)>, VarintProblem> {
    let mut value = 0u64;
    for i in 0..MAX_VARINT_LEN {
        let Some(&b) = buf.get(i) else {
            return Ok(None);
        };
        if i == MAX_VARINT_LEN - 1 {
            // The tenth byte holds only bit 63.
            if b & 0x80 != 0 {
                return Err(VarintProblem::TooLong);
            }
            if b > 1 {
                return Err(VarintProblem::Overflow);
            }
        }
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            if b == 0 && i > 0 {
                return Err(VarintProblem::NonCanonical);
            }
            return Ok(Some((value, i + 1)));
        }
    }
    Err(VarintProblem::TooLong)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        push(v, &mut out);
        out
    }

    #[test]
    fn known_encodings() {
        assert_eq!(enc(0), [0x00]);
        assert_eq!(enc(1), [0x01]);
        assert_eq!(enc(127), [0x7f]);
        assert_eq!(enc(128), [0x80, 0x01]);
        assert_eq!(enc(300), [0xac, 0x02]);
        assert_eq!(enc(16_383), [0xff, 0x7f]);
        assert_eq!(enc(16_384), [0x80, 0x80, 0x01]);
        let max = enc(u64::MAX);
        assert_eq!(max.len(), 10);
        assert_eq!(max[9], 0x01);
    }

    #[test]
    fn round_trip_and_length() {
        let mut samples = vec![0, 1, 127, 128, u64::MAX, u64::MAX - 1, 1 << 63];
        for shift in 0..64 {
            samples.push(1u64 << shift);
            samples.push((1u64 << shift) - 1);
            samples.push((1u64 << shift) + 1);
        }
        for v in samples {
            let e = enc(v);
            assert_eq!(e.len(), encoded_len(v), "length of {v}");
            assert_eq!(decode(&e), Ok(Some((v, e.len()))), "value {v}");
            // Every strict prefix is incomplete, never an error or a value.
            for cut in 0..e.len() {
                assert_eq!(decode(&e[..cut]), Ok(None), "prefix {cut} of {v}");
            }
            // Trailing bytes are not consumed.
            let mut longer = e.clone();
            longer.extend_from_slice(&[0xff, 0x00]);
            assert_eq!(decode(&longer), Ok(Some((v, e.len()))));
        }
    }

    #[test]
    fn rejects_non_canonical() {
        assert_eq!(decode(&[0x80, 0x00]), Err(VarintProblem::NonCanonical));
        assert_eq!(
            decode(&[0x81, 0x80, 0x00]),
            Err(VarintProblem::NonCanonical)
        );
        let mut padded = vec![0x80; 9];
        padded.push(0x00);
        assert_eq!(decode(&padded), Err(VarintProblem::NonCanonical));
    }

    #[test]
    fn rejects_too_long_and_overflow() {
        let mut eleven = vec![0x80; 10];
        eleven.push(0x01);
        assert_eq!(decode(&eleven), Err(VarintProblem::TooLong));
        // Ten continuation bytes are already known to be too long.
        assert_eq!(decode(&[0xff; 10]), Err(VarintProblem::TooLong));
        let mut over = vec![0xff; 9];
        over.push(0x02);
        assert_eq!(decode(&over), Err(VarintProblem::Overflow));
        let mut over = vec![0x80; 9];
        over.push(0x7f);
        assert_eq!(decode(&over), Err(VarintProblem::Overflow));
    }
}
