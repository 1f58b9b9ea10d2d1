// Spike guard: a loss or gradient norm whose z-score against the recent accepted
// values exceeds a threshold marks a step whose update is skipped (and logged).
#pragma once
#include <cmath>
#include <deque>
#include <nlohmann/json.hpp>

struct SpikeGuard {
    int window = 100;    // values kept
    float z_max = 0.0f;  // 0: off
    int min_history = 20;  // no verdict before this many values
    std::deque<double> hist;

    double zscore(double x) const {
        if ((int)hist.size() < min_history) return 0.0;
        double mean = 0.0, var = 0.0;
        for (double h : hist) mean += h;
        mean /= hist.size();
        for (double h : hist) var += (h - mean) * (h - mean);
        const double sd = std::sqrt(var / hist.size());
        return sd > 0 ? (x - mean) / sd : 0.0;
    }
    bool is_spike(double x) const { return z_max > 0 && zscore(x) > z_max; }
    void accept(double x) {
        hist.push_back(x);
        while ((int)hist.size() > window) hist.pop_front();
    }
    nlohmann::json to_json() const { return nlohmann::json(std::vector<double>(hist.begin(), hist.end())); }
    void from_json(const nlohmann::json& j) {
        auto v = j.get<std::vector<double>>();
        hist.assign(v.begin(), v.end());
    }
};
