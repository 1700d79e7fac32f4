// The one mutex of the code base: a std::mutex / std::condition_variable pair with Clang
// thread-safety annotations, so ABSL_GUARDED_BY fields are checked (clang
// -Wthread-safety) and ThreadSanitizer sees every lock (Debian's prebuilt absl::Mutex is
// not instrumented for TSan, which then reports false races). Used by the batcher, the
// gRPC service, the server and the HTTP server.
// Thread-safety: Mutex and CondVar are safe from any thread; MutexLock is per thread.
#ifndef EMBEDSERVE_COMMON_MUTEX_H_
#define EMBEDSERVE_COMMON_MUTEX_H_

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>

#include "absl/base/thread_annotations.h"

namespace embedserve {

// Tells the CPU this is a spin-wait loop (yields to a sibling hyperthread, saves power).
inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

// Lock() first tries for a short while (kLockSpins try_locks, at most ~30 us) before
// blocking: the critical sections are short, and a thread that blocks in the
// kernel lets its vCPU halt, which on a VM costs tens to hundreds of microseconds to undo.
class ABSL_LOCKABLE Mutex {
 public:
  static constexpr int kLockSpins = 1000;
  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() {
    for (int i = 0; i < kLockSpins; ++i) {
      if (mu_.try_lock()) return;
      CpuRelax();
    }
    mu_.lock();
  }
  void Unlock() ABSL_UNLOCK_FUNCTION() { mu_.unlock(); }

 private:
  friend class CondVar;
  std::mutex mu_;
};

// Holds `mu` for its scope.
class ABSL_SCOPED_LOCKABLE MutexLock {
 public:
  explicit MutexLock(Mutex* mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu) : mu_(mu) { mu_->Lock(); }
  ~MutexLock() ABSL_UNLOCK_FUNCTION() { mu_->Unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex* const mu_;
};

// Waits release `mu` while blocked and hold it again on return. Notify may be called with
// or without the mutex held (the batcher notifies after unlocking).
class CondVar {
 public:
  void Wait(Mutex* mu) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    std::unique_lock<std::mutex> lock(mu->mu_, std::adopt_lock);
    cv_.wait(lock);
    lock.release();
  }
  // Returns after `timeout_us` at the latest (or earlier: notified, or spuriously).
  void WaitFor(Mutex* mu, int64_t timeout_us) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    std::unique_lock<std::mutex> lock(mu->mu_, std::adopt_lock);
    cv_.wait_for(lock, std::chrono::microseconds(timeout_us));
    lock.release();
  }
  void NotifyOne() { cv_.notify_one(); }
  void NotifyAll() { cv_.notify_all(); }

 private:
  std::condition_variable cv_;
};

}  // namespace embedserve

#endif  // EMBEDSERVE_COMMON_MUTEX_H_
