/* SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0 */
/*
 * dns.h: constants and layouts of the `dns` fault's program (dns.bpf.c): its options
 * (struct fl_dns_opts, mirrored by agent/src/net/dns_rules.rs), its per-CPU scratch memory,
 * and one query as found in a packet.
 */
#ifndef FL_DNS_H
#define FL_DNS_H

#include "common.h"
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>

#define FL_DNS_PORT 53
#define FL_DNS_NXDOMAIN 1
#define FL_DNS_SERVFAIL 2
#define FL_DNS_TIMEOUT 3
/* fl_dns_names values (bits). */
#define FL_DNS_EXACT 1
#define FL_DNS_SUFFIX 2
#define FL_DNS_MAX_NAMES 64
/* A QNAME on the wire is at most 255 bytes, the root label included. */
#define FL_DNS_NAME_MAX 255
/* UDP header + DNS header + QNAME + QTYPE/QCLASS, rounded up to a multiple of 4. */
#define FL_DNS_ANSWER_MAX 280
#define FL_DNS_MAX_CGROUP_DEPTH 32
#define FL_DNS_PRIME 0x100000001b3ULL
/* Keeps clang from replacing a checked register with an unchecked copy of its value. */
#define fl_barrier_var(v) asm volatile("" : "+r"(v))
#ifndef offsetof
#define offsetof(t, m) __builtin_offsetof(t, m)
#endif

/* fl_stats indexes. */
#define FL_DNS_STAT_MATCHED 0 /* queries for a listed name, in scope */
#define FL_DNS_STAT_ACTED 1   /* of those, failed (answered or dropped) */
#define FL_DNS_STAT_QUERIES 2 /* standard queries inspected */
#define FL_DNS_STAT_ERRORS 3  /* answers that could not be built (the query was dropped) */
#define FL_DNS_STATS 4

/* fl_dns_opts[0], written by agent/src/net/dns_rules.rs. 24 bytes. */
struct fl_dns_opts {
	__u64 seed;
	/* cgroup2 id (the directory's inode number) the sending socket must be in or below;
	 * 0 = any socket. */
	__u64 cgroup_id;
	__u8 action; /* FL_DNS_NXDOMAIN / SERVFAIL / TIMEOUT */
	__u8 pad[7];
};

_Static_assert(sizeof(struct fl_dns_opts) == 24, "struct fl_dns_opts must stay 24 bytes");

/* Per-CPU working memory, and the state of the two passes over the QNAME: they run as
 * bpf_loop callbacks whose state lives here, so the verifier checks each step once instead
 * of every byte on every path (unrolled or bounded loops exceed its budget), and a value
 * read back from here is one unknown scalar for the rest of the program. */
struct fl_dns_scratch {
	__u8 name[256];
	__u8 start[256];
	__u8 buf[FL_DNS_ANSWER_MAX + 8];
	__u64 h;     /* backward pass: the hash so far */
	__u32 n;     /* bytes of name loaded */
	__u32 next;  /* forward pass: offset of the next length byte */
	__u32 end;   /* offset of the root label in name */
	__u32 qend;  /* DNS header + question, in bytes */
	__u32 found; /* the forward pass reached the root label */
	__u32 hit;   /* the backward pass found a listed name */
};

/* One query as found in the packet. Offsets from skb->data. */
struct fl_dns_query {
	__u32 l2;    /* 0 (no link-layer header) or ETH_HLEN */
	__u32 l4;    /* UDP header */
	__u8 family; /* 4 or 6 */
	__u8 flags0; /* the query's third header byte (QR, opcode, AA, TC, RD) */
	__u8 pad[2];
};

#endif
