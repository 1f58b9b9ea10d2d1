// (B, T+1) windows over the concatenation of token shards, llm.c style: documents are
// packed back to back and need not align with windows.
//
// Within a shard, window k covers tokens [k*B*T, k*B*T + B*T + 1) for every k with
// k*B*T + B*T + 1 <= shard size. Row b of the batch starts at k*B*T + b*T and holds
// T+1 tokens: inputs = row[0..T), targets = row[1..T]. After the last window of the last
// shard the loader wraps to the first shard and epoch() grows.
//
// Order. Sequential (the default): shards in sorted path order, windows k = 0, 1, 2, ...
// Shuffled: each epoch visits the shards in a permutation and each shard's windows in a
// permutation, drawn from (seed, epoch) and (seed, epoch, shard) alone, so a position
// needs no saved RNG stream: (shard, window, epoch, seed) restores it exactly.
//
// Ranks: in either order, rank r of nranks takes the window positions j (within a shard's
// order) with j % nranks == r, so the ranks of one epoch see disjoint windows that
// together cover every window once.
//
// Validation: a sequential loader, reset() before each evaluation, covers the same
// tokens every time.
//
// Documents layout (RowLayout::documents), the unpacked rows of the Curse-of-Depth and
// Mix-LN setups: each row is one document. Documents start at a shard's first token
// and at every occurrence of `doc_token` (the end-of-text token the shard tools write
// before each document); document d spans its start through the next document's
// start, so its last target is the separator and the model learns where documents
// end. A row holds the document's first T+1 tokens (truncated) or all of them, the
// rest of the row padded: inputs `doc_token` (causal attention keeps padding from
// touching earlier positions), targets -1 (masked out of the loss). Documents with
// fewer than 2 tokens have no target and are skipped. Window k of a shard is then its
// documents [k*B, k*B + B), and order, shuffle, ranks and resume work on windows
// exactly as above. The index of document starts is built when a shard is opened
// (one pass over its tokens).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "dataloader/shard.h"

// Position of the next batch, for exact resume. `shard` is a position in the epoch's
// order of the shards the loader kept (those of at least B*T+1 tokens; sorted path order
// when sequential), `window` a position in that shard's order of windows (the k above
// when sequential). `shuffle` and `seed` must match the loader's own.
struct LoaderState {
    int64_t shard, window, epoch;
    bool shuffle = false;
    uint64_t seed = 0;
};

// How batch rows are cut from the shards (see above).
struct RowLayout {
    bool documents = false;  // false: packed windows; true: one document per row
    int doc_token = -1;      // documents: the token that starts every document
};

class DataLoader {
public:
    DataLoader(const std::string& pattern, int B, int T, int vocab_size, int rank = 0,
               int nranks = 1, bool shuffle = false, uint64_t seed = 0, RowLayout layout = {});

    void next_batch(int* inputs, int* targets);  // inputs, targets: (B, T) each
    void reset();                                // back to the first window, epoch 0
    size_t num_batches() const { return num_batches_; }  // per epoch, this rank
    size_t tokens_per_epoch() const {  // input positions this rank sees per epoch (padding included)
        return num_batches_ * (size_t)B_ * (size_t)T_;
    }
    int64_t epoch() const { return pos_.epoch; }
    LoaderState state() const { return pos_; }
    // UserError if s is not a position of this rank. exact = false: this rank's first
    // window at or after s (resuming with another number of ranks).
    void restore(const LoaderState& s, bool exact = true);
    const std::vector<Shard>& shards() const { return shards_; }
    // The shard and first token of the next batch, e.g. for logs.
    size_t next_shard() const { return shard_at(pos_.shard); }
    size_t next_offset() const;
    // documents layout: documents of shard i (this rank's or not) that have a target
    size_t num_documents(size_t shard) const { return docs_.empty() ? 0 : docs_[shard].size(); }

private:
    int64_t windows_in(size_t shard) const;  // windows of this shard, all ranks
    void seek_valid();  // moves pos_ forward to this rank's next window, wrapping
    size_t shard_at(int64_t pos) const;     // shard at position pos of this epoch's order
    int64_t window_at(int64_t pos) const;   // window at position pos of the current shard
    void order_for(const LoaderState& p);   // draws the permutations for position p

    std::string pattern_;
    int B_, T_, rank_, nranks_;
    std::vector<Shard> shards_;
    RowLayout layout_;
    struct Doc {
        size_t start;
        uint32_t len;  // tokens in the row, <= T+1
    };
    std::vector<std::vector<Doc>> docs_;  // documents layout: per kept shard
    size_t num_batches_ = 0;
    bool shuffle_;
    uint64_t seed_;
    LoaderState pos_{0, 0, 0};  // always this rank's next window
    // shuffled order: permutations for (perm_epoch_) and (perm_epoch_, perm_shard_)
    std::vector<int64_t> shard_perm_, window_perm_;
    int64_t perm_epoch_ = -1, perm_shard_ = -1;
};
