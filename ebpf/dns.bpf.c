/* SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0 */
/*
 * dns.bpf.c: the `dns` fault. One loaded object per fault; the agent attaches fl_dns_tc_eg
 * to the egress of an interface in the target's netns with a TCX link, never pinned, so the
 * kernel detaches it when the agent exits. While the deadline in fl_cfg is ahead, a standard
 * DNS query over UDP to port 53 whose QNAME matches one of fl_dns_names (and, for cgroup,
 * container and pod targets, whose socket is in the target cgroup or below) is, with the
 * fault's probability:
 *   - timeout:  lost silently (see fl_dns_lose()); the client sees no answer and times out;
 *   - nxdomain/servfail: turned into its own answer and sent back in: the packet is cut after
 *     the question, its header becomes a response (QR, RA, RD copied, rcode 3 or 2, no
 *     answer/authority/additional records), addresses, ports and MAC addresses are swapped,
 *     the checksums are fixed, and it is redirected to the ingress of the same interface, so
 *     the client's socket receives it from the server's address and port as a real answer.
 * The query never reaches the server; nothing in the target (resolv.conf, the resolver, the
 * application) is touched; every other packet passes untouched (TC_ACT_UNSPEC, "next").
 *
 * Name matching: the QNAME is copied to a per-CPU buffer, its labels are found and lowercased
 * (one forward pass), then one backward pass hashes every suffix that starts at a label
 * (h = (h ^ byte) * P; h ^= h >> 31, from the seed, last byte first) and looks each up in
 * fl_dns_names: the whole name must carry FL_DNS_EXACT, a proper suffix FL_DNS_SUFFIX. The
 * agent (agent/src/net/dns_rules.rs) hashes the names of the spec the same way, with the
 * fault's random seed. Both passes run as bpf_loop callbacks bounded by the 255-byte name
 * limit (see struct fl_dns_scratch in dns.h for why).
 *
 * Program names start with "fl_" so the agent's sweep can find them.
 */
#include "dns_answer.h"

/* Only deadline_ns and threshold of struct fl_config are used here. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct fl_config);
} fl_cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct fl_dns_opts);
} fl_dns_opts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FL_DNS_MAX_NAMES);
	__type(key, __u64);
	__type(value, __u8);
} fl_dns_names SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FL_DNS_STATS);
	__type(key, __u32);
	__type(value, __u64);
} fl_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct fl_dns_scratch);
} fl_dns_scratch SEC(".maps");

static __always_inline void fl_count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&fl_stats, &idx);

	if (v)
		*v += 1;
}

static __always_inline int fl_net_load(struct __sk_buff *skb, __u32 off, void *to, __u32 len)
{
	return bpf_skb_load_bytes_relative(skb, off, to, len, BPF_HDR_START_NET);
}

/* Finds a standard query (QR 0, opcode 0, one question) sent over UDP to port 53. Fills
 * everything but qend; *dns_len is the DNS message's length, *name_off its QNAME's offset
 * from the network header. */
static __always_inline int fl_dns_find(struct __sk_buff *skb, struct fl_dns_query *q,
				       __u32 *dns_len, __u32 *name_off)
{
	__u8 first = 0;
	__u32 hlen, total;
	struct udphdr udp;
	__u8 hdr[12];

	if (fl_net_load(skb, 0, &first, 1) < 0)
		return 0;
	if ((first >> 4) == 4) {
		struct iphdr ip;

		if (fl_net_load(skb, 0, &ip, sizeof(ip)) < 0)
			return 0;
		if (ip.protocol != IPPROTO_UDP || ip.ihl < 5)
			return 0;
		if (ip.frag_off & bpf_htons(0x3fff)) /* a fragment (MF or an offset) */
			return 0;
		hlen = (__u32)ip.ihl * 4;
		total = bpf_ntohs(ip.tot_len);
		q->family = 4;
	} else if ((first >> 4) == 6) {
		struct ipv6hdr ip6;

		if (fl_net_load(skb, 0, &ip6, sizeof(ip6)) < 0)
			return 0;
		if (ip6.nexthdr != IPPROTO_UDP) /* extension headers: left alone */
			return 0;
		hlen = sizeof(ip6);
		total = sizeof(ip6) + bpf_ntohs(ip6.payload_len);
		q->family = 6;
	} else {
		return 0;
	}
	if (total > skb->len)
		return 0;
	q->l2 = skb->len - total;
	if (q->l2 != 0 && q->l2 != ETH_HLEN)
		return 0;
	if (fl_net_load(skb, hlen, &udp, sizeof(udp)) < 0)
		return 0;
	if (udp.dest != bpf_htons(FL_DNS_PORT))
		return 0;
	if (bpf_ntohs(udp.len) != total - hlen || total - hlen < sizeof(udp) + sizeof(hdr) + 5)
		return 0;
	if (fl_net_load(skb, hlen + sizeof(udp), hdr, sizeof(hdr)) < 0)
		return 0;
	/* QR 0 and opcode 0 (QUERY); exactly one question. */
	if (hdr[2] & 0xf8)
		return 0;
	if (hdr[4] != 0 || hdr[5] != 1)
		return 0;
	q->flags0 = hdr[2];
	q->l4 = q->l2 + hlen;
	*dns_len = total - hlen - sizeof(udp);
	*name_off = hlen + sizeof(udp) + sizeof(hdr);
	return 1;
}

/* One step of the forward pass (bpf_loop callback; the state lives in the scratch map, so
 * the verifier checks the step once, not once per byte and path). Index k: marks a label
 * start (its length byte) or lowercases a label byte; stops at the root label (found), at a
 * compression pointer or reserved label type, or at the end of the loaded bytes. */
static long fl_dns_forward(__u64 index, void *ctx)
{
	struct fl_dns_scratch *s;
	__u32 zero = 0, k = index;
	__u8 c;

	s = bpf_map_lookup_elem(&fl_dns_scratch, &zero);
	if (!s || index >= FL_DNS_NAME_MAX || k >= s->n)
		return 1;
	k &= 0xff; /* for the verifier: name and start have 256 bytes */
	c = s->name[k];
	if (k == s->next) {
		s->start[k] = 1;
		if (c == 0) {
			s->end = k;
			s->found = 1;
			return 1;
		}
		if (c > 63)
			return 1;
		s->next = k + c + 1;
	} else {
		s->start[k] = 0;
		if (c >= 'A' && c <= 'Z')
			s->name[k] = c | 0x20;
	}
	return 0;
}

/* One step of the backward pass: byte k = end - 1 - index joins the hash; where a label
 * starts, the suffix from there is looked up (the whole name needs the exact bit, a shorter
 * suffix the suffix bit). */
static long fl_dns_backward(__u64 index, void *ctx)
{
	struct fl_dns_scratch *s;
	__u32 zero = 0, k;
	__u8 *flags;
	__u64 h;

	s = bpf_map_lookup_elem(&fl_dns_scratch, &zero);
	if (!s || index >= s->end)
		return 1;
	k = s->end - 1 - (__u32)index;
	if (k >= FL_DNS_NAME_MAX)
		return 1;
	k &= 0xff; /* for the verifier */
	h = (s->h ^ s->name[k]) * FL_DNS_PRIME;
	h ^= h >> 31;
	s->h = h;
	if (!s->start[k])
		return 0;
	flags = bpf_map_lookup_elem(&fl_dns_names, &h);
	if (flags && (*flags & (k == 0 ? FL_DNS_EXACT : FL_DNS_SUFFIX))) {
		s->hit = 1;
		return 1;
	}
	return 0;
}

/* Whether the QNAME matches fl_dns_names; sets s->qend. */
static __always_inline int fl_dns_name_matches(struct __sk_buff *skb, __u32 dns_len,
					       __u32 name_off, __u64 seed,
					       struct fl_dns_scratch *s)
{
	__u32 n = dns_len - 12, end;

	if (n > FL_DNS_NAME_MAX)
		n = FL_DNS_NAME_MAX;
	if (n < 1)
		return 0;
	if (fl_net_load(skb, name_off, s->name, n) < 0)
		return 0;
	s->n = n;
	s->next = 0;
	s->found = 0;
	s->hit = 0;
	s->h = seed;
	bpf_loop(FL_DNS_NAME_MAX, fl_dns_forward, 0, 0);
	if (!s->found)
		return 0;
	end = s->end;
	if (end == 0) /* the root itself */
		return 0;
	/* QTYPE and QCLASS follow the root label. */
	if (12 + end + 1 + 4 > dns_len)
		return 0;
	s->qend = 12 + end + 1 + 4;
	bpf_loop(FL_DNS_NAME_MAX, fl_dns_backward, 0, 0);
	return s->hit;
}

/* Whether the packet's socket is in cgroup `id` or below it (cgroup v2). */
static __always_inline int fl_dns_in_cgroup(struct __sk_buff *skb, __u64 id)
{
	for (int level = 0; level < FL_DNS_MAX_CGROUP_DEPTH; level++) {
		__u64 a = bpf_skb_ancestor_cgroup_id(skb, level);

		if (a == 0)
			return 0;
		if (a == id)
			return 1;
	}
	return 0;
}

/* Loses the query as the wire would: silently. TC_ACT_SHOT at egress makes the sender's
 * sendmsg() fail with ENOBUFS when its socket has IP_RECVERR, which glibc's resolver sets, so
 * it would give up at once instead of timing out. A redirect is reported to the sender as
 * sent whatever becomes of it, and one to ifindex 0 (no device has it) is freed by
 * skb_do_redirect(). */
static __always_inline int fl_dns_lose(struct __sk_buff *skb)
{
	return bpf_redirect(0, 0);
}

SEC("classifier")
int fl_dns_tc_eg(struct __sk_buff *skb)
{
	struct fl_dns_query q = {};
	const struct fl_config *cfg;
	struct fl_dns_scratch *s;
	struct fl_dns_opts *o;
	__u32 zero = 0, dns_len = 0, name_off = 0;

	cfg = bpf_map_lookup_elem(&fl_cfg, &zero);
	if (!cfg || bpf_ktime_get_ns() >= cfg->deadline_ns)
		return FL_TC_PASS;
	o = bpf_map_lookup_elem(&fl_dns_opts, &zero);
	s = bpf_map_lookup_elem(&fl_dns_scratch, &zero);
	if (!o || !s)
		return FL_TC_PASS;
	if (!fl_dns_find(skb, &q, &dns_len, &name_off))
		return FL_TC_PASS;
	fl_count(FL_DNS_STAT_QUERIES);
	if (!fl_dns_name_matches(skb, dns_len, name_off, o->seed, s))
		return FL_TC_PASS;
	if (o->cgroup_id && !fl_dns_in_cgroup(skb, o->cgroup_id))
		return FL_TC_PASS;
	fl_count(FL_DNS_STAT_MATCHED);
	if (!((__u64)bpf_get_prandom_u32() < cfg->threshold))
		return FL_TC_PASS;
	fl_count(FL_DNS_STAT_ACTED);
	if (o->action == FL_DNS_TIMEOUT)
		return fl_dns_lose(skb);
	if (fl_dns_answer(skb, &q, o->action == FL_DNS_SERVFAIL ? 2 : 3, s) < 0) {
		/* Half rewritten at worst: never let it reach the server or the client. */
		fl_count(FL_DNS_STAT_ERRORS);
		return fl_dns_lose(skb);
	}
	return bpf_redirect(skb->ifindex, BPF_F_INGRESS);
}

char LICENSE[] SEC("license") = "GPL";
