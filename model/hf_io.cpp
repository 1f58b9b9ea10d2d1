#include "model/hf_io.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common/safetensors.h"

using json = nlohmann::json;

std::string config_to_json(const ModelConfig& c) {
    json j;
    if (c.arch == Arch::gpt2) {
        j = {{"model_type", "gpt2"}, {"architectures", {"GPT2LMHeadModel"}}, {"vocab_size", c.vocab_size},
             {"n_positions", c.max_seq_len}, {"n_embd", c.n_embd}, {"n_layer", c.n_layer}, {"n_head", c.n_head},
             {"n_inner", c.ffn_hidden}, {"layer_norm_epsilon", c.norm_eps}, {"activation_function", "gelu_new"},
             {"tie_word_embeddings", true}};
    } else {
        j = {{"model_type", "llama"}, {"architectures", {"LlamaForCausalLM"}}, {"vocab_size", c.vocab_size},
             {"hidden_size", c.n_embd}, {"intermediate_size", c.ffn_hidden}, {"num_hidden_layers", c.n_layer},
             {"num_attention_heads", c.n_head}, {"num_key_value_heads", c.n_head},
             {"max_position_embeddings", c.max_seq_len}, {"rms_norm_eps", c.norm_eps}, {"rope_theta", c.rope_theta},
             {"hidden_act", "silu"}, {"tie_word_embeddings", false}, {"attention_bias", false}, {"mlp_bias", false}};
    }
    j["norm_scheme"] = to_string(c.norm);
    j["mix_alpha"] = c.mix_alpha;
    j["init"] = to_string(c.init);
    j["init_std"] = c.init_std;
    j["layerscale"] = c.layerscale;
    j["skipinit"] = c.skipinit;
    j["lns_placement"] = to_string(c.lns_placement);
    return j.dump(2) + "\n";
}

ModelConfig config_from_json_file(const std::string& path) {
    std::ifstream f(path);
    REQUIRE_INPUT(f.good(), "%s: cannot open (expected a Hugging Face config.json)", path.c_str());
    json j;
    try {
        j = json::parse(f);
    } catch (const std::exception& e) {
        throw UserError(path + ": not valid JSON: " + e.what());
    }
    ModelConfig c;
    int kv_heads = 0;  // llama: checked once the config is known to be consistent
    try {
        const std::string type = j.at("model_type").get<std::string>();
        if (type == "gpt2") {
            c.arch = Arch::gpt2;
            c.vocab_size = j.at("vocab_size"), c.max_seq_len = j.at("n_positions");
            c.n_embd = j.at("n_embd"), c.n_layer = j.at("n_layer"), c.n_head = j.at("n_head");
            c.ffn_hidden = j.contains("n_inner") && !j["n_inner"].is_null() ? j["n_inner"].get<int>() : 4 * c.n_embd;
            c.norm_eps = j.value("layer_norm_epsilon", 1e-5f);
        } else if (type == "llama") {
            c.arch = Arch::llama;
            c.vocab_size = j.at("vocab_size"), c.max_seq_len = j.at("max_position_embeddings");
            c.n_embd = j.at("hidden_size"), c.n_layer = j.at("num_hidden_layers");
            c.n_head = j.at("num_attention_heads"), c.ffn_hidden = j.at("intermediate_size");
            c.norm_eps = j.value("rms_norm_eps", 1e-6f);
            c.rope_theta = j.value("rope_theta", 10000.0f);
            kv_heads = j.value("num_key_value_heads", c.n_head);
        } else {
            throw UserError(path + ": model_type '" + type + "': expected gpt2 or llama");
        }
        c.norm = parse_norm_scheme(j.value("norm_scheme", std::string("pre")));
        c.mix_alpha = j.value("mix_alpha", 0.25f);
        c.init = parse_init_scheme(j.value("init", std::string("normal")));
        c.init_std = j.value("init_std", 0.02f);
        c.layerscale = j.value("layerscale", 0.0f);
        c.skipinit = j.value("skipinit", false);
        c.lns_placement = parse_lns_placement(j.value("lns_placement", std::string("norm-output")));
    } catch (const json::exception& e) {
        throw UserError(path + ": missing or mistyped key: " + e.what());
    } catch (const UserError& e) {  // a bad norm_scheme, init or lns_placement value
        if (std::string(e.what()).rfind(path, 0) == 0) throw;
        throw UserError(path + ": " + e.what());
    }
    try {
        c.validate();
    } catch (const UserError& e) {
        throw UserError(path + ": " + e.what());
    }
    // after validate: a head count that does not divide hidden_size is named as such first
    REQUIRE_INPUT(kv_heads == 0 || kv_heads == c.n_head, "%s: grouped-query attention (num_key_value_heads %d != num_attention_heads %d) "
                  "is not supported", path.c_str(), kv_heads, c.n_head);
    return c;
}

StFile to_hf_tensors(const ParamLayout& layout, const std::vector<float>& host) {
    LNS_CHECK(host.size() == layout.total, "parameter count mismatch");
    StFile file;
    std::vector<float> buf;
    for (const ParamTensor& t : layout.tensors) {
        const float* p = host.data() + t.offset;
        const int rows = t.hf_rows > 0 ? t.hf_rows : t.rows(), cols = t.cols();
        if (t.hf_transposed) {  // (out, in) -> (in, out)
            buf.resize((size_t)rows * cols);
            for (int r = 0; r < rows; r++)
                for (int c = 0; c < cols; c++) buf[(size_t)c * rows + r] = p[(size_t)r * cols + c];
            file[t.name] = StTensor::f32({cols, rows}, buf.data());
        } else if (t.shape.size() == 1) {
            file[t.name] = StTensor::f32({rows}, p);
        } else {
            file[t.name] = StTensor::f32({rows, cols}, p);
        }
    }
    return file;
}

void save_safetensors_model(const std::string& path, const ParamLayout& layout, const std::vector<float>& host) {
    write_safetensors(path, to_hf_tensors(layout, host), {{"format", "pt"}});
}

void load_safetensors_model(const std::string& path, const ParamLayout& layout, std::vector<float>& host) {
    from_hf_tensors(read_safetensors(path), path, layout, host);
}

void from_hf_tensors(const StFile& file, const std::string& path, const ParamLayout& layout, std::vector<float>& host) {
    host.assign(layout.total, 0.0f);
    for (const ParamTensor& t : layout.tensors) {
        auto it = file.find(t.name);
        // Hugging Face's own GPT-2 files are saved from GPT2Model, without "transformer."
        if (it == file.end() && t.name.rfind("transformer.", 0) == 0) it = file.find(t.name.substr(12));
        REQUIRE_INPUT(it != file.end(), "%s: missing tensor %s", path.c_str(), t.name.c_str());
        const int rows = t.hf_rows > 0 ? t.hf_rows : t.rows(), cols = t.cols();
        std::vector<int64_t> want = t.shape.size() == 1 ? std::vector<int64_t>{rows}
                                    : t.hf_transposed   ? std::vector<int64_t>{cols, rows}
                                                        : std::vector<int64_t>{rows, cols};
        if (it->second.shape != want) {
            std::string got, exp;
            for (auto d : it->second.shape) got += std::to_string(d) + ",";
            for (auto d : want) exp += std::to_string(d) + ",";
            throw UserError(path + ": tensor " + t.name + " has shape (" + got + ") where (" + exp +
                            ") was expected by the config");
        }
        std::vector<float> v = it->second.to_f32();
        float* p = host.data() + t.offset;
        if (t.hf_transposed)
            for (int r = 0; r < rows; r++)
                for (int c = 0; c < cols; c++) p[(size_t)r * cols + c] = v[(size_t)c * rows + r];
        else
            std::copy(v.begin(), v.end(), p);
    }
}

void save_pretrained(const std::string& dir, const ModelConfig& cfg, const ParamLayout& layout,
                     const std::vector<float>& host) {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    REQUIRE_INPUT(std::filesystem::is_directory(dir), "--save-to: cannot create the directory %s", dir.c_str());
    save_safetensors_model(dir + "/model.safetensors", layout, host);
    write_file_atomic(dir + "/config.json", config_to_json(cfg));
}

ModelConfig load_pretrained_config(const std::string& dir) { return config_from_json_file(dir + "/config.json"); }
