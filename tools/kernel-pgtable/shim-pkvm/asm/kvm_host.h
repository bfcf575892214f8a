/* SPDX-License-Identifier: MIT */
#include "../pkvm_shim.h"
