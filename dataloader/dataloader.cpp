// llm.c-style data loader over validated, memory-mapped shards, sequential or shuffled.
#include "dataloader/dataloader.h"

#include <algorithm>
#include <cstdio>
#include <numeric>
#include <utility>

#include "common/check.h"
#include "common/rng.h"

namespace {

uint64_t mix(uint64_t z) {  // splitmix64's finaliser: nearby inputs, unrelated outputs
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// The documents of a shard as rows of at most T+1 tokens (see RowLayout in the header).
template <class Doc>
std::vector<Doc> index_documents(const Shard& s, int doc_token, int T) {
    std::vector<Doc> docs;
    auto add = [&](size_t start, size_t end) {  // tokens [start, end]
        const size_t n = end - start + 1;
        if (n >= 2) docs.push_back({start, (uint32_t)std::min<size_t>(n, (size_t)T + 1)});
    };
    size_t start = 0;
    for (size_t i = 1; i < s.size(); i++)
        if (s[i] == (uint32_t)doc_token) add(start, i), start = i;
    add(start, s.size() - 1);
    return docs;
}

// The permutation of 0..n-1 for (seed, epoch, shard): a function of those alone, the
// same on every rank, run and machine. shard = -1 names the epoch's order of shards.
std::vector<int64_t> permutation(int64_t n, uint64_t seed, int64_t epoch, int64_t shard) {
    Rng rng(mix(mix(mix(seed) ^ (uint64_t)epoch) ^ (uint64_t)(shard + 1)));
    std::vector<int64_t> p((size_t)n);
    std::iota(p.begin(), p.end(), 0);
    for (int64_t i = n - 1; i > 0; i--)  // Fisher-Yates
        std::swap(p[(size_t)i], p[(size_t)(rng.next_u64() % (uint64_t)(i + 1))]);
    return p;
}

}  // namespace

DataLoader::DataLoader(const std::string& pattern, int B, int T, int vocab_size, int rank,
                       int nranks, bool shuffle, uint64_t seed, RowLayout layout)
    : pattern_(pattern), B_(B), T_(T), rank_(rank), nranks_(nranks), layout_(layout),
      shuffle_(shuffle), seed_(shuffle ? seed : 0) {
    const char* p = pattern.c_str();
    REQUIRE_INPUT(B > 0 && T > 0, "%s: batch size B and sequence length T must be positive, "
                  "got B=%d T=%d", p, B, T);
    REQUIRE_INPUT(nranks > 0 && rank >= 0 && rank < nranks,
                  "%s: expected 0 <= rank < nranks, got rank %d of %d", p, rank, nranks);
    const bool docs = layout.documents;
    REQUIRE_INPUT(!docs || (layout.doc_token >= 0 && layout.doc_token < vocab_size),
                  "%s: documents layout: the document token must be in [0, %d), got %d", p,
                  vocab_size, layout.doc_token);
    const size_t need = (size_t)B * T + 1;  // one packed window: B rows of T tokens + 1 target

    // Open and validate every shard, so bad data fails at startup rather than hours in.
    for (const std::string& path : expand_glob(pattern)) {
        Shard s(path, vocab_size);
        if (docs) {
            auto d = index_documents<Doc>(s, layout.doc_token, T);
            if (d.size() < (size_t)B) {
                fprintf(stderr, "warning: %s has %zu documents (starting with token %d), fewer "
                        "than the B = %d one batch needs; skipping it\n", path.c_str(), d.size(),
                        layout.doc_token, B);
                continue;
            }
            docs_.push_back(std::move(d));
        } else if (s.size() < need) {
            fprintf(stderr, "warning: %s has %zu tokens, fewer than the B*T+1 = %zu one batch "
                    "needs; skipping it\n", path.c_str(), s.size(), need);
            continue;
        }
        shards_.push_back(std::move(s));
    }
    REQUIRE_INPUT(!shards_.empty() || !docs, "%s: no shard holds the B = %d documents one batch "
                  "needs (documents start with token %d; was the data made without document "
                  "separators?)", p, B, layout.doc_token);
    REQUIRE_INPUT(!shards_.empty(), "%s: no shard holds the B*T+1 = %zu tokens one batch "
                  "needs (B=%d, T=%d)", p, need, B, T);

    // this rank's windows: positions j in [0, w) with j % nranks == rank, in any order
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
    if (layout_.documents) return (int64_t)(docs_[shard].size() / (size_t)B_);
    // k*B*T + B*T + 1 <= size  <=>  k < (size - 1) / (B*T); every kept shard has >= 1
    return (int64_t)((shards_[shard].size() - 1) / ((size_t)B_ * T_));
}

size_t DataLoader::next_offset() const {
    const int64_t w = window_at(pos_.window);
    return layout_.documents ? docs_[shard_at(pos_.shard)][(size_t)w * B_].start
                             : (size_t)w * B_ * T_;
}

size_t DataLoader::shard_at(int64_t pos) const {
    return shuffle_ ? (size_t)shard_perm_[(size_t)pos] : (size_t)pos;
}

int64_t DataLoader::window_at(int64_t pos) const {
    return shuffle_ ? window_perm_[(size_t)pos] : pos;
}

void DataLoader::order_for(const LoaderState& p) {
    if (!shuffle_) return;
    if (perm_epoch_ != p.epoch) {
        shard_perm_ = permutation((int64_t)shards_.size(), seed_, p.epoch, -1);
        perm_epoch_ = p.epoch;
        perm_shard_ = -1;
    }
    if (perm_shard_ != p.shard) {
        const size_t s = shard_at(p.shard);
        window_perm_ = permutation(windows_in(s), seed_, p.epoch, (int64_t)s);
        perm_shard_ = p.shard;
    }
}

void DataLoader::seek_valid() {
    // Terminates: num_batches_ > 0, so some shard holds a window of this rank.
    for (;;) {
        order_for(pos_);
        int64_t j = pos_.window;
        j += ((rank_ - j % nranks_) % nranks_ + nranks_) % nranks_;  // next j of this rank
        if (j < windows_in(shard_at(pos_.shard))) {
            pos_.window = j;
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
    pos_ = LoaderState{0, 0, 0, shuffle_, seed_};
    seek_valid();
}

void DataLoader::next_batch(int* inputs, int* targets) {
    const size_t shard = shard_at(pos_.shard);
    const Shard& s = shards_[shard];
    const size_t BT = (size_t)B_ * T_;
    if (layout_.documents) {
        const Doc* d = &docs_[shard][(size_t)window_at(pos_.window) * B_];
        for (int b = 0; b < B_; b++) {
            int* x = inputs + (size_t)b * T_;
            int* y = targets + (size_t)b * T_;
            const size_t n = d[b].len - 1;  // positions with a target, 1..T
            for (size_t t = 0; t < n; t++) x[t] = (int)s[d[b].start + t], y[t] = (int)s[d[b].start + t + 1];
            for (size_t t = n; t < (size_t)T_; t++) x[t] = layout_.doc_token, y[t] = -1;
        }
    } else {
        const size_t start = (size_t)window_at(pos_.window) * BT;
        // Rows b and b+1 overlap by one token, so the (B, T+1) window is just the flat span
        // [start, start + B*T] and targets are inputs shifted by one.
        for (size_t i = 0; i < BT; i++) {
            inputs[i] = (int)s[start + i];  // < vocab_size, checked when the shard was opened
            targets[i] = (int)s[start + i + 1];
        }
    }
    pos_.window++;
    seek_valid();
}

void DataLoader::restore(const LoaderState& st, bool exact) {
    const char* p = pattern_.c_str();
    REQUIRE_INPUT(st.shuffle == shuffle_ && (!shuffle_ || st.seed == seed_),
                  "%s: loader state is for %s order%s, this loader reads in %s order%s (was "
                  "the checkpoint made with other --shuffle or --seed flags?)", p,
                  st.shuffle ? "shuffled" : "sequential",
                  st.shuffle ? strfmt(" with seed %llu", (unsigned long long)st.seed).c_str() : "",
                  shuffle_ ? "shuffled" : "sequential",
                  shuffle_ ? strfmt(" with seed %llu", (unsigned long long)seed_).c_str() : "");
    REQUIRE_INPUT(st.epoch >= 0, "%s: loader state has epoch %lld, expected >= 0", p,
                  (long long)st.epoch);
    REQUIRE_INPUT(st.shard >= 0 && st.shard < (int64_t)shards_.size(),
                  "%s: loader state has shard %lld, expected 0 <= shard < %zu (was the "
                  "checkpoint made with other data?)", p, (long long)st.shard, shards_.size());
    const size_t shard = shuffle_ ? (size_t)permutation((int64_t)shards_.size(), seed_,
                                                        st.epoch, -1)[(size_t)st.shard]
                                  : (size_t)st.shard;
    const int64_t w = windows_in(shard);
    REQUIRE_INPUT(st.window >= 0 && st.window < w && (!exact || st.window % nranks_ == rank_),
                  "%s: loader state has window %lld of %s, expected 0 <= window < %lld with "
                  "window %% %d == %d (was the checkpoint made with other data, B, T or "
                  "ranks?)", p, (long long)st.window, shards_[shard].path().c_str(),
                  (long long)w, nranks_, rank_);
    pos_ = st;
    if (exact) order_for(pos_);
    else seek_valid();
}
