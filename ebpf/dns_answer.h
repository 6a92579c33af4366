/* SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0 */
/*
 * dns_answer.h: turns a DNS query, in place, into its own NXDOMAIN/SERVFAIL answer (see the
 * top of dns.bpf.c): cut after the question, response header, addresses, ports and MAC
 * addresses swapped, IPv4 header checksum updated, UDP checksum recomputed.
 */
#ifndef FL_DNS_ANSWER_H
#define FL_DNS_ANSWER_H

#include "dns.h"

static __always_inline __u16 fl_csum_fold(__s64 sum)
{
	__u32 s = (__u32)sum;

	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)~s;
}

struct fl_pseudo4 {
	__be32 saddr;
	__be32 daddr;
	__u8 zero;
	__u8 proto;
	__be16 len;
};

struct fl_pseudo6 {
	__u8 saddr[16];
	__u8 daddr[16];
	__be32 len;
	__u8 zero[3];
	__u8 next;
};

/* Turns the query into its own answer with `rcode` (see the top of dns.bpf.c). Returns 0 on
 * success; the caller then redirects the packet to the ingress of its interface. */
static __always_inline int fl_dns_answer(struct __sk_buff *skb, const struct fl_dns_query *q,
					 __u8 rcode, struct fl_dns_scratch *s)
{
	__u32 l3 = q->l2, l4 = q->l4, dns = q->l4 + sizeof(struct udphdr);
	__u32 qend = *(volatile __u32 *)&s->qend;
	__u32 ulen = sizeof(struct udphdr) + qend;
	__u64 len, padded;
	__s64 sum;
	__u16 check;
	__u8 hdr[12];

	if (ulen > FL_DNS_ANSWER_MAX || ulen < sizeof(struct udphdr) + 12)
		return -1;
	/* Cut what follows the question (an EDNS OPT record, for one). */
	if (skb->len > dns + qend && bpf_skb_change_tail(skb, dns + qend, 0))
		return -1;
	if (q->l2) {
		__u8 mac[12], swapped[12];

		if (bpf_skb_load_bytes(skb, 0, mac, sizeof(mac)) < 0)
			return -1;
		__builtin_memcpy(swapped, mac + 6, 6);
		__builtin_memcpy(swapped + 6, mac, 6);
		if (bpf_skb_store_bytes(skb, 0, swapped, sizeof(swapped), 0) < 0)
			return -1;
	}
	if (q->family == 4) {
		struct iphdr ip;
		struct fl_pseudo4 ph = {};
		__be16 old_len, new_len;

		if (bpf_skb_load_bytes(skb, l3, &ip, sizeof(ip)) < 0)
			return -1;
		old_len = ip.tot_len;
		new_len = bpf_htons((__u16)(l4 - l3 + ulen));
		ph.saddr = ip.daddr;
		ph.daddr = ip.saddr;
		ph.proto = IPPROTO_UDP;
		ph.len = bpf_htons((__u16)ulen);
		/* Swapping the addresses leaves the header checksum as it is. */
		if (bpf_skb_store_bytes(skb, l3 + offsetof(struct iphdr, saddr), &ph.saddr, 8, 0) < 0)
			return -1;
		if (bpf_skb_store_bytes(skb, l3 + offsetof(struct iphdr, tot_len), &new_len, 2, 0) < 0)
			return -1;
		if (bpf_l3_csum_replace(skb, l3 + offsetof(struct iphdr, check), old_len, new_len, 2) < 0)
			return -1;
		sum = bpf_csum_diff(0, 0, (__be32 *)&ph, sizeof(ph), 0);
	} else {
		struct ipv6hdr ip6;
		struct fl_pseudo6 ph = {};
		__be16 plen = bpf_htons((__u16)ulen);

		if (bpf_skb_load_bytes(skb, l3, &ip6, sizeof(ip6)) < 0)
			return -1;
		__builtin_memcpy(ph.saddr, &ip6.daddr, 16);
		__builtin_memcpy(ph.daddr, &ip6.saddr, 16);
		ph.len = bpf_htonl(ulen);
		ph.next = IPPROTO_UDP;
		if (bpf_skb_store_bytes(skb, l3 + offsetof(struct ipv6hdr, saddr), ph.saddr, 32, 0) < 0)
			return -1;
		if (bpf_skb_store_bytes(skb, l3 + offsetof(struct ipv6hdr, payload_len), &plen, 2, 0) < 0)
			return -1;
		sum = bpf_csum_diff(0, 0, (__be32 *)&ph, sizeof(ph), 0);
	}
	{
		struct udphdr udp;
		__be16 port;

		if (bpf_skb_load_bytes(skb, l4, &udp, sizeof(udp)) < 0)
			return -1;
		port = udp.source;
		udp.source = udp.dest;
		udp.dest = port;
		udp.len = bpf_htons((__u16)ulen);
		udp.check = 0;
		if (bpf_skb_store_bytes(skb, l4, &udp, sizeof(udp), 0) < 0)
			return -1;
	}
	/* The header of an answer: same ID; QR, RD copied, RA; rcode; one question. */
	if (bpf_skb_load_bytes(skb, dns, hdr, 2) < 0)
		return -1;
	hdr[2] = 0x80 | (q->flags0 & 0x01);
	hdr[3] = 0x80 | rcode;
	hdr[4] = 0;
	hdr[5] = 1;
	__builtin_memset(&hdr[6], 0, 6);
	if (bpf_skb_store_bytes(skb, dns, hdr, sizeof(hdr), 0) < 0)
		return -1;
	/* The UDP checksum over the pseudo header and the whole (short) datagram. The length
	 * is bounded again right here, in the register the helpers get. */
	len = ulen & 0x1ff;
	fl_barrier_var(len);
	if (len > FL_DNS_ANSWER_MAX || len < sizeof(struct udphdr) + 12)
		return -1;
	fl_barrier_var(len);
	if (bpf_skb_load_bytes(skb, l4, s->buf, len) < 0)
		return -1;
	s->buf[len] = 0;
	s->buf[len + 1] = 0;
	s->buf[len + 2] = 0;
	padded = (len + 3) & ~3ull;
	fl_barrier_var(padded);
	if (padded > FL_DNS_ANSWER_MAX)
		return -1;
	sum = bpf_csum_diff(0, 0, (__be32 *)s->buf, padded, sum);
	if (sum < 0)
		return -1;
	check = fl_csum_fold(sum);
	if (check == 0)
		check = 0xffff;
	if (bpf_skb_store_bytes(skb, l4 + offsetof(struct udphdr, check), &check, 2, 0) < 0)
		return -1;
	return 0;
}

#endif
