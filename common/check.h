// Error checking shared by every part of the project. A failed check prints
// file:line, what was expected and a hint, then exits non-zero: bad input must
// never look like a result.
#pragma once
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>

// Thrown by checks on user input (flags, files) so that callers such as tests
// can observe the message; main() turns it into "error: ..." and exit code 1.
struct UserError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

inline std::string strfmt(const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(nullptr, 0, fmt, ap);
    va_end(ap);
    std::string s(n > 0 ? (size_t)n : 0, '\0');
    if (n > 0) vsnprintf(&s[0], (size_t)n + 1, fmt, ap2);
    va_end(ap2);
    return s;
}

// Internal invariant: a bug in this program, not in the input.
#define LNS_CHECK(cond, ...)                                                            \
    do {                                                                              \
        if (!(cond)) {                                                                \
            fprintf(stderr, "%s:%d: internal check failed: %s\n  ", __FILE__, __LINE__, \
                    #cond);                                                           \
            fprintf(stderr, __VA_ARGS__);                                             \
            fprintf(stderr, "\n");                                                    \
            std::abort();                                                             \
        }                                                                             \
    } while (0)

// User-facing check: the message names the flag or file and what was expected.
#define REQUIRE_INPUT(cond, ...)                                   \
    do {                                                           \
        if (!(cond)) throw UserError(strfmt(__VA_ARGS__));         \
    } while (0)
