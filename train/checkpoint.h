// Training checkpoints: RUN_DIR/ckpt_<step>.safetensors holds the flat parameter,
// master-weight and AdamW buffers; its metadata holds the run's configuration and
// everything else the next step depends on (step, data position, RNG and guard
// state). Written to a temporary file, fsynced and renamed, so the newest complete
// checkpoint is always loadable.
//
// Data parallel runs (ZeRO-1) shard the optimizer state: the main file holds the
// parameters and rank 0's slice; ckpt_<step>.rank<r>.safetensors holds rank r's slice
// and that rank's data position. The ranks write their files first and rank 0 the
// main file last, so a main file means a complete checkpoint. Any rank count can
// resume from it: each rank assembles its slice from the files that overlap it.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

struct Checkpoint {
    nlohmann::json config;  // the run's configuration (model and the options that shape a step)
    nlohmann::json state;   // step, loader position, RNG and guard state; world_size
    std::vector<float> params;  // (P) the parameters as the backend holds them (bf16 values on CUDA)
    // the optimizer state of the parameters [opt_begin, opt_begin + m.size())
    size_t opt_begin = 0;
    std::vector<float> master;  // fp32 master weights, empty when params are fp32
    std::vector<float> m, v;    // AdamW moments
};

std::string checkpoint_path(const std::string& dir, int step);
std::string checkpoint_rank_path(const std::string& main_path, int rank);  // rank >= 1
// Writes the main file (params non-empty) or a rank's file (params empty).
void save_checkpoint(const std::string& path, const Checkpoint& ck);
Checkpoint load_checkpoint(const std::string& path);  // UserError naming the file
// ck, loaded from the main file `path`, gets the optimizer state of [begin, min(end, P))
// assembled from every rank's file it overlaps. Returns the state saved by rank `rank`
// when the checkpoint was written by as many ranks as `world`, else null.
nlohmann::json load_optimizer_shard(Checkpoint& ck, const std::string& path, size_t begin, size_t end, int rank,
                                    int world);
// Complete checkpoints in dir, oldest first (temporary files are not checkpoints).
std::vector<std::pair<int, std::string>> list_checkpoints(const std::string& dir);
// Keeps the newest keep_last and every checkpoint whose step is a multiple of keep_every (0: none).
void prune_checkpoints(const std::string& dir, int keep_last, int keep_every);
// "field: a -> b" for every field of two configurations that differs.
std::vector<std::string> config_differences(const nlohmann::json& saved, const nlohmann::json& now,
                                            const std::string& prefix = "");
