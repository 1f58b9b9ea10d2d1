// The test runner: Catch2 with a listener that counts test cases, so the last line
// is "tests: N passed, M failed, K skipped". Test cases tagged [gpu] need a CUDA
// device, [multigpu] two; without them they are not run and are counted as skipped,
// unless LNS_REQUIRE_GPU=1 (the GPU check), where a skipped [gpu] test is a failure: a
// device the binary cannot use must not pass as "ok".
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "test/test_util.h"

namespace {
int g_passed = 0, g_failed = 0;

struct SummaryListener : Catch::TestEventListenerBase {
    using TestEventListenerBase::TestEventListenerBase;
    void testCaseEnded(Catch::TestCaseStats const& stats) override {
        if (stats.totals.assertions.failed > 0) g_failed++;
        else g_passed++;
    }
};
}  // namespace
CATCH_REGISTER_LISTENER(SummaryListener)

// Each alternative of a test spec ("a,b" means a or b), with `extra` required too.
static std::vector<std::string> and_each(const std::vector<std::string>& specs, const std::string& extra) {
    std::vector<std::string> out;
    if (specs.empty()) return {extra};
    for (const auto& s : specs) {
        std::string alt, joined;
        for (char c : s + ",") {
            if (c != ',') {
                alt += c;
                continue;
            }
            // adjacent means both required; a name pattern goes last, where nothing can join it
            if (!alt.empty()) joined += (joined.empty() ? "" : ",") + (alt.back() == ']' ? alt + extra : extra + alt);
            alt.clear();
        }
        out.push_back(joined);
    }
    return out;
}

int main(int argc, char** argv) {
    Catch::Session session;
    if (int rc = session.applyCommandLine(argc, argv)) return rc;
    int skipped = 0;
    // tests that need hardware this machine lacks: counted as skipped, left out of the run
    const std::pair<const char*, bool> needs[] = {{"[gpu]", gpu_available()}, {"[multigpu]", gpu_count() >= 2}};
    for (const auto& [tag, have] : needs) {
        if (have) continue;
        auto& specs = session.configData().testsOrTags;
        // count the tests the user's filter (minus those already left out) selects, then drop them
        Catch::ConfigData probe = session.configData();
        probe.testsOrTags = and_each(specs, tag);
        Catch::Config probe_config(probe);
        const int n = (int)Catch::filterTests(Catch::getAllTestCasesSorted(probe_config), probe_config.testSpec(),
                                              probe_config).size();
        specs = and_each(specs, std::string("~") + tag);
        session.useConfigData(session.configData());
        if (n) printf("%s: %d test cases skipped\n", tag[1] == 'g' ? "no CUDA device" : "fewer than 2 GPUs", n);
        skipped += n;
    }
    const char* require_gpu = getenv("LNS_REQUIRE_GPU");
    if (skipped > 0 && !gpu_available() && require_gpu && std::string(require_gpu) == "1") {
        printf("LNS_REQUIRE_GPU=1: no usable CUDA device, so %d selected test cases cannot run\n", skipped);
        printf("tests: 0 passed, %d failed, 0 skipped\n", skipped);
        return 1;
    }
    const int rc = session.run();
    printf("tests: %d passed, %d failed, %d skipped\n", g_passed, g_failed, skipped);
    return rc;
}
