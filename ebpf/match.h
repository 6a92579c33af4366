/* SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0 */
/*
 * match.h: the traffic-match rules shared by drop.bpf.c and steer.bpf.c: the maps that hold
 * one fault's rules (written by agent/src/net/rules.rs), packet parsing relative to the
 * network header (works for TC on Ethernet or L3 devices and for cgroup_skb alike), the
 * deadline check, the agent's session exemption (fl_session, written by
 * agent/src/net/control/) and the per-CPU counters.
 *
 * Use:
 *     const struct fl_config *cfg = fl_active_config();   // NULL once past the deadline
 *     if (cfg && fl_match(skb, FL_DIR_EGRESS, cfg)) { fl_count(FL_STAT_MATCHED); ... }
 */
#ifndef FL_MATCH_H
#define FL_MATCH_H

#include "common.h"
#include <linux/ip.h>
#include <linux/ipv6.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct fl_config);
} fl_cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, FL_MAX_CIDRS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct fl_cidr_key);
	__type(value, __u8);
} fl_cidrs SEC(".maps");

/* Ports in host byte order. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FL_MAX_PORTS);
	__type(key, __u16);
	__type(value, __u8);
} fl_ports SEC(".maps");

/* The agent's session connections as they are on the wire (both directions of each); kept
 * current by the agent at every connect and disconnect. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FL_MAX_SESSION);
	__type(key, struct fl_conn_key);
	__type(value, __u8);
} fl_session SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FL_STATS);
	__type(key, __u32);
	__type(value, __u64);
} fl_stats SEC(".maps");

/* What matching needs of one packet. Addresses in network order, IPv4 in the first 4 bytes. */
struct fl_pkt {
	__u8 family; /* 4 or 6 */
	__u8 proto;
	__u8 has_ports;
	__u8 pad;
	__u16 sport; /* host order */
	__u16 dport;
	__u8 saddr[16];
	__u8 daddr[16];
};

#define FL_IPPROTO_ICMPV6 58
#define FL_IPPROTO_SCTP 132
#define FL_SSH_PORT 22
/* IPv6 extension headers skipped before the transport header. */
#define FL_MAX_EXT_HEADERS 4

static __always_inline int fl_load(struct __sk_buff *skb, __u32 off, void *to, __u32 len)
{
	return bpf_skb_load_bytes_relative(skb, off, to, len, BPF_HDR_START_NET);
}

/* Parses the IP and transport headers; returns 0 for packets that are not IP. */
static __always_inline int fl_parse(struct __sk_buff *skb, struct fl_pkt *p)
{
	__u8 first = 0;
	__u32 l4;

	if (fl_load(skb, 0, &first, 1) < 0)
		return 0;
	if ((first >> 4) == 4) {
		struct iphdr ip;

		if (fl_load(skb, 0, &ip, sizeof(ip)) < 0)
			return 0;
		p->family = 4;
		p->proto = ip.protocol;
		__builtin_memcpy(p->saddr, &ip.saddr, 4);
		__builtin_memcpy(p->daddr, &ip.daddr, 4);
		if (ip.frag_off & bpf_htons(0x1fff))
			return 1; /* a later fragment: no transport header */
		l4 = (__u32)ip.ihl * 4;
	} else if ((first >> 4) == 6) {
		struct ipv6hdr ip6;
		__u8 nh;

		if (fl_load(skb, 0, &ip6, sizeof(ip6)) < 0)
			return 0;
		p->family = 6;
		__builtin_memcpy(p->saddr, &ip6.saddr, 16);
		__builtin_memcpy(p->daddr, &ip6.daddr, 16);
		nh = ip6.nexthdr;
		l4 = sizeof(ip6);
#pragma unroll
		for (int i = 0; i < FL_MAX_EXT_HEADERS; i++) {
			__u8 ext[4];

			if (nh != 0 && nh != 43 && nh != 60 && nh != 44 && nh != 51)
				break;
			if (fl_load(skb, l4, ext, sizeof(ext)) < 0)
				return 0;
			if (nh == 44) {
				/* fragment header: only the first fragment has ports */
				if (((__u16)ext[2] << 8 | ext[3]) & 0xfff8) {
					p->proto = ext[0];
					return 1;
				}
				l4 += 8;
			} else if (nh == 51) {
				l4 += ((__u32)ext[1] + 2) * 4;
			} else {
				l4 += ((__u32)ext[1] + 1) * 8;
			}
			nh = ext[0];
		}
		p->proto = nh;
	} else {
		return 0;
	}
	if (p->proto == IPPROTO_TCP || p->proto == IPPROTO_UDP || p->proto == FL_IPPROTO_SCTP) {
		__u16 ports[2];

		if (fl_load(skb, l4, ports, sizeof(ports)) == 0) {
			p->sport = bpf_ntohs(ports[0]);
			p->dport = bpf_ntohs(ports[1]);
			p->has_ports = 1;
		}
	}
	return 1;
}

/* Whether addr (of the given family) lies in one of the set's CIDRs. */
static __always_inline int fl_in_set(__u8 set, __u8 family, const __u8 *addr)
{
	struct fl_cidr_key k = {};

	k.prefixlen = FL_KEY_HEAD_BITS + (family == 4 ? 32 : 128);
	k.data[0] = set;
	k.data[1] = family;
	__builtin_memcpy(&k.data[4], addr, 16);
	return bpf_map_lookup_elem(&fl_cidrs, &k) != 0;
}

static __always_inline int fl_port_listed(__u16 port)
{
	return bpf_map_lookup_elem(&fl_ports, &port) != 0;
}

/* The fault's configuration while its deadline is in the future; NULL once past it (or when
 * the agent never wrote one), in which case the caller leaves every packet alone. */
static __always_inline const struct fl_config *fl_active_config(void)
{
	__u32 zero = 0;
	const struct fl_config *cfg = bpf_map_lookup_elem(&fl_cfg, &zero);

	if (!cfg)
		return 0;
	if (bpf_ktime_get_ns() >= cfg->deadline_ns)
		return 0;
	return cfg;
}

static __always_inline void fl_count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&fl_stats, &idx);

	if (v)
		*v += 1;
}

/* Whether the packet belongs to the agent's own session, on any hook and through any NAT:
 * - its mark is the session mark (everything the session sockets send, from the first SYN:
 *   TC egress, cgroup_skb egress);
 * - its socket carries the session mark (cgroup_skb ingress, where skb->sk is the receiving
 *   socket; TC egress);
 * - or its TCP 4-tuple is one of fl_session (TC ingress, where there is no socket yet and no
 *   mark: the only thing an arriving packet carries is its addresses and ports, and those are
 *   the translated ones the agent read from conntrack). */
static __always_inline int fl_is_session(struct __sk_buff *skb, const struct fl_pkt *p)
{
	struct fl_conn_key k = {};
	struct bpf_sock *sk;

	if (skb->mark == FL_SESSION_MARK)
		return 1;
	sk = skb->sk;
	if (sk) {
		sk = bpf_sk_fullsock(sk);
		if (sk && sk->mark == FL_SESSION_MARK)
			return 1;
	}
	if (p->proto != IPPROTO_TCP || !p->has_ports)
		return 0;
	k.family = p->family;
	k.sport = p->sport;
	k.dport = p->dport;
	__builtin_memcpy(k.saddr, p->saddr, 16);
	__builtin_memcpy(k.daddr, p->daddr, 16);
	return bpf_map_lookup_elem(&fl_session, &k) != 0;
}

/* Whether the packet matches the fault's rules; dir is the hook (FL_DIR_INGRESS/EGRESS). The
 * agent's own session never matches (counted in FL_STAT_SPARED when the rules alone would
 * have matched it), whatever the rules and include_protected say. */
static __always_inline int fl_match(struct __sk_buff *skb, int dir, const struct fl_config *cfg)
{
	struct fl_pkt p = {};
	__u32 flags = cfg->flags;

	if (!fl_parse(skb, &p))
		return 0;
	if (cfg->protocol) {
		__u8 want = cfg->protocol;

		if (want == IPPROTO_ICMP && p.family == 6)
			want = FL_IPPROTO_ICMPV6;
		if (p.proto != want)
			return 0;
	}
	if (flags & FL_PROTECT) {
		if (p.has_ports && (p.sport == FL_SSH_PORT || p.dport == FL_SSH_PORT))
			return 0;
		if (fl_in_set(FL_SET_PROTECTED, p.family, p.saddr) ||
		    fl_in_set(FL_SET_PROTECTED, p.family, p.daddr))
			return 0;
	}
	if ((flags & FL_HAS_DST) && !fl_in_set(FL_SET_DST, p.family, p.daddr))
		return 0;
	if ((flags & FL_HAS_SRC) && !fl_in_set(FL_SET_SRC, p.family, p.saddr))
		return 0;
	if ((flags & FL_HAS_PEER) &&
	    !fl_in_set(FL_SET_PEER, p.family, dir == FL_DIR_INGRESS ? p.saddr : p.daddr))
		return 0;
	if (flags & FL_HAS_PORTS) {
		if (!p.has_ports)
			return 0;
		if (!fl_port_listed(p.sport) && !fl_port_listed(p.dport))
			return 0;
	}
	if (fl_is_session(skb, &p)) {
		fl_count(FL_STAT_SPARED);
		return 0;
	}
	return 1;
}

/* Whether to act on a matching packet (the fault's probability). */
static __always_inline int fl_roll(const struct fl_config *cfg)
{
	return (__u64)bpf_get_prandom_u32() < cfg->threshold;
}

#endif
