// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
/*
 * Feature probes: trivial programs of the attach types picketd could use
 * beyond tracepoints. picketd loads each at start; the kernel's answer
 * (loaded, or refused with an errno) is logged and decides nothing else
 * today, since every module is built on tracepoints. They tell an operator
 * what a kernel offers before a module depends on it.
 */
#include "picket_kernel.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

SEC("fentry/vfs_unlink")
int pk_feature_fentry(void *ctx)
{
	return 0;
}

SEC("lsm/file_open")
int pk_feature_lsm(void *ctx)
{
	return 0;
}

SEC("tp_btf/sched_process_exec")
int pk_feature_tp_btf(void *ctx)
{
	return 0;
}

SEC("raw_tracepoint/sched_process_exec")
int pk_feature_raw_tp(void *ctx)
{
	return 0;
}
