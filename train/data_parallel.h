// Data parallel training with ZeRO-1 over the ranks of a Comm.
//
// Every rank runs the whole model on its own part of the global batch. Gradients are
// summed over ranks by all-reduce, bucket by bucket as the backward pass finishes each
// block (the loss is pre-divided by the number of ranks, so the sum is the mean). The
// optimizer state is sharded: rank r keeps the AdamW moments (and fp32 master weights)
// of the slice [opt_begin, opt_begin + opt_n) of the flat buffer only, updates that
// slice, and an all-gather then gives every rank the whole updated parameters.
//
// With one rank every call is a no-op or a local operation, so the training loop has
// one code path; a one-rank NCCL communicator still runs every collective (a test of
// the NCCL path on a single GPU).
#pragma once
#include <cmath>
#include <string>
#include <vector>

#include "comm/comm.h"
#include "model/gpt.h"

// A contiguous run [begin, end) of the flat buffer whose gradients are final at one
// point of the backward pass: after block `stage` (0-based), or at its end (stage -1:
// embeddings, the final norm, the head).
struct GradBucket {
    size_t begin, end;
    int stage;
};
// Buckets that partition [0, layout.total), in offset order. Block tensors are found by
// their Hugging Face names (h.<l>. or layers.<l>.), so new per-block tensors join their
// block without a change here.
std::vector<GradBucket> grad_buckets(const ParamLayout& layout);

template <class Backend>
struct DataParallel {
    using floatX = typename Backend::floatX;
    Comm& comm;
    GPT<Backend>& model;
    std::vector<GradBucket> buckets;
    float* scalars = nullptr;  // (16) on the backend: what collectives can reach

    bool active;  // collectives run: several ranks, or NCCL on one

    DataParallel(Comm& c, GPT<Backend>& m)
        : comm(c), model(m), buckets(grad_buckets(m.layout)), active(c.size() > 1 || std::string(c.name()) != "single") {
        scalars = (float*)Backend::alloc(16 * sizeof(float), "scalar reductions");
    }
    ~DataParallel() { Backend::release(scalars); }
    DataParallel(const DataParallel&) = delete;
    DataParallel& operator=(const DataParallel&) = delete;

    int rank() const { return comm.rank(); }
    int size() const { return comm.size(); }
    static DType grad_type() { return sizeof(floatX) == 4 ? DType::f32 : DType::bf16; }

    // Call before the backward pass of the last micro-batch of a step: each block's
    // gradient reduction starts as soon as its backward is done. Not in the first step
    // on a backend whose scratch grows on first use: freeing device memory waits for the
    // whole device, NCCL kernels in flight included, which NCCL does not support.
    void overlap_next_backward() {
        if (!active) return;
        overlapping = !(Backend::grows_scratch && backward_passes == 0);
        if (overlapping) model.on_block_backward = [this](int l) { start(l); };
    }
    // After that backward: reduces what is left and waits; grads then hold the sum.
    void finish_backward() {
        if (!active) return;
        model.on_block_backward = nullptr;
        if (overlapping) start(-1);
        else for (const GradBucket& b : buckets) start_bucket(b);
        comm.wait_all();
        backward_passes++;
    }
    // Sums n <= 16 host floats over ranks, in place.
    void sum(float* vals, int n) {
        if (!active) return;
        LNS_CHECK(n <= 16, "at most 16 scalars per reduction");
        Backend::copy_from_host(scalars, vals, n * sizeof(float));
        comm.all_reduce_sum(scalars, n, DType::f32);
        Backend::copy_to_host(vals, scalars, n * sizeof(float));
    }
    // The squared gradient norm of this rank's shard: summed over ranks, the global one.
    double shard_norm_squared() const { return Backend::norm_squared(model.grads + model.opt_begin, model.opt_n); }
    // After adamw_step: every rank's updated slice to every rank.
    void gather_params() {
        if (!active) return;
        comm.all_gather(model.params, model.params + model.opt_begin, model.opt_n, grad_type());
    }
    // The fp32 parameters, whole, on every rank (the master weights are sharded).
    std::vector<float> gather_fp32_params() {
        if (size() == 1 || !model.master) return model.get_params();
        float* all = (float*)Backend::alloc(model.n_alloc * sizeof(float), "gathered master weights");
        comm.all_gather(all, model.master, model.opt_n, DType::f32);
        std::vector<float> host(model.layout.total);
        Backend::copy_to_host(host.data(), all, host.size() * sizeof(float));
        Backend::release(all);
        return host;
    }

private:
    bool overlapping = false;
    long backward_passes = 0;
    void start_bucket(const GradBucket& b) {
        comm.all_reduce_sum_start(model.grads + b.begin, b.end - b.begin, grad_type());
    }
    void start(int stage) {
        for (const GradBucket& b : buckets)
            if (b.stage == stage) start_bucket(b);
    }
};
