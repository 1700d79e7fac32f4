// Keeps gRPC's callback completion queue alive for the whole test process.
//
// gRPC 1.51 (Debian 12) runs callback-API work (our server's reactors, the bench's
// client calls) on a process-wide "alternative" completion queue whose polling threads
// ("nexting_thread") it creates on first use and destroys when the last server or
// channel using it is gone. A test binary that starts and stops servers one after
// another drives that destroy/re-create cycle, and with the CPU busy one of the old
// threads sometimes used the freed queue: client_server_test died 3 times in about 110
// runs with 3 busy loops beside it (SIGSEGV, or "assertion failed: prior > 0", in
// grpc_completion_queue_next on a nexting_thread, between two tests), and 0 times in
// 150 such runs with the queue held. A server process, which keeps its server for its
// whole life, never goes through the cycle.
//
// Call once before the first server starts (e.g. at namespace scope:
// `const bool kHeld = embedserve::testing::HoldGrpcCallbackQueue();`). Thread-safe;
// later calls do nothing.
#ifndef EMBEDSERVE_TESTS_TEST_UTIL_GRPC_CALLBACK_QUEUE_H_
#define EMBEDSERVE_TESTS_TEST_UTIL_GRPC_CALLBACK_QUEUE_H_

namespace embedserve {
namespace testing {

// Makes one callback-API call on a channel that is never destroyed (the call fails
// at once: nothing listens on its address), so the queue always has a user. Returns
// true once that call has completed.
bool HoldGrpcCallbackQueue();

}  // namespace testing
}  // namespace embedserve

#endif  // EMBEDSERVE_TESTS_TEST_UTIL_GRPC_CALLBACK_QUEUE_H_
