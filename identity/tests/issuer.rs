//! The coordinator's issuer: the identity comes from the caller, never from the CSR; only the
//! CSR's key is used, and only when its signature verifies.

use std::time::{Duration, SystemTime};

use faultline_core::{Identity, NodeName, Role};
use faultline_identity::cert::CertInfo;
use faultline_identity::pki::csr::NewKey;
use faultline_identity::pki::{init_dir, AgentIssuer, InitOptions};
use faultline_identity::tls::load_certs;
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};

fn issuer(dir: &std::path::Path, ttl: Duration) -> AgentIssuer {
    init_dir(
        dir,
        &InitOptions {
            sans: vec![],
            agents: vec![],
            days: 1,
            force: false,
        },
    )
    .expect("dev CA");
    AgentIssuer::load(&dir.join("ca.pem"), &dir.join("ca-key.pem"), ttl).expect("issuer")
}

#[test]
fn subject_and_sans_of_the_csr_are_ignored_and_only_client_auth_is_issued() {
    let dir = tempfile::tempdir().expect("tempdir");
    let issuer = issuer(dir.path(), Duration::from_secs(600));
    // A CSR that asks to be the admin, and a server.
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "admin");
    params.distinguished_name = dn;
    params.subject_alt_names = vec![
        SanType::URI("spiffe://faultline/admin/evil".try_into().expect("uri")),
        SanType::DnsName("coordinator".try_into().expect("dns")),
    ];
    let csr = params.serialize_request(&key).expect("csr");
    let node: NodeName = "node-a".parse().expect("node");
    let issued = issuer.issue(&node, csr.der(), None).expect("issued");
    let path = dir.path().join("issued.pem");
    std::fs::write(&path, &issued.chain_pem).expect("write");
    let chain = load_certs(&path).expect("chain");
    assert_eq!(chain.len(), 2, "the leaf, then the issuing CA");
    let leaf = CertInfo::parse(&chain[0]).expect("leaf");
    assert_eq!(leaf.identity, Some(Identity::new(Role::Agent, "node-a")));
    assert_eq!(
        faultline_identity::spiffe::uris_of(&chain[0]),
        vec!["spiffe://faultline/agent/node-a".to_string()]
    );
    assert_eq!(leaf.public_key, key.public_key_raw(), "the CSR's key");
    assert_eq!(leaf.serial, issued.serial);
    assert_eq!(
        faultline_identity::test_util::key_usage(&path),
        (true, false),
        "clientAuth only"
    );
    // Lifetime: the configured one (with a little skew before now), never more.
    let life = leaf
        .not_after
        .duration_since(leaf.not_before)
        .expect("life");
    assert!(
        life >= Duration::from_secs(600) && life <= Duration::from_secs(661),
        "{life:?}"
    );
    assert!(leaf.not_after <= SystemTime::now() + Duration::from_secs(601));
}

#[test]
fn a_csr_whose_signature_does_not_verify_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let issuer = issuer(dir.path(), Duration::from_secs(600));
    let node: NodeName = "node-a".parse().expect("node");
    let mut der = NewKey::generate(&node).expect("key").csr_der().to_vec();
    let last = der.len() - 1;
    der[last] ^= 0x01;
    let e = issuer.issue(&node, &der, None).expect_err("refused");
    assert_eq!(
        e.to_string(),
        "csr_der: the request's signature does not verify with its own key"
    );
    let e = issuer.issue(&node, &[], None).expect_err("empty");
    assert!(e.to_string().starts_with("csr_der: empty"), "{e}");
}

#[test]
fn the_issuer_key_must_belong_to_the_issuer_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _ = issuer(dir.path(), Duration::from_secs(600));
    let e = AgentIssuer::load(
        &dir.path().join("ca.pem"),
        &dir.path().join("admin-key.pem"),
        Duration::from_secs(600),
    )
    .expect_err("wrong key");
    assert!(e.to_string().contains("--issuer-key"), "{e}");
    assert!(
        e.to_string()
            .contains("is not the key of the first certificate"),
        "{e}"
    );
    let e = AgentIssuer::load(
        &dir.path().join("admin.pem"),
        &dir.path().join("admin-key.pem"),
        Duration::from_secs(600),
    )
    .expect_err("not a CA");
    assert!(e.to_string().contains("is not a CA"), "{e}");
}
