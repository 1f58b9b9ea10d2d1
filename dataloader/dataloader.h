// Sequential (B, T+1) windows over the concatenation of token shards, llm.c style:
// documents are packed back to back and need not align with windows.
//
// Within a shard, window k covers tokens [k*B*T, k*B*T + B*T + 1) for every k with
// k*B*T + B*T + 1 <= shard size. Row b of the batch starts at k*B*T + b*T and holds
// T+1 tokens: inputs = row[0..T), targets = row[1..T]. Rank r of nranks takes the
// windows with k % nranks == r, so ranks never see the same window. After the last
// window of the last shard the loader wraps to the first shard and epoch() grows.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "dataloader/shard.h"

// Position of the next batch, for exact resume. `shard` indexes the shards the loader
// kept (those of at least B*T+1 tokens, in sorted path order), `window` is the k above.
struct LoaderState {
    int64_t shard, window, epoch;
};

class DataLoader {
public:
    DataLoader(const std::string& pattern, int B, int T, int vocab_size, int rank = 0,
               int nranks = 1);

    void next_batch(int* inputs, int* targets);  // inputs, targets: (B, T) each
    void reset();                                // back to the first window, epoch 0
    size_t num_batches() const { return num_batches_; }  // per epoch, this rank
    size_t tokens_per_epoch() const {  // input tokens this rank sees per epoch
        return num_batches_ * (size_t)B_ * (size_t)T_;
    }
    int64_t epoch() const { return pos_.epoch; }
    LoaderState state() const { return pos_; }
    void restore(const LoaderState& s);  // UserError if s is not a position of this rank
    const std::vector<Shard>& shards() const { return shards_; }

private:
    int64_t windows_in(size_t shard) const;  // windows of this shard, all ranks
    void seek_valid();  // moves pos_ forward to this rank's next window, wrapping

    std::string pattern_;
    int B_, T_, rank_, nranks_;
    std::vector<Shard> shards_;
    size_t num_batches_ = 0;
    LoaderState pos_{0, 0, 0};  // always this rank's next window
};
