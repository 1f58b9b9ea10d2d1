// The flat parameter layout: every parameter lives in one contiguous buffer, and
// this table says where. Gradients and AdamW moments use buffers of the same layout.
//
// Names are Hugging Face's for each architecture. Internal shapes are (out, in) for
// every matrix; GPT-2's Hugging Face checkpoints store Conv1D weights as (in, out),
// so those entries are flagged and transposed at load/save time only.
//
// Order: every decayed tensor (matrices, embeddings) first, then norm weights and
// biases, each group in model order. Adjacency the model relies on: llama's q_proj,
// k_proj, v_proj are consecutive, so they form one (3C, C) matrix; gate_proj and
// up_proj likewise form one (2F, C).
#pragma once
#include <cstddef>
#include <string>
#include <vector>

#include "model/config.h"

struct ParamTensor {
    std::string name;          // Hugging Face name
    std::vector<int> shape;    // internal shape, row-major
    size_t offset = 0;         // in elements, into the flat buffer
    size_t size = 0;           // elements
    bool decay = false;        // AdamW weight decay applies (matrices only)
    bool hf_transposed = false;// stored as (in, out) in Hugging Face files
    int hf_rows = -1;          // rows stored in files when fewer than internal (padded vocab)
    // Initialisation: N(0, init_std) when init_std > 0, else the constant init_value.
    // The last tail_rows rows use tail_std instead (DeepNorm scales only the V part of
    // GPT-2's fused c_attn).
    float init_std = 0.0f, init_value = 0.0f;
    int tail_rows = 0;
    float tail_std = 0.0f;
    int rows() const { return shape[0]; }
    int cols() const { return shape.size() > 1 ? shape[1] : 1; }
};

// Offsets of one block's tensors inside the flat buffer (-1 when absent).
struct BlockParams {
    // attention sublayer
    long ln1_w = -1, ln1_b = -1;    // first norm of the block (C)
    long qkv_w = -1, qkv_b = -1;    // (3C, C), (3C)
    long attn_proj_w = -1, attn_proj_b = -1;  // (C, C), (C)
    long ln1o_w = -1, ln1o_b = -1;  // sandwich: norm on the attention output (C)
    long attn_scale = -1;           // LayerScale (C) or SkipInit (1) on the attention branch
    // mlp sublayer
    long ln2_w = -1, ln2_b = -1;    // second norm of the block (C)
    long fc_w = -1, fc_b = -1;      // gpt2: c_fc (4C, C); llama: gate|up (2F, C)
    long mlp_proj_w = -1, mlp_proj_b = -1;  // gpt2: (C, 4C); llama: down (C, F)
    long ln2o_w = -1, ln2o_b = -1;  // sandwich: norm on the MLP output (C)
    long mlp_scale = -1;            // LayerScale (C) or SkipInit (1) on the MLP branch
};

struct ParamLayout {
    std::vector<ParamTensor> tensors;
    std::vector<BlockParams> blocks;
    long wte = -1;       // (Vp, C) token embedding (tied head for gpt2)
    long wpe = -1;       // (maxT, C) learned positions (gpt2)
    long lnf_w = -1, lnf_b = -1;  // final norm (C)
    long lm_head = -1;   // (Vp, C); equals wte when tied
    size_t total = 0;    // elements
    size_t n_decay = 0;  // elements [0, n_decay) get weight decay: every matrix and embedding

    const ParamTensor* find(const std::string& name) const;
};

ParamLayout build_param_layout(const ModelConfig& cfg);
