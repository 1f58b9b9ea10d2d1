#include "train/checkpoint.h"

#include <algorithm>
#include <filesystem>
#include <regex>

#include "common/check.h"
#include "common/safetensors.h"

namespace fs = std::filesystem;

std::string checkpoint_path(const std::string& dir, int step) { return dir + strfmt("/ckpt_%08d.safetensors", step); }

void save_checkpoint(const std::string& path, const Checkpoint& ck) {
    const int64_t P = (int64_t)ck.params.size();
    LNS_CHECK(ck.m.size() == (size_t)P && ck.v.size() == (size_t)P, "moments must match the parameters");
    std::vector<StView> views = {{"params", "F32", {P}, ck.params.data(), ck.params.size() * 4},
                                 {"adamw.m", "F32", {P}, ck.m.data(), ck.m.size() * 4},
                                 {"adamw.v", "F32", {P}, ck.v.data(), ck.v.size() * 4}};
    if (!ck.master.empty()) views.push_back({"master", "F32", {P}, ck.master.data(), ck.master.size() * 4});
    write_safetensors(path, views, {{"config", ck.config.dump()}, {"state", ck.state.dump()}, {"format", "lns-checkpoint-1"}});
}

Checkpoint load_checkpoint(const std::string& path) {
    StFile f = read_safetensors(path);
    auto meta = read_safetensors_metadata(path);
    REQUIRE_INPUT(meta.count("format") && meta["format"] == "lns-checkpoint-1",
                  "%s: not a train_gpt checkpoint (no lns-checkpoint-1 metadata)", path.c_str());
    Checkpoint ck;
    try {
        ck.config = nlohmann::json::parse(meta.at("config"));
        ck.state = nlohmann::json::parse(meta.at("state"));
    } catch (const std::exception& e) {
        throw UserError(path + ": malformed checkpoint metadata: " + e.what());
    }
    for (const char* k : {"params", "adamw.m", "adamw.v"})
        REQUIRE_INPUT(f.count(k), "%s: checkpoint lacks tensor %s", path.c_str(), k);
    ck.params = f.at("params").to_f32();
    ck.m = f.at("adamw.m").to_f32();
    ck.v = f.at("adamw.v").to_f32();
    if (f.count("master")) ck.master = f.at("master").to_f32();
    REQUIRE_INPUT(ck.m.size() == ck.params.size() && ck.v.size() == ck.params.size(),
                  "%s: buffers of different sizes", path.c_str());
    return ck;
}

std::vector<std::pair<int, std::string>> list_checkpoints(const std::string& dir) {
    std::vector<std::pair<int, std::string>> out;
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) return out;
    const std::regex re("ckpt_([0-9]{8})\\.safetensors");
    for (const auto& e : fs::directory_iterator(dir, ec)) {
        std::smatch m;
        const std::string name = e.path().filename().string();
        if (std::regex_match(name, m, re)) out.push_back({std::stoi(m[1]), e.path().string()});
    }
    std::sort(out.begin(), out.end());
    return out;
}

void prune_checkpoints(const std::string& dir, int keep_last, int keep_every) {
    auto all = list_checkpoints(dir);
    for (size_t i = 0; i + (size_t)keep_last < all.size(); i++) {
        if (keep_every > 0 && all[i].first % keep_every == 0) continue;
        std::error_code ec;
        fs::remove(all[i].second, ec);
    }
}

std::vector<std::string> config_differences(const nlohmann::json& a, const nlohmann::json& b, const std::string& prefix) {
    std::vector<std::string> diffs;
    if (a.is_object() && b.is_object()) {
        std::vector<std::string> keys;
        for (auto it = a.begin(); it != a.end(); ++it) keys.push_back(it.key());
        for (auto it = b.begin(); it != b.end(); ++it)
            if (!a.contains(it.key())) keys.push_back(it.key());
        for (const auto& k : keys) {
            const std::string name = prefix.empty() ? k : prefix + "." + k;
            if (!a.contains(k)) diffs.push_back(name + ": (absent) -> " + b[k].dump());
            else if (!b.contains(k)) diffs.push_back(name + ": " + a[k].dump() + " -> (absent)");
            else for (auto& d : config_differences(a[k], b[k], name)) diffs.push_back(d);
        }
    } else if (a != b) {
        diffs.push_back(prefix + ": " + a.dump() + " -> " + b.dump());
    }
    return diffs;
}
