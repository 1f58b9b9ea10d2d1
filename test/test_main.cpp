// The test runner: Catch2 with a listener that counts test cases, so the last line
// is "tests: N passed, M failed, K skipped". Test cases tagged [gpu] need a CUDA
// device; without one they are not run and are counted as skipped.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <cstdio>

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

int main(int argc, char** argv) {
    Catch::Session session;
    if (int rc = session.applyCommandLine(argc, argv)) return rc;
    int skipped = 0;
    if (!gpu_available() && session.configData().testsOrTags.empty()) {
        for (const auto& tc : Catch::getAllTestCasesSorted(session.config()))
            for (const auto& tag : tc.tags)
                if (tag == "gpu") skipped++;
        session.configData().testsOrTags.push_back("~[gpu]");
        session.useConfigData(session.configData());
        if (skipped) printf("no CUDA device: %d GPU test cases skipped\n", skipped);
    }
    const int rc = session.run();
    printf("tests: %d passed, %d failed, %d skipped\n", g_passed, g_failed, skipped);
    return rc;
}
