//! The spare eBPF objects of `net::warm` against the real kernel (root): a spare's programs
//! are loaded and verified but attached nowhere and inert (deadline 0); taking one makes the
//! next in the background; and a spare dies with its process (SIGKILL), like every fault's
//! programs, since nothing is pinned.

mod net_ebpf_support;

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use aya::maps::{Array, Map, MapData};
use faultline_agent::net::rules::{Config, CONFIG_SIZE};
use faultline_agent::net::{ebpf, warm};
use net_ebpf_support::{require_root, Helper};

const CHILD_ENV: &str = "FL_WARM_TEST_CHILD";

/// Ids of programs some link attaches.
fn attached() -> Vec<u32> {
    aya::programs::loaded_links()
        .filter_map(Result::ok)
        .map(|l| l.program_id())
        .collect()
}

/// The deadline in the `fl_cfg` map of a loaded program.
fn deadline_of(id: u32) -> u64 {
    let p = ebpf::programs_named("fl_")
        .into_iter()
        .find(|p| p.id == id)
        .unwrap_or_else(|| panic!("program {id} is not loaded"));
    for m in &p.map_ids {
        let data = MapData::from_id(*m).expect("map by id");
        if data
            .info()
            .ok()
            .and_then(|i| i.name_as_str().map(str::to_owned))
            != Some(ebpf::CONFIG_MAP.to_string())
        {
            continue;
        }
        let map = Map::from_map_data(data).expect("fl_cfg");
        let cfg: Array<MapData, [u8; CONFIG_SIZE]> = Array::try_from(map).expect("array");
        return Config::from_bytes(&cfg.get(&0, 0).expect("fl_cfg[0]")).deadline_ns;
    }
    panic!("program {id} has no {} map", ebpf::CONFIG_MAP);
}

fn loaded(ids: &[u32]) -> Vec<u32> {
    ebpf::programs_named("fl_")
        .into_iter()
        .map(|p| p.id)
        .filter(|id| ids.contains(id))
        .collect()
}

#[test]
fn a_spare_is_verified_unattached_and_inert_and_taking_it_makes_the_next() {
    require_root();
    warm::DROP.fill().expect("make the drop spare");
    let ids = warm::DROP.prog_ids();
    assert_eq!(ids.len(), 4, "the four drop programs are verified: {ids:?}");
    let links = attached();
    for id in &ids {
        assert!(!links.contains(id), "spare program {id} is attached");
        assert_eq!(deadline_of(*id), 0, "spare program {id} is armed");
    }
    let taken = warm::DROP.take().expect("take the spare");
    let until = Instant::now() + Duration::from_secs(10);
    let next = loop {
        let next = warm::DROP.prog_ids();
        if !next.is_empty() || Instant::now() > until {
            break next;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(next.len(), 4, "a new spare within 10 s");
    assert!(
        next.iter().all(|id| !ids.contains(id)),
        "the new spare is another object: {next:?} vs {ids:?}"
    );
    drop(taken);
    // The taken object's programs go with its last file descriptor.
    assert!(loaded(&ids).is_empty(), "still loaded: {:?}", loaded(&ids));
}

/// The helper of `a_spare_dies_with_its_process`: makes every spare, prints their program
/// ids, then waits to be killed.
#[test]
#[ignore = "helper process started by a_spare_dies_with_its_process"]
fn child_holding_spares() {
    assert!(
        std::env::var(CHILD_ENV).is_ok(),
        "only run by a_spare_dies_with_its_process (needs {CHILD_ENV})"
    );
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).expect("pdeathsig");
    let mut ids = Vec::new();
    for w in [&warm::DROP, &warm::DNS, &warm::STEER] {
        w.fill().expect("make a spare");
        ids.extend(w.prog_ids());
    }
    let ids: Vec<String> = ids.iter().map(u32::to_string).collect();
    println!("READY {}", ids.join(","));
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn a_spare_dies_with_its_process() {
    require_root();
    let mut child = Helper::start("child_holding_spares", (CHILD_ENV, "1"));
    let out = child.0.stdout.take().expect("stdout");
    let ids: Vec<u32> = BufReader::new(out)
        .lines()
        .map_while(Result::ok)
        .find_map(|l| l.split_once("READY ").map(|(_, ids)| ids.to_owned()))
        .expect("the helper's READY line")
        .split(',')
        .map(|s| s.parse().expect("program id"))
        .collect();
    assert_eq!(ids.len(), 7, "drop 4, dns 1, steering 2: {ids:?}");
    assert_eq!(loaded(&ids).len(), 7, "the spares are loaded");
    let pid = child.0.id();
    for id in &ids {
        assert_eq!(
            ebpf::holders(std::path::Path::new("/proc"), *id),
            vec![pid],
            "program {id} is held by the helper alone"
        );
    }
    child.0.kill().expect("SIGKILL the helper");
    let _ = child.0.wait();
    let until = Instant::now() + Duration::from_secs(1);
    while !loaded(&ids).is_empty() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        loaded(&ids).is_empty(),
        "programs left 1 s after SIGKILL: {:?}",
        loaded(&ids)
    );
}
