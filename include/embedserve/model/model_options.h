// What LoadModel needs to know to load a model folder: path, device, precision, threads
// and the sequence-length limit. Torch-free (the config loader and tools use it).
// Plain value type: not thread-safe to mutate, safe to read from several threads.
#ifndef EMBEDSERVE_MODEL_MODEL_OPTIONS_H_
#define EMBEDSERVE_MODEL_MODEL_OPTIONS_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"

namespace embedserve {

struct ModelOptions {
  // Model folder in the Hugging Face / sentence-transformers layout (config.json,
  // model.safetensors, vocab.txt, optional modules.json, 1_Pooling/, 2_Normalize/).
  std::string path;
  // cpu, cuda, cuda:N, mps, or auto (cuda if available, then mps, then cpu).
  std::string device = "auto";
  // fp32, fp16, bf16 or int8 (CPU only: int8 weights per output channel and int8
  // activations per token in the linear layers, the rest fp32): weights are converted
  // once at load; pooling stays fp32.
  std::string precision = "fp32";
  // Intra-op threads; 0 = the cores this process may use (sched_getaffinity and the
  // cgroup cpu.max quota), see UsableCpuCount().
  int num_threads = 0;
  // Longest sequence in tokens ([CLS]/[SEP] included); 0 = the folder's
  // (sentence_bert_config.json, else tokenizer_config.json model_max_length, else
  // config.json max_position_embeddings). Must not exceed max_position_embeddings.
  int64_t max_seq_length = 0;
  // On a CUDA device: capture CUDA graphs at load for batches of up to 64 sequences of
  // up to 128 tokens and replay them for such batches (a small forward is bound by
  // kernel launches). Only buckets of at most a number of token slots (batch x tokens)
  // that depends on the precision are captured: 8,192 in fp16 and bf16, 4,096 with TF32,
  // 1,024 in fp32; past it the eager forward was faster (docs/gpu.md). Ignored on other
  // devices and by LibTorch builds without CUDA.
  bool cuda_graphs = true;
  // The largest graph bucket in sequences: 64 (the buckets above), or up to 1,024, which
  // adds buckets of 128, 256, 512 and 1,024 sequences of 16 to 128 tokens within the
  // slot limit (in fp16 128 x 16..64, 256 x 16..32, 512 x 16: a batch of a hundred short
  // texts, e.g. one-pair Similarity calls at high concurrency, is also bound by launches
  // when run eagerly). More buckets take longer to capture at load.
  int cuda_graph_max_batch = 64;
  // fp32 on a CUDA device: run the matrix products on TF32 tensor cores (10-bit
  // mantissa inputs, fp32 accumulation; docs/gpu.md has its speed and fidelity). LibTorch
  // holds this setting per process, so it applies to every fp32 CUDA matmul of the
  // process; the last backend loaded sets it. Ignored for other precisions and devices.
  bool tf32 = false;
  // CPU: the niceness added to each thread that runs the model (the batcher worker that
  // calls Embed and its OpenMP team), set on the first batch each worker runs: 0..19. The
  // server's RPC threads then take a core from a forward in progress as soon as they
  // wake, so refusing a call under overload, answering a health probe or reading the
  // next request does not wait for the model's threads to yield. The model still gets
  // every cycle nothing else wants. Ignored on GPUs.
  int cpu_nice = 0;
  // CPU: pin each thread of a worker's OpenMP team to its own CPU (thread i to the i-th
  // CPU this process may use), on the first batch each worker runs with more than one
  // thread. Without it, a request after an idle gap longer than the team's spin finds
  // the team asleep, Linux wakes its threads on the waker's CPU, and they share one core,
  // switching at every barrier, until the load balancer moves one: on the 2-vCPU machine
  // a one-pair forward took 13-14 ms instead of 2-3 ms at 20 requests/s
  // (docs/results/hostile/). Skipped when OMP_PROC_BIND, OMP_PLACES or GOMP_CPU_AFFINITY
  // is set (OpenMP's own binding then applies). Ignored on GPUs.
  bool cpu_pin_threads = true;
  // CPU: run each thread of a worker's OpenMP team under SCHED_IDLE (on the first batch
  // the worker runs), so that every other runnable thread of the machine (the server's
  // RPC threads, the batcher's express lane) preempts it at once: refusing a call under
  // overload then does not wait for a model thread's time slice (model.cpu_nice 10 or 19
  // moved that wait by 0.5 ms at most on Linux 6.18; SCHED_IDLE did). The model
  // gets every cycle nothing else wants, so any other process, even at nice 19, starves
  // it (and the small requests a worker runs): for a machine that runs nothing else.
  // Refusals' p99 at 10x overload on the 2-vCPU machine: 5.7 -> 4.3-4.6 ms
  // (docs/results/hostile/). Ignored on GPUs.
  bool cpu_sched_idle = false;

  // Checks each field on its own (the folder is checked by LoadModel). Messages name the
  // field, the rule and the value, e.g.
  // "model.precision must be one of fp32, fp16, bf16, int8; was 'fp8'".
  absl::Status Validate() const;
};

// The number of CPUs this process may run on: the affinity mask (sched_getaffinity),
// capped by the cgroup v2 cpu.max quota (or v1 cfs_quota_us / cfs_period_us), rounded
// up, at least 1. Thread-safe.
int UsableCpuCount();

}  // namespace embedserve

#endif  // EMBEDSERVE_MODEL_MODEL_OPTIONS_H_
