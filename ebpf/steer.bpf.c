/* SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0 */
/*
 * steer.bpf.c: steering for the `network` fault. One loaded object per impaired class of the
 * Faultline HTB tree on an interface (agent/src/net/tc/steer.rs loads it). On egress, a packet
 * that matches the class's rules (match.h) while the deadline is ahead gets
 * skb->priority = the class id (fa17:N), which HTB uses to classify it into the impaired
 * class (netem/tbf leaf). Every other packet keeps its priority and HTB's default class
 * (fa17:1, unimpaired) carries it.
 *
 * The program is attached with a TCX link that is never pinned: when the agent dies the
 * kernel detaches it, and traffic falls back to the default class at once. The deadline in
 * fl_cfg (renewed with the lease) makes it inert even while attached.
 *
 * A packet another Faultline class already claimed (priority major = FL_HTB_MAJOR) keeps that
 * class: the class whose program runs first wins.
 *
 * On ingress (fl_steer_in, on the interface's TCX ingress) there is no qdisc to classify
 * into, so the tree lives on an IFB device (flifb<ifindex>) instead: a matching packet gets
 * skb->priority = the class id and is redirected to the IFB's egress (its ifindex in
 * fl_steer_to[1]); the IFB's HTB classifies it, its leaves impair it, and the IFB hands it
 * back to the stack as received on the interface. The redirect ends the TCX chain, so the
 * first class whose program matches wins; a priority a packet arrived with is overwritten.
 */
#include "match.h"

/* Major of the Faultline HTB root handle (fa17:); agent/src/net/tc/mod.rs ROOT_MAJOR. */
#define FL_HTB_MAJOR 0xfa17

/* fl_steer_to[0]: the class id (major << 16 | minor) matching packets are steered into;
 * fl_steer_to[1]: the ifindex of the IFB device ingress packets are redirected to. */
#define FL_STEER_CLASS 0
#define FL_STEER_IFB 1
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u32);
} fl_steer_to SEC(".maps");

SEC("classifier")
int fl_steer_eg(struct __sk_buff *skb)
{
	const struct fl_config *cfg = fl_active_config();
	__u32 idx = FL_STEER_CLASS;
	__u32 *classid;

	if (!cfg || (skb->priority >> 16) == FL_HTB_MAJOR)
		return FL_TC_PASS;
	classid = bpf_map_lookup_elem(&fl_steer_to, &idx);
	if (!classid || (*classid >> 16) != FL_HTB_MAJOR)
		return FL_TC_PASS;
	if (!fl_match(skb, FL_DIR_EGRESS, cfg))
		return FL_TC_PASS;
	fl_count(FL_STAT_MATCHED);
	skb->priority = *classid;
	fl_count(FL_STAT_ACTED);
	return FL_TC_PASS;
}

SEC("classifier")
int fl_steer_in(struct __sk_buff *skb)
{
	const struct fl_config *cfg = fl_active_config();
	__u32 class_idx = FL_STEER_CLASS, ifb_idx = FL_STEER_IFB;
	__u32 *classid, *ifb;
	long verdict;

	if (!cfg)
		return FL_TC_PASS;
	classid = bpf_map_lookup_elem(&fl_steer_to, &class_idx);
	ifb = bpf_map_lookup_elem(&fl_steer_to, &ifb_idx);
	if (!classid || (*classid >> 16) != FL_HTB_MAJOR || !ifb || !*ifb)
		return FL_TC_PASS;
	if (!fl_match(skb, FL_DIR_INGRESS, cfg))
		return FL_TC_PASS;
	fl_count(FL_STAT_MATCHED);
	skb->priority = *classid;
	verdict = bpf_redirect(*ifb, 0);
	if (verdict != TC_ACT_REDIRECT)
		return FL_TC_PASS;
	fl_count(FL_STAT_ACTED);
	return TC_ACT_REDIRECT;
}

char LICENSE[] SEC("license") = "GPL";
