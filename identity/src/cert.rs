//! The facts of one X.509 certificate that enrollment, renewal and revocation need: serial
//! number, validity, whether it is a CA, its public key and its Faultline identity.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use faultline_core::Identity;
use rustls::pki_types::CertificateDer;

use crate::spiffe::identity_of;

/// What a certificate says, parsed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Upper-case hex without separators, as `openssl x509 -serial` prints it.
    pub serial: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// basicConstraints CA:TRUE.
    pub is_ca: bool,
    /// The subjectPublicKey bits (for a key check).
    pub public_key: Vec<u8>,
    pub identity: Option<Identity>,
}

fn time_of(t: x509_parser::time::ASN1Time) -> SystemTime {
    let secs = t.timestamp();
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs as u64)
    } else {
        UNIX_EPOCH
    }
}

impl CertInfo {
    /// Parses a DER certificate; the error says what is wrong in words.
    pub fn parse(der: &CertificateDer<'_>) -> Result<Self, String> {
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
            .map_err(|e| format!("not an X.509 certificate: {e}"))?;
        let is_ca = cert
            .basic_constraints()
            .ok()
            .flatten()
            .is_some_and(|bc| bc.value.ca);
        Ok(CertInfo {
            serial: serial_hex(cert.raw_serial()),
            not_before: time_of(cert.validity().not_before),
            not_after: time_of(cert.validity().not_after),
            is_ca,
            public_key: cert.public_key().subject_public_key.data.to_vec(),
            identity: identity_of(der),
        })
    }

    /// The fraction `f` (0..=1) of the way from `not_before` to `not_after`.
    pub fn point_in_lifetime(&self, f: f64) -> SystemTime {
        let life = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or_default();
        self.not_before + life.mul_f64(f.clamp(0.0, 1.0))
    }
}

/// A serial number's bytes as upper-case hex, leading zero bytes dropped (as DER would).
pub fn serial_hex(raw: &[u8]) -> String {
    let start = raw.iter().position(|b| *b != 0).unwrap_or(raw.len());
    let trimmed = &raw[start..];
    if trimmed.is_empty() {
        return "00".into();
    }
    trimmed.iter().map(|b| format!("{b:02X}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_print_like_openssl() {
        assert_eq!(serial_hex(&[0x00, 0x1a, 0xff]), "1AFF");
        assert_eq!(serial_hex(&[0x00]), "00");
        assert_eq!(serial_hex(&[0x7f, 0x01]), "7F01");
    }
}
