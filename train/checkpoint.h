// Training checkpoints: RUN_DIR/ckpt_<step>.safetensors holds the flat parameter,
// master-weight and AdamW buffers; its metadata holds the run's configuration and
// everything else the next step depends on (step, data position, RNG and guard
// state). Written to a temporary file, fsynced and renamed, so the newest complete
// checkpoint is always loadable.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

struct Checkpoint {
    nlohmann::json config;  // the run's configuration (model and the options that shape a step)
    nlohmann::json state;   // step, loader position, RNG and guard state
    std::vector<float> params;  // (P) the parameters as the backend holds them (bf16 values on CUDA)
    std::vector<float> master;  // (P) fp32 master weights, empty when params are fp32
    std::vector<float> m, v;    // (P) AdamW moments
};

std::string checkpoint_path(const std::string& dir, int step);
void save_checkpoint(const std::string& path, const Checkpoint& ck);
Checkpoint load_checkpoint(const std::string& path);  // UserError naming the file
// Complete checkpoints in dir, oldest first (temporary files are not checkpoints).
std::vector<std::pair<int, std::string>> list_checkpoints(const std::string& dir);
// Keeps the newest keep_last and every checkpoint whose step is a multiple of keep_every (0: none).
void prune_checkpoints(const std::string& dir, int keep_last, int keep_every);
// "field: a -> b" for every field of two configurations that differs.
std::vector<std::string> config_differences(const nlohmann::json& saved, const nlohmann::json& now,
                                            const std::string& prefix = "");
