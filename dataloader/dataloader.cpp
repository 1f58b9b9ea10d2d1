// Sequential llm.c-style data loader over validated, memory-mapped shards.
#include "dataloader/dataloader.h"

#include <cstdio>
#include <utility>

#include "common/check.h"

DataLoader::DataLoader(const std::string& pattern, int B, int T, int vocab_size, int rank,
                       int nranks)
    : pattern_(pattern), B_(B), T_(T), rank_(rank), nranks_(nranks) {
    const char* p = pattern.c_str();
    REQUIRE_INPUT(B > 0 && T > 0, "%s: batch size B and sequence length T must be positive, "
                  "got B=%d T=%d", p, B, T);
    REQUIRE_INPUT(nranks > 0 && rank >= 0 && rank < nranks,
                  "%s: expected 0 <= rank < nranks, got rank %d of %d", p, rank, nranks);
    const size_t need = (size_t)B * T + 1;  // one window: B rows of T tokens + 1 target

    // Open and validate every shard, so bad data fails at startup rather than hours in.
    for (const std::string& path : expand_glob(pattern)) {
        Shard s(path, vocab_size);
        if (s.size() < need) {
            fprintf(stderr, "warning: %s has %zu tokens, fewer than the B*T+1 = %zu one batch "
                    "needs; skipping it\n", path.c_str(), s.size(), need);
            continue;
        }
        shards_.push_back(std::move(s));
    }
    REQUIRE_INPUT(!shards_.empty(), "%s: no shard holds the B*T+1 = %zu tokens one batch "
                  "needs (B=%d, T=%d)", p, need, B, T);

    // this rank's windows: k in [0, w) with k % nranks == rank
    for (size_t i = 0; i < shards_.size(); i++) {
        int64_t w = windows_in(i);
        if (w > rank) num_batches_ += (size_t)((w - rank - 1) / nranks + 1);
    }
    REQUIRE_INPUT(num_batches_ > 0, "%s: rank %d of %d gets no batch: every shard has %d or "
                  "fewer windows of B*T+1 = %zu tokens; expected more data, a smaller B*T or "
                  "fewer ranks", p, rank, nranks, rank, need);
    reset();
}

int64_t DataLoader::windows_in(size_t shard) const {
    // k*B*T + B*T + 1 <= size  <=>  k < (size - 1) / (B*T); every kept shard has >= 1
    return (int64_t)((shards_[shard].size() - 1) / ((size_t)B_ * T_));
}

void DataLoader::seek_valid() {
    // Terminates: num_batches_ > 0, so some shard holds a window of this rank.
    for (;;) {
        int64_t k = pos_.window;
        k += ((rank_ - k % nranks_) % nranks_ + nranks_) % nranks_;  // next k of this rank
        if (k < windows_in((size_t)pos_.shard)) {
            pos_.window = k;
            return;
        }
        pos_.window = 0;
        if (++pos_.shard == (int64_t)shards_.size()) {
            pos_.shard = 0;
            pos_.epoch++;
        }
    }
}

void DataLoader::reset() {
    pos_ = LoaderState{0, 0, 0};
    seek_valid();
}

void DataLoader::next_batch(int* inputs, int* targets) {
    const Shard& s = shards_[(size_t)pos_.shard];
    const size_t BT = (size_t)B_ * T_;
    const size_t start = (size_t)pos_.window * BT;
    // Rows b and b+1 overlap by one token, so the (B, T+1) window is just the flat span
    // [start, start + B*T] and targets are inputs shifted by one.
    for (size_t i = 0; i < BT; i++) {
        inputs[i] = (int)s[start + i];  // < vocab_size, checked when the shard was opened
        targets[i] = (int)s[start + i + 1];
    }
    pos_.window++;
    seek_valid();
}

void DataLoader::restore(const LoaderState& st) {
    const char* p = pattern_.c_str();
    REQUIRE_INPUT(st.shard >= 0 && st.shard < (int64_t)shards_.size(),
                  "%s: loader state has shard %lld, expected 0 <= shard < %zu (was the "
                  "checkpoint made with other data?)", p, (long long)st.shard, shards_.size());
    const int64_t w = windows_in((size_t)st.shard);
    REQUIRE_INPUT(st.window >= 0 && st.window < w && st.window % nranks_ == rank_,
                  "%s: loader state has window %lld of %s, expected 0 <= window < %lld with "
                  "window %% %d == %d (was the checkpoint made with other data, B, T or "
                  "ranks?)", p, (long long)st.window, shards_[(size_t)st.shard].path().c_str(),
                  (long long)w, nranks_, rank_);
    REQUIRE_INPUT(st.epoch >= 0, "%s: loader state has epoch %lld, expected >= 0", p,
                  (long long)st.epoch);
    pos_ = st;
}
