#include "test/test_util.h"

#include <sys/wait.h>

#include <cstdio>

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
