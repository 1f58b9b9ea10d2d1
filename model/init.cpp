#include "model/init.h"

#include "common/rng.h"

void init_params(std::vector<float>& host, const ParamLayout& layout, uint64_t seed) {
    host.assign(layout.total, 0.0f);
    for (size_t k = 0; k < layout.tensors.size(); k++) {
        const ParamTensor& t = layout.tensors[k];
        float* p = host.data() + t.offset;
        if (t.init_std <= 0.0f) {
            for (size_t i = 0; i < t.size; i++) p[i] = t.init_value;
            continue;
        }
        // One stream per tensor: adding a tensor does not reshuffle the others.
        Rng rng(seed * 1000003ull + k);
        const int rows = t.rows(), cols = t.cols();
        const int real_rows = t.hf_rows > 0 ? t.hf_rows : rows;
        for (int r = 0; r < real_rows; r++) {
            float std = r >= rows - t.tail_rows ? t.tail_std : t.init_std;
            for (int c = 0; c < cols; c++) p[(size_t)r * cols + c] = std * rng.normal();
        }
    }
}
