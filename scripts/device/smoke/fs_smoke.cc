// std::filesystem in a program linked with LibTorch: PyTorch's wheels export broken
// copies of libstdc++'s std::filesystem functions from libtorch.so
// (pytorch/pytorch#133437). Creates and removes a temp folder; crashes when the call
// binds to libtorch.so's copy.
#include <cstdio>
#include <filesystem>

int main() {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / "embedserve_fs_smoke";
  fs::create_directories(dir / "a" / "b");
  const auto removed = fs::remove_all(dir);
  std::printf("fs_smoke: removed %ju entries\n", static_cast<uintmax_t>(removed));
  return removed == 3 ? 0 : 1;
}
