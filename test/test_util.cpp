#include "test/test_util.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>

#include "common/check.h"
#include "dataloader/shard.h"

#ifdef LNS_CUDA
#include "kernels/cuda_backend.h"
#endif

bool gpu_available() {
#ifdef LNS_CUDA
    static const bool ok = [] {
        if (cuda_backend::device_count() == 0) return false;
        cuda_backend::init(0);
        return true;
    }();
    return ok;
#else
    return false;
#endif
}

int gpu_count() {
#ifdef LNS_CUDA
    return cuda_backend::device_count();
#else
    return 0;
#endif
}

int run_until(const std::string& cmd, int kill_at_step, int sig, std::string* out) {
    int fds[2];
    if (pipe(fds) != 0) return -1;
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fds[1], 1), dup2(fds[1], 2);
        close(fds[0]), close(fds[1]);
        execl("/bin/sh", "sh", "-c", ("exec " + cmd).c_str(), (char*)nullptr);
        _exit(127);
    }
    close(fds[1]);
    std::string buf, line;
    char c;
    bool sent = false;
    const std::string marker = strfmt("step %5d/", kill_at_step);
    while (read(fds[0], &c, 1) == 1) {
        buf += c;
        if (c != '\n') continue;
        if (!sent && kill_at_step > 0 && buf.find(marker) != std::string::npos) kill(pid, sig), sent = true;
    }
    close(fds[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    if (out) *out = buf;
    return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
}

std::string emulated_train_gpt() {
#ifdef LNS_CUDA
    return (std::filesystem::canonical("/proc/self/exe").parent_path() / "train_gpt_emu").string();
#else
    return "";
#endif
}

std::string mpirun(int ranks) {
    return "mpirun --allow-run-as-root --oversubscribe -np " + std::to_string(ranks) + " ";
}

int run_command(const std::string& cmd, std::string* output) {
    FILE* p = popen((cmd + " 2>&1").c_str(), "r");
    if (!p) return -1;
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, p)) > 0)
        if (output) output->append(buf, n);
    int status = pclose(p);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string repo_root() {
    const char* r = getenv("LNS_ROOT");
    return r ? r : std::filesystem::current_path().string();
}

TextShards::TextShards() {
    const std::string path = repo_root() + "/test/data/shakespeare_64k.txt";
    std::ifstream f(path, std::ios::binary);
    const std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    LNS_CHECK(text.size() == 65536, "%s: expected the 64 KiB excerpt, read %zu bytes", path.c_str(), text.size());
    std::vector<uint32_t> tok(text.size());
    for (size_t i = 0; i < tok.size(); i++) tok[i] = (unsigned char)text[i];
    const size_t split = tok.size() * 9 / 10;
    train = dir / "train.bin", val = dir / "val.bin";
    write_shard(train, tok.data(), split, false);
    write_shard(val, tok.data() + split, tok.size() - split, false);
}

std::vector<float> perturbed(const ParamLayout& layout, std::vector<float> p, uint64_t seed, float std) {
    Rng rng(seed);
    for (const auto& t : layout.tensors)
        if (t.init_std == 0.0f)
            for (size_t i = 0; i < t.size; i++) p[t.offset + i] += std * rng.normal();
    return p;
}

void make_batch(std::vector<int>& x, std::vector<int>& y, int n, int V, uint64_t seed) {
    Rng rng(seed);
    x.resize(n), y.resize(n);
    for (int i = 0; i < n; i++) x[i] = (int)(rng.next_u64() % V), y[i] = (int)(rng.next_u64() % V);
}

std::map<int, double> logged_values(const std::string& dir, const std::string& field) {
    std::ifstream f(dir + "/log.jsonl");
    std::map<int, double> m;
    std::string line;
    while (std::getline(f, line)) {
        auto j = nlohmann::json::parse(line);
        if (j["type"] != "step") continue;
        const int s = j["step"].get<int>();
        CHECK(m.count(s) == 0);
        m[s] = j[field].get<double>();
    }
    return m;
}

std::map<int, double> logged_losses(const std::string& dir) { return logged_values(dir, "loss"); }

std::vector<double> values_after(const std::string& out, const std::string& key) {
    std::vector<double> v;
    std::regex re(key + " ([0-9.eE+-]+)");
    for (auto it = std::sregex_iterator(out.begin(), out.end(), re); it != std::sregex_iterator(); ++it)
        v.push_back(std::stod((*it)[1]));
    return v;
}
