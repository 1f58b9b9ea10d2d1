#include "train/checkpoint.h"

#include <algorithm>
#include <filesystem>
#include <regex>

#include "common/check.h"
#include "common/safetensors.h"

namespace fs = std::filesystem;

std::string checkpoint_path(const std::string& dir, int step) { return dir + strfmt("/ckpt_%08d.safetensors", step); }

std::string checkpoint_rank_path(const std::string& main_path, int rank) {
    const std::string stem = main_path.substr(0, main_path.size() - std::string(".safetensors").size());
    return stem + strfmt(".rank%d.safetensors", rank);
}

void save_checkpoint(const std::string& path, const Checkpoint& ck) {
    const int64_t K = (int64_t)ck.m.size();
    LNS_CHECK(ck.v.size() == (size_t)K && (ck.master.empty() || ck.master.size() == (size_t)K),
              "moments and master weights must cover the same parameters");
    std::vector<StView> views = {{"adamw.m", "F32", {K}, ck.m.data(), ck.m.size() * 4},
                                 {"adamw.v", "F32", {K}, ck.v.data(), ck.v.size() * 4}};
    if (!ck.params.empty())
        views.push_back({"params", "F32", {(int64_t)ck.params.size()}, ck.params.data(), ck.params.size() * 4});
    if (!ck.master.empty()) views.push_back({"master", "F32", {K}, ck.master.data(), ck.master.size() * 4});
    write_safetensors(path, views, {{"config", ck.config.dump()}, {"state", ck.state.dump()},
                                    {"opt_begin", std::to_string(ck.opt_begin)}, {"format", "lns-checkpoint-1"}});
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
        ck.opt_begin = meta.count("opt_begin") ? std::stoull(meta.at("opt_begin")) : 0;
    } catch (const std::exception& e) {
        throw UserError(path + ": malformed checkpoint metadata: " + e.what());
    }
    for (const char* k : {"adamw.m", "adamw.v"})
        REQUIRE_INPUT(f.count(k), "%s: checkpoint lacks tensor %s", path.c_str(), k);
    if (f.count("params")) ck.params = f.at("params").to_f32();
    ck.m = f.at("adamw.m").to_f32();
    ck.v = f.at("adamw.v").to_f32();
    if (f.count("master")) ck.master = f.at("master").to_f32();
    REQUIRE_INPUT(ck.v.size() == ck.m.size() && (ck.master.empty() || ck.master.size() == ck.m.size()),
                  "%s: optimizer buffers of different sizes", path.c_str());
    return ck;
}

nlohmann::json load_optimizer_shard(Checkpoint& ck, const std::string& path, size_t begin, size_t end, int rank,
                                    int world) {
    REQUIRE_INPUT(!ck.params.empty(), "%s: no params tensor (a rank's file, not a main checkpoint)", path.c_str());
    const int saved_world = ck.state.value("world_size", 1);
    const size_t P = ck.params.size();
    end = std::min(end, P), begin = std::min(begin, end);
    nlohmann::json rank_state = saved_world == world && rank == 0 ? ck.state : nlohmann::json();
    if (ck.opt_begin == begin && ck.m.size() == end - begin) return rank_state;  // rank 0, same layout
    if (saved_world == world) {  // the same shards: this rank's own file holds exactly its slice
        Checkpoint own = load_checkpoint(checkpoint_rank_path(path, rank));
        REQUIRE_INPUT(own.opt_begin == begin && own.m.size() == end - begin && own.master.empty() == ck.master.empty(),
                      "%s: rank %d's file holds optimizer values [%zu, %zu), expected [%zu, %zu)", path.c_str(), rank,
                      own.opt_begin, own.opt_begin + own.m.size(), begin, end);
        ck.opt_begin = begin, ck.m = std::move(own.m), ck.v = std::move(own.v), ck.master = std::move(own.master);
        return own.state;
    }

    // another rank count: the slice from every file that overlaps it
    std::vector<float> m(end - begin, 0.0f), v(end - begin, 0.0f), mw(ck.master.empty() ? 0 : end - begin, 0.0f);
    size_t covered = 0;
    for (int r = 0; r < saved_world; r++) {
        Checkpoint part;
        if (r == 0) part.opt_begin = ck.opt_begin, part.m = std::move(ck.m), part.v = std::move(ck.v),
                    part.master = std::move(ck.master);
        else part = load_checkpoint(checkpoint_rank_path(path, r));
        const size_t b = std::max(begin, part.opt_begin), e = std::min(end, part.opt_begin + part.m.size());
        if (b >= e) continue;
        REQUIRE_INPUT(part.master.empty() == mw.empty(), "%s: rank %d's file %s master weights", path.c_str(), r,
                      part.master.empty() ? "lacks" : "has unexpected");
        const size_t src = b - part.opt_begin, dst = b - begin, n = e - b;
        std::copy_n(part.m.begin() + src, n, m.begin() + dst);
        std::copy_n(part.v.begin() + src, n, v.begin() + dst);
        if (!mw.empty()) std::copy_n(part.master.begin() + src, n, mw.begin() + dst);
        covered += n;
    }
    REQUIRE_INPUT(covered == end - begin, "%s: the rank files cover %zu of the %zu optimizer values needed",
                  path.c_str(), covered, end - begin);
    ck.opt_begin = begin, ck.m = std::move(m), ck.v = std::move(v), ck.master = std::move(mw);
    return rank_state;
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
        for (int r = 1; fs::remove(checkpoint_rank_path(all[i].second, r), ec); r++) {}
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
