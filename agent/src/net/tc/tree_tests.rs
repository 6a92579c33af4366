use std::time::{Duration, SystemTime};

use faultline_core::fault::{Netem, Tbf, TrafficMatch};

use super::*;

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

fn member(id: &str, ports: &[u16], netem: Option<Netem>, tbf: Option<Tbf>) -> Member {
    Member {
        fault_id: id.into(),
        matcher: TrafficMatch {
            ports: ports.to_vec(),
            ..TrafficMatch::default()
        },
        netem,
        tbf,
        deadline: at(100),
    }
}

fn delay(ms: u64) -> Option<Netem> {
    Some(Netem {
        delay_us: ms * 1000,
        ..Netem::default()
    })
}

fn loss(pct: f64) -> Option<Netem> {
    Some(Netem {
        loss_pct: pct,
        ..Netem::default()
    })
}

fn rate(bps: u64) -> Option<Tbf> {
    Some(Tbf {
        rate_bps: bps,
        ..Tbf::default()
    })
}

#[test]
fn faults_on_the_same_traffic_compose_into_one_class() {
    let t = Tree::default()
        .with(&member("a", &[80, 443], delay(100), None), "eth0")
        .expect("a")
        .with(&member("b", &[443, 80, 80], loss(5.0), None), "eth0")
        .expect("b")
        .with(&member("c", &[80, 443], None, rate(10_000_000)), "eth0")
        .expect("c");
    assert_eq!(t.classes.len(), 1, "{t:#?}");
    let class = &t.classes[0];
    assert_eq!(class.minor, FIRST_MINOR);
    assert_eq!(class.fault_ids(), vec!["a", "b", "c"]);
    let n = class.netem().expect("netem");
    assert_eq!((n.delay_us, n.loss_pct), (100_000, 5.0));
    assert_eq!(class.tbf().expect("tbf").rate, 1_250_000);
}

#[test]
fn two_faults_setting_the_same_thing_are_refused_naming_both() {
    let t = Tree::default()
        .with(&member("a", &[], delay(100), None), "eth0")
        .expect("a");
    let e = t
        .with(&member("b", &[], delay(50), None), "eth0")
        .expect_err("conflict");
    assert_eq!(
        e.to_string(),
        "fault b sets delay for the same traffic as fault a, already applied on interface eth0; \
         one class cannot carry two delay settings: put them in one fault or give them different matches"
    );
    let t = t
        .with(&member("r1", &[], None, rate(1_000_000)), "eth0")
        .expect("r1");
    let e = t
        .with(&member("r2", &[], None, rate(2_000_000)), "eth0")
        .expect_err("rate conflict");
    assert!(e.to_string().contains("sets rate"), "{e}");
}

#[test]
fn different_matches_get_their_own_classes_and_minors_are_reused() {
    let t = Tree::default()
        .with(&member("a", &[80], delay(10), None), "eth0")
        .expect("a")
        .with(&member("b", &[81], delay(20), None), "eth0")
        .expect("b")
        .with(&member("c", &[82], delay(30), None), "eth0")
        .expect("c");
    let minors: Vec<u16> = t.classes.iter().map(|c| c.minor).collect();
    assert_eq!(minors, vec![2, 3, 4]);
    let t = t.without("b");
    assert_eq!(t.class_of("b"), None);
    let t = t
        .with(&member("d", &[83], delay(40), None), "eth0")
        .expect("d");
    assert_eq!(t.class_of("d").map(|c| c.minor), Some(3));
    assert!(t.without("a").without("c").without("d").is_empty());
}

#[test]
fn applying_the_same_fault_twice_is_one_fault() {
    let m = member("a", &[], delay(10), None);
    let once = Tree::default().with(&m, "eth0").expect("once");
    let twice = once.with(&m, "eth0").expect("twice");
    assert_eq!(once, twice);
}

#[test]
fn removing_a_member_leaves_the_others_settings() {
    let t = Tree::default()
        .with(&member("a", &[], delay(100), None), "eth0")
        .expect("a")
        .with(&member("b", &[], loss(30.0), None), "eth0")
        .expect("b");
    let n = t.without("a").classes[0].netem().expect("netem");
    assert_eq!((n.delay_us, n.loss_pct), (0, 30.0));
}

#[test]
fn class_deadline_is_the_latest_of_its_faults() {
    let mut a = member("a", &[], delay(100), None);
    a.deadline = at(50);
    let mut b = member("b", &[], loss(1.0), None);
    b.deadline = at(70);
    let t = Tree::default()
        .with(&a, "eth0")
        .expect("a")
        .with(&b, "eth0")
        .expect("b");
    assert_eq!(t.classes[0].deadline(), Some(at(70)));
}

#[test]
fn tbf_defaults_derive_from_the_rate() {
    let o = tbf_options(&Tbf {
        rate_bps: 10_000_000,
        ..Tbf::default()
    });
    assert_eq!((o.rate, o.burst, o.limit), (1_250_000, 16_384, 78_884));
    let o = tbf_options(&Tbf {
        rate_bps: 40_000_000_000,
        ..Tbf::default()
    });
    assert_eq!(
        (o.rate, o.burst, o.limit),
        (5_000_000_000, 50_000_000, 300_000_000)
    );
    let o = tbf_options(&Tbf {
        rate_bps: 8_000,
        burst_bytes: 3000,
        limit_bytes: 9000,
    });
    assert_eq!((o.rate, o.burst, o.limit), (1000, 3000, 9000));
}
