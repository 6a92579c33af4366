/* SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0 */
/*
 * common.h: includes, constants and the map layouts every Faultline eBPF program shares.
 *
 * The structs here are mirrored byte for byte by agent/src/net/rules.rs and, for
 * struct fl_conn_key and FL_SESSION_MARK, agent/src/net/control/mod.rs (both have unit tests
 * on their bytes): change both together.
 */
#ifndef FL_COMMON_H
#define FL_COMMON_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

/* Verdicts. Under TCX, TC_ACT_UNSPEC means "next program" (and pass when there is none), so
 * Faultline programs never cut the chain short for packets they leave alone; TC_ACT_STOLEN
 * would also mean "next" under TCX, so drops always use TC_ACT_SHOT. */
#define FL_TC_PASS TC_ACT_UNSPEC
#define FL_TC_DROP TC_ACT_SHOT
#define FL_CG_PASS 1
#define FL_CG_DROP 0

/* Which hook a program runs on; decides which end of a packet is the peer. */
#define FL_DIR_INGRESS 0
#define FL_DIR_EGRESS 1

/* fl_config.flags */
#define FL_HAS_DST (1u << 0)   /* the destination must lie in set FL_SET_DST */
#define FL_HAS_SRC (1u << 1)   /* the source must lie in set FL_SET_SRC */
#define FL_HAS_PEER (1u << 2)  /* the peer (dst on egress, src on ingress) in FL_SET_PEER */
#define FL_HAS_PORTS (1u << 3) /* the source or destination port must be in fl_ports */
#define FL_PROTECT (1u << 4)   /* never match port 22 or an address of FL_SET_PROTECTED */

/* The one configuration entry (fl_cfg[0]) of a loaded object. 24 bytes. */
struct fl_config {
	/* bpf_ktime_get_ns() clock; once now >= deadline_ns every packet passes untouched. */
	__u64 deadline_ns;
	/* Act on a matching packet when (u64)bpf_get_prandom_u32() < threshold:
	 * 0 = never, 1 << 32 = always. */
	__u64 threshold;
	__u32 flags;
	/* IPPROTO_TCP / IPPROTO_UDP / IPPROTO_ICMP (ICMPv6 for IPv6 packets), 0 = any. */
	__u8 protocol;
	__u8 pad[3];
};

/* Address sets in the fl_cidrs trie. */
#define FL_SET_DST 1
#define FL_SET_SRC 2
#define FL_SET_PEER 3
#define FL_SET_PROTECTED 4

/* Key of fl_cidrs, an LPM trie shared by every set and both families: data[0] is the set,
 * data[1] the family (4 or 6), data[2..4] zero, data[4..] the address (IPv4 in the first four
 * bytes). prefixlen = 32 + the CIDR's prefix length. 24 bytes. */
struct fl_cidr_key {
	__u32 prefixlen;
	__u8 data[20];
};

#define FL_KEY_HEAD_BITS 32

/* The sizes agent/src/net/rules.rs writes (CONFIG_SIZE, 4 + KEY_DATA_SIZE). */
_Static_assert(sizeof(struct fl_config) == 24, "struct fl_config must stay 24 bytes");
_Static_assert(sizeof(struct fl_cidr_key) == 24, "struct fl_cidr_key must stay 24 bytes");

/* fl_stats indexes (per-CPU u64 counters). */
#define FL_STAT_MATCHED 0
#define FL_STAT_ACTED 1
/* Packets the rules matched but that belong to the agent's own session (left alone). */
#define FL_STAT_SPARED 2
#define FL_STATS 3

#define FL_MAX_CIDRS 512
#define FL_MAX_PORTS 128

/* The agent's own session (agent/src/net/control/): never matched, whatever the rules say.
 *
 * FL_SESSION_MARK is the SO_MARK of the agent's session sockets (SESSION_MARK in Rust). It is
 * on every packet those sockets send (skb->mark, set before netfilter, so it survives DNAT and
 * SNAT) and on the socket itself (skb->sk->mark: cgroup_skb ingress, TC egress). Compared as a
 * whole word: a packet whose mark other software changed falls back to the tuple check. Its
 * bits avoid the marks kube-proxy (0x4000, 0x8000), Cilium (0x0f00 and the upper half),
 * Calico and Weave (the upper half) and the AWS VPC CNI (0x80) use. */
#define FL_SESSION_MARK 0x3017

/* Key of fl_session: one direction of a session connection as it is on the wire here, i.e.
 * after NAT (the agent reads the translated tuple from conntrack). The agent writes both
 * directions of each connection, so one lookup with the packet's own (src, dst) finds it on
 * any hook. Addresses in network order (IPv4 in the first four bytes), ports in host order.
 * 40 bytes. */
struct fl_conn_key {
	__u8 family; /* 4 or 6 */
	__u8 pad[3];
	__u16 sport;
	__u16 dport;
	__u8 saddr[16];
	__u8 daddr[16];
};

_Static_assert(sizeof(struct fl_conn_key) == 40, "struct fl_conn_key must stay 40 bytes");

#define FL_MAX_SESSION 64

#endif
