/* SPDX-License-Identifier: MIT */
#include "../kshim.h"
#include <asm/pgtable-hwdef.h>
