//! The `dns` fault against the real kernel (root): dnsmasq in one network namespace, clients
//! in another (raw UDP queries built in the test, and glibc through `getent hosts`). Matching
//! names fail as configured, other names always resolve, and everything is back after revert.

mod net_dns_support;
mod net_ebpf_support;

use std::time::{Duration, Instant};

use faultline_agent::engine::driver::{Driver, RevertOutcome};
use faultline_agent::net::dns::{FAILED, INSPECTED, MATCHED, PROGRAM_PREFIX};
use faultline_agent::net::{ebpf, KernelLease};
use faultline_core::fault::{DnsAction, Target};
use net_dns_support::*;
use net_ebpf_support::counter;

const Q: Duration = Duration::from_millis(500);

fn netns_target(lab: &Lab) -> Target {
    Target::Netns(lab.netns().display().to_string())
}

#[test]
fn nxdomain_fails_one_name_every_time_and_the_other_never() {
    let lab = Lab::new();
    let before = tally(&lab.client, BAD, 20, 1, Q);
    assert_eq!(before.answered, 20, "before the fault: {before:?}");

    let d = driver(&KernelLease::new());
    let spec = dns_spec(netns_target(&lab), &[BAD], DnsAction::Nxdomain, 1.0);
    let (r, took) = apply(d.as_ref(), &ctx(60), &spec);
    println!(
        "dns fault planned and applied in {:.2} ms",
        took.as_secs_f64() * 1000.0
    );

    let capture = Capture::new(&lab.netns());
    let bad = tally(&lab.client, BAD, 200, 1000, Q);
    let good = tally(&lab.client, GOOD, 200, 2000, Q);
    // The answers the program made carry correct IPv4 and UDP checksums (checked here as a
    // receiver without checksum offload would), with and without an EDNS record cut.
    let frames = capture.dns_answers();
    let made: Vec<(bool, u8)> = frames
        .iter()
        .map(|p| checksums_ok(p))
        .filter(|(_, rcode)| *rcode == 3)
        .collect();
    assert_eq!(made.len(), 200, "captured the 200 answers the program made");
    // The check itself can fail: one flipped bit in the question breaks the UDP checksum.
    let mut broken = frames[0].clone();
    let last = broken.len() - 5;
    broken[last] ^= 0x01;
    assert!(
        !checksums_ok(&broken).0,
        "a corrupted answer fails the check"
    );
    assert!(
        made.iter().all(|(ok, _)| *ok),
        "a made answer has a bad checksum"
    );
    println!("nxdomain on {BAD}: {bad:?}; {GOOD}: {good:?}");
    assert_eq!(bad.nxdomain, 200, "{BAD} gets rcode 3 every time: {bad:?}");
    assert_eq!(good.answered, 200, "{GOOD} always resolves: {good:?}");
    // Case does not matter, and the answer comes from the fault, not the server.
    let upper = tally(&lab.client, "BaD.FL.TEST", 10, 3000, Q);
    assert_eq!(upper.nxdomain, 10, "{upper:?}");
    assert_eq!(counter(d.as_ref(), &r, MATCHED), 210);
    assert_eq!(counter(d.as_ref(), &r, FAILED), 210);
    assert!(counter(d.as_ref(), &r, INSPECTED) >= 410);

    // glibc sees it the same way.
    for _ in 0..20 {
        assert_eq!(lab.getent(BAD), None, "getent hosts {BAD} fails");
        assert_eq!(lab.getent(GOOD).as_deref(), Some(GOOD_ADDR));
    }

    assert_eq!(d.revert(&r).expect("revert"), RevertOutcome::Reverted);
    let back = resolves_again(&lab.client, BAD, Duration::from_secs(1));
    println!(
        "{BAD} resolved {:.2} ms after revert",
        back.as_secs_f64() * 1000.0
    );
    let after = tally(&lab.client, BAD, 50, 4000, Q);
    assert_eq!(after.answered, 50, "after revert: {after:?}");
    assert_eq!(lab.getent(BAD).as_deref(), Some("10.9.9.2"));
    assert_eq!(
        d.revert(&r).expect("revert again"),
        RevertOutcome::AlreadyGone
    );
    // Revert disarms at once and detaches on a thread of its own (the detach waits for an
    // RCU grace period): the program is unloaded within a second.
    let loaded = || {
        ebpf::programs_named(PROGRAM_PREFIX).iter().any(|p| {
            r.data["prog_ids"]
                .as_array()
                .is_some_and(|ids| ids.iter().any(|i| i.as_u64() == Some(u64::from(p.id))))
        })
    };
    let until = std::time::Instant::now() + Duration::from_secs(1);
    while loaded() && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(!loaded(), "the program is unloaded within 1 s of revert");
}

#[test]
fn servfail_and_suffix_patterns() {
    let lab = Lab::new();
    let d = driver(&KernelLease::new());
    let spec = dns_spec(
        netns_target(&lab),
        &["*.svc.fl.test"],
        DnsAction::Servfail,
        1.0,
    );
    let (r, _) = apply(d.as_ref(), &ctx(60), &spec);
    for name in ["db.svc.fl.test", "A.B.Svc.Fl.Test"] {
        let t = tally(&lab.client, name, 50, 100, Q);
        assert_eq!(t.servfail, 50, "{name}: {t:?}");
    }
    // The pattern is below svc.fl.test, not svc.fl.test itself, nor a look-alike.
    let apex = tally(&lab.client, SVC_DOMAIN, 50, 200, Q);
    assert_eq!(apex.answered, 50, "{SVC_DOMAIN}: {apex:?}");
    let good = tally(&lab.client, GOOD, 50, 300, Q);
    assert_eq!(good.answered, 50, "{GOOD}: {good:?}");
    assert_eq!(lab.getent("x.svc.fl.test"), None);
    assert_eq!(lab.getent(SVC_DOMAIN).as_deref(), Some("10.9.9.3"));
    assert_eq!(d.revert(&r).expect("revert"), RevertOutcome::Reverted);
    resolves_again(&lab.client, "db.svc.fl.test", Duration::from_secs(1));
    let after = tally(&lab.client, "db.svc.fl.test", 20, 400, Q);
    if after.answered != 20 {
        let progs: Vec<_> = ebpf::programs_named(PROGRAM_PREFIX)
            .into_iter()
            .map(|p| (p.id, ebpf::holders(std::path::Path::new("/proc"), p.id)))
            .collect();
        std::thread::sleep(Duration::from_secs(1));
        let later = tally(&lab.client, "db.svc.fl.test", 20, 500, Q);
        panic!(
            "after revert: {after:?}; 1 s later {later:?}; recipe {}; loaded fl_dns_ programs and holders {progs:?}",
            r.data
        );
    }
}

#[test]
fn probability_0_3_fails_about_three_in_ten() {
    let lab = Lab::new();
    let d = driver(&KernelLease::new());
    let spec = dns_spec(netns_target(&lab), &[BAD], DnsAction::Nxdomain, 0.3);
    let (r, _) = apply(d.as_ref(), &ctx(120), &spec);
    let t = tally(&lab.client, BAD, 2000, 1, Q);
    let ratio = f64::from(t.nxdomain) / 2000.0;
    println!("probability 0.3 over 2000 queries: {t:?}, failed ratio {ratio:.4}");
    assert_eq!(
        t.nxdomain + t.answered,
        2000,
        "only the two outcomes: {t:?}"
    );
    assert!(
        (ratio - 0.3).abs() <= 0.03,
        "failed ratio {ratio:.4} is outside 0.30 +- 0.03"
    );
    let good = tally(&lab.client, GOOD, 200, 5000, Q);
    assert_eq!(good.answered, 200, "{good:?}");
    d.revert(&r).expect("revert");
}

#[test]
fn timeout_gives_no_answer_and_spares_other_names() {
    let lab = Lab::new();
    let d = driver(&KernelLease::new());
    let spec = dns_spec(netns_target(&lab), &[BAD], DnsAction::Timeout, 1.0);
    let (r, _) = apply(d.as_ref(), &ctx(60), &spec);
    let bad = tally(&lab.client, BAD, 10, 1, Duration::from_secs(1));
    assert_eq!(bad.timeouts, 10, "no answer within 1 s: {bad:?}");
    let good = tally(&lab.client, GOOD, 200, 100, Q);
    assert_eq!(good.answered, 200, "{good:?}");
    // glibc (timeout:1 attempts:1) gives up after its timeout.
    let t = Instant::now();
    assert_eq!(lab.getent(BAD), None);
    let waited = t.elapsed();
    println!(
        "getent hosts {BAD} gave up after {:.2} s",
        waited.as_secs_f64()
    );
    assert!(
        waited >= Duration::from_millis(900),
        "glibc waited for an answer: {waited:?}"
    );
    assert_eq!(lab.getent(GOOD).as_deref(), Some(GOOD_ADDR));
    assert_eq!(
        counter(d.as_ref(), &r, FAILED),
        counter(d.as_ref(), &r, MATCHED)
    );
    d.revert(&r).expect("revert");
    resolves_again(&lab.client, BAD, Duration::from_secs(1));
    assert_eq!(tally(&lab.client, BAD, 20, 300, Q).answered, 20);
}

#[test]
fn the_deadline_in_the_map_ends_the_fault_without_a_revert() {
    let lab = Lab::new();
    let lease = KernelLease::new();
    let d = driver(&lease);
    let spec = dns_spec(netns_target(&lab), &[BAD], DnsAction::Nxdomain, 1.0);
    let mut c = ctx(60);
    c.deadline = std::time::SystemTime::now() + Duration::from_millis(1500);
    let (r, _) = apply(d.as_ref(), &c, &spec);
    assert_eq!(tally(&lab.client, BAD, 20, 1, Q).nxdomain, 20);
    std::thread::sleep(Duration::from_millis(1600));
    let after = tally(&lab.client, BAD, 20, 100, Q);
    assert_eq!(after.answered, 20, "inert past its deadline: {after:?}");
    d.revert(&r).expect("revert");
}

#[test]
fn ipv6_queries_get_the_same_answers() {
    let lab = Lab::new();
    let sock = net_ebpf_support::udp_in(&lab.netns(), "[::]:0");
    let server = format!("[{B6}]:53");
    let ask = |name: &str, id: u16, edns: bool| {
        query_to(&sock, &server, name, id, edns, Q)
            .unwrap_or_else(|| panic!("no answer for {name} over IPv6"))
    };
    assert!(ask(GOOD, 1, false).answers > 0, "dnsmasq answers over IPv6");
    let d = driver(&KernelLease::new());
    let spec = dns_spec(netns_target(&lab), &[BAD], DnsAction::Nxdomain, 1.0);
    let (r, _) = apply(d.as_ref(), &ctx(60), &spec);
    let capture = Capture::new(&lab.netns());
    for i in 0..100u16 {
        let a = ask(BAD, 100 + i, i % 2 == 1);
        assert_eq!(a.rcode, 3, "query {i} over IPv6: {a:?}");
        assert!(a.same_question, "{a:?}");
        let g = ask(GOOD, 1000 + i, i % 2 == 1);
        assert!(g.rcode == 0 && g.answers > 0, "{GOOD} over IPv6: {g:?}");
    }
    let made: Vec<(bool, u8)> = capture
        .dns_answers()
        .iter()
        .filter(|p| p[0] >> 4 == 6)
        .map(|p| checksums_ok(p))
        .filter(|(_, rcode)| *rcode == 3)
        .collect();
    assert_eq!(
        made.len(),
        100,
        "captured the 100 IPv6 answers the program made"
    );
    assert!(
        made.iter().all(|(ok, _)| *ok),
        "a made IPv6 answer has a bad UDP checksum"
    );
    d.revert(&r).expect("revert");
    // As `resolves_again`, over IPv6.
    let t = Instant::now();
    let mut id = 5000;
    while ask(BAD, id, false).answers == 0 {
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "{BAD} still fails over IPv6 1 s after revert"
        );
        id += 1;
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn a_lease_that_is_not_renewed_ends_the_fault_in_the_kernel() {
    let lab = Lab::new();
    let lease = KernelLease::new();
    let d = driver(&lease);
    let spec = dns_spec(netns_target(&lab), &[BAD], DnsAction::Nxdomain, 1.0);
    let (r, _) = apply(d.as_ref(), &ctx(60), &spec);
    // The session renews the lease to 1 s from now, then never again (a hung agent).
    let renewed = Instant::now();
    lease.renew(std::time::SystemTime::now() + Duration::from_secs(1));
    assert_eq!(tally(&lab.client, BAD, 20, 1, Q).nxdomain, 20, "in force");
    let mut id = 100;
    while tally(&lab.client, BAD, 1, id, Q).answered == 0 {
        assert!(
            renewed.elapsed() < Duration::from_secs(2),
            "still failing 2 s after a 1 s lease"
        );
        id += 1;
        std::thread::sleep(Duration::from_millis(2));
    }
    let after = renewed.elapsed();
    println!(
        "{BAD} resolved {:.0} ms after the last renewal of a 1 s lease",
        after.as_secs_f64() * 1000.0
    );
    assert!(
        after >= Duration::from_millis(990),
        "not before the lease ended: {after:?}"
    );
    d.revert(&r).expect("revert");
}
