// The directories a run writes: claimed before anything is trained, so that a run never
// writes into another run's directory, two runs never write into one at the same time,
// and a directory that cannot be written fails at start, not after hours of training.
#pragma once
#include <string>

// Creates dir if needed and checks that a file can be created in it; UserError naming
// `flag` and the reason otherwise.
void require_writable_dir(const std::string& dir, const char* flag);

// The run directory of --out-dir, for a run that trains. Holds an exclusive lock on
// DIR/.lock until the process exits (the kernel drops it however the process ends), and
// refuses a directory whose lock another process holds. Unless `resume`, also refuses a
// directory that already holds a run (log.jsonl or checkpoints): a new run there would
// truncate that log, and checkpoint retention would count its checkpoints as this run's.
void claim_run_dir(const std::string& dir, bool resume);
