/* SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0 */
/*
 * keep.bpf.c: the dispatcher of a kept TCX link (agent/src/net/keep/). The agent attaches
 * one loaded copy of this object per (netns, interface, hook) slot it needs, once, and keeps
 * the link while faults use it; applying an interface fault is then writing the fault's
 * program into fl_keep_slot[0] (a map update, no TCX attach and so no RCU grace period), and
 * reverting it is clearing that entry.
 *
 * The dispatcher tail-calls the program in its slot. A tail call does not return: the fault
 * program's own verdict (pass = TC_ACT_UNSPEC = "next", or drop, or redirect) is the verdict
 * of this link, and the TCX chain goes on to the next link as before. An empty slot fails the
 * tail call and falls through to "next". Two faults on one hook use two kept links, each with
 * one slot, so neither can hide the other.
 *
 * The link is never pinned: when the agent dies the kernel detaches it, and once the map's
 * last user descriptor closes the kernel clears the slot too. The fault programs keep their
 * own maps and deadline check, so a fault past its deadline is inert while its slot is full.
 */
#include "common.h"

/* key_size/value_size rather than __type(): a program array takes no BTF key/value types. */
struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 1);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} fl_keep_slot SEC(".maps");

/* Always 0, but a global (in .bss, a writable map) rather than a constant: with a constant
 * index the verifier makes the tail call a direct jump that the kernel patches on every slot
 * update, and clearing a slot then waits for an RCU grace period (x86
 * bpf_arch_poke_desc_update) - the wait this dispatcher exists to avoid. An index the
 * verifier cannot know keeps the tail call indirect: a slot update is a pointer swap. */
volatile __u32 fl_keep_idx;

SEC("classifier")
int fl_keep_tc(struct __sk_buff *skb)
{
	bpf_tail_call(skb, &fl_keep_slot, fl_keep_idx);
	return FL_TC_PASS;
}

char LICENSE[] SEC("license") = "GPL";
