/* SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0 */
/*
 * drop.bpf.c: the `drop` and `partition` faults. One loaded object per fault; the agent
 * attaches the TC programs to an interface with TCX links or the cgroup_skb programs to a
 * cgroup with cgroup links, never pinned, so the kernel detaches them when the agent exits.
 * Matching packets are dropped with the fault's probability while its deadline is ahead.
 *
 * Program names start with "fl_" so the agent's sweep can find them.
 */
#include "match.h"

static __always_inline int fl_drop_verdict(struct __sk_buff *skb, int dir)
{
	const struct fl_config *cfg = fl_active_config();

	if (!cfg || !fl_match(skb, dir, cfg))
		return 0;
	fl_count(FL_STAT_MATCHED);
	if (!fl_roll(cfg))
		return 0;
	fl_count(FL_STAT_ACTED);
	return 1;
}

SEC("classifier")
int fl_drop_tc_in(struct __sk_buff *skb)
{
	return fl_drop_verdict(skb, FL_DIR_INGRESS) ? FL_TC_DROP : FL_TC_PASS;
}

SEC("classifier")
int fl_drop_tc_eg(struct __sk_buff *skb)
{
	return fl_drop_verdict(skb, FL_DIR_EGRESS) ? FL_TC_DROP : FL_TC_PASS;
}

SEC("cgroup_skb/ingress")
int fl_drop_cg_in(struct __sk_buff *skb)
{
	return fl_drop_verdict(skb, FL_DIR_INGRESS) ? FL_CG_DROP : FL_CG_PASS;
}

SEC("cgroup_skb/egress")
int fl_drop_cg_eg(struct __sk_buff *skb)
{
	return fl_drop_verdict(skb, FL_DIR_EGRESS) ? FL_CG_DROP : FL_CG_PASS;
}

char LICENSE[] SEC("license") = "GPL";
