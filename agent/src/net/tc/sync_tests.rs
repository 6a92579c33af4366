use std::time::SystemTime;

use faultline_core::fault::{Netem, Tbf, TrafficMatch};

use super::*;
use crate::net::tc::qdisc::Class;
use crate::net::tc::tree::Member;

/// A kernel of one interface (ifindex 7), enough to follow the tree through replaces and
/// deletes.
#[derive(Default)]
struct FakeKernel {
    qdiscs: Vec<Qdisc>,
    classes: Vec<Class>,
    ops: Vec<String>,
}

const IF: u32 = 7;

impl FakeKernel {
    fn with_root(kind: &str, handle: u32) -> Self {
        let mut k = FakeKernel::default();
        k.qdiscs.push(q(TC_H_ROOT, handle, kind));
        k
    }

    fn drop_subtree(&mut self, handle: u32) {
        let major = handle >> 16;
        let under: Vec<u32> = self
            .qdiscs
            .iter()
            .filter(|x| x.parent >> 16 == major && x.parent != TC_H_ROOT)
            .map(|x| x.handle)
            .collect();
        self.qdiscs.retain(|x| x.handle != handle);
        self.classes.retain(|c| c.handle >> 16 != major);
        for h in under {
            self.drop_subtree(h);
        }
    }

    fn root(&self) -> Option<&Qdisc> {
        self.qdiscs.iter().find(|x| x.parent == TC_H_ROOT)
    }

    fn leaf(&self, parent: u32) -> Option<(&str, u32)> {
        self.qdiscs
            .iter()
            .find(|x| x.parent == parent)
            .map(|x| (x.kind.as_str(), x.handle))
    }
}

fn q(parent: u32, handle: u32, kind: &str) -> Qdisc {
    Qdisc {
        ifindex: IF,
        handle,
        parent,
        kind: kind.into(),
        options: Vec::new(),
    }
}

impl TcPort for FakeKernel {
    fn links(&mut self) -> Result<Vec<(u32, String)>, TcError> {
        Ok(vec![(IF, "eth0".into())])
    }
    fn qdiscs(&mut self) -> Result<Vec<Qdisc>, TcError> {
        Ok(self.qdiscs.clone())
    }
    fn classes(&mut self, _ifindex: u32) -> Result<Vec<Class>, TcError> {
        Ok(self.classes.clone())
    }
    fn qdisc_replace(
        &mut self,
        _i: u32,
        parent: u32,
        handle: u32,
        kind: &str,
        options: &[u8],
    ) -> Result<(), TcError> {
        self.ops.push(format!(
            "qdisc {kind} {} @ {}",
            handle_str(handle),
            handle_str(parent)
        ));
        if let Some(old) = self
            .qdiscs
            .iter()
            .find(|x| x.parent == parent)
            .map(|x| x.handle)
        {
            if old != handle {
                self.drop_subtree(old);
            }
        }
        self.qdiscs.retain(|x| x.handle != handle);
        self.qdiscs.push(Qdisc {
            options: options.to_vec(),
            ..q(parent, handle, kind)
        });
        Ok(())
    }
    fn qdisc_delete(&mut self, _i: u32, parent: u32, handle: u32) -> Result<(), TcError> {
        self.ops
            .push(format!("delete qdisc {}", handle_str(handle)));
        self.drop_subtree(handle);
        if parent == TC_H_ROOT {
            self.qdiscs.push(q(TC_H_ROOT, 0, "noqueue"));
        }
        Ok(())
    }
    fn class_replace(
        &mut self,
        _i: u32,
        parent: u32,
        classid: u32,
        kind: &str,
        options: &[u8],
    ) -> Result<(), TcError> {
        self.ops.push(format!("class {}", handle_str(classid)));
        self.classes.retain(|c| c.handle != classid);
        self.classes.push(Class {
            handle: classid,
            parent,
            kind: kind.into(),
            options: options.to_vec(),
        });
        Ok(())
    }
    fn class_delete(&mut self, _i: u32, _p: u32, classid: u32) -> Result<(), TcError> {
        self.ops
            .push(format!("delete class {}", handle_str(classid)));
        self.classes.retain(|c| c.handle != classid);
        let leaves: Vec<u32> = self
            .qdiscs
            .iter()
            .filter(|x| x.parent == classid)
            .map(|x| x.handle)
            .collect();
        for h in leaves {
            self.drop_subtree(h);
        }
        Ok(())
    }
}

fn tree_of(faults: &[(&str, u16, Option<Netem>, Option<Tbf>)]) -> Tree {
    let mut t = Tree::default();
    for (id, port, netem, tbf) in faults {
        let m = Member {
            fault_id: (*id).into(),
            matcher: TrafficMatch {
                ports: vec![*port],
                ..TrafficMatch::default()
            },
            netem: netem.clone(),
            tbf: tbf.clone(),
            deadline: SystemTime::now(),
        };
        t = t.with(&m, "eth0").expect("compose");
    }
    t
}

fn delay() -> Option<Netem> {
    Some(Netem {
        delay_us: 100_000,
        ..Netem::default()
    })
}

fn rate() -> Option<Tbf> {
    Some(Tbf {
        rate_bps: 10_000_000,
        ..Tbf::default()
    })
}

/// Applies trees one after another, remembering what was applied, as `Iface` does.
struct Driver {
    k: FakeKernel,
    applied: Applied,
}

impl Driver {
    fn on(root: &str, handle: u32) -> Self {
        Driver {
            k: FakeKernel::with_root(root, handle),
            applied: Applied::new(),
        }
    }

    fn apply(&mut self, tree: &Tree) -> Result<(), TcError> {
        self.applied = apply(&mut self.k, IF, "eth0", tree, &self.applied)?;
        Ok(())
    }
}

#[test]
fn replaces_a_kernel_default_root_and_is_idempotent() {
    let mut d = Driver::on("noqueue", 0);
    let tree = tree_of(&[("a", 80, delay(), None)]);
    d.apply(&tree).expect("apply");
    assert_eq!(
        d.k.ops,
        vec![
            "qdisc htb fa17: @ ffff:ffff",
            "class fa17:1",
            "class fa17:2",
            "qdisc netem fb02: @ fa17:2"
        ]
    );
    let root = d.k.root().expect("root");
    assert_eq!((root.kind.as_str(), root.handle), ("htb", ROOT_HANDLE));
    assert_eq!(root.options, encode::htb_root(1));
    let before = (d.k.qdiscs.clone(), d.k.classes.clone());
    d.k.ops.clear();
    d.apply(&tree).expect("again");
    assert!(
        d.k.ops.is_empty(),
        "an unchanged tree changes nothing: {:?}",
        d.k.ops
    );
    assert_eq!((d.k.qdiscs.clone(), d.k.classes.clone()), before);
    // Without memory of what was applied (another process made it), the leaves are redone.
    apply(&mut d.k, IF, "eth0", &tree, &Applied::new()).expect("unknown");
    assert_eq!(
        d.k.ops,
        vec!["delete qdisc fb02:", "qdisc netem fb02: @ fa17:2"]
    );
    assert_eq!((d.k.qdiscs.clone(), d.k.classes.clone()), before);
}

#[test]
fn leaf_shapes_change_through_a_delete() {
    let mut d = Driver::on("pfifo_fast", 0);
    d.apply(&tree_of(&[("a", 80, delay(), None)]))
        .expect("netem");
    let both = tree_of(&[("a", 80, delay(), None), ("b", 80, None, rate())]);
    d.apply(&both).expect("netem+tbf");
    assert_eq!(d.k.leaf(classid(2)), Some(("netem", netem_handle(2))));
    assert_eq!(d.k.leaf(netem_handle(2) | 1), Some(("tbf", tbf_handle(2))));
    d.k.ops.clear();
    d.apply(&both.without("a")).expect("tbf only");
    assert!(
        d.k.ops.contains(&"delete qdisc fb02:".to_string()),
        "{:?}",
        d.k.ops
    );
    assert_eq!(d.k.leaf(classid(2)), Some(("tbf", tbf_handle(2))));
    assert_eq!(d.k.leaf(netem_handle(2) | 1), None);
}

#[test]
fn same_shape_changes_in_place_with_every_netem_parameter_explicit() {
    let mut d = Driver::on("noqueue", 0);
    let delay_and_loss = tree_of(&[
        ("a", 80, delay(), None),
        (
            "b",
            80,
            Some(Netem {
                loss_pct: 5.0,
                ..Netem::default()
            }),
            None,
        ),
    ]);
    d.apply(&delay_and_loss).expect("both");
    d.k.ops.clear();
    d.apply(&delay_and_loss.without("a")).expect("loss only");
    assert_eq!(
        d.k.ops,
        vec!["qdisc netem fb02: @ fa17:2"],
        "changed in place"
    );
    let opts =
        &d.k.qdiscs
            .iter()
            .find(|x| x.handle == netem_handle(2))
            .expect("netem")
            .options;
    let kinds: Vec<u16> = encode::attrs(&opts[encode::NETEM_QOPT_LEN..])
        .iter()
        .map(|a| a.0)
        .collect();
    use encode::attr::*;
    assert_eq!(
        kinds,
        vec![NETEM_CORR, NETEM_REORDER, NETEM_CORRUPT, NETEM_RATE]
    );
}

#[test]
fn a_netem_that_loses_its_table_is_made_again() {
    let mut d = Driver::on("noqueue", 0);
    let mut jitter = Netem {
        delay_us: 50_000,
        jitter_us: 10_000,
        distribution: Some(faultline_core::fault::Distribution::Normal),
        ..Netem::default()
    };
    d.apply(&tree_of(&[("a", 80, Some(jitter.clone()), None)]))
        .expect("normal");
    d.k.ops.clear();
    jitter.distribution = None;
    d.apply(&tree_of(&[("a", 80, Some(jitter), None)]))
        .expect("uniform");
    assert_eq!(
        d.k.ops,
        vec!["delete qdisc fb02:", "qdisc netem fb02: @ fa17:2"]
    );
}

#[test]
fn classes_the_tree_dropped_are_deleted() {
    let mut d = Driver::on("noqueue", 0);
    let two = tree_of(&[("a", 80, delay(), None), ("b", 81, None, rate())]);
    d.apply(&two).expect("two");
    assert_eq!(d.k.classes.len(), 3);
    d.apply(&two.without("a")).expect("one");
    let mut left: Vec<String> = d.k.classes.iter().map(|c| handle_str(c.handle)).collect();
    left.sort();
    assert_eq!(left, vec!["fa17:1", "fa17:3"]);
    assert_eq!(d.k.leaf(classid(2)), None);
}

#[test]
fn an_empty_tree_gives_the_kernel_default_back() {
    let mut d = Driver::on("fq_codel", 0);
    d.apply(&tree_of(&[("a", 80, delay(), None)]))
        .expect("apply");
    d.apply(&Tree::default()).expect("remove");
    let root = d.k.root().expect("root");
    assert_eq!((root.kind.as_str(), root.handle), ("noqueue", 0));
    assert_eq!(d.k.qdiscs.len(), 1);
    assert!(
        !remove(&mut d.k, IF).expect("again"),
        "nothing left to remove"
    );
}

#[test]
fn a_custom_root_is_refused_before_any_change() {
    let mut d = Driver::on("fq", 0x0001_0000);
    let e = d
        .apply(&tree_of(&[("a", 80, delay(), None)]))
        .expect_err("custom root");
    assert_eq!(
        e.to_string(),
        "interface eth0 has a custom root qdisc fq (handle 1:); Faultline will not replace it"
    );
    assert!(d.k.ops.is_empty(), "{:?}", d.k.ops);
    assert!(!remove(&mut d.k, IF).expect("remove"), "not ours to delete");
    assert_eq!(d.k.root().map(|r| r.kind.as_str()), Some("fq"));
}
