//! Record framing: how one `(lsn, kind, payload)` record is laid out in a segment.
//!
//! ```text
//! offset  size  field
//!      0     4  payload_len  u32 little-endian, at most RECORD_PAYLOAD_BYTES_MAX
//!      4     4  crc32c       u32 little-endian (see below)
//!      8     8  lsn          u64 little-endian, >= 1
//!     16     1  kind         opaque to this crate
//!     17     n  payload      payload_len bytes
//! ```
//!
//! The CRC32C (Castagnoli) is computed over every other byte of the frame in file
//! order: the 4 length bytes, then lsn, kind and payload (bytes `0..4` then
//! `8..17 + n`). Covering the length matters: a flipped length bit would otherwise make
//! the reader take the wrong number of bytes as payload and misread everything after it.
//! The length comes first so a reader knows how much to read before checking the CRC,
//! and a limit on it keeps a corrupt length from asking for gigabytes.

use crate::{CorruptionReason, Error, Lsn, Result};

/// Bytes before the payload: length, CRC, LSN and kind.
pub const RECORD_HEADER_BYTES: usize = 4 + 4 + 8 + 1;

/// Largest payload a record may carry. Enforced on encode and on decode, so a corrupt
/// length field can never make a reader allocate or scan more than this.
pub const RECORD_PAYLOAD_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Largest frame on disk.
pub const RECORD_BYTES_MAX: usize = RECORD_HEADER_BYTES + RECORD_PAYLOAD_BYTES_MAX;

/// A record that owns its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub lsn: Lsn,
    pub kind: u8,
    pub payload: Vec<u8>,
}

/// A record borrowing its payload from a read buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    pub lsn: Lsn,
    pub kind: u8,
    pub payload: &'a [u8],
}

impl RecordRef<'_> {
    /// Copies the payload out.
    pub fn to_record(&self) -> Record {
        Record {
            lsn: self.lsn,
            kind: self.kind,
            payload: self.payload.to_vec(),
        }
    }
}

/// Appends the frame of `(lsn, kind, payload)` to `buf` (layout in the module docs).
///
/// Encoding straight into the caller's buffer lets the WAL build a whole group in one
/// reused allocation. On error `buf` is unchanged.
pub fn encode_record(buf: &mut Vec<u8>, lsn: Lsn, kind: u8, payload: &[u8]) -> Result<()> {
    if payload.len() > RECORD_PAYLOAD_BYTES_MAX {
        return Err(Error::TooLarge {
            what: "record payload",
            bytes: payload.len() as u64,
            bytes_max: RECORD_PAYLOAD_BYTES_MAX as u64,
        });
    }
    assert!(lsn >= 1, "lsn 0 is reserved for 'before the first record'");
    let start = buf.len();
    let payload_len = u32::try_from(payload.len()).expect("payload length checked above");
    buf.extend_from_slice(&payload_len.to_le_bytes());
    buf.extend_from_slice(&[0; 4]); // The CRC, filled in once the bytes it covers exist.
    buf.extend_from_slice(&lsn.to_le_bytes());
    buf.push(kind);
    buf.extend_from_slice(payload);
    let frame = &mut buf[start..];
    let crc = frame_crc(frame);
    frame[4..8].copy_from_slice(&crc.to_le_bytes());
    debug_assert_eq!(frame.len(), RECORD_HEADER_BYTES + payload.len());
    Ok(())
}

/// Decodes the frame at the start of `buf`; returns the record and the frame's length.
///
/// Checks the length limit before anything else, then that the whole frame is present,
/// then the CRC. It does not check the LSN against its neighbours: that is the log's job.
pub fn decode_record(buf: &[u8]) -> Result<(RecordRef<'_>, usize), CorruptionReason> {
    if buf.len() < RECORD_HEADER_BYTES {
        return Err(CorruptionReason::Truncated {
            needed: RECORD_HEADER_BYTES as u64,
            available: buf.len() as u64,
        });
    }
    let payload_bytes = u64::from(read_u32(buf, 0));
    if payload_bytes > RECORD_PAYLOAD_BYTES_MAX as u64 {
        return Err(CorruptionReason::PayloadTooLarge { payload_bytes });
    }
    // Fits in usize: bounded by RECORD_PAYLOAD_BYTES_MAX just above.
    let frame_bytes = RECORD_HEADER_BYTES + payload_bytes as usize;
    if buf.len() < frame_bytes {
        return Err(CorruptionReason::Truncated {
            needed: frame_bytes as u64,
            available: buf.len() as u64,
        });
    }
    let frame = &buf[..frame_bytes];
    let stored = read_u32(frame, 4);
    let computed = frame_crc(frame);
    if stored != computed {
        return Err(CorruptionReason::ChecksumMismatch { stored, computed });
    }
    let record = RecordRef {
        lsn: read_u64(frame, 8),
        kind: frame[16],
        payload: &frame[RECORD_HEADER_BYTES..],
    };
    Ok((record, frame_bytes))
}

/// The LSN field of the frame starting at `buf[0]`, if a whole header is there. Used to
/// skip implausible frame starts cheaply before paying for a CRC.
pub(crate) fn peek_lsn(buf: &[u8]) -> Option<Lsn> {
    (buf.len() >= RECORD_HEADER_BYTES).then(|| read_u64(buf, 8))
}

/// CRC32C over the frame minus its own CRC field: bytes `0..4`, then `8..`.
fn frame_crc(frame: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&frame[0..4]), &frame[8..])
}

fn read_u32(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(buf[at..at + 4].try_into().expect("4 bytes"))
}

fn read_u64(buf: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(buf[at..at + 8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(lsn: Lsn, kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut buf = Vec::new();
        encode_record(&mut buf, lsn, kind, payload).unwrap();
        buf
    }

    #[test]
    fn layout_is_as_documented() {
        let buf = frame(0x0102_0304_0506_0708, 7, b"abc");
        assert_eq!(buf.len(), RECORD_HEADER_BYTES + 3);
        assert_eq!(&buf[0..4], &3u32.to_le_bytes());
        assert_eq!(&buf[8..16], &0x0102_0304_0506_0708u64.to_le_bytes());
        assert_eq!(buf[16], 7);
        assert_eq!(&buf[17..], b"abc");
        let mut covered = buf[0..4].to_vec();
        covered.extend_from_slice(&buf[8..]);
        assert_eq!(&buf[4..8], &crc32c::crc32c(&covered).to_le_bytes());
    }

    #[test]
    fn every_single_byte_corruption_is_detected() {
        for payload in [&b""[..], b"x", &[0xAB; 200][..]] {
            let good = frame(42, 3, payload);
            for at in 0..good.len() {
                for xor in 1..=255u8 {
                    let mut bad = good.clone();
                    bad[at] ^= xor;
                    assert!(
                        decode_record(&bad).is_err(),
                        "byte {at} ^ {xor:#x} undetected"
                    );
                }
            }
        }
    }

    #[test]
    fn every_truncation_is_detected() {
        let good = frame(9, 1, &[5; 100]);
        for len in 0..good.len() {
            assert!(matches!(
                decode_record(&good[..len]),
                Err(CorruptionReason::Truncated { .. })
            ));
        }
    }

    #[test]
    fn payload_limit_on_encode_and_decode() {
        let mut buf = vec![1, 2, 3];
        let payload = vec![0; RECORD_PAYLOAD_BYTES_MAX + 1];
        assert!(matches!(
            encode_record(&mut buf, 1, 0, &payload),
            Err(Error::TooLarge { .. })
        ));
        assert_eq!(buf, [1, 2, 3], "a rejected record leaves the buffer alone");

        let at_limit = frame(1, 0, &payload[..RECORD_PAYLOAD_BYTES_MAX]);
        assert_eq!(decode_record(&at_limit).unwrap().1, RECORD_BYTES_MAX);

        // A frame over the limit with a correct CRC is still refused, from the header
        // alone, before the reader looks at (or waits for) its payload.
        let mut over = Vec::new();
        over.extend_from_slice(&(RECORD_PAYLOAD_BYTES_MAX as u32 + 1).to_le_bytes());
        over.extend_from_slice(&[0; 4]);
        over.extend_from_slice(&1u64.to_le_bytes());
        over.push(0);
        over.extend_from_slice(&payload);
        let crc = frame_crc(&over);
        over[4..8].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            decode_record(&over),
            Err(CorruptionReason::PayloadTooLarge {
                payload_bytes: RECORD_PAYLOAD_BYTES_MAX as u64 + 1
            })
        );
    }

    #[test]
    fn zeros_are_never_a_record() {
        for len in [RECORD_HEADER_BYTES, 4096] {
            assert!(decode_record(&vec![0; len]).is_err());
        }
    }

    proptest! {
        #[test]
        fn round_trip(records in prop::collection::vec(
            (1..u64::MAX, any::<u8>(), prop::collection::vec(any::<u8>(), 0..300)), 1..20)
        ) {
            let mut buf = Vec::new();
            for (lsn, kind, payload) in &records {
                encode_record(&mut buf, *lsn, *kind, payload).unwrap();
            }
            let mut rest = &buf[..];
            for (lsn, kind, payload) in &records {
                let (record, frame_bytes) = decode_record(rest).unwrap();
                prop_assert_eq!(record.lsn, *lsn);
                prop_assert_eq!(record.kind, *kind);
                prop_assert_eq!(record.payload, &payload[..]);
                rest = &rest[frame_bytes..];
            }
            prop_assert!(rest.is_empty());
        }
    }
}
