#include "train/run_dir.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "common/check.h"
#include "train/checkpoint.h"

void require_writable_dir(const std::string& dir, const char* flag) {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    REQUIRE_INPUT(!ec, "%s: cannot create the directory %s: %s", flag, dir.c_str(), ec.message().c_str());
    REQUIRE_INPUT(std::filesystem::is_directory(dir), "%s: %s is not a directory", flag, dir.c_str());
    const std::string probe = dir + "/.write-test." + std::to_string(getpid());
    const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    REQUIRE_INPUT(fd >= 0, "%s: cannot write into %s: %s", flag, dir.c_str(), strerror(errno));
    ::close(fd);
    ::unlink(probe.c_str());
}

void claim_run_dir(const std::string& dir, bool resume) {
    require_writable_dir(dir, "--out-dir");
    const std::string lock = dir + "/.lock";
    const int fd = ::open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    REQUIRE_INPUT(fd >= 0, "--out-dir: cannot create %s: %s", lock.c_str(), strerror(errno));
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
        // EWOULDBLOCK: held; any other error (a file system without locks) leaves the run unguarded
        if (errno == EWOULDBLOCK) {
            std::string holder;
            std::getline(std::ifstream(lock), holder);
            ::close(fd);
            throw UserError(strfmt("--out-dir: %s is in use by another run (process %s holds %s); wait for it to "
                                   "end, or give another --out-dir",
                                   dir.c_str(), holder.empty() ? "?" : holder.c_str(), lock.c_str()));
        }
    } else if (::ftruncate(fd, 0) == 0) {
        const std::string pid = std::to_string(getpid()) + "\n";
        const ssize_t n = ::write(fd, pid.data(), pid.size());  // names the holder in another run's message
        (void)n;
    }
    // fd stays open, and the lock held, until the process exits
    if (resume) return;
    const auto ckpts = list_checkpoints(dir);
    const bool has_log = std::filesystem::exists(dir + "/log.jsonl");
    if (!has_log && ckpts.empty()) return;
    std::string what = has_log ? "log.jsonl" : "";
    if (!ckpts.empty())
        what += strfmt("%s%zu checkpoint%s (newest: step %d)", has_log ? " and " : "", ckpts.size(),
                       ckpts.size() == 1 ? "" : "s", ckpts.back().first);
    throw UserError(strfmt("--out-dir: %s already holds a run (%s); give --resume to continue it, or another "
                           "--out-dir (delete the directory to start over)",
                           dir.c_str(), what.c_str()));
}
