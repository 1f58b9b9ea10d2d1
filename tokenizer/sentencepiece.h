// SentencePiece models (T5's, LLaMA's, or one trained with spm_train) through Debian's
// libsentencepiece; the header stays out of the rest of the program.
#pragma once
#include <memory>
#include <string>

#include "tokenizer/tokenizer.h"

// Loads the .model file at `path`; UserError naming `spec` and the path on failure.
// eot_token() is the model's end-of-sentence id (</s>), -1 if it has none.
std::unique_ptr<Tokenizer> make_sentencepiece_tokenizer(const std::string& path,
                                                        const std::string& spec);
