// Learning-rate schedules: linear warmup, then cosine / linear decay to a floor,
// constant, or WSD (warmup-stable-decay).
#pragma once
#include <cmath>
#include <string>

#include "common/check.h"

enum class Schedule { cosine, linear, constant, wsd };

inline Schedule parse_schedule(const std::string& s) {
    if (s == "cosine") return Schedule::cosine;
    if (s == "linear") return Schedule::linear;
    if (s == "constant") return Schedule::constant;
    if (s == "wsd") return Schedule::wsd;
    throw UserError("--schedule: unknown schedule '" + s + "': expected cosine, linear, constant or wsd");
}

struct LrSchedule {
    Schedule kind = Schedule::cosine;
    float lr = 3e-4f;         // peak
    int warmup = 0;           // steps of linear warmup from lr/warmup to lr
    int total = 1;            // steps in the run
    float min_frac = 0.1f;    // floor = min_frac * lr
    float decay_frac = 0.2f;  // WSD: the last decay_frac of the run decays linearly

    // step is 0-based
    float at(int step) const {
        if (step < warmup) return lr * (float)(step + 1) / (float)warmup;
        const float floor = min_frac * lr;
        switch (kind) {
            case Schedule::constant: return lr;
            case Schedule::cosine: {
                float p = (float)(step - warmup) / (float)std::max(1, total - warmup);
                return floor + 0.5f * (lr - floor) * (1.0f + std::cos(3.14159265358979f * p));
            }
            case Schedule::linear: {
                float p = (float)(step - warmup) / (float)std::max(1, total - warmup);
                return lr - (lr - floor) * p;
            }
            case Schedule::wsd: {
                int decay_steps = std::max(1, (int)std::lround(decay_frac * total));
                int start = std::max(warmup, total - decay_steps);
                if (step < start) return lr;
                float p = (float)(step - start) / (float)std::max(1, total - start);
                return lr - (lr - floor) * p;
            }
        }
        return lr;
    }
};
