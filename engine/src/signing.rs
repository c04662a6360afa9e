//! HMAC-SHA256 for request signatures and reward receipts.
//!
//! Request signatures follow the seed's openssl recipe: `X-Signature: sha256=<hex>` over
//! the exact body bytes. Receipts are signed over a canonical string (documented in the
//! README) so any service holding `RECEIPT_SECRET` can verify them offline.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// Prefix of the `X-Signature` header value.
const SIGNATURE_PREFIX: &str = "sha256=";
/// Hex chars of a SHA-256 MAC.
const MAC_HEX_CHARS: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureError {
    /// No `X-Signature` header.
    Missing,
    /// Present but malformed or not matching the body.
    Mismatch,
}

/// A keyed HMAC-SHA256, prepared once so each use clones the keyed state instead of
/// re-hashing the key.
#[derive(Clone)]
pub struct Signer {
    keyed: HmacSha256,
}

impl Signer {
    pub fn new(secret: &[u8]) -> Self {
        Signer {
            keyed: HmacSha256::new_from_slice(secret).expect("HMAC accepts keys of any length"),
        }
    }

    pub fn mac(&self, message: &[u8]) -> [u8; 32] {
        let mut mac = self.keyed.clone();
        mac.update(message);
        mac.finalize().into_bytes().into()
    }

    pub fn mac_hex(&self, message: &[u8]) -> String {
        hex::encode(self.mac(message))
    }

    /// The `X-Signature` header value for `body`: what a client sends.
    pub fn header_value(&self, body: &[u8]) -> String {
        format!("{SIGNATURE_PREFIX}{}", self.mac_hex(body))
    }

    /// Checks an `X-Signature` header value against `body` in constant time. Hex is
    /// accepted in either case.
    pub fn verify_header(&self, header: Option<&[u8]>, body: &[u8]) -> Result<(), SignatureError> {
        let header = header.ok_or(SignatureError::Missing)?;
        let hex_part = header
            .strip_prefix(SIGNATURE_PREFIX.as_bytes())
            .ok_or(SignatureError::Mismatch)?;
        self.verify_hex(hex_part, body)
    }

    /// Checks a hex MAC (either case) of `message` in constant time.
    pub fn verify_hex(&self, hex_mac: &[u8], message: &[u8]) -> Result<(), SignatureError> {
        if hex_mac.len() != MAC_HEX_CHARS {
            return Err(SignatureError::Mismatch);
        }
        let mut expected = [0u8; 32];
        hex::decode_to_slice(hex_mac, &mut expected).map_err(|_| SignatureError::Mismatch)?;
        let mut mac = self.keyed.clone();
        mac.update(message);
        // `verify_slice` compares in constant time.
        mac.verify_slice(&expected)
            .map_err(|_| SignatureError::Mismatch)
    }
}

/// SHA-256 of a request body: what an idempotency key remembers to tell "same request"
/// from "same key, different body".
pub fn fingerprint(body: &[u8]) -> [u8; 32] {
    Sha256::digest(body).into()
}

/// A signed reward receipt.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Receipt {
    pub receipt_id: String,
    pub player_id: String,
    pub item: String,
    /// Unix seconds of the claim.
    pub timestamp: u64,
    /// Lowercase hex HMAC-SHA256 over [`receipt_canonical`].
    pub sig: String,
}

/// The exact bytes a receipt signature covers. Newlines separate the fields because no
/// field may contain one (player ids are `[A-Za-z0-9_.-]`, items are printable labels).
pub fn receipt_canonical(receipt_id: &str, player_id: &str, item: &str, timestamp: u64) -> String {
    format!("liveops-receipt-v1\n{receipt_id}\n{player_id}\n{item}\n{timestamp}")
}

/// Mints and checks receipts with `RECEIPT_SECRET`.
#[derive(Clone)]
pub struct ReceiptSigner {
    signer: Signer,
}

impl ReceiptSigner {
    pub fn new(secret: &[u8]) -> Self {
        ReceiptSigner {
            signer: Signer::new(secret),
        }
    }

    /// The receipt id for one player's drop in one season: derived, not random, so a
    /// retried claim (or a replay of the log) names the same receipt.
    pub fn receipt_id(&self, season: &str, player_id: &str, item: &str) -> String {
        let mac = self
            .signer
            .mac(format!("liveops-receipt-id-v1\n{season}\n{player_id}\n{item}").as_bytes());
        format!("r_{}", hex::encode(&mac[..16]))
    }

    pub fn sign(&self, receipt_id: String, player_id: &str, item: &str, timestamp: u64) -> Receipt {
        let canonical = receipt_canonical(&receipt_id, player_id, item, timestamp);
        Receipt {
            sig: self.signer.mac_hex(canonical.as_bytes()),
            receipt_id,
            player_id: player_id.to_owned(),
            item: item.to_owned(),
            timestamp,
        }
    }

    pub fn verify(&self, receipt: &Receipt) -> bool {
        let canonical = receipt_canonical(
            &receipt.receipt_id,
            &receipt.player_id,
            &receipt.item,
            receipt.timestamp,
        );
        self.signer
            .verify_hex(receipt.sig.as_bytes(), canonical.as_bytes())
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn matches_the_openssl_recipe() {
        // printf '%s' '{"a":1}' | openssl dgst -sha256 -hmac 0123456789abcdef0123456789abcdef
        let signer = Signer::new(SECRET);
        let hex = signer.mac_hex(br#"{"a":1}"#);
        assert_eq!(
            hex,
            "f0546246da9e2349100c845a8561214788d75d900f3c086a72fcfa03bb1f42ab"
        );
        let header = format!("sha256={hex}");
        assert_eq!(signer.header_value(br#"{"a":1}"#), header);
        assert_eq!(
            signer.verify_header(Some(header.as_bytes()), br#"{"a":1}"#),
            Ok(())
        );
        let upper = format!("sha256={}", hex.to_uppercase());
        assert_eq!(
            signer.verify_header(Some(upper.as_bytes()), br#"{"a":1}"#),
            Ok(())
        );
    }

    #[test]
    fn refuses_missing_malformed_and_wrong() {
        let signer = Signer::new(SECRET);
        let body = b"{}";
        let good = format!("sha256={}", signer.mac_hex(body));
        assert_eq!(
            signer.verify_header(None, body),
            Err(SignatureError::Missing)
        );
        for bad in [
            good.replace("sha256=", "sha1="),
            good[..good.len() - 1].to_owned(),
            format!("{good}0"),
            good.replace("sha256=", ""),
            format!("sha256={}", "zz".repeat(32)),
        ] {
            assert_eq!(
                signer.verify_header(Some(bad.as_bytes()), body),
                Err(SignatureError::Mismatch),
                "{bad}"
            );
        }
        assert_eq!(
            Signer::new(b"another secret that is long enough!!")
                .verify_header(Some(good.as_bytes()), body),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            signer.verify_header(Some(good.as_bytes()), b"{} "),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn receipts_round_trip_and_detect_tampering() {
        let signer = ReceiptSigner::new(SECRET);
        let id = signer.receipt_id("1", "player_123", "epic_sword_001");
        assert_eq!(id, signer.receipt_id("1", "player_123", "epic_sword_001"));
        assert_ne!(id, signer.receipt_id("2", "player_123", "epic_sword_001"));
        let receipt = signer.sign(id, "player_123", "epic_sword_001", 1_764_000_000);
        assert!(signer.verify(&receipt));
        let mut forged = receipt.clone();
        forged.item = "legendary_sword".into();
        assert!(!signer.verify(&forged));
        let mut late = receipt.clone();
        late.timestamp += 1;
        assert!(!signer.verify(&late));
        assert!(!ReceiptSigner::new(b"x".repeat(32).as_slice()).verify(&receipt));
    }
}
