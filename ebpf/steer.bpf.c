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
 */
#include "match.h"

/* Major of the Faultline HTB root handle (fa17:); agent/src/net/tc/mod.rs ROOT_MAJOR. */
#define FL_HTB_MAJOR 0xfa17

/* fl_steer_to[0]: the class id (major << 16 | minor) matching packets are steered into. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} fl_steer_to SEC(".maps");

SEC("classifier")
int fl_steer_eg(struct __sk_buff *skb)
{
	const struct fl_config *cfg = fl_active_config();
	__u32 zero = 0;
	__u32 *classid;

	if (!cfg || (skb->priority >> 16) == FL_HTB_MAJOR)
		return FL_TC_PASS;
	classid = bpf_map_lookup_elem(&fl_steer_to, &zero);
	if (!classid || (*classid >> 16) != FL_HTB_MAJOR)
		return FL_TC_PASS;
	if (!fl_match(skb, FL_DIR_EGRESS, cfg))
		return FL_TC_PASS;
	fl_count(FL_STAT_MATCHED);
	skb->priority = *classid;
	fl_count(FL_STAT_ACTED);
	return FL_TC_PASS;
}

char LICENSE[] SEC("license") = "GPL";
