#include "train/data_parallel.h"

#include <algorithm>
#include <regex>

std::vector<GradBucket> grad_buckets(const ParamLayout& layout) {
    static const std::regex block_name("(^|.*\\.)(h|layers)\\.([0-9]+)\\..*");
    std::vector<const ParamTensor*> ts;
    for (const ParamTensor& t : layout.tensors) ts.push_back(&t);
    std::sort(ts.begin(), ts.end(), [](auto* a, auto* b) { return a->offset < b->offset; });
    std::vector<GradBucket> out;
    for (const ParamTensor* t : ts) {
        std::smatch m;
        const int stage = std::regex_match(t->name, m, block_name) ? std::stoi(m[3]) : -1;
        if (!out.empty() && out.back().stage == stage && out.back().end == t->offset) out.back().end += t->size;
        else out.push_back({t->offset, t->offset + t->size, stage});
    }
    return out;
}
