// Hugging Face format: config.json (GPT2Config / LlamaConfig keys plus the norm
// scheme) and model.safetensors in Hugging Face names and shapes.
#pragma once
#include <string>
#include <vector>

#include "model/config.h"
#include "model/params.h"

std::string config_to_json(const ModelConfig& cfg);
ModelConfig config_from_json_file(const std::string& path);

#include "common/safetensors.h"

// host: the flat fp32 layout. GPT-2 Conv1D weights are transposed and the padded
// vocabulary rows dropped on save; the reverse on load (padding rows become zero).
StFile to_hf_tensors(const ParamLayout& layout, const std::vector<float>& host);
// `source` names the file in error messages.
void from_hf_tensors(const StFile& file, const std::string& source, const ParamLayout& layout, std::vector<float>& host);
void save_safetensors_model(const std::string& path, const ParamLayout& layout, const std::vector<float>& host);
void load_safetensors_model(const std::string& path, const ParamLayout& layout, std::vector<float>& host);

// DIR/config.json + DIR/model.safetensors
void save_pretrained(const std::string& dir, const ModelConfig& cfg, const ParamLayout& layout,
                     const std::vector<float>& host);
ModelConfig load_pretrained_config(const std::string& dir);
