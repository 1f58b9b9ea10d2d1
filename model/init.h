// Parameter initialisation on the host (both backends upload the same numbers).
#pragma once
#include <cstdint>
#include <vector>

#include "model/params.h"

// Fills host (layout.total floats) as each ParamTensor's init fields say; the padded
// vocabulary rows (beyond hf_rows) are zero so they never influence the model.
void init_params(std::vector<float>& host, const ParamLayout& layout, uint64_t seed);
