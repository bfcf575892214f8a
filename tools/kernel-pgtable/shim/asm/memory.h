/* SPDX-License-Identifier: MIT */
#include "../kshim.h"
