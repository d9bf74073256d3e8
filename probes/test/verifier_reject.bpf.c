// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
/*
 * A probe object the verifier must refuse: its exec hook reads past the end
 * of a map value. The kernel tests load it in place of the process module's
 * object (PICKET_OBJECT_PROCESS) to prove that a rejected program yields a
 * clear error with the verifier's log, and that the other modules run on.
 */
#define PK_MODULE_LOST_SLOT PK_LOST_PROCESS
#define PK_MODULE_IGNORE_BIT PK_IGNORE_PROCESS
#include "picket_common.h"

SEC("tracepoint/sched/sched_process_exec")
int pk_bad_exec(void *ctx)
{
	__u32 zero = 0;
	struct pk_config *cfg = pk_get_config();
	if (!cfg)
		return 0;
	/* out of bounds on purpose: pk_config is 16 bytes */
	volatile __u32 *p = (volatile __u32 *)((char *)cfg + 64);
	return *p + zero;
}
