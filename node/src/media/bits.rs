//! A most-significant-bit-first reader over a byte slice, with the exp-Golomb codes of
//! H.264 parameter sets; and the removal of H.264 emulation-prevention bytes.
//!
//! Every read returns `None` past the end instead of panicking.

/// Reads bits, most significant first.
#[derive(Debug)]
pub(super) struct BitReader<'a> {
    data: &'a [u8],
    /// Position in bits from the start of `data`.
    pos: usize,
}

impl<'a> BitReader<'a> {
    /// A reader at the first bit of `data`.
    pub(super) fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    /// One bit.
    pub(super) fn bit(&mut self) -> Option<u32> {
        let byte = *self.data.get(self.pos / 8)?;
        let bit = (byte >> (7 - (self.pos % 8))) & 1;
        self.pos += 1;
        Some(u32::from(bit))
    }

    /// One bit as a flag.
    pub(super) fn flag(&mut self) -> Option<bool> {
        self.bit().map(|b| b == 1)
    }

    /// `n` bits (at most 32) as an unsigned number.
    pub(super) fn bits(&mut self, n: u32) -> Option<u32> {
        if n > 32 {
            return None;
        }
        let mut value: u64 = 0;
        for _ in 0..n {
            value = (value << 1) | u64::from(self.bit()?);
        }
        u32::try_from(value).ok()
    }

    /// An unsigned exp-Golomb code, `ue(v)`: at most 31 leading zeros (values up to
    /// 2^32 - 2), as H.264 allows.
    pub(super) fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0u32;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        let suffix = u64::from(self.bits(zeros)?);
        u32::try_from((1u64 << zeros) - 1 + suffix).ok()
    }

    /// A signed exp-Golomb code, `se(v)`.
    pub(super) fn se(&mut self) -> Option<i64> {
        let k = i64::from(self.ue()?);
        Some(if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) })
    }
}

/// The RBSP of a NAL unit: its bytes with every emulation-prevention byte (the `03` of
/// `00 00 03`) removed.
pub(super) fn unescape(nal: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nal.len());
    let mut zeros = 0usize;
    for &b in nal {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        out.push(b);
        zeros = if b == 0 { zeros + 1 } else { 0 };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_bits_and_exp_golomb() {
        // 1 | 010 | 011 | 00100 | 00101 | 1...: ue 0, 1, 2, 3, 4.
        let data = [0b1010_0110, 0b0100_0010, 0b1000_0000];
        let mut r = BitReader::new(&data);
        assert_eq!(r.ue(), Some(0));
        assert_eq!(r.ue(), Some(1));
        assert_eq!(r.ue(), Some(2));
        assert_eq!(r.ue(), Some(3));
        assert_eq!(r.ue(), Some(4));
        let mut r = BitReader::new(&data);
        assert_eq!(r.se(), Some(0));
        assert_eq!(r.se(), Some(1));
        assert_eq!(r.se(), Some(-1));
        assert_eq!(r.bits(4), Some(0b0010));
    }

    #[test]
    fn past_the_end_is_none() {
        let mut r = BitReader::new(&[0x00, 0x00, 0x00, 0x00, 0x00]);
        assert_eq!(r.ue(), None);
        let mut r = BitReader::new(&[0xFF]);
        assert_eq!(r.bits(9), None);
        assert_eq!(BitReader::new(&[0xFF; 8]).bits(33), None);
    }

    #[test]
    fn removes_emulation_prevention() {
        assert_eq!(
            unescape(&[0x67, 0, 0, 3, 1, 0, 0, 3, 0, 0, 3, 3]),
            [0x67, 0, 0, 1, 0, 0, 0, 0, 3]
        );
        assert_eq!(unescape(&[0, 3, 0, 3]), [0, 3, 0, 3]);
    }
}
