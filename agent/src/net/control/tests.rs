use std::sync::{Arc, Mutex, Weak};

use super::*;

fn conn(local: &str, remote: &str) -> Conn {
    Conn {
        local: local.parse().expect("local"),
        remote: remote.parse().expect("remote"),
    }
}

#[test]
fn key_bytes_follow_struct_fl_conn_key() {
    let k = ConnKey {
        src: "10.1.2.3:40001".parse().expect("src"),
        dst: "10.9.9.9:443".parse().expect("dst"),
    };
    let b = k.to_bytes();
    assert_eq!(b[0], 4);
    assert_eq!(&b[1..4], &[0, 0, 0]);
    assert_eq!(&b[4..6], &40001u16.to_ne_bytes());
    assert_eq!(&b[6..8], &443u16.to_ne_bytes());
    assert_eq!(&b[8..12], &[10, 1, 2, 3]);
    assert_eq!(&b[12..24], &[0u8; 12]);
    assert_eq!(&b[24..28], &[10, 9, 9, 9]);
    assert_eq!(&b[28..40], &[0u8; 12]);
    let k6 = ConnKey {
        src: "[2001:db8::1]:1".parse().expect("src"),
        dst: "[2001:db8::2]:2".parse().expect("dst"),
    };
    let b = k6.to_bytes();
    assert_eq!(b[0], 6);
    assert_eq!(b[23], 1);
    assert_eq!(b[39], 2);
}

#[test]
fn a_connection_is_exempt_both_ways() {
    let c = conn("10.0.0.1:40001", "10.0.0.2:7443");
    let [out, back] = c.keys();
    assert_eq!((out.src, out.dst), (c.local, c.remote));
    assert_eq!((back.src, back.dst), (c.remote, c.local));
}

#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<Vec<ConnKey>>>,
}

impl ChannelHolder for Recorder {
    fn channel_changed(&self, keys: &[ConnKey]) {
        self.seen.lock().expect("lock").push(keys.to_vec());
    }
}

#[test]
fn holders_follow_registrations_until_they_are_dropped() {
    let ch = ControlChannel::new();
    let rec = Arc::new(Recorder::default());
    let weak: Weak<Recorder> = Arc::downgrade(&rec);
    ch.subscribe(weak);
    let socket = conn("10.0.0.1:40001", "10.96.0.10:443");
    let wire = conn("10.0.0.1:28776", "10.244.1.7:7443");
    let r1 = ch.register(&[socket, wire]);
    assert_eq!(ch.keys().len(), 4);
    let r2 = ch.register(&[conn("10.0.0.1:40002", "10.96.0.10:443")]);
    assert_eq!(ch.keys().len(), 6);
    drop(r1);
    assert_eq!(ch.keys().len(), 2, "the closed connection's keys are gone");
    drop(r2);
    assert!(ch.keys().is_empty());
    let seen = rec.seen.lock().expect("lock").clone();
    let sizes: Vec<usize> = seen.iter().map(Vec::len).collect();
    assert_eq!(sizes, vec![4, 6, 2, 0], "every change reached the holder");
    // A dropped holder is forgotten; a registration outliving its channel is harmless.
    drop(rec);
    let r3 = ch.register(&[socket]);
    drop(ch);
    drop(r3);
}

#[test]
fn the_process_registry_is_one() {
    let a = ControlChannel::process();
    let b = ControlChannel::process();
    assert!(Arc::ptr_eq(&a.0, &b.0));
}
